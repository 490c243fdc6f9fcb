"""Speed of the shared evaluation: ranking metrics and k-reciprocal re-ranking.

Measured in one run, each against its baseline:

* ``evaluate_rank`` at full Market-1501 scale (3,368 queries x 15,913 gallery, the official label
  arrays from ``../shared/data/eval_reference`` when present, else synthetic labels of the same
  size) against the plain per-query NumPy loop (``common.eval.reference.evaluate_rank_loop``).
* ``evaluate_rank`` on the official MARS video protocol (1,980 query tracklets x the 12,180 test
  tracklets, queries included, from ``eval_reference/mars_info``; skipped when absent), with the
  number of queries that have a valid match (all 1,980).
* ``re_ranking`` at 5,000 samples against one NumPy argsort of the 5,000 x 5,000 matrix, and
  against the one-sample-at-a-time reference; then at full Market size (19,281 samples) with the
  peak memory of NumPy allocations (tracemalloc) on top of its inputs.

Prints a markdown table and writes ``bench/results/eval_speed.json``::

    python -m bench.eval_speed [--quick] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch

from common.eval import compute_distance_matrix, evaluate_rank, re_ranking
from common.eval.reference import evaluate_rank_loop, re_ranking_loop
from common.files import atomic_write

LABELS = Path(__file__).resolve().parents[2] / "shared/data/eval_reference/market1501_labels"
MARS_INFO = LABELS.parent / "mars_info"
RESULTS = Path(__file__).resolve().parent / "results" / "eval_speed.json"


def market_labels():
    """(q_pids, q_cams, g_pids, g_cams, source) at Market-1501 test size, pid -1 removed."""
    if LABELS.is_dir():
        import scipy.io
        load = lambda name, key: scipy.io.loadmat(LABELS / f"{name}.mat")[key].ravel().astype(int)
        g_pids, g_cams = load("testID", "testID"), load("testCam", "testCAM")
        keep = g_pids != -1
        return (load("queryID", "queryID"), load("queryCam", "queryCAM"), g_pids[keep],
                g_cams[keep], "official Market-1501 label arrays")
    rng = np.random.default_rng(0)
    g_pids = np.concatenate([np.repeat(np.arange(1, 751), 17), np.zeros(3163, int)])
    return (rng.integers(1, 751, 3368), rng.integers(1, 7, 3368), g_pids,
            rng.integers(1, 7, len(g_pids)), "synthetic labels of Market-1501 size")


def timed(fn, repeats=1):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def clustered_features(num, dim=256, num_ids=None, seed=0):
    """Features with identity structure: cluster centre + noise (re-ranking sees real k-NN sets)."""
    rng = np.random.default_rng(seed)
    num_ids = num_ids or max(num // 10, 1)
    centres = rng.normal(size=(num_ids, dim)).astype(np.float32)
    return centres[rng.integers(0, num_ids, num)] + rng.normal(size=(num, dim)).astype(np.float32)


def bench_evaluation(rows, quick):
    q_pids, q_cams, g_pids, g_cams, source = market_labels()
    if quick:
        q_pids, q_cams = q_pids[:800], q_cams[:800]
    dist = np.random.default_rng(0).random((len(q_pids), len(g_pids)), dtype=np.float32)
    args = (dist, q_pids, g_pids, q_cams, g_cams)
    fast_s, fast = timed(lambda: evaluate_rank(*args), repeats=3)
    loop_s, loop = timed(lambda: evaluate_rank_loop(*args))
    assert np.isclose(fast["mAP"], loop["mAP"]) and np.allclose(fast["cmc"], loop["cmc"])
    size = f"{len(q_pids)} x {len(g_pids)}"
    rows.append({"task": "evaluate_rank (standard)", "size": size, "labels": source,
                 "seconds": fast_s, "baseline": "per-query numpy loop", "baseline_seconds": loop_s})
    market_s, _ = timed(lambda: evaluate_rank(*args, protocol="market"), repeats=3)
    rows.append({"task": "evaluate_rank (market)", "size": size, "labels": source,
                 "seconds": market_s, "baseline": "per-query numpy loop",
                 "baseline_seconds": loop_s})


def bench_mars_protocol(rows):
    """The official MARS evaluation: query = the query_IDX rows of the test table, gallery = every
    test tracklet (pid -1 junk, pid 0 distractors)."""
    if not MARS_INFO.is_dir():
        print(f"skipping the MARS protocol: {MARS_INFO} is absent")
        return
    import scipy.io
    test = scipy.io.loadmat(MARS_INFO / "tracks_test_info.mat")["track_test_info"].astype(int)
    query = scipy.io.loadmat(MARS_INFO / "query_IDX.mat")["query_IDX"].ravel().astype(int) - 1
    dist = np.random.default_rng(0).random((len(query), len(test)), dtype=np.float32)
    args = (dist, test[query, 2], test[:, 2], test[query, 3], test[:, 3])
    fast_s, fast = timed(lambda: evaluate_rank(*args), repeats=3)
    loop_s, loop = timed(lambda: evaluate_rank_loop(*args))
    assert np.isclose(fast["mAP"], loop["mAP"]) and np.allclose(fast["cmc"], loop["cmc"])
    rows.append({"task": "evaluate_rank (MARS tracklets)", "size": f"{len(query)} x {len(test)}",
                 "labels": f"official MARS protocol arrays, {fast['num_valid_queries']}/"
                           f"{fast['num_queries']} queries with a valid match",
                 "seconds": fast_s, "baseline": "per-query numpy loop", "baseline_seconds": loop_s})


def bench_reranking(rows, quick):
    num_all, num_q = 5000, 1000
    features = clustered_features(num_all)
    dist = compute_distance_matrix(features, features)
    blocks = (dist[:num_q, num_q:], dist[:num_q, :num_q], dist[num_q:, num_q:])
    ours_s, ours = timed(lambda: re_ranking(*blocks), repeats=2)
    argsort_s, _ = timed(lambda: np.argsort(dist, axis=1))
    rows.append({"task": "re_ranking", "size": f"{num_all} samples", "seconds": ours_s,
                 "baseline": "one numpy argsort of the N x N matrix",
                 "baseline_seconds": argsort_s})
    if not quick:
        ref_s, ref = timed(lambda: re_ranking_loop(*blocks))
        rows.append({"task": "re_ranking", "size": f"{num_all} samples", "seconds": ours_s,
                     "baseline": "sample-at-a-time reference", "baseline_seconds": ref_s,
                     "max_abs_difference": float(np.abs(ours - ref).max())})
        q_pids, _, g_pids, _, _ = market_labels()
        num_q, num_g = len(q_pids), len(g_pids)
        q = clustered_features(num_q, num_ids=750, seed=1)
        g = clustered_features(num_g, num_ids=750, seed=2)
        blocks = (compute_distance_matrix(q, g), compute_distance_matrix(q, q),
                  compute_distance_matrix(g, g))
        tracemalloc.start()
        full_s, _ = timed(lambda: re_ranking(*blocks))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        inputs = sum(b.nbytes for b in blocks)
        rows.append({"task": "re_ranking", "size": f"{num_q + num_g} samples (Market)",
                     "seconds": full_s, "peak_memory_gb": peak / 1e9,
                     "input_memory_gb": inputs / 1e9, "baseline": None, "baseline_seconds": None})


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
    lines = ["| task | size | ours (s) | baseline | baseline (s) | speed-up | notes |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        base = row["baseline_seconds"]
        notes = []
        if "peak_memory_gb" in row:
            notes.append(f"peak {row['peak_memory_gb']:.2f} GB over {row['input_memory_gb']:.2f}"
                         f" GB of inputs")
        if "max_abs_difference" in row:
            notes.append(f"max abs difference {row['max_abs_difference']:.1e}")
        if "labels" in row:
            notes.append(row["labels"])
        base_text = f"{base:.3f}" if base else "-"
        speedup = f"{base / row['seconds']:.1f}x" if base else "-"
        lines.append(f"| {row['task']} | {row['size']} | {row['seconds']:.3f} | "
                     f"{row['baseline'] or '-'} | {base_text} | {speedup} | {'; '.join(notes)} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Benchmark evaluation and re-ranking speed.")
    parser.add_argument("--quick", action="store_true",
                        help="fewer queries, no reference re-ranking and no full-size re-ranking")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON output path")
    args = parser.parse_args(argv)
    rows = []
    bench_evaluation(rows, args.quick)
    bench_mars_protocol(rows)
    bench_reranking(rows, args.quick)
    report = {"benchmark": "eval_speed", "machine": machine(), "quick": args.quick, "rows": rows}
    with atomic_write(args.out, "w") as handle:
        json.dump(report, handle, indent=2)
    print(f"machine: {report['machine']}")
    print(markdown(rows))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
