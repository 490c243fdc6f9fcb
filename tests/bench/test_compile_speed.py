"""bench/compile_speed.py: every backend's parity check on tiny inputs, the JSON it writes, and
the errors for bad checkpoints. Nothing here is timed."""

import json

import pytest
import torch

from bench import compile_speed
from bench.compile_speed import BACKENDS, bench_method, main
from bench.models import BENCH_METHODS, BenchModelError, load_method_model
from iaunet.model import build_model as build_iaunet

TINY = {"sweep": (1, 2), "latency_runs": 1, "parity": (2, 4), "full": False}
CPU = torch.device("cpu")


@pytest.mark.parametrize("method", list(BENCH_METHODS))
def test_each_method_benches_and_its_trace_matches_eager(method):
    # (every method's export, trace and script are checked in its own tests/<method>/)
    rows = bench_method(method, None, CPU, TINY, ["eager fp32", "torchscript trace"],
                        size=(64, 32))
    for row in rows:
        assert row["status"] == "ok", row
        assert row["parity"]["passed"] and row["parity"]["top10_agreement"] == 1.0
        assert row["parity"]["max_abs_diff_relative"] < 1e-4
        assert set(row["throughput_img_s"]) == {"1", "2"}
        assert row["gflops_per_image"] > 0 and row["weights"] == "fresh (random)"


def test_every_backend_gets_a_row_with_a_reason():
    rows = bench_method("apnet", None, CPU, TINY, list(BACKENDS), size=(64, 32))
    assert [row["backend"] for row in rows] == list(BACKENDS)
    status = {row["backend"]: row for row in rows}
    assert status["torchscript script"]["status"] == "ok"  # APNet scripts here
    assert status["eager fp16"]["status"] == "unavailable" and "CUDA" in status["eager fp16"]["reason"]
    assert status["torch.compile"]["status"] == "skipped" and "--full" in status["torch.compile"]["reason"]
    for backend in ("onnxruntime (cpu)", "tensorrt fp16"):
        row = status[backend]
        assert row["status"] in ("ok", "unavailable"), row
        if row["status"] == "unavailable":
            assert "not importable" in row["reason"] or "CUDA" in row["reason"]


def test_a_backend_that_changes_the_features_fails_and_is_not_timed(monkeypatch):
    def noisy(model, example, device, tmp):
        return lambda x: model(x) + 0.1 * torch.randn_like(model(x))

    monkeypatch.setitem(compile_speed.BACKENDS, "noisy", (noisy, torch.float32))
    (row,) = bench_method("iaunet", None, CPU, TINY, ["noisy"], size=(64, 32))
    assert row["status"] == "failed" and row["reason"] == "parity check failed"
    assert "throughput_img_s" not in row and not row["parity"]["passed"]


def test_json_and_plot(tmp_path, capsys):
    out = tmp_path / "bench.json"
    main(["--methods", "iaunet", "--backends", "eager fp32", "tensorrt fp32", "--size", "64",
          "32", "--device", "cpu", "--out", str(out)])
    payload = json.loads(out.read_text())
    assert payload["schema_version"] == 1 and payload["mode"] == "quick"
    assert {"python", "torch", "cuda", "cpu", "device", "tensorrt"} <= set(payload["machine"])
    assert [row["backend"] for row in payload["rows"]] == ["eager fp32", "tensorrt fp32"]
    assert set(payload["rows"][0]) >= {"method", "backend", "status", "precision", "input_size",
                                       "gflops_per_image", "latency_ms", "throughput_img_s",
                                       "parity", "weights", "model_options", "flip_tta"}
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "| iaunet | eager fp32 | ok |" in printed and "flip TTA off" in printed


def test_bad_checkpoints_are_clear_errors(tmp_path, capsys):
    with pytest.raises(BenchModelError, match="does not exist"):
        load_method_model("apnet", tmp_path / "missing.pt")
    torch.save({"model": build_iaunet(10, pretrained=False).state_dict()}, tmp_path / "iau.pt")
    with pytest.raises(BenchModelError, match="does not load into the apnet network.*missing key"):
        load_method_model("apnet", tmp_path / "iau.pt")
    with pytest.raises(SystemExit, match="METHOD=PATH"):
        main(["--methods", "apnet", "--checkpoint", str(tmp_path / "iau.pt"), "--out",
              str(tmp_path / "x.json")])
    with pytest.raises(SystemExit):
        main(["--methods", "apnet", "lagnet", "--model-option", "level=1"])
    assert "--model-option needs exactly one method" in capsys.readouterr().err


def test_a_method_checkpoint_loads(tmp_path):
    model = build_iaunet(10, pretrained=False)
    torch.save({"state_dict": model.state_dict(), "rank1": 0.5, "epoch": 3}, tmp_path / "best.pth.tar")
    loaded = load_method_model("iaunet", tmp_path / "best.pth.tar")
    assert loaded.classifier.out_features == 10 and not loaded.training
