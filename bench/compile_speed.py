"""Compile each method's network with every available backend, check it against eager, and time it
(``../shared/specs/deploy.md`` §6).

Backends: eager FP32 and BF16 (and on a GPU FP16 and channels_last), TorchScript (trace, and
script where the model allows), ``torch.export`` (dynamic batch), ``torch.compile`` (Inductor),
AOTInductor, ONNX with ONNX Runtime (FP32 and static INT8), OpenVINO on the CPU (FP32 with an
explicit f32 precision hint, BF16, and NNCF INT8; ``bench.runtimes``), and TensorRT through
torch-tensorrt's dynamo path. ONNX Runtime and OpenVINO come with the ``deploy`` extra. A backend
that cannot run here gets a row saying why; nothing is dropped silently. BF16 rows are their own
precision with their parity stated, never FP32.

Parity: on a fixed query/gallery set of images (seeded), each artifact's features against eager:
max absolute difference (relative to eager's largest), the lowest cosine similarity, and the
mean overlap of the top-10 gallery lists. An FP32 or half-precision artifact that fails is marked
failed and not timed; INT8 rows are timed with their parity stated, since INT8's gate is accuracy
on real images with trained weights (``python -m bench.export --int8``), which random images and
fresh weights cannot give. INT8 files are calibrated on ``--calibration DIR`` (else on the seeded
random gallery images; the row says which).

Timing: the contenders of a method are interleaved: each round calls every backend once on the
same batch, in an order rotated from round to round, so load from other processes falls on all of
them alike and cannot rank them backwards; each row reports the median and the minimum seconds
per call, throughput (images/s, from the median) and its ratio to eager FP32 measured in the same
rounds, at each batch of the sweep; latency p50/p90/p99 at batch 1; one warm-up call each
excluded. Each thread setting of ``--threads`` (default: the runtimes' default and 1) is a
separate set of rows. CUDA synchronisation on a GPU; peak GPU memory; GFLOPs per image counted as
2 x multiply-adds by ``torch.utils.flop_counter``. Flip test-time augmentation is off (it doubles
the cost). The quick mode (default on a CPU) uses a small sweep and skips the backends that
compile for minutes; ``--full`` runs everything. The load average is recorded before and after.

    python -m bench.compile_speed [--methods apnet lagnet] [--checkpoint apnet=PATH] [--full]
        [--size H W] [--backends ...] [--sweep 1 32] [--rounds N] [--threads default 1]
        [--calibration DIR] [--model-option NAME=VALUE ... (with one method)]

Prints a markdown table and writes ``bench/results/local/compile_speed_<device>.json`` and
``.png`` (``--update-committed``: ``bench/results/``; ``--out``: any path).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import platform
import re
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench import export, runtimes
from bench.models import BENCH_METHODS, BenchModelError, load_method_model, parse_model_options
from bench.parity import parity
from bench.runtimes import Unavailable
from common.files import atomic_write

RESULTS = Path(__file__).resolve().parent / "results"
SCHEMA_VERSION = 2  # 2: thread settings, interleaved min/median seconds, ratios to eager
QUICK = {"sweep": (1, 4), "rounds": 3, "parity": (2, 6), "threads": (None, 1)}
FULL = {"sweep": (1, 8, 32, 64, 128, 256), "rounds": 10, "parity": (16, 64), "threads": (None, 1)}
SLOW_ON_CPU = {"torch.compile", "aot_inductor"}
INT8_GATE = "accuracy on real images with trained weights: python -m bench.export --int8"


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
    info.update(runtimes.versions(), cpu_count=os.cpu_count(),
                torch_threads=torch.get_num_threads())
    with contextlib.suppress(OSError):
        info["cpu_flags"] = sorted({flag for line in Path("/proc/cpuinfo").read_text().splitlines()
                                    if line.startswith("flags") for flag in line.split()[2:]
                                    if flag in ("avx2", "avx512f", "avx512_bf16", "amx_bf16",
                                                "avx512_vnni", "amx_int8")})
    return info


# ---- backends: each returns a callable images -> features, or raises Unavailable ----

def _needs_cuda(device, what):
    if device.type != "cuda":
        raise Unavailable(f"{what} needs CUDA; this run is on the CPU")


def eager_fp32(model, example, device, tmp, threads):
    return model


def eager_half(dtype):
    def build(model, example, device, tmp, threads):
        if dtype == torch.float16:  # BF16 runs on CPUs too (AVX512-BF16 / AMX make it fast)
            _needs_cuda(device, f"eager {dtype}")
        half = _copy(model).to(dtype)
        return lambda x: half(x.to(dtype)).float()
    return build


def channels_last(model, example, device, tmp, threads):
    _needs_cuda(device, "channels_last")
    converted = _copy(model).to(memory_format=torch.channels_last)
    return lambda x: converted(x.contiguous(memory_format=torch.channels_last))


def torchscript_trace(model, example, device, tmp, threads):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example)
        torch.jit.save(traced, tmp / "model_trace.pt")
        return torch.jit.load(tmp / "model_trace.pt", map_location=device)


def torchscript_script(model, example, device, tmp, threads):
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


def torch_export(model, example, device, tmp, threads):
    torch.export.save(_export(model, example), tmp / "model.pt2")
    return torch.export.load(tmp / "model.pt2").module()


def torch_compile(model, example, device, tmp, threads):
    return torch.compile(model)


def aot_inductor(model, example, device, tmp, threads):
    try:
        package = torch._inductor.aoti_compile_and_package(_export(model, example),
                                                           package_path=str(tmp / "model_aoti.pt2"))
    except Exception as err:  # no C++ compiler, unsupported op, ...
        raise Unavailable(f"AOTInductor could not compile: {first_line(err)}") from None
    return torch._inductor.aoti_load_package(package)


def _onnx_file(model, example, tmp):
    """``tmp/model.onnx``, written once per method (the thread settings share it)."""
    path = tmp / "model.onnx"
    if not path.exists():
        runtimes.export_onnx(model, example, path)
    return path


CALIBRATION_FILE = "calibration.pt"  # the (1, 3, H, W) images bench_method saves for INT8


def _int8_file(name, model, example, tmp, fp32_file, quantize):
    """``tmp/name``, quantized once per method from the FP32 file on the saved calibration."""
    path = tmp / name
    if not path.exists():
        quantize(fp32_file(model, example, tmp), torch.load(tmp / CALIBRATION_FILE), path)
    return path


def _openvino_file(model, example, tmp):
    runtimes.require("openvino")
    path = tmp / "model.xml"
    if not path.exists():
        runtimes.onnx_to_openvino(_onnx_file(model, example, tmp), path)
    return path


def _on_cpu(device, what):
    if device.type != "cpu":
        raise Unavailable(f"{what} runs on the CPU; this run is on {device}")


def onnx_runtime(model, example, device, tmp, threads):
    _on_cpu(device, "ONNX Runtime's CPU provider")
    runtimes.require("onnxruntime")
    return runtimes.onnxruntime_runner(_onnx_file(model, example, tmp), threads)


def onnx_runtime_int8(model, example, device, tmp, threads):
    _on_cpu(device, "ONNX Runtime's CPU provider")
    return runtimes.onnxruntime_runner(_int8_file("model_int8.onnx", model, example, tmp,
                                                  _onnx_file, runtimes.quantize_onnx), threads)


def openvino(precision, int8=False):
    def build(model, example, device, tmp, threads):
        _on_cpu(device, "OpenVINO's CPU plugin")
        path = (_int8_file("model_int8.xml", model, example, tmp, _openvino_file,
                           runtimes.quantize_openvino) if int8
                else _openvino_file(model, example, tmp))
        return runtimes.openvino_runner(path, precision, threads)
    return build


def tensorrt(dtype):
    def build(model, example, device, tmp, threads):
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
    "onnxruntime int8": (onnx_runtime_int8, torch.int8),
    "openvino fp32": (openvino("f32"), torch.float32),
    "openvino bf16": (openvino("bf16"), torch.bfloat16),
    "openvino int8": (openvino("f32", int8=True), torch.int8),
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

def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _call_seconds(fn, images, device):
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(images)
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / 1000
    begin = time.perf_counter()
    fn(images)
    return time.perf_counter() - begin


def interleaved_times(contenders, images, device, rounds):
    """``{name: [seconds per call, one per round]}`` for the functions ``contenders`` (a dict),
    each called once per round on ``images`` in an order rotated from round to round (load from
    other processes then falls on every contender alike), after one warm-up call each."""
    names = list(contenders)
    times = {name: [] for name in names}
    if not names:
        return times
    with torch.no_grad():
        for name in names:
            contenders[name](images)
        _sync(device)
        for round_index in range(rounds):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                times[name].append(_call_seconds(contenders[name], images, device))
    return times


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def gflops_per_image(model, size, device):
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, *size, device=device))
    return counter.get_total_flops() / 1e9


def bench_method(name, checkpoint, device, settings, backends, size=None, options=None,
                 calibration=None):
    """The result rows of one method (built with ``options``, ``bench.models.load_method_model``):
    one per backend and thread setting of ``settings["threads"]`` (None: each runtime's
    default). ``calibration``: (1, 3, H, W) images for the INT8 files (default: the seeded
    random gallery images)."""
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
    sweep = {batch: torch.randn(batch, 3, *size, generator=generator).to(device)
             for batch in settings["sweep"]}
    default_threads = torch.get_num_threads()
    rows = []
    with _tmpdir() as tmp:
        torch.save(list(calibration) if calibration else
                   [image[None].cpu() for image in gallery], tmp / CALIBRATION_FILE)
        try:
            for threads in settings.get("threads", (None,)):
                torch.set_num_threads(threads or default_threads)
                rows += _bench_threads(model, device, settings, backends, tmp, threads,
                                       {**base, "threads": threads or f"default ({default_threads} "
                                        f"torch)", "calibration": "given images" if calibration
                                        else "seeded random gallery images"},
                                       query, gallery, reference, sweep)
        finally:
            torch.set_num_threads(default_threads)
    return rows


def _bench_threads(model, device, settings, backends, tmp, threads, base, query, gallery,
                   reference, sweep):
    """The rows of one thread setting: build and check every backend, then time them
    interleaved."""
    rows, contenders = [], {}
    for backend in backends:
        build, dtype = BACKENDS[backend]
        row = {**base, "backend": backend, "precision": str(dtype).replace("torch.", "")}
        rows.append(row)
        if device.type == "cpu" and backend in SLOW_ON_CPU and not settings.get("full"):
            row.update(status="skipped", reason="minutes of compilation on a CPU; run with --full")
            continue
        try:
            with torch.no_grad():
                fn = build(model, query[:2], device, tmp, threads)  # batch 2: no 0/1 specialising
                check = parity(reference, (fn(query).float(), fn(gallery).float()), dtype)
        except Unavailable as err:
            row.update(status="unavailable", reason=str(err))
            continue
        except Exception as err:  # a backend that breaks on this model: recorded, not hidden
            row.update(status="failed", reason=f"{type(err).__name__}: {first_line(err)}")
            continue
        row["parity"] = check
        if dtype == torch.int8:
            row["parity_gate"] = INT8_GATE
        elif not check["passed"]:
            row.update(status="failed", reason="parity check failed")
            continue
        contenders[backend] = (fn, row)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for backend, (_, row) in contenders.items():
        row.update(status="ok", throughput_img_s={}, seconds={}, vs_eager={})
    for batch, images in sweep.items():
        try:
            times = interleaved_times({b: fn for b, (fn, _) in contenders.items()}, images,
                                      device, settings["rounds"])
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            times = {}
        for backend, (_, row) in contenders.items():
            if backend not in times:
                row["throughput_img_s"][str(batch)] = None
                continue
            row["seconds"][str(batch)] = {"min": min(times[backend]),
                                          "median": statistics.median(times[backend])}
            row["throughput_img_s"][str(batch)] = batch / statistics.median(times[backend])
            if batch == 1:
                row["latency_ms"] = {f"p{q}": 1000 * percentile(times[backend], q)
                                     for q in (50, 90, 99)}
    eager = contenders.get("eager fp32")
    for backend, (_, row) in contenders.items():
        row["peak_memory_mb"] = (torch.cuda.max_memory_allocated(device) / 2**20
                                 if device.type == "cuda" else None)
        if eager:
            row["vs_eager"] = {b: (v / eager[1]["throughput_img_s"][b]
                                   if v and eager[1]["throughput_img_s"].get(b) else None)
                               for b, v in row["throughput_img_s"].items()}
    return rows


@contextlib.contextmanager
def _tmpdir():
    import tempfile
    with tempfile.TemporaryDirectory(prefix="bench_") as name:
        yield Path(name)


def markdown(rows, sweep):
    last = sweep[-1]
    header = ("| method | backend | threads | status | p50 ms (b1) | "
              + " | ".join(f"img/s b{b} (median; min-time)" for b in sweep)
              + f" | x eager b{last} | rel. err | cos min | top-10 |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for row in rows:
        if row["status"] == "ok":
            speed, seconds = row["throughput_img_s"], row["seconds"]
            ratio = row["vs_eager"].get(str(last))
            check = row["parity"]
            cells = [f"{row['latency_ms']['p50']:.1f}" if "latency_ms" in row else "",
                     *(f"{speed[str(b)]:.1f}; {b / seconds[str(b)]['min']:.1f}"
                       if speed.get(str(b)) else "oom" for b in sweep),
                     f"{ratio:.2f}" if ratio else "", f"{check['max_abs_diff_relative']:.1e}",
                     f"{check['min_cosine']:.5f}", f"{check['top10_agreement']:.2f}"]
        else:
            cells = [row.get("reason", "")] + [""] * (len(sweep) + 4)
        lines.append(f"| {row['method']} | {row['backend']} | {row['threads']} | {row['status']} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def fastest_summary(rows):
    """One line per method and thread setting: the backend with the highest throughput (any
    batch) among those that ran (FP32 and half precision parity-checked; INT8 gated on accuracy
    by bench.export), with its ratio to eager FP32 at that batch, and how many rows did not run."""
    lines = ["fastest per method (images/s at its best batch, ratio to eager FP32 in the same "
             "rounds):"]
    for method, threads in dict.fromkeys((row["method"], row["threads"]) for row in rows):
        group = [row for row in rows if row["method"] == method and row["threads"] == threads]
        ran = [row for row in group if row["status"] == "ok"
               and any(row["throughput_img_s"].values())]
        skipped = len(group) - len(ran)
        if not ran:
            lines.append(f"  {method} ({threads} threads): no backend ran ({skipped} "
                         f"unavailable or skipped)")
            continue
        speed, batch, best = max((v, b, row) for row in ran
                                 for b, v in row["throughput_img_s"].items() if v)
        ratio = best["vs_eager"].get(batch)
        ratio = f", {ratio:.2f}x eager at batch {batch}" if ratio else ""
        lines.append(f"  {method} ({threads} threads): {best['backend']} {speed:.1f} img/s{ratio} "
                     f"({skipped} of {len(group)} rows unavailable or skipped)")
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
                axis.plot(*zip(*points), marker="o",
                          label=f"{row['backend']} ({row['threads']} thr.)")
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
    parser.add_argument("--sweep", nargs="+", type=int, default=None, metavar="BATCH",
                        help="batch sizes to time (default: 1 4 quick, 1 to 256 --full)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="interleaved timing rounds per batch (default: 3 quick, 10 --full)")
    parser.add_argument("--threads", nargs="+", default=None, metavar="N",
                        help="thread settings, each its own rows: 'default' (each runtime's) "
                             "or a number (default: default 1)")
    parser.add_argument("--calibration", type=Path, default=None,
                        help="a folder of person crops to calibrate the INT8 rows on (default: "
                             "the seeded random gallery images)")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--out", type=Path, default=None, help="JSON path (PNG beside it)")
    target.add_argument("--update-committed", action="store_true",
                        help="write the committed bench/results/compile_speed_<device>.json "
                             "(_<methods> added when not all five; else bench/results/local/, "
                             "which git ignores)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    settings = {**(FULL if args.full else QUICK), "full": args.full}
    if args.sweep:
        settings["sweep"] = tuple(args.sweep)
    if args.rounds:
        settings["rounds"] = args.rounds
    if args.threads:
        if not all(t == "default" or (t.isdigit() and int(t) > 0) for t in args.threads):
            parser.error(f"--threads {' '.join(args.threads)}: give 'default' or positive numbers")
        settings["threads"] = tuple(None if t == "default" else int(t) for t in args.threads)
    if args.model_option and len(args.methods) != 1:
        parser.error("--model-option needs exactly one method in --methods")
    load_before = os.getloadavg()
    try:
        checkpoints = parse_checkpoints(args.checkpoint)
        options = parse_model_options(args.model_option)
        rows = []
        for name in args.methods:
            print(f"benchmarking {name} ...", file=sys.stderr, flush=True)
            size = args.size or BENCH_METHODS[name].input_size
            calibration = (export.calibration_images(args.calibration, size,
                                                     BENCH_METHODS[name].retrieval.interpolation)
                           if args.calibration else None)
            rows += bench_method(name, checkpoints.get(name), device, settings, args.backends,
                                 size=args.size, options=options, calibration=calibration)
    except (BenchModelError, export.ExportError) as err:
        sys.exit(f"bench.compile_speed: error: {err}")
    folder = RESULTS if args.update_committed else RESULTS / "local"
    subset = "" if set(args.methods) == set(BENCH_METHODS) else "_" + "_".join(args.methods)
    out = args.out or folder / f"compile_speed_{device_tag(device)}{subset}.json"
    payload = {"schema_version": SCHEMA_VERSION, "machine": machine(device),
               "load_average_1_5_15min": {"before": list(load_before),
                                          "after": list(os.getloadavg())},
               "mode": "full" if args.full else "quick", "sweep": list(settings["sweep"]),
               "rounds": settings["rounds"],
               "timing": "contenders interleaved round by round (order rotated), one warm-up "
                         "call each; throughput from the median, min-time beside it",
               "calibration": str(args.calibration) if args.calibration else
                              "seeded random gallery images",
               "gflops": "2 x multiply-adds (torch.utils.flop_counter), batch 1, no flip",
               "rows": rows}
    with atomic_write(out, "w") as handle:
        json.dump(payload, handle, indent=2)
        handle.write("\n")
    plot(rows, out.with_suffix(".png"))
    print(f"{payload['machine'].get('gpu') or payload['machine']['cpu']}, torch "
          f"{torch.__version__}, CUDA {torch.version.cuda}, TensorRT "
          f"{payload['machine']['tensorrt']}, ONNX Runtime {payload['machine']['onnxruntime']}, "
          f"OpenVINO {payload['machine']['openvino']}; {payload['mode']} mode; flip TTA off; "
          f"load average {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(markdown(rows, settings["sweep"]))
    print(fastest_summary(rows))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
