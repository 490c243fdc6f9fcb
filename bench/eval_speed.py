"""Speed and memory of the shared evaluation, each row beside its baseline measured in the same run.

Rows (labels from ``../shared/data/eval_reference`` where present; features are random):

* ``evaluate_rank`` at full Market-1501 scale (3,368 queries x 15,913 gallery) against the plain
  per-query loop (``common.eval.reference.evaluate_rank_loop``);
* ``re_ranking`` at 5,000 samples against one NumPy argsort of the 5,000 x 5,000 matrix and
  against the one-sample-at-a-time reference;
* k-reciprocal re-ranking of full Market-1501 (19,281 samples, 256-d clustered features):
  ``re_ranking_features`` against today's dense path (three ``compute_distance_matrix`` calls,
  then ``re_ranking``);
* the MARS protocol (1,980 query tracklets against the 12,180 test tracklets, the official
  ``mars_info`` arrays): ``evaluate_features`` against ``compute_distance_matrix`` +
  the previous sort-based ``evaluate_rank`` (``reference.evaluate_rank_sorting``);
* with ``--msmt17``: MSMT17 end to end from 2048-d features (11,659 x 82,161, the official
  labels), on concentrated distances (random L2-normalised features, the distances of an
  untrained network, full of float32 ties) and on spread ones (the same directions scaled by
  random lengths in [0, 1)), ``evaluate_features`` against the same two calls as MARS; and
  ``re_ranking_features`` of all 93,820 MSMT17 samples (256-d clustered features), which the
  dense path cannot take (its inputs alone would be about 31 GB).

The large rows each run in a fresh Python process, which reports CPU time (user + system, all
threads), wall time and peak resident memory (``VmHWM``, reset once the inputs are built) besides
the memory the inputs already held. Prints a markdown table and writes JSON, by default to the
git-ignored ``bench/results/local/eval_speed.json``; ``--update-committed`` writes the committed
``bench/results/eval_speed.json`` instead::

    python -m bench.eval_speed [--quick] [--msmt17] [--update-committed | --out PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from common.eval import (compute_distance_matrix, evaluate_features, evaluate_rank, re_ranking,
                         re_ranking_features)
from common.eval.reference import evaluate_rank_loop, evaluate_rank_sorting, re_ranking_loop
from common.files import atomic_write

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "eval_reference"
RESULTS = Path(__file__).resolve().parent / "results"
COMMITTED = RESULTS / "eval_speed.json"
LOCAL = RESULTS / "local" / "eval_speed.json"
PROJECT_ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- labels and features

def market_labels():
    """(q_pids, q_cams, g_pids, g_cams, source) at Market-1501 test size, pid -1 removed."""
    labels = REFERENCE / "market1501_labels"
    if labels.is_dir():
        import scipy.io
        load = lambda name, key: scipy.io.loadmat(labels / f"{name}.mat")[key].ravel().astype(int)
        g_pids, g_cams = load("testID", "testID"), load("testCam", "testCAM")
        keep = g_pids != -1
        return (load("queryID", "queryID"), load("queryCam", "queryCAM"), g_pids[keep],
                g_cams[keep], "official Market-1501 label arrays")
    rng = np.random.default_rng(0)
    g_pids = np.concatenate([np.repeat(np.arange(1, 751), 17), np.zeros(3163, int)])
    return (rng.integers(1, 751, 3368), rng.integers(1, 7, 3368), g_pids,
            rng.integers(1, 7, len(g_pids)), "synthetic labels of Market-1501 size")


def msmt17_labels():
    """(q_pids, q_cams, g_pids, g_cams) of the official MSMT17 test lists (h5py)."""
    import h5py
    lists = REFERENCE / "msmt17_lists"
    read = lambda name: np.asarray(h5py.File(lists / f"{name}.mat", "r")[name]).ravel().astype(int)
    return read("query_ID"), read("query_CAM"), read("gallery_ID"), read("gallery_CAM")


def mars_labels():
    """(q_pids, q_cams, g_pids, g_cams): the 1,980 query tracklets against all 12,180 test
    tracklets (pid -1 junk and the query itself, same identity and camera, are junk)."""
    import scipy.io
    info = REFERENCE / "mars_info"
    tracks = scipy.io.loadmat(info / "tracks_test_info.mat")["track_test_info"].astype(int)
    query = scipy.io.loadmat(info / "query_IDX.mat")["query_IDX"].ravel().astype(int) - 1
    return tracks[query, 2], tracks[query, 3], tracks[:, 2], tracks[:, 3]


def random_features(num, dim, kind, seed):
    """float32 (num, dim): ``"concentrated"`` unit vectors, ``"spread"`` ones scaled by random
    lengths in [0, 1), or ``"clustered"`` (identity centre + noise, so k-NN sets are real)."""
    generator = torch.Generator().manual_seed(seed)
    if kind == "clustered":
        centres = torch.randn(max(num // 10, 1), dim, generator=generator)
        pick = torch.randint(0, len(centres), (num,), generator=generator)
        return centres[pick].add_(torch.randn(num, dim, generator=generator))
    features = torch.randn(num, dim, generator=generator)
    features.div_(features.norm(dim=1, keepdim=True))
    if kind == "spread":
        features.mul_(torch.rand(num, 1, generator=generator))
    return features


# ------------------------------------------------------------------ measured calls (own process)

def summary(result):
    return {"mAP": result["mAP"], "rank1": float(result["cmc"][0]),
            "num_valid_queries": result["num_valid_queries"]}


def matrix_summary(matrix):
    """A fingerprint of a re-ranked matrix: its mean and a hash of each row's nearest column."""
    top1 = np.argmin(matrix, axis=1).astype(np.int64)
    return {"mean": float(np.mean(matrix, dtype=np.float64)),
            "top1_sha1": hashlib.sha1(top1.tobytes()).hexdigest()}


def prepare(spec):
    """The inputs of one measured call, built before the clock starts."""
    task, dim = spec["task"], spec.get("dim", 2048)
    if task in ("msmt17_eval", "mars_eval"):
        q_pids, q_cams, g_pids, g_cams = msmt17_labels() if task == "msmt17_eval" else mars_labels()
        q = random_features(len(q_pids), dim, spec["features"], 1)
        g = random_features(len(g_pids), dim, spec["features"], 2)
        return q, g, (q_pids, g_pids, q_cams, g_cams)
    num_q, num_g = {"market_rerank": (3368, 15913), "msmt17_rerank": (11659, 82161)}[task]
    features = random_features(num_q + num_g, dim, "clustered", 3)
    return features[:num_q], features[num_q:], None


def measured_call(spec, q, g, labels):
    """Runs the call of ``spec``; returns its summary and timings of parts, if any."""
    if spec["task"] in ("msmt17_eval", "mars_eval"):
        if spec["method"] == "ours":
            return summary(evaluate_features(q, g, *labels)), {}
        start = time.perf_counter()
        dist = compute_distance_matrix(q, g, block_size=2048)    # today's default block
        distances = time.perf_counter() - start
        result = evaluate_rank_sorting(dist, *labels)
        return ({"mAP": result["mAP"], "rank1": float(result["cmc"][0]),
                 "num_valid_queries": result["num_valid_queries"]},
                {"distances_seconds": distances})
    if spec["method"] == "ours":
        return matrix_summary(re_ranking_features(q, g)), {}
    start = time.perf_counter()
    blocks = (compute_distance_matrix(q, g), compute_distance_matrix(q, q),
              compute_distance_matrix(g, g))
    distances = time.perf_counter() - start
    start = time.perf_counter()
    out = re_ranking(*blocks)
    return matrix_summary(out), {"distances_seconds": distances,
                                 "re_ranking_call_seconds": time.perf_counter() - start}


def _status_kb(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def run_measurement(spec):
    """In a fresh process: builds the inputs, then times the call (CPU of all threads, wall)
    and its peak resident memory."""
    q, g, labels = prepare(spec)
    inputs_kb = _status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")      # VmHWM := current resident size
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_start, start = usage.ru_utime + usage.ru_stime, time.perf_counter()
    result, parts = measured_call(spec, q, g, labels)
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"result": result, "seconds": wall,
            "cpu_seconds": usage.ru_utime + usage.ru_stime - cpu_start,
            "peak_memory_gb": _status_kb("VmHWM") * 1024 / 1e9,
            "inputs_memory_gb": inputs_kb * 1024 / 1e9, **parts}


def measure_in_subprocess(spec):
    command = [sys.executable, "-m", "bench.eval_speed", "--measure", json.dumps(spec)]
    done = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"measurement {spec} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -------------------------------------------------------------------------------------- the rows

def timed(fn, repeats=1):
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu = usage.ru_utime + usage.ru_stime
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        best_cpu = min(best_cpu, usage.ru_utime + usage.ru_stime - cpu)
    return best, best_cpu, out


def row(task, size, ours, baseline_name=None, baseline=None, notes=()):
    out = {"task": task, "size": size, "seconds": ours["seconds"],
           "cpu_seconds": ours["cpu_seconds"], "baseline": baseline_name,
           "baseline_seconds": baseline["seconds"] if baseline else None,
           "baseline_cpu_seconds": baseline["cpu_seconds"] if baseline else None,
           "notes": list(notes)}
    for key in ("peak_memory_gb", "inputs_memory_gb", "result"):
        if key in ours:
            out[key] = ours[key]
            if baseline and key in baseline:
                out["baseline_" + key] = baseline[key]
    return out


def bench_market_evaluation(rows, quick):
    q_pids, q_cams, g_pids, g_cams, source = market_labels()
    if quick:
        q_pids, q_cams = q_pids[:800], q_cams[:800]
    dist = np.random.default_rng(0).random((len(q_pids), len(g_pids)), dtype=np.float32)
    args = (dist, q_pids, g_pids, q_cams, g_cams)
    size = f"{len(q_pids)} x {len(g_pids)}"
    loop_s, loop_cpu, loop = timed(lambda: evaluate_rank_loop(*args))
    for protocol in ("standard", "market"):
        fast_s, fast_cpu, fast = timed(lambda: evaluate_rank(*args, protocol=protocol), repeats=3)
        if protocol == "standard":
            assert np.isclose(fast["mAP"], loop["mAP"]) and np.allclose(fast["cmc"], loop["cmc"])
        rows.append(row(f"evaluate_rank ({protocol})", size,
                        {"seconds": fast_s, "cpu_seconds": fast_cpu}, "per-query numpy loop",
                        {"seconds": loop_s, "cpu_seconds": loop_cpu},
                        [source, "uniform random distances"]))


def bench_reranking_5000(rows, quick):
    num_all, num_q = 5000, 1000
    features = random_features(num_all, 256, "clustered", 0).numpy()
    dist = compute_distance_matrix(features, features)
    blocks = (dist[:num_q, num_q:], dist[:num_q, :num_q], dist[num_q:, num_q:])
    ours_s, ours_cpu, ours = timed(lambda: re_ranking(*blocks), repeats=2)
    ours = {"seconds": ours_s, "cpu_seconds": ours_cpu}
    argsort_s, argsort_cpu, _ = timed(lambda: np.argsort(dist, axis=1))
    rows.append(row("re_ranking", f"{num_all} samples", ours,
                    "one numpy argsort of the N x N matrix",
                    {"seconds": argsort_s, "cpu_seconds": argsort_cpu}))
    if not quick:
        ref_s, ref_cpu, ref = timed(lambda: re_ranking_loop(*blocks))
        difference = float(np.abs(re_ranking(*blocks) - ref).max())
        rows.append(row("re_ranking", f"{num_all} samples", ours, "sample-at-a-time reference",
                        {"seconds": ref_s, "cpu_seconds": ref_cpu},
                        [f"max abs difference {difference:.1e}"]))


def bench_market_reranking(rows):
    ours = measure_in_subprocess({"task": "market_rerank", "method": "ours", "dim": 256})
    dense = measure_in_subprocess({"task": "market_rerank", "method": "dense", "dim": 256})
    same_top1 = ours["result"]["top1_sha1"] == dense["result"]["top1_sha1"]
    rows.append(row("re_ranking_features", "19281 samples (Market), 256-d", ours,
                    "3 x compute_distance_matrix + re_ranking", dense,
                    [f"dense re_ranking call alone {dense['re_ranking_call_seconds']:.1f} s",
                     f"top-1 of every query {'identical' if same_top1 else 'DIFFERENT'}",
                     "mean distance difference "
                     f"{abs(ours['result']['mean'] - dense['result']['mean']):.1e}"]))


def bench_evaluation_from_features(rows, task, size, kinds, dim):
    for kind in kinds:
        spec = {"task": task, "features": kind, "dim": dim}
        ours = measure_in_subprocess({**spec, "method": "ours"})
        base = measure_in_subprocess({**spec, "method": "baseline"})
        same = (np.isclose(ours["result"]["mAP"], base["result"]["mAP"], rtol=1e-12)
                and ours["result"]["rank1"] == base["result"]["rank1"])
        rows.append(row(f"evaluate_features ({kind})", size, ours,
                        "compute_distance_matrix + previous evaluate_rank", base,
                        [f"{ours['result']['num_valid_queries']} valid queries",
                         f"baseline distances {base['distances_seconds']:.1f} s",
                         f"mAP and rank-1 {'identical' if same else 'DIFFERENT'}"]))


def bench_msmt17_reranking(rows):
    ours = measure_in_subprocess({"task": "msmt17_rerank", "method": "ours", "dim": 256})
    output_gb = 11659 * 82161 * 4 / 1e9
    above = ours["peak_memory_gb"] - ours["inputs_memory_gb"] - output_gb
    rows.append(row("re_ranking_features", "93820 samples (MSMT17), 256-d", ours,
                    notes=[f"{above:.2f} GB above the inputs and the {output_gb:.2f} GB output",
                           "dense inputs would be 31 GB"]))


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "threads": torch.get_num_threads(), "python": platform.python_version(),
            "numpy": np.__version__, "torch": torch.__version__}


def markdown(rows):
    lines = ["| task | size | ours: CPU s / wall s / peak GB | baseline | "
             "baseline: CPU s / wall s / peak GB | CPU ratio | notes |",
             "|---|---|---|---|---|---|---|"]

    def cell(cpu, wall, peak):
        return f"{cpu:.2f} / {wall:.2f} / " + (f"{peak:.2f}" if peak is not None else "-")

    for r in rows:
        ours = cell(r["cpu_seconds"], r["seconds"], r.get("peak_memory_gb"))
        if r["baseline"]:
            base = cell(r["baseline_cpu_seconds"], r["baseline_seconds"],
                        r.get("baseline_peak_memory_gb"))
            ratio = f"{r['baseline_cpu_seconds'] / r['cpu_seconds']:.1f}x"
        else:
            base, ratio = "-", "-"
        notes = list(r["notes"])
        if "inputs_memory_gb" in r:
            notes.insert(0, f"process held {r['inputs_memory_gb']:.2f} GB before the call "
                            "(interpreter, libraries, inputs)")
        lines.append(f"| {r['task']} | {r['size']} | {ours} | {r['baseline'] or '-'} | {base} | "
                     f"{ratio} | {'; '.join(notes)} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.eval_speed",
                                     description="Benchmark evaluation and re-ranking speed.")
    parser.add_argument("--quick", action="store_true",
                        help="only the in-process rows, with fewer queries and no reference "
                             "re-ranking")
    parser.add_argument("--msmt17", action="store_true",
                        help="add the MSMT17-scale rows (minutes of CPU and about 6 GB of memory)")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--update-committed", action="store_true",
                        help=f"write {COMMITTED.relative_to(PROJECT_ROOT)} "
                             f"(else {LOCAL.relative_to(PROJECT_ROOT)})")
    target.add_argument("--out", type=Path, default=None, help="JSON output path")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(run_measurement(json.loads(args.measure))))
        return
    out = args.out or (COMMITTED if args.update_committed else LOCAL)
    rows, skipped = [], []
    bench_market_evaluation(rows, args.quick)
    bench_reranking_5000(rows, args.quick)
    if not args.quick:
        bench_market_reranking(rows)
        if (REFERENCE / "mars_info").is_dir():
            bench_evaluation_from_features(rows, "mars_eval", "1980 x 12180 tracklets (MARS)",
                                           ["concentrated"], 2048)
        else:
            skipped.append(f"MARS rows: {REFERENCE / 'mars_info'} is absent")
    if args.msmt17:
        if (REFERENCE / "msmt17_lists").is_dir():
            bench_evaluation_from_features(rows, "msmt17_eval", "11659 x 82161 (MSMT17), 2048-d",
                                           ["concentrated", "spread"], 2048)
            bench_msmt17_reranking(rows)
        else:
            skipped.append(f"MSMT17 rows: {REFERENCE / 'msmt17_lists'} is absent")
    report = {"benchmark": "eval_speed", "machine": machine(), "quick": args.quick,
              "msmt17": args.msmt17, "rows": rows, "skipped": skipped}
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out, "w") as handle:
        json.dump(report, handle, indent=2)
    print(f"machine: {report['machine']}")
    print(markdown(rows))
    for reason in skipped:
        print(f"skipped: {reason}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
