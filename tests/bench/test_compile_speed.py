"""bench/compile_speed.py: every backend's parity check on tiny inputs, the JSON it writes, and
the errors for bad checkpoints. Nothing here is timed."""

import json

import pytest
import torch

from bench import compile_speed
from bench.compile_speed import BACKENDS, bench_method, main
from bench.models import BENCH_METHODS, BenchModelError, load_method_model
from iaunet.model import build_model as build_iaunet

TINY = {"sweep": (1, 2), "rounds": 1, "parity": (2, 4), "threads": (None,), "full": False}
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


DEPLOY_BACKENDS = ["onnxruntime (cpu)", "onnxruntime int8", "openvino fp32", "openvino bf16",
                   "openvino int8"]


def test_every_backend_gets_a_row_with_a_reason():
    backends = [b for b in BACKENDS if b not in DEPLOY_BACKENDS]  # those: the next tests
    rows = bench_method("apnet", None, CPU, TINY, backends, size=(64, 32))
    assert [row["backend"] for row in rows] == backends
    status = {row["backend"]: row for row in rows}
    assert status["torchscript script"]["status"] == "ok"  # APNet scripts here
    assert status["eager fp16"]["status"] == "unavailable" and "CUDA" in status["eager fp16"]["reason"]
    assert status["torch.compile"]["status"] == "skipped" and "--full" in status["torch.compile"]["reason"]
    assert status["eager bf16"]["status"] == "ok"  # BF16 runs on a CPU, as its own precision
    assert status["eager bf16"]["precision"] == "bfloat16"
    assert 1e-4 < status["eager bf16"]["parity"]["max_abs_diff_relative"] < 0.05
    row = status["tensorrt fp16"]
    assert row["status"] in ("ok", "unavailable"), row
    if row["status"] == "unavailable":
        assert "not importable" in row["reason"] or "CUDA" in row["reason"]


def _deploy_rows(backends):
    pytest.importorskip("onnxruntime", reason="the deploy extra is not installed: "
                                              "pip install -e '.[deploy]'")
    pytest.importorskip("openvino", reason="the deploy extra is not installed")
    rows = bench_method("iaunet", None, CPU, {**TINY, "threads": (None, 1)}, backends,
                        size=(64, 32))
    assert [(row["backend"], row["threads"]) for row in rows] == \
        [(b, t) for t in (f"default ({torch.get_num_threads()} torch)", 1) for b in backends]
    return {(row["backend"], row["threads"]): row for row in rows}


def test_onnxruntime_and_openvino_rows_match_eager_at_each_thread_setting():
    backends = ["eager fp32", "onnxruntime (cpu)", "openvino fp32", "openvino bf16"]
    rows = _deploy_rows(backends)
    for (backend, threads), row in rows.items():
        assert row["status"] == "ok", row
        seconds = row["seconds"]["2"]
        assert row["vs_eager"]["2"] > 0 and seconds["min"] <= seconds["median"]
        if backend == "eager fp32":
            assert row["vs_eager"] == {"1": 1.0, "2": 1.0}
        elif backend == "openvino bf16":  # its own precision: close, not FP32-exact
            assert row["precision"] == "bfloat16"
            assert 1e-4 < row["parity"]["max_abs_diff_relative"] < 0.05
        else:
            assert row["parity"]["max_abs_diff_relative"] < 1e-5


@pytest.mark.slow
def test_int8_rows_are_timed_with_their_parity_stated():
    rows = _deploy_rows(["eager fp32", "onnxruntime int8", "openvino int8"])
    for backend in ("onnxruntime int8", "openvino int8"):
        row = rows[(backend, 1)]
        assert row["status"] == "ok" and row["precision"] == "int8"
        assert "bench.export --int8" in row["parity_gate"]
        assert row["parity"]["max_abs_diff_relative"] > 1e-4  # quantized: not FP32-exact


def test_a_backend_that_changes_the_features_fails_and_is_not_timed(monkeypatch):
    def noisy(model, example, device, tmp, threads):
        return lambda x: model(x) + 0.1 * torch.randn_like(model(x))

    monkeypatch.setitem(compile_speed.BACKENDS, "noisy", (noisy, torch.float32))
    (row,) = bench_method("iaunet", None, CPU, TINY, ["noisy"], size=(64, 32))
    assert row["status"] == "failed" and row["reason"] == "parity check failed"
    assert "throughput_img_s" not in row and not row["parity"]["passed"]


def test_contenders_are_interleaved_round_by_round_in_rotated_order():
    calls = []
    contenders = {name: (lambda images, name=name: calls.append(name)) for name in "abc"}
    times = compile_speed.interleaved_times(contenders, torch.zeros(1), CPU, rounds=3)
    assert calls == list("abc") + list("abc") + list("bca") + list("cab")  # warm-up, 3 rounds
    assert {name: len(seconds) for name, seconds in times.items()} == {"a": 3, "b": 3, "c": 3}


def test_a_load_burst_slows_one_round_not_one_backend(monkeypatch):
    # "slow" does twice the work of "fast"; the other processes' load triples the cost of
    # every call of round 0 (as if the machine were busy then): interleaved, "slow" still
    # reads as slower in the median and in the minimum, and the ratio stays 2 in the minimum
    clock = {"now": 0.0, "round": -1, "calls": 0}
    cost = {"fast": 1.0, "slow": 2.0}
    monkeypatch.setattr(compile_speed.time, "perf_counter", lambda: clock["now"])

    def backend(name):
        def call(images):
            clock["calls"] += 1
            burst = 3.0 if 2 < clock["calls"] <= 4 else 1.0  # calls 3-4: round 0
            clock["now"] += cost[name] * burst
        return call

    times = compile_speed.interleaved_times({n: backend(n) for n in cost}, torch.zeros(1), CPU,
                                            rounds=3)
    assert min(times["slow"]) / min(times["fast"]) == 2.0
    assert sorted(times["slow"]) == [2.0, 2.0, 6.0] and sorted(times["fast"]) == [1.0, 1.0, 3.0]


def test_json_and_plot(tmp_path, capsys):
    out = tmp_path / "bench.json"
    main(["--methods", "iaunet", "--backends", "eager fp32", "tensorrt fp32", "--size", "64",
          "32", "--device", "cpu", "--threads", "1", "--sweep", "1", "2", "--rounds", "2",
          "--out", str(out)])
    payload = json.loads(out.read_text())
    assert payload["schema_version"] == 2 and payload["mode"] == "quick"
    assert {"python", "torch", "cuda", "cpu", "device", "tensorrt", "onnxruntime",
            "openvino"} <= set(payload["machine"])
    assert set(payload["load_average_1_5_15min"]) == {"before", "after"}
    assert [row["backend"] for row in payload["rows"]] == ["eager fp32", "tensorrt fp32"]
    assert set(payload["rows"][0]) >= {"method", "backend", "status", "precision", "input_size",
                                       "gflops_per_image", "latency_ms", "throughput_img_s",
                                       "parity", "weights", "model_options", "flip_tta",
                                       "threads", "seconds", "vs_eager"}
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "| iaunet | eager fp32 | 1 | ok |" in printed and "flip TTA off" in printed
    assert payload["sweep"] == [1, 2] and payload["rounds"] == 2
    seconds = payload["rows"][0]["seconds"]
    assert set(seconds) == {"1", "2"} and all(t["min"] <= t["median"] for t in seconds.values())


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
