"""bench/runtimes.py: what running OpenVINO leaves behind in the process."""

import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# Two OpenVINO runners made and dropped in the order they were made, then a SIGTERM that Python
# turns into KeyboardInterrupt: with one openvino.Core per runner, the second Core's teardown put
# back the freed signal stack of the first and the signal killed the process (SIGSEGV).
SCRIPT = """
import faulthandler, gc, os, signal, sys, time
faulthandler.enable()  # as pytest does: an alternate signal stack is installed before OpenVINO
import torch
from bench.runtimes import export_onnx, onnx_to_openvino, openvino_runner
folder = sys.argv[1]
network = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten()).eval()
export_onnx(network, torch.randn(2, 3, 16, 8), f"{folder}/net.onnx")
onnx_to_openvino(f"{folder}/net.onnx", f"{folder}/net.xml")
runners = [openvino_runner(f"{folder}/net.xml", precision) for precision in ("f32", "bf16")]
for run in runners:
    run(torch.randn(1, 3, 16, 8))
first, second = runners
del run, runners, first  # dropped in the order they were made
gc.collect()
del second
gc.collect()
signal.signal(signal.SIGTERM, signal.default_int_handler)
try:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(1)
except KeyboardInterrupt:
    print("interrupted cleanly")
"""


def test_a_process_that_ran_openvino_still_takes_ctrl_c_and_sigterm(tmp_path):
    pytest.importorskip("openvino", reason="the deploy extra is not installed: "
                                           "pip install -e '.[deploy]'")
    pytest.importorskip("onnxscript", reason="the deploy extra is not installed")
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-2000:]}"
    assert "interrupted cleanly" in result.stdout
