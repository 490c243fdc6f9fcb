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

How it scales. AP, INP and the CMC need only the junk-free rank of each good match, never a sorted
gallery row. The rank of a good match g is one plus the number of kept gallery images closer than
g, plus the number at exactly g's distance that come before g in the gallery. Each row is cut into
buckets by a monotone map of the distance (a linear map of the row's [min, max] onto at most 65,536
integers): one histogram pass counts the kept images in the buckets below g's, and only the few
images that share a bucket with a good match are compared exactly, by distance in the input's own
precision and then by gallery index. Queries are handled in blocks of rows, a few rows at a time
in each thread, so memory stays at one block whatever the size of the matrix;
:class:`RankingAccumulator` takes the blocks one at a time, which is how
:func:`common.eval.evaluate_features` ranks distances it computes block by block.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

__all__ = ["PROTOCOLS", "RankingAccumulator", "evaluate_rank"]

PROTOCOLS = ("standard", "market", "cuhk03")

_BLOCK_ENTRIES = 1 << 22     # distances per block of queries taken from a full matrix
_CHUNK_ENTRIES = 1 << 18     # distances one thread ranks at a time (cache-sized)
_MAX_BUCKETS = 1 << 16


def evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50, protocol="standard",
                  num_repeats=10, seed=0):
    """Evaluates a query x gallery distance matrix (smaller = closer).

    Args:
        distmat: (Q, G) array-like of finite distances (numpy or torch, any real dtype; float32
            and float64 are compared in their own precision, other types as float32/float64).
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

    Raises:
        ValueError: unknown protocol, ``max_rank < 1``, a label array whose length does not match
            the matrix, or a NaN / infinite distance.
    """
    dist = _as_matrix(distmat)
    metrics = RankingAccumulator(q_pids, g_pids, q_camids, g_camids, max_rank, protocol,
                                 num_repeats, seed)
    num_q, num_g = dist.shape
    for name, n in (("q_pids", len(metrics.q_pids)), ("q_camids", len(metrics.q_camids)),
                    ("g_pids", len(metrics.g_pids)), ("g_camids", len(metrics.g_camids))):
        expected = num_q if name.startswith("q") else num_g
        if n != expected:
            raise ValueError(f"distmat is {num_q} x {num_g} but {name} has {n} entries")
    rows = max(1, _BLOCK_ENTRIES // max(num_g, 1))
    for start in range(0, num_q, rows):
        metrics.add(dist[start:start + rows])
    return metrics.results()


class RankingAccumulator:
    """:func:`evaluate_rank` over a distance matrix given as consecutive blocks of query rows.

    ``add`` each (B, G) block in query order, then call ``results`` (same dict as
    :func:`evaluate_rank`). Memory is that of one block plus O(Q) numbers.
    """

    def __init__(self, q_pids, g_pids, q_camids, g_camids, max_rank=50, protocol="standard",
                 num_repeats=10, seed=0):
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
        if int(max_rank) < 1:
            raise ValueError(f"max_rank must be >= 1, got {max_rank}")
        self.max_rank, self.protocol, self.num_repeats = int(max_rank), protocol, num_repeats
        self.q_pids, self.q_camids = _as_labels(q_pids, "q_pids"), _as_labels(q_camids, "q_camids")
        self.g_pids, self.g_camids = _as_labels(g_pids, "g_pids"), _as_labels(g_camids, "g_camids")
        if len(self.g_pids) != len(self.g_camids):
            raise ValueError(f"g_pids has {len(self.g_pids)} entries but g_camids has "
                             f"{len(self.g_camids)}")
        if len(self.q_pids) != len(self.q_camids):
            raise ValueError(f"q_pids has {len(self.q_pids)} entries but q_camids has "
                             f"{len(self.q_camids)}")
        num_q = len(self.q_pids)
        # The gallery grouped by identity: a query's good matches and its same-camera junk lie in
        # one stretch of this order.
        self._by_pid = np.argsort(self.g_pids, kind="stable")
        self._sorted_pids = self.g_pids[self._by_pid]
        self._unlabelled = np.flatnonzero(self.g_pids == -1)
        # One width for every block (the largest identity in the gallery that a query has), so
        # the per-query sums do not depend on how the queries are split into blocks.
        block_size = (np.searchsorted(self._sorted_pids, self.q_pids, "right")
                      - np.searchsorted(self._sorted_pids, self.q_pids, "left"))
        self._width = max(int(block_size.max(initial=0)), 1)
        self._rng = np.random.default_rng(seed)
        self._next = 0
        self.per_query_ap = np.full(num_q, np.nan)
        self._inp = np.zeros(num_q)
        self._first_hit = np.zeros(num_q, np.int64)          # 0: no good match
        self._cmc_rows = np.zeros((num_q, self.max_rank))    # "cuhk03" only

    def add(self, block):
        """Ranks the next ``len(block)`` queries; ``block`` is their (B, G) distances."""
        dist = _as_matrix(block)
        num_rows, num_g = dist.shape
        start, stop = self._next, self._next + num_rows
        if num_g != len(self.g_pids) or stop > len(self.q_pids):
            raise ValueError(f"a block of {num_rows} x {num_g} distances does not fit queries "
                             f"{start}..{stop - 1} of {len(self.q_pids)} x {len(self.g_pids)}")
        self._next = stop
        good, num_good, junk_rows, junk_cols = self._good_and_junk(self.q_pids[start:stop],
                                                                   self.q_camids[start:stop])
        valid = np.flatnonzero(num_good > 0)
        if valid.size == 0:
            return
        ranks = _ranks_in_threads(dist, valid, good, num_good, junk_rows, junk_cols,
                                  self._unlabelled)
        r = ranks.astype(np.float64)
        n = num_good[valid].astype(np.float64)
        k = np.arange(1, r.shape[1] + 1, dtype=np.float64)[None, :]
        is_match = k <= n[:, None]
        precision_at_hit = np.where(is_match, k / np.maximum(r, 1.0), 0.0)
        if self.protocol == "market":
            precision_before = np.where(r > 1, (k - 1) / np.maximum(r - 1, 1.0), 1.0)
            terms = np.where(is_match, 0.5 * (precision_before + precision_at_hit), 0.0)
        else:
            terms = precision_at_hit
        rows = start + valid
        self.per_query_ap[rows] = terms.sum(1) / n
        self._inp[rows] = n / r[np.arange(len(n)), num_good[valid] - 1]
        self._first_hit[rows] = ranks[:, 0]
        if self.protocol == "cuhk03":
            self._cmc_rows[rows] = _single_gallery_shot_cmc(
                dist, self.q_pids[rows], self.q_camids[rows], self.g_pids, self.g_camids, valid,
                self.max_rank, self.num_repeats, self._rng)

    def results(self):
        """The :func:`evaluate_rank` dict; every query must have been added."""
        num_q = len(self.q_pids)
        if self._next != num_q:
            raise ValueError(f"only {self._next} of {num_q} queries were added")
        valid = self._first_hit > 0
        num_valid = int(valid.sum())
        denominator = num_q if self.protocol == "market" else num_valid
        if denominator == 0:
            cmc, mean_ap, mean_inp = np.zeros(self.max_rank), 0.0, 0.0
        else:
            if self.protocol == "cuhk03":
                hits = self._cmc_rows.sum(0)
            else:
                first = self._first_hit[valid]
                hits = np.cumsum(np.bincount(np.minimum(first, self.max_rank + 1),
                                             minlength=self.max_rank + 2))[1:self.max_rank + 1]
            cmc = hits / denominator
            mean_ap = float(np.nansum(self.per_query_ap)) / denominator
            mean_inp = float(self._inp.sum()) / denominator
        return {
            "cmc": np.asarray(cmc, dtype=np.float64),
            "mAP": mean_ap,
            "mINP": mean_inp,
            "num_valid_queries": num_valid,
            "num_queries": num_q,
            "protocol": self.protocol,
            "per_query_ap": self.per_query_ap.copy(),
        }

    def _good_and_junk(self, q_pids, q_camids):
        """Good matches (B, W) padded, their counts, and the (row, column) same-camera junk."""
        num_rows, num_g = len(q_pids), len(self.g_pids)
        if num_g == 0:
            return (np.zeros((num_rows, 1), np.int64), np.zeros(num_rows, np.int64),
                    np.zeros(0, np.int64), np.zeros(0, np.int64))
        block_start = np.searchsorted(self._sorted_pids, q_pids, "left")
        block_size = np.searchsorted(self._sorted_pids, q_pids, "right") - block_start
        offsets = np.arange(self._width)[None, :]
        in_block = offsets < block_size[:, None]
        candidates = self._by_pid[np.minimum(block_start[:, None] + offsets, num_g - 1)]
        same_camera = self.g_camids[candidates] == q_camids[:, None]
        is_good = in_block & ~same_camera & (q_pids[:, None] != -1)
        junk_rows, junk_slots = np.nonzero(in_block & same_camera)
        # Good matches first in each row (stable: ascending gallery index).
        order = np.argsort(~is_good, axis=1, kind="stable")
        good = np.take_along_axis(candidates, order, axis=1)
        return good, is_good.sum(1), junk_rows, candidates[junk_rows, junk_slots]


def _as_matrix(distmat):
    if torch.is_tensor(distmat):
        distmat = distmat.detach().cpu()
        if distmat.dtype in (torch.float16, torch.bfloat16):
            distmat = distmat.float()
        distmat = distmat.numpy()
    dist = np.asarray(distmat)
    if dist.ndim != 2:
        raise ValueError(f"distmat must be 2-D (queries x gallery), got shape {dist.shape}")
    if dist.dtype not in (np.float32, np.float64):
        small_float = np.issubdtype(dist.dtype, np.floating) and dist.dtype.itemsize <= 4
        dist = dist.astype(np.float32 if small_float else np.float64)
    return dist


def _as_labels(values, name):
    arr = np.asarray(values.cpu() if torch.is_tensor(values) else values).reshape(-1)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise ValueError(f"{name} must hold integer ids, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def _ranks_in_threads(dist, rows, good, num_good, junk_rows, junk_cols, unlabelled):
    """Ranks of the good matches of ``rows`` (see :func:`_good_match_ranks`), the rows split into
    cache-sized chunks over ``torch.get_num_threads()`` threads (NumPy releases the GIL)."""
    per_chunk = max(1, _CHUNK_ENTRIES // max(dist.shape[1], 1))
    chunks = [rows[a:a + per_chunk] for a in range(0, len(rows), per_chunk)]

    def rank_chunk(chunk):
        local_row = np.full(len(dist), -1)
        local_row[chunk] = np.arange(len(chunk))
        junk_local = local_row[junk_rows]
        keep = junk_local >= 0
        return _good_match_ranks(dist[chunk], good[chunk], num_good[chunk], junk_local[keep],
                                 junk_cols[keep], unlabelled)

    with ThreadPoolExecutor(max(1, min(torch.get_num_threads(), len(chunks)))) as pool:
        return np.concatenate(list(pool.map(rank_chunk, chunks)))


def _good_match_ranks(dist, good, num_good, junk_rows, junk_cols, unlabelled):
    """Junk-free 1-based ranks of the good matches of each row, ascending, padded with 0.

    Args:
        dist: (R, G) float32 or float64 distances.
        good: (R, W) gallery indices; the first ``num_good[r]`` of row r are its good matches.
        junk_rows, junk_cols: the (row, column) entries that are same-identity same-camera junk.
        unlabelled: gallery columns that are junk for every row (identity -1).
    """
    num_rows, num_g = dist.shape
    lo, hi = dist.min(axis=1), dist.max(axis=1)
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        raise ValueError("distmat contains NaN or infinite values; check the features for NaN "
                         "(e.g. an overflow under mixed precision) before evaluating")
    # Bucket of each entry: a monotone map of the distance onto integers, each row its own range
    # of num_buckets + 1 ids (the last one for junk). Entries in a lower bucket are strictly
    # closer; entries in the same bucket are compared exactly below.
    num_buckets = int(min(max(num_g, 16), _MAX_BUCKETS))
    span = hi.astype(np.float64) - lo
    work = dist if np.all(span < np.finfo(dist.dtype).max) else dist.astype(np.float64)
    scale = np.minimum((num_buckets - 1) / np.where(span > 0, span, np.inf), 1e30)
    scaled = work - lo.astype(work.dtype)[:, None]
    scaled *= scale.astype(work.dtype)[:, None]
    np.minimum(scaled, num_buckets - 1, out=scaled)
    row_base = np.arange(num_rows) * (num_buckets + 1)
    scaled += row_base.astype(work.dtype)[:, None]     # exact: R * (num_buckets + 1) < 2**24
    bucket = scaled.astype(np.intp)
    junk_bucket = row_base + num_buckets
    if unlabelled.size:
        bucket[:, unlabelled] = junk_bucket[:, None]
    bucket[junk_rows, junk_cols] = junk_bucket[junk_rows]
    flat_bucket = bucket.ravel()
    counts = np.bincount(flat_bucket, minlength=num_rows * (num_buckets + 1))
    counts = counts.reshape(num_rows, num_buckets + 1)
    closer_buckets = (np.cumsum(counts, axis=1) - counts).ravel()

    real = np.arange(good.shape[1])[None, :] < num_good[:, None]
    good_row, good_slot = np.nonzero(real)
    good_col = good[good_row, good_slot]
    good_bucket = bucket[good_row, good_col]
    # Every kept entry that shares a bucket with a good match (the good matches included), in
    # row-major order, then sorted by (bucket, distance, gallery index).
    flagged = np.zeros(num_rows * (num_buckets + 1), bool)
    flagged[good_bucket] = True
    shared = np.flatnonzero(flagged[flat_bucket])
    shared_bucket = flat_bucket[shared]
    order = np.lexsort((shared, dist.ravel()[shared], shared_bucket))
    position = np.empty(len(order), np.int64)
    position[order] = np.arange(len(order))
    ahead_in_bucket = position - np.searchsorted(shared_bucket[order], shared_bucket, "left")
    at = np.searchsorted(shared, good_row * num_g + good_col)
    ranks = np.full(good.shape, np.iinfo(np.int64).max)
    ranks[good_row, good_slot] = 1 + closer_buckets[good_bucket] + ahead_in_bucket[at]
    ranks.sort(axis=1)
    ranks[~real] = 0
    return ranks


def _kept_gallery_pids(dist_row, q_pid, q_camid, g_pids, g_camids):
    """Gallery identities in stable distance order, junk removed, for one query."""
    order = np.argsort(dist_row, kind="stable")
    pids, cams = g_pids[order], g_camids[order]
    return pids[~(((pids == q_pid) & (cams == q_camid)) | (pids == -1))]


def _single_gallery_shot_cmc(dist, q_pids, q_camids, g_pids, g_camids, rows, max_rank,
                             num_repeats, rng):
    """CUHK03 classic CMC of ``dist[rows]``: one random gallery image per identity, averaged over
    the draws. A full sort per query: the protocol's galleries are small (CUHK03: 5,332)."""
    out = np.zeros((len(rows), max_rank))
    for i, row in enumerate(rows):
        pids = _kept_gallery_pids(dist[row], q_pids[i], q_camids[i], g_pids, g_camids)
        for _ in range(num_repeats):
            # The first occurrence per identity in a random permutation is a uniform draw.
            perm = rng.permutation(len(pids))
            _, first = np.unique(pids[perm], return_index=True)
            chosen = np.sort(perm[first])
            hit = np.flatnonzero(pids[chosen] == q_pids[i])[0] + 1
            out[i] += np.arange(1, max_rank + 1) >= hit
        out[i] /= num_repeats
    return out
