"""Compile each method's network with every available backend, check it against eager, and time it
(``../shared/specs/deploy.md`` §6).

Backends: eager FP32 (and on a GPU FP16, BF16 and channels_last), TorchScript (trace, and script
where the model allows), ``torch.export`` (dynamic batch), ``torch.compile`` (Inductor),
AOTInductor, ONNX with ONNX Runtime, and TensorRT through torch-tensorrt's dynamo path. A backend
that cannot run here gets a row saying why; nothing is dropped silently.

Parity: on a fixed query/gallery set of images (seeded), each artifact's features against eager:
max absolute difference (relative to eager's largest), the lowest cosine similarity, and the
mean overlap of the top-10 gallery lists. An artifact that fails is marked failed and not timed.
Timing: throughput (images/s) over a batch sweep and latency p50/p90/p99 at batch 1, warm-up
excluded, CUDA events with synchronisation on a GPU; peak GPU memory; GFLOPs per image counted
as 2 x multiply-adds by ``torch.utils.flop_counter``. Flip test-time augmentation is off (it
doubles the cost). The quick mode (default on a CPU) uses a small sweep and skips the backends
that compile for minutes; ``--full`` runs everything.

    python -m bench.compile_speed [--methods apnet lagnet] [--checkpoint apnet=PATH] [--full]
        [--size H W] [--backends ...] [--model-option NAME=VALUE ... (with one method)]

Prints a markdown table and writes ``bench/results/compile_speed_<device>.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import platform
import re
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from bench.models import BENCH_METHODS, BenchModelError, load_method_model, parse_model_options
from common.files import atomic_write

RESULTS = Path(__file__).resolve().parent / "results"
SCHEMA_VERSION = 1
QUICK = {"sweep": (1, 4), "latency_runs": 3, "parity": (2, 6)}
FULL = {"sweep": (1, 8, 32, 64, 128, 256), "latency_runs": 50, "parity": (16, 64)}
SLOW_ON_CPU = {"torch.compile", "aot_inductor"}
FP32_TOLERANCE = 1e-3  # max |difference| / max |eager feature| (FastReID's rtol)
LOW_PRECISION_COSINE = 0.999


class Unavailable(Exception):
    """The backend cannot run here; the message says why."""


def machine(device):
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "device": str(device)}
    info["cpu"] = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    try:
        info["tensorrt"] = importlib.import_module("tensorrt").__version__
    except ImportError:
        info["tensorrt"] = None
    return info


# ---- backends: each returns a callable images -> features, or raises Unavailable ----

def _needs_cuda(device, what):
    if device.type != "cuda":
        raise Unavailable(f"{what} needs CUDA; this run is on the CPU")


def eager_fp32(model, example, device, tmp):
    return model


def eager_half(dtype):
    def build(model, example, device, tmp):
        _needs_cuda(device, f"eager {dtype}")
        half = _copy(model).to(dtype)
        return lambda x: half(x.to(dtype)).float()
    return build


def channels_last(model, example, device, tmp):
    _needs_cuda(device, "channels_last")
    converted = _copy(model).to(memory_format=torch.channels_last)
    return lambda x: converted(x.contiguous(memory_format=torch.channels_last))


def torchscript_trace(model, example, device, tmp):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example)
        torch.jit.save(traced, tmp / "model_trace.pt")
        return torch.jit.load(tmp / "model_trace.pt", map_location=device)


def torchscript_script(model, example, device, tmp):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            scripted = torch.jit.script(model)
        except Exception as err:  # TorchScript rejects the model's Python: say what
            raise Unavailable(f"the model does not script: {first_line(err)}") from None
        torch.jit.save(scripted, tmp / "model_script.pt")
        return torch.jit.load(tmp / "model_script.pt", map_location=device)


def _export(model, example):
    batch = torch.export.Dim("batch", min=1, max=1024)
    return torch.export.export(model, (example,), dynamic_shapes=({0: batch},))


def torch_export(model, example, device, tmp):
    torch.export.save(_export(model, example), tmp / "model.pt2")
    return torch.export.load(tmp / "model.pt2").module()


def torch_compile(model, example, device, tmp):
    return torch.compile(model)


def aot_inductor(model, example, device, tmp):
    try:
        package = torch._inductor.aoti_compile_and_package(_export(model, example),
                                                           package_path=str(tmp / "model_aoti.pt2"))
    except Exception as err:  # no C++ compiler, unsupported op, ...
        raise Unavailable(f"AOTInductor could not compile: {first_line(err)}") from None
    return torch._inductor.aoti_load_package(package)


def onnx_runtime(model, example, device, tmp):
    try:
        import onnxruntime
    except ImportError as err:
        raise Unavailable(f"onnxruntime not importable: {err}") from None
    path = tmp / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), input_names=["images"],
                          output_names=["features"], dynamic_axes={"images": {0: "batch"}})
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"images": x.cpu().numpy()})[0]).to(x.device)


def tensorrt(dtype):
    def build(model, example, device, tmp):
        try:
            import torch_tensorrt
        except ImportError as err:
            raise Unavailable(f"tensorrt not importable: {err}") from None
        _needs_cuda(device, "TensorRT")
        low = _copy(model).to(dtype)
        shape = tuple(example.shape[1:])
        spec = torch_tensorrt.Input(min_shape=(1, *shape), opt_shape=(8, *shape),
                                    max_shape=(256, *shape), dtype=dtype)
        compiled = torch_tensorrt.compile(low, ir="dynamo", arg_inputs=[spec])
        return lambda x: compiled(x.to(dtype)).float()
    return build


BACKENDS = {
    "eager fp32": (eager_fp32, torch.float32),
    "eager fp16": (eager_half(torch.float16), torch.float16),
    "eager bf16": (eager_half(torch.bfloat16), torch.bfloat16),
    "eager channels_last": (channels_last, torch.float32),
    "torchscript trace": (torchscript_trace, torch.float32),
    "torchscript script": (torchscript_script, torch.float32),
    "torch.export": (torch_export, torch.float32),
    "torch.compile": (torch_compile, torch.float32),
    "aot_inductor": (aot_inductor, torch.float32),
    "onnxruntime (cpu)": (onnx_runtime, torch.float32),
    "tensorrt fp32": (tensorrt(torch.float32), torch.float32),
    "tensorrt fp16": (tensorrt(torch.float16), torch.float16),
}


def first_line(error, limit=160):
    """The first non-empty line of an exception's message, shortened."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:limit]


def _copy(model):
    import copy
    return copy.deepcopy(model)


# ---- parity and timing ----

def parity(reference, features, dtype):
    """max |diff| / max |reference|, min cosine, mean top-10 overlap; and whether it passes."""
    queries, gallery = reference
    q, g = features
    diff = max((q - queries).abs().max().item(), (g - gallery).abs().max().item())
    scale = max(queries.abs().max().item(), gallery.abs().max().item(), 1e-12)
    cosine = min(F.cosine_similarity(q, queries).min().item(),
                 F.cosine_similarity(g, gallery).min().item())
    k = min(10, gallery.shape[0])
    top_ref = (F.normalize(queries) @ F.normalize(gallery).T).topk(k).indices
    top = (F.normalize(q) @ F.normalize(g).T).topk(k).indices
    overlap = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(top_ref, top))
    agreement = overlap / (k * len(top))
    passed = (cosine >= LOW_PRECISION_COSINE and agreement >= 0.9) if dtype != torch.float32 \
        else diff / scale <= FP32_TOLERANCE
    return {"max_abs_diff_relative": diff / scale, "min_cosine": cosine,
            "top10_agreement": agreement, "passed": passed}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn, images, device, runs, warmup=2):
    """Seconds per call (a list), warm-up excluded; CUDA events on a GPU."""
    with torch.no_grad():
        for _ in range(warmup):
            fn(images)
        _sync(device)
        times = []
        for _ in range(runs):
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn(images)
                end.record()
                torch.cuda.synchronize(device)
                times.append(start.elapsed_time(end) / 1000)
            else:
                begin = time.perf_counter()
                fn(images)
                times.append(time.perf_counter() - begin)
    return times


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def gflops_per_image(model, size, device):
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, *size, device=device))
    return counter.get_total_flops() / 1e9


def bench_method(name, checkpoint, device, settings, backends, size=None, options=None):
    """The result rows of one method (built with ``options``, ``bench.models.load_method_model``)."""
    model = load_method_model(name, checkpoint, options).to(device)
    size = tuple(size or BENCH_METHODS[name].input_size)
    generator = torch.Generator().manual_seed(0)
    num_query, num_gallery = settings["parity"]
    query = torch.randn(num_query, 3, *size, generator=generator).to(device)
    gallery = torch.randn(num_gallery, 3, *size, generator=generator).to(device)
    with torch.no_grad():
        reference = (model(query).float(), model(gallery).float())
    base = {"method": name, "weights": str(checkpoint) if checkpoint else "fresh (random)",
            "model_options": dict(options or {}),
            "input_size": list(size), "feature_dim": int(reference[0].shape[1]),
            "gflops_per_image": gflops_per_image(model, size, device), "flip_tta": False}
    rows = []
    for backend in backends:
        build, dtype = BACKENDS[backend]
        row = {**base, "backend": backend, "precision": str(dtype).replace("torch.", "")}
        if device.type == "cpu" and backend in SLOW_ON_CPU and not settings.get("full"):
            rows.append({**row, "status": "skipped", "reason": "minutes of compilation on a "
                         "CPU; run with --full"})
            continue
        try:
            with _tmpdir() as tmp, torch.no_grad():
                fn = build(model, query[:2], device, tmp)  # batch 2: no 0/1 specialisation
                features = (fn(query).float(), fn(gallery).float())
                check = parity(reference, features, dtype)
                row["parity"] = check
                if not check["passed"]:
                    rows.append({**row, "status": "failed", "reason": "parity check failed"})
                    continue
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                latency = time_calls(fn, query[:1], device, settings["latency_runs"])
                throughput = {}
                for batch in settings["sweep"]:
                    images = torch.randn(batch, 3, *size, generator=generator).to(device)
                    try:
                        seconds = time_calls(fn, images, device, max(3, settings["latency_runs"] // 5))
                    except torch.cuda.OutOfMemoryError:
                        throughput[str(batch)] = None
                        torch.cuda.empty_cache()
                        continue
                    throughput[str(batch)] = batch / statistics.median(seconds)
                row.update(status="ok", latency_ms={f"p{q}": 1000 * percentile(latency, q)
                                                    for q in (50, 90, 99)},
                           throughput_img_s=throughput,
                           peak_memory_mb=(torch.cuda.max_memory_allocated(device) / 2**20
                                           if device.type == "cuda" else None))
        except Unavailable as err:
            row.update(status="unavailable", reason=str(err))
        except Exception as err:  # a backend that breaks on this model: recorded, not hidden
            row.update(status="failed", reason=f"{type(err).__name__}: {first_line(err)}")
        rows.append(row)
    return rows


@contextlib.contextmanager
def _tmpdir():
    import tempfile
    with tempfile.TemporaryDirectory(prefix="bench_") as name:
        yield Path(name)


def markdown(rows, sweep):
    header = ("| method | backend | status | p50 ms (b1) | p99 ms (b1) | "
              + " | ".join(f"img/s b{b}" for b in sweep) + " | cos min | top-10 |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for row in rows:
        if row["status"] == "ok":
            speed = row["throughput_img_s"]
            cells = [f"{row['latency_ms']['p50']:.1f}", f"{row['latency_ms']['p99']:.1f}",
                     *(f"{speed[str(b)]:.1f}" if speed.get(str(b)) else "oom" for b in sweep),
                     f"{row['parity']['min_cosine']:.5f}", f"{row['parity']['top10_agreement']:.2f}"]
        else:
            cells = [row.get("reason", "")] + [""] * (len(sweep) + 3)
        lines.append(f"| {row['method']} | {row['backend']} | {row['status']} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def fastest_summary(rows):
    """One line per method: the backend with the highest throughput (any batch) among those
    that ran and matched eager, with its ratio to eager FP32, and how many rows did not run."""
    lines = ["fastest per method (images/s at its best batch; parity-checked rows only):"]
    for method in dict.fromkeys(row["method"] for row in rows):
        ran = [row for row in rows if row["method"] == method and row["status"] == "ok"]
        best = {row["backend"]: max(v for v in row["throughput_img_s"].values() if v)
                for row in ran if any(row["throughput_img_s"].values())}
        skipped = sum(row["method"] == method and row["status"] != "ok" for row in rows)
        if not best:
            lines.append(f"  {method}: no backend ran ({skipped} unavailable or skipped)")
            continue
        backend = max(best, key=best.get)
        eager = best.get("eager fp32")
        ratio = f", {best[backend] / eager:.2f}x eager" if eager else ""
        lines.append(f"  {method}: {backend} {best[backend]:.1f} img/s{ratio} "
                     f"({skipped} of {skipped + len(ran)} rows unavailable or skipped)")
    return "\n".join(lines)


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    methods = sorted({row["method"] for row in rows})
    figure, axes = plt.subplots(1, len(methods), figsize=(4.5 * len(methods), 3.6), squeeze=False)
    for axis, method in zip(axes[0], methods):
        for row in rows:
            if row["method"] == method and row["status"] == "ok":
                points = [(int(b), v) for b, v in row["throughput_img_s"].items() if v]
                axis.plot(*zip(*points), marker="o", label=row["backend"])
        batches = sorted({int(b) for row in rows for b in row.get("throughput_img_s", {})})
        axis.set(xscale="log", xlabel="batch", ylabel="images / s", title=method)
        axis.set_xticks(batches, [str(b) for b in batches])
        axis.minorticks_off()
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    with atomic_write(path) as handle:
        figure.savefig(handle, format="png", dpi=100)
    plt.close(figure)


def device_tag(device):
    if device.type == "cpu":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")


def parse_checkpoints(items):
    checkpoints = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or name not in BENCH_METHODS:
            raise BenchModelError(f"--checkpoint {item!r}: write METHOD=PATH with METHOD one of "
                                  f"{', '.join(BENCH_METHODS)}")
        checkpoints[name] = path
    return checkpoints


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(BENCH_METHODS),
                        choices=list(BENCH_METHODS))
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=list(BACKENDS))
    parser.add_argument("--checkpoint", nargs="*", default=[], metavar="METHOD=PATH",
                        help="weights written by the method's main.py (default: fresh weights)")
    parser.add_argument("--model-option", nargs="*", default=[], metavar="NAME=VALUE",
                        help="with one --methods: build_model arguments of a run with "
                             "non-README architecture flags")
    parser.add_argument("--full", action="store_true", help="the whole sweep and every backend")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", nargs=2, type=int, default=None, metavar=("H", "W"),
                        help="input size (default: each method's native size)")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--out", type=Path, default=None, help="JSON path (PNG beside it)")
    target.add_argument("--update-committed", action="store_true",
                        help="write the committed bench/results/compile_speed_<device>.json "
                             "(else bench/results/local/, which git ignores)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    settings = {**(FULL if args.full else QUICK), "full": args.full}
    if args.model_option and len(args.methods) != 1:
        parser.error("--model-option needs exactly one method in --methods")
    try:
        checkpoints = parse_checkpoints(args.checkpoint)
        options = parse_model_options(args.model_option)
        rows = []
        for name in args.methods:
            print(f"benchmarking {name} ...", file=sys.stderr, flush=True)
            rows += bench_method(name, checkpoints.get(name), device, settings, args.backends,
                                 size=args.size, options=options)
    except BenchModelError as err:
        sys.exit(f"bench.compile_speed: error: {err}")
    folder = RESULTS if args.update_committed else RESULTS / "local"
    out = args.out or folder / f"compile_speed_{device_tag(device)}.json"
    payload = {"schema_version": SCHEMA_VERSION, "machine": machine(device),
               "mode": "full" if args.full else "quick", "sweep": list(settings["sweep"]),
               "gflops": "2 x multiply-adds (torch.utils.flop_counter), batch 1, no flip",
               "rows": rows}
    with atomic_write(out, "w") as handle:
        json.dump(payload, handle, indent=2)
        handle.write("\n")
    plot(rows, out.with_suffix(".png"))
    print(f"{payload['machine'].get('gpu') or payload['machine']['cpu']}, torch "
          f"{torch.__version__}, CUDA {torch.version.cuda}, TensorRT "
          f"{payload['machine']['tensorrt']}; {payload['mode']} mode; flip TTA off")
    print(markdown(rows, settings["sweep"]))
    print(fastest_summary(rows))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
