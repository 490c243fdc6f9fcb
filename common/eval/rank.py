"""Ranking metrics for re-ID: CMC, mAP and mINP under three protocols.

The protocols are the ones in ``shared/specs/evaluation.md``:

* ``"standard"`` (torchreid / fast-reid, what the five methods' code reports): AP is the mean of
  the precision at each true match; queries with no valid match are skipped and the means divide
  by the number of valid queries.
* ``"market"`` (the official MATLAB ``compute_AP.m``): trapezoid AP,
  ``AP = 1/n * sum_k 1/2 * (p_prev(k) + k / r_k)`` with ``p_prev(k) = (k-1)/(r_k-1)`` (1 when
  ``r_k = 1``); a query with no valid match counts as AP 0 and CMC 0, and the means divide by all
  queries.
* ``"cuhk03"`` (the classic single-gallery-shot metric): CMC averaged over ``num_repeats`` seeded
  draws of one gallery image per identity; AP and INP on the whole gallery, as ``"standard"``.

Under every protocol a gallery image is *junk* for a query when it has the query's identity and
camera, or when its identity is -1. Junk images are removed from the ranking: they move neither
precision nor recall and ranks are counted without them. Identity 0 (Market-1501 distractors) is an
ordinary negative. Ties in distance are broken by gallery order, as a stable sort does.

How it is fast: junk is set to +inf and each gallery row is sorted by value only (numpy's SIMD
sort, rows split over threads); the junk-free rank of a good match is then one binary search of
its distance in its sorted row. A row in which another kept image has exactly the distance of a
good match is ranked again with a stable argsort, so tie-breaking by gallery order stays exact.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

__all__ = ["PROTOCOLS", "evaluate_rank"]

PROTOCOLS = ("standard", "market", "cuhk03")

_QUERY_CHUNK = 128


def evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50, protocol="standard",
                  num_repeats=10, seed=0):
    """Evaluates a query x gallery distance matrix (smaller = closer).

    Args:
        distmat: (Q, G) array-like of finite distances (numpy or torch, any float dtype).
        q_pids, g_pids: identities of the queries and the gallery images (-1 = junk).
        q_camids, g_camids: their camera ids.
        max_rank: length of the returned CMC curve. It is kept even when the gallery is smaller:
            ranks past the gallery size repeat the last value.
        protocol: ``"standard"``, ``"market"`` or ``"cuhk03"`` (module docstring).
        num_repeats, seed: the ``"cuhk03"`` protocol's number of seeded gallery draws.

    Returns:
        dict with ``cmc`` (float64 array of length ``max_rank``, fractions), ``mAP`` and ``mINP``
        (fractions), ``num_valid_queries`` (queries with at least one good match), ``num_queries``,
        ``protocol`` and ``per_query_ap`` (float64 array of length Q, NaN where the query has no
        good match). With no valid query every mean is 0.0.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if int(max_rank) < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    max_rank = int(max_rank)
    dist = _as_distance_array(distmat)
    q_pids, q_camids = _as_labels(q_pids, "q_pids"), _as_labels(q_camids, "q_camids")
    g_pids, g_camids = _as_labels(g_pids, "g_pids"), _as_labels(g_camids, "g_camids")
    num_q, num_g = dist.shape
    for name, arr, n in (("q_pids", q_pids, num_q), ("q_camids", q_camids, num_q),
                         ("g_pids", g_pids, num_g), ("g_camids", g_camids, num_g)):
        if len(arr) != n:
            raise ValueError(f"distmat is {num_q} x {num_g} but {name} has {len(arr)} entries")

    ranks, num_good = _good_match_ranks(dist, q_pids, g_pids, q_camids, g_camids)
    valid = num_good > 0
    per_query_ap = np.full(num_q, np.nan)
    inp = np.zeros(num_q)
    cmc_rows = np.zeros((num_q, max_rank))
    if valid.any():
        r = ranks[valid].astype(np.float64)
        k = np.arange(1, r.shape[1] + 1, dtype=np.float64)[None, :]
        n = num_good[valid].astype(np.float64)
        is_match = k <= n[:, None]
        precision_at_hit = np.where(is_match, k / np.maximum(r, 1.0), 0.0)
        if protocol == "market":
            precision_before = np.where(r > 1, (k - 1) / np.maximum(r - 1, 1.0), 1.0)
            terms = np.where(is_match, 0.5 * (precision_before + precision_at_hit), 0.0)
        else:
            terms = precision_at_hit
        per_query_ap[valid] = terms.sum(1) / n
        last_rank = r[np.arange(len(n)), num_good[valid] - 1]
        inp[valid] = n / last_rank
        if protocol == "cuhk03":
            cmc_rows[valid] = _single_gallery_shot_cmc(
                dist, q_pids, g_pids, q_camids, g_camids, np.flatnonzero(valid), max_rank,
                num_repeats, seed)
        else:
            first = r[:, 0]
            cmc_rows[valid] = np.arange(1, max_rank + 1)[None, :] >= first[:, None]

    num_valid = int(valid.sum())
    denominator = num_q if protocol == "market" else num_valid
    if denominator == 0:
        cmc, mean_ap, mean_inp = np.zeros(max_rank), 0.0, 0.0
    else:
        cmc = cmc_rows.sum(0) / denominator
        mean_ap = float(np.nansum(per_query_ap)) / denominator
        mean_inp = float(inp.sum()) / denominator
    return {
        "cmc": cmc,
        "mAP": mean_ap,
        "mINP": mean_inp,
        "num_valid_queries": num_valid,
        "num_queries": num_q,
        "protocol": protocol,
        "per_query_ap": per_query_ap,
    }


def _as_distance_array(distmat):
    dist = distmat.detach().cpu().numpy() if torch.is_tensor(distmat) else np.asarray(distmat)
    if dist.ndim != 2:
        raise ValueError(f"distmat must be 2-D (queries x gallery), got shape {dist.shape}")
    if dist.dtype not in (np.float32, np.float64):
        dist = dist.astype(np.float64 if dist.dtype.itemsize > 4 else np.float32)
    if dist.size and not np.isfinite(dist).all():
        raise ValueError("distmat contains NaN or infinite values; check the features for NaN "
                         "(e.g. an overflow under mixed precision) before evaluating")
    return dist


def _as_labels(values, name):
    arr = np.asarray(values.cpu() if torch.is_tensor(values) else values).reshape(-1)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise ValueError(f"{name} must hold integer ids, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def _good_match_ranks(dist, q_pids, g_pids, q_camids, g_camids):
    """Junk-free 1-based ranks of every good match, shape (Q, W), ascending, padded with 0.

    Returns ``(ranks, num_good)`` where ``num_good[q]`` is how many entries of row q are real.
    """
    num_q, num_g = dist.shape
    if num_q == 0 or num_g == 0:
        return np.zeros((num_q, 1), np.int64), np.zeros(num_q, np.int64)
    # The gallery grouped by identity: a query's good matches and its same-camera junk lie in
    # one block of this order.
    by_pid = np.argsort(g_pids, kind="stable")
    block_start = np.searchsorted(g_pids[by_pid], q_pids, "left")
    block_size = np.searchsorted(g_pids[by_pid], q_pids, "right") - block_start
    width = max(int(block_size.max()), 1)
    offsets = np.arange(width)[None, :]
    in_block = offsets < block_size[:, None]
    candidates = by_pid[np.minimum(block_start[:, None] + offsets, num_g - 1)]
    same_camera = g_camids[candidates] == q_camids[:, None]
    is_good = in_block & ~same_camera & (q_pids[:, None] != -1)
    is_block_junk = in_block & same_camera
    num_good = is_good.sum(1)
    unlabelled = np.flatnonzero(g_pids == -1)
    # float32 rounding keeps the order (a < b => f32(a) <= f32(b)); a tie it creates is caught
    # below and that row is ranked again in the original precision.
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
        # Another kept image at a good match's distance: the order among them is by index.
        for local in np.flatnonzero(((at_or_below - below > 1) & real).any(1)):
            q = start + local
            ranks[q] = _ranks_by_stable_sort(dist[q], q_pids[q], q_camids[q], g_pids, g_camids,
                                             width)

    with ThreadPoolExecutor(max(1, torch.get_num_threads())) as pool:
        list(pool.map(lambda span: rank_rows(*span),
                      [(a, min(a + _QUERY_CHUNK, num_q)) for a in range(0, num_q, _QUERY_CHUNK)]))
    return ranks, num_good


def _kept_gallery_pids(dist_row, q_pid, q_camid, g_pids, g_camids):
    """Gallery identities in stable distance order, junk removed, for one query."""
    order = np.argsort(dist_row, kind="stable")
    pids, cams = g_pids[order], g_camids[order]
    return pids[~(((pids == q_pid) & (cams == q_camid)) | (pids == -1))]


def _ranks_by_stable_sort(dist_row, q_pid, q_camid, g_pids, g_camids, width):
    kept = _kept_gallery_pids(dist_row, q_pid, q_camid, g_pids, g_camids)
    hits = np.flatnonzero(kept == q_pid) + 1 if q_pid != -1 else np.array([], np.int64)
    out = np.zeros(width, np.int64)
    out[:len(hits)] = hits
    return out


def _single_gallery_shot_cmc(dist, q_pids, g_pids, q_camids, g_camids, valid_queries, max_rank,
                             num_repeats, seed):
    """CUHK03 classic CMC: one random gallery image per identity, averaged over the draws."""
    rng = np.random.default_rng(seed)
    rows = np.zeros((len(valid_queries), max_rank))
    for i, q in enumerate(valid_queries):
        pids = _kept_gallery_pids(dist[q], q_pids[q], q_camids[q], g_pids, g_camids)
        for _ in range(num_repeats):
            # The first occurrence per identity in a random permutation is a uniform draw.
            perm = rng.permutation(len(pids))
            _, first = np.unique(pids[perm], return_index=True)
            chosen = np.sort(perm[first])
            hit = np.flatnonzero(pids[chosen] == q_pids[q])[0] + 1
            rows[i] += np.arange(1, max_rank + 1) >= hit
        rows[i] /= num_repeats
    return rows
