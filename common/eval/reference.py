"""Direct, slow transcriptions of the evaluation protocols and of k-reciprocal re-ranking.

The loops follow ``shared/specs/evaluation.md`` step by step, one query (or one sample) at a time,
with no vectorisation tricks. They are the oracles the tests compare the fast implementations in
``rank.py`` and ``rerank.py`` against; they and the previous sort-based ``evaluate_rank``
(:func:`evaluate_rank_sorting`) are the baselines ``bench/eval_speed.py`` measures against.
Nothing else should call them.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

__all__ = ["evaluate_rank_loop", "evaluate_rank_sorting", "re_ranking_loop"]


def evaluate_rank_loop(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50,
                       protocol="standard"):
    """Per-query evaluation with a stable argsort of every gallery row (§2.2 of evaluation.md).

    Supports the ``"standard"`` and ``"market"`` protocols and returns the same keys as
    :func:`common.eval.evaluate_rank` except ``per_query_ap``.
    """
    distmat = np.asarray(distmat)
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)
    cmc_sum, ap_sum, inp_sum, num_valid = np.zeros(max_rank), 0.0, 0.0, 0
    for q in range(len(q_pids)):
        order = np.argsort(distmat[q], kind="stable")
        pids, cams = g_pids[order], g_camids[order]
        junk = ((pids == q_pids[q]) & (cams == q_camids[q])) | (pids == -1)
        matches = (pids[~junk] == q_pids[q]).astype(np.float64)
        if matches.sum() == 0:
            continue
        num_valid += 1
        hit_ranks = np.flatnonzero(matches) + 1
        cmc = np.zeros(max_rank)
        cmc[hit_ranks[0] - 1:] = 1.0
        cmc_sum += cmc
        ap = 0.0
        for k, r in enumerate(hit_ranks, start=1):
            if protocol == "market":
                before = (k - 1) / (r - 1) if r > 1 else 1.0
                ap += 0.5 * (before + k / r)
            else:
                ap += k / r
        ap_sum += ap / len(hit_ranks)
        inp_sum += len(hit_ranks) / hit_ranks[-1]
    denominator = len(q_pids) if protocol == "market" else num_valid
    if denominator == 0:
        cmc_sum, denominator = np.zeros(max_rank), 1
    return {"cmc": cmc_sum / denominator, "mAP": ap_sum / denominator,
            "mINP": inp_sum / denominator, "num_valid_queries": num_valid,
            "num_queries": len(q_pids), "protocol": protocol}


def evaluate_rank_sorting(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    """The ``"standard"`` protocol as ``evaluate_rank`` computed it before it ranked only the
    good matches: every gallery row sorted by value (junk set to +inf, NumPy's sort, chunks of
    128 queries over ``torch.get_num_threads()`` threads), each good match's rank found by binary
    search, and any row in which another image has exactly a good match's distance ranked again
    with a stable argsort. The baseline of ``bench/eval_speed.py``; returns ``mAP``, ``mINP``,
    ``cmc`` and ``num_valid_queries``.
    """
    dist = np.asarray(distmat)
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)
    num_q, num_g = dist.shape
    by_pid = np.argsort(g_pids, kind="stable")
    block_start = np.searchsorted(g_pids[by_pid], q_pids, "left")
    block_size = np.searchsorted(g_pids[by_pid], q_pids, "right") - block_start
    width = max(int(block_size.max(initial=0)), 1)
    offsets = np.arange(width)[None, :]
    in_block = offsets < block_size[:, None]
    candidates = by_pid[np.minimum(block_start[:, None] + offsets, num_g - 1)]
    same_camera = g_camids[candidates] == q_camids[:, None]
    is_good = in_block & ~same_camera & (q_pids[:, None] != -1)
    is_block_junk = in_block & same_camera
    num_good = is_good.sum(1)
    unlabelled = np.flatnonzero(g_pids == -1)
    dist32 = dist.astype(np.float32, copy=False)
    ranks = np.zeros((num_q, width), np.int64)

    def rank_rows(start, stop):
        rows = np.arange(stop - start)[:, None]
        cand = candidates[start:stop]
        row_dist = dist32[start:stop].copy()
        junk_r, junk_c = np.nonzero(is_block_junk[start:stop])
        row_dist[junk_r, cand[junk_r, junk_c]] = np.inf
        row_dist[:, unlabelled] = np.inf
        row_dist.sort(axis=1)
        good_dist = np.where(is_good[start:stop], dist32[start:stop][rows, cand], np.inf)
        good_dist.sort(axis=1)
        sorted_rows, needles = torch.from_numpy(row_dist), torch.from_numpy(good_dist)
        below = torch.searchsorted(sorted_rows, needles).numpy()
        at_or_below = torch.searchsorted(sorted_rows, needles, right=True).numpy()
        real = offsets < num_good[start:stop, None]
        ranks[start:stop] = np.where(real, below + 1, 0)
        for local in np.flatnonzero(((at_or_below - below > 1) & real).any(1)):
            q = start + local
            order = np.argsort(dist[q], kind="stable")
            pids, cams = g_pids[order], g_camids[order]
            kept = pids[~(((pids == q_pids[q]) & (cams == q_camids[q])) | (pids == -1))]
            hits = np.flatnonzero(kept == q_pids[q]) + 1
            ranks[q] = 0
            ranks[q, :len(hits)] = hits

    with ThreadPoolExecutor(max(1, torch.get_num_threads())) as pool:
        list(pool.map(lambda span: rank_rows(*span),
                      [(a, min(a + 128, num_q)) for a in range(0, num_q, 128)]))
    valid = num_good > 0
    r = ranks[valid].astype(np.float64)
    n = num_good[valid].astype(np.float64)
    k = np.arange(1, width + 1)[None, :]
    ap = np.where(k <= n[:, None], k / np.maximum(r, 1.0), 0.0).sum(1) / n
    inp = n / r[np.arange(len(n)), num_good[valid] - 1]
    cmc = (np.arange(1, max_rank + 1)[None, :] >= r[:, :1]).sum(0) / max(len(n), 1)
    return {"mAP": float(ap.mean()) if len(n) else 0.0,
            "mINP": float(inp.mean()) if len(n) else 0.0, "cmc": cmc,
            "num_valid_queries": int(valid.sum())}


def _k_reciprocal(initial_rank, i, k):
    forward = initial_rank[i, :k + 1]
    backward = initial_rank[forward, :k + 1]
    return forward[np.where(backward == i)[0]]


def re_ranking_loop(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3):
    """k-reciprocal re-ranking, one sample at a time (steps 1-8 of evaluation.md §2.3)."""
    q_g_dist = np.asarray(q_g_dist, np.float32)
    num_q = q_g_dist.shape[0]
    original = np.block([[np.asarray(q_q_dist, np.float32), q_g_dist],
                         [q_g_dist.T, np.asarray(g_g_dist, np.float32)]])
    num_all = original.shape[0]
    original = np.square(original)
    original = (original / np.max(original, axis=0)).T
    initial_rank = np.argsort(original, axis=1, kind="stable")
    v = np.zeros_like(original)
    half = int(np.around(k1 / 2.0))
    for i in range(num_all):
        reciprocal = _k_reciprocal(initial_rank, i, k1)
        expansion = reciprocal
        for candidate in reciprocal:
            candidate_set = _k_reciprocal(initial_rank, candidate, half)
            if len(np.intersect1d(candidate_set, reciprocal)) > 2.0 / 3 * len(candidate_set):
                expansion = np.append(expansion, candidate_set)
        expansion = np.unique(expansion)
        weight = np.exp(-original[i, expansion])
        v[i, expansion] = weight / np.sum(weight)
    if k2 != 1:
        v = np.stack([v[initial_rank[i, :k2]].mean(0) for i in range(num_all)])
    jaccard = np.zeros((num_q, num_all), np.float32)
    for i in range(num_q):
        overlap = np.minimum(v[i][None, :], v).sum(1)
        jaccard[i] = 1 - overlap / (2 - overlap)
    final = jaccard * (1 - lambda_value) + original[:num_q] * lambda_value
    return final[:, num_q:]
