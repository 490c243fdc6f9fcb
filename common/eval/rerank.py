"""k-reciprocal re-ranking (Zhong et al., CVPR'17), from distance matrices or from features.

Steps 1-8 of ``shared/specs/evaluation.md`` §2.3, over all N = Q + G samples, queries first:

* :func:`re_ranking` has the inputs and semantics of the ``re_ranking`` function of torchreid and
  of the person-re-ranking release: the three distance matrices are stacked, **squared**, and each
  row of the transposed matrix is divided by its maximum. Pass plain Euclidean distances to get
  the official squared-Euclidean base distance.
* :func:`re_ranking_features` takes the features instead, with the same convention: its base
  distance is the **square** of ``compute_distance_matrix(metric)``'s distance (for
  ``"euclidean"``, the squared L2 distance, computed directly), so
  ``re_ranking_features(q, g, metric=m)`` equals
  ``re_ranking(*(compute_distance_matrix(a, b, m) for a, b in ((q, g), (q, q), (g, g))))``
  up to float32 rounding of the distances. Its memory is O(N k1 k2) plus one 4096 x 4096 tile of
  distances and a copy of the stacked features: no N x N or Q x Q matrix ever exists, and
  :func:`re_ranked_blocks` hands out the Q x G result a block of queries at a time.

How the work is done, in both cases:

* the k nearest neighbours of every sample (k = max(k1 + 1, k2)) are found exactly from blocks
  of the base distance (``torch.topk``; from features, in square tiles of the symmetric N x N
  base distance, each tile serving its rows and its columns, so every distance is computed once);
* the encoding V is a sparse matrix built from the k-reciprocal sets, with the base distance of
  only the pairs it needs; local query expansion is one sparse product, and the Jaccard overlap
  ``sum_k min(V[i, k], V[j, k])`` walks the non-zero entries of V's columns (the inverted index of
  the paper), for the gallery columns only.

Among samples at exactly equal distance the neighbour order is by index (the reference's
quicksort leaves it unspecified). From features, neighbours are ranked on the base distance
before its division by the row maximum (the same order, except where that division rounds two
neighbouring float32 values to one).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
import torch

from common.eval.distance import prepare_features, smallest_per_row, squared_norms

__all__ = ["re_ranked_blocks", "re_ranking", "re_ranking_features"]

_ROW_BLOCK = 1024
_TILE = 4096
_PAIR_BLOCK = 8192
_QUERY_BLOCK_ENTRIES = 1 << 22     # dense Jaccard block: query rows x gallery
_OVERLAP_TERMS = 1 << 21           # min(V[i, k], V[j, k]) terms summed at once


def re_ranking(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3):
    """Returns the (Q, G) float32 re-ranked distance: (1 - lambda) Jaccard + lambda original.

    Args:
        q_g_dist: (Q, G) query-gallery distances.
        q_q_dist: (Q, Q) query-query distances.
        g_g_dist: (G, G) gallery-gallery distances.
        k1, k2, lambda_value: the paper's parameters (defaults 20, 6, 0.3).

    Raises:
        ValueError: matrices of inconsistent shapes, or ``k1``/``k2`` below 1.
    """
    q_g = _as_float32(q_g_dist, "q_g_dist")
    q_q = _as_float32(q_q_dist, "q_q_dist")
    g_g = _as_float32(g_g_dist, "g_g_dist")
    num_q, num_g = q_g.shape
    if q_q.shape != (num_q, num_q) or g_g.shape != (num_g, num_g):
        raise ValueError(f"re_ranking needs q_q_dist {num_q}x{num_q} and g_g_dist {num_g}x{num_g} "
                         f"for q_g_dist {num_q}x{num_g}; got {q_q.shape} and {g_g.shape}")
    _check_parameters(k1, k2)
    return _collect(_re_ranked(_MatrixBase(q_g, q_q, g_g), k1, k2, lambda_value), num_q, num_g)


def re_ranking_features(q_feats, g_feats, k1=20, k2=6, lambda_value=0.3, metric="euclidean"):
    """k-reciprocal re-ranking straight from features; returns the (Q, G) float32 distance.

    Args:
        q_feats, g_feats: (Q, D) and (G, D) features (torch tensors or numpy arrays).
        k1, k2, lambda_value: the paper's parameters (defaults 20, 6, 0.3).
        metric: the distance whose square is the base distance (module docstring): one of
            :data:`common.eval.METRICS`, ``"euclidean"`` for the official squared Euclidean.

    Raises:
        ValueError: unknown metric, features that are not (N, D) with one D, ``k1``/``k2`` < 1.
    """
    num_q, num_g = len(q_feats), len(g_feats)
    return _collect(re_ranked_blocks(q_feats, g_feats, k1, k2, lambda_value, metric), num_q,
                    num_g)


def re_ranked_blocks(q_feats, g_feats, k1=20, k2=6, lambda_value=0.3, metric="euclidean"):
    """Yields ``(start, block)``: rows ``start:start + len(block)`` of
    :func:`re_ranking_features`'s (Q, G) float32 result, in order, one block at a time."""
    q, g = prepare_features(q_feats, g_feats, metric)
    _check_parameters(k1, k2)
    yield from _re_ranked(_FeatureBase(q, g, metric), k1, k2, lambda_value)


def _check_parameters(k1, k2):
    if k1 < 1 or k2 < 1:
        raise ValueError(f"k1 and k2 must be >= 1, got k1={k1}, k2={k2}")


def _collect(blocks, num_q, num_g):
    out = np.zeros((num_q, num_g), np.float32)
    for start, block in blocks:
        out[start:start + len(block)] = block
    return out


def _as_float32(matrix, name):
    arr = matrix.detach().cpu().numpy() if torch.is_tensor(matrix) else np.asarray(matrix)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {arr.shape}")
    return arr.astype(np.float32, copy=False)


def _blocks(n, size):
    return [(a, min(a + size, n)) for a in range(0, n, size)]


def _re_ranked(base, k1, k2, lambda_value):
    """Steps 3-8 of evaluation.md §2.3 over a base distance; yields blocks of query rows."""
    num_q, num_all = base.num_q, base.num_all
    num_g = num_all - num_q
    if num_q == 0:
        return
    if num_g == 0:
        yield 0, np.zeros((num_q, 0), np.float32)
        return
    initial_rank, row_max = base.neighbours(min(max(k1 + 1, k2), num_all))
    v = _encode(base, initial_rank, row_max, k1)
    if k2 != 1:
        neighbours = initial_rank[:, :k2]
        expansion = scipy.sparse.csr_matrix(
            (np.full(neighbours.size, 1.0 / neighbours.shape[1], np.float32),
             neighbours.ravel(), np.arange(0, neighbours.size + 1, neighbours.shape[1])),
            shape=(num_all, num_all))
        v = (expansion @ v).tocsr()
    v_gallery = v[num_q:].tocsc()
    for a, b in _query_blocks(v[:num_q], v_gallery):
        # (1 - lambda) * (1 - m / (2 - m)) + lambda * original, in place, in the reference's
        # precision (float64 Jaccard, float32 original distance)
        overlap = _min_overlap(v[a:b], v_gallery, num_g)
        jaccard = np.subtract(2.0, overlap)
        np.divide(overlap, jaccard, out=jaccard)
        np.subtract(1.0, jaccard, out=jaccard)
        jaccard *= 1 - lambda_value
        original = base.squared_query_gallery(a, b)
        original /= row_max[a:b, None]
        original *= lambda_value
        jaccard += original
        yield a, jaccard.astype(np.float32)


class _MatrixBase:
    """The base distance of :func:`re_ranking`: row i is column i of
    D = [[q_q, q_g], [q_g^T, g_g]], squared (steps 1-2 of evaluation.md §2.3)."""

    def __init__(self, q_g, q_q, g_g):
        self.q_g, self.q_q, self.g_g = q_g, q_q, g_g
        self.num_q = q_g.shape[0]
        self.num_all = self.num_q + q_g.shape[1]

    def neighbours(self, k):
        """(initial_rank (N, k), row maximum (N,), 1 where the maximum is 0): the k nearest
        samples of each row of the normalised base distance, ascending, ties by index."""
        ranks, maxima = [], []
        for a, b in _blocks(self.num_all, _ROW_BLOCK):
            rows = self._squared_rows(a, b)
            row_max = rows.max(axis=1)
            row_max = np.where(row_max > 0, row_max, 1.0)
            ranks.append(smallest_per_row(rows / row_max[:, None], k)[1])
            maxima.append(row_max)
        return np.concatenate(ranks), np.concatenate(maxima)

    def _squared_rows(self, start, stop):
        parts = []
        if start < self.num_q:
            s, e = start, min(stop, self.num_q)
            parts.append(np.concatenate([self.q_q[:, s:e].T, self.q_g[s:e]], axis=1))
        if stop > self.num_q:
            s, e = max(start, self.num_q) - self.num_q, stop - self.num_q
            parts.append(np.concatenate([self.q_g[:, s:e].T, self.g_g[:, s:e].T], axis=1))
        return np.square(np.concatenate(parts, axis=0))

    def squared_pairs(self, rows, cols):
        """Base distance (before the row division) of each pair (rows[n], cols[n])."""
        q = self.num_q
        out = np.empty(len(rows), np.float32)
        for row_is_q in (True, False):
            for col_is_q in (True, False):
                pick = ((rows < q) == row_is_q) & ((cols < q) == col_is_q)
                i, j = rows[pick], cols[pick]
                if row_is_q and col_is_q:
                    out[pick] = self.q_q[j, i]
                elif row_is_q:
                    out[pick] = self.q_g[i, j - q]
                elif col_is_q:
                    out[pick] = self.q_g[j, i - q]
                else:
                    out[pick] = self.g_g[j - q, i - q]
        return np.square(out)

    def squared_query_gallery(self, start, stop):
        return np.square(self.q_g[start:stop])


class _FeatureBase:
    """The base distance of :func:`re_ranking_features`: the square of the metric's distance
    between the stacked features (the squared L2 distance itself for ``"euclidean"``), from
    ``||x||^2 + ||y||^2 - 2 x.y`` clamped at 0, or ``1 - x.y`` for ``"cosine"`` (features already
    normalised). Tiles are written into one reused buffer."""

    def __init__(self, q, g, metric):
        self.features = torch.cat([q, g])
        self.num_q, self.num_all = len(q), len(q) + len(g)
        self.cosine = metric == "cosine"
        self.square = metric != "euclidean"
        self.norms = squared_norms(self.features)
        self._buffer = torch.empty(0)

    def _tile(self, rows, cols):
        """(rows, cols) block of the base distance (slices), a view of the reused buffer."""
        x = self.features
        size = (rows.stop - rows.start, cols.stop - cols.start)
        if self._buffer.numel() < size[0] * size[1]:
            self._buffer = torch.empty(size[0] * size[1])
        out = self._buffer[:size[0] * size[1]].view(size)
        if self.cosine:
            torch.mm(x[rows], x[cols].T, out=out).neg_().add_(1.0)
        else:
            torch.addmm(self.norms[None, cols], x[rows], x[cols].T, beta=1.0, alpha=-2.0, out=out)
            out.add_(self.norms[rows, None]).clamp_(min=0.0)
        return out.square_() if self.square else out

    def neighbours(self, k):
        """Like :meth:`_MatrixBase.neighbours`, ranked before the row division.

        The base distance is symmetric, so the N x N matrix is walked in square tiles (I, J),
        I <= J, each serving its rows I and, transposed, rows J: every distance is computed once.
        The diagonal tiles start each row's list; from the other tiles only the entries not
        above the row's current k-th smallest are merged in, a few per row.
        """
        n = self.num_all
        lists = _NeighbourLists(n, k)
        row_max = np.zeros(n, np.float32)
        tiles = _blocks(n, _TILE)
        for a, b in tiles:
            tile = self._tile(slice(a, b), slice(a, b)).numpy()
            row_max[a:b] = tile.max(axis=1)
            lists.start(a, *smallest_per_row(tile, k))
        for i, (a, b) in enumerate(tiles):
            for c, d in tiles[i + 1:]:
                tile = self._tile(slice(a, b), slice(c, d)).numpy()
                np.maximum(row_max[a:b], tile.max(axis=1), out=row_max[a:b])
                np.maximum(row_max[c:d], tile.max(axis=0), out=row_max[c:d])
                lists.offer_tile(a, c, tile)
        return lists.index, np.where(row_max > 0, row_max, np.float32(1.0))

    def squared_pairs(self, rows, cols):
        out = np.empty(len(rows), np.float32)
        for a, b in _blocks(len(rows), _PAIR_BLOCK):
            i, j = torch.from_numpy(rows[a:b]), torch.from_numpy(cols[a:b])
            dot = (self.features[i] * self.features[j]).sum(1)
            if self.cosine:
                dist = 1.0 - dot
            else:
                dist = (self.norms[i] + self.norms[j] - 2.0 * dot).clamp_(min=0.0)
            out[a:b] = (dist.square_() if self.square else dist).numpy()
        return out

    def squared_query_gallery(self, start, stop):
        return self._tile(slice(start, stop), slice(self.num_q, self.num_all)).numpy().copy()


class _NeighbourLists:
    """The k smallest (value, index) of each of n rows, ascending, ties by index, filled tile by
    tile."""

    def __init__(self, n, k):
        self.k = k
        self.value = np.full((n, k), np.inf, np.float32)
        self.index = np.full((n, k), n, np.int64)

    def start(self, row_start, values, index):
        """Rows ``row_start:`` take the lists of their diagonal tile (columns from the same
        start)."""
        rows = slice(row_start, row_start + len(values))
        width = values.shape[1]
        self.value[rows, :width], self.index[rows, :width] = values, index + row_start

    def offer_tile(self, row_start, col_start, tile):
        """Merges the entries of ``tile`` (rows from ``row_start``, columns from ``col_start``)
        into the lists of its rows and, by symmetry, of its columns, where they are not above
        that list's current k-th value."""
        num_rows, num_cols = tile.shape
        row_kth = self.value[row_start:row_start + num_rows, -1]
        col_kth = self.value[col_start:col_start + num_cols, -1]
        for kth, by_row in ((row_kth[:, None], True), (col_kth[None, :], False)):
            flat = np.flatnonzero(tile <= kth)
            if len(flat) == 0:
                continue
            local_row, local_col = np.divmod(flat, num_cols)
            rows, cols = local_row + row_start, local_col + col_start
            self._merge(*((rows, cols) if by_row else (cols, rows)), tile.ravel()[flat])

    def _merge(self, rows, cols, values):
        touched = np.unique(rows)
        k = self.k
        rows = np.concatenate([np.repeat(touched, k), rows])
        cols = np.concatenate([self.index[touched].ravel(), cols])
        values = np.concatenate([self.value[touched].ravel(), values])
        order = np.lexsort((cols, values, rows))
        rows, cols, values = rows[order], cols[order], values[order]
        place_in_row = np.arange(len(rows)) - np.searchsorted(rows, rows, "left")
        keep = place_in_row < k
        self.value[touched] = values[keep].reshape(-1, k)
        self.index[touched] = cols[keep].reshape(-1, k)


def _reciprocal_mask(initial_rank, k, start, stop):
    """mask[i, m]: whether initial_rank[i, m] (m <= k) has i among its own first k + 1, for
    rows start:stop."""
    forward = initial_rank[start:stop, :k + 1]
    backward = initial_rank[forward, :k + 1]
    return (backward == np.arange(start, stop)[:, None, None]).any(-1)


def _encode(base, initial_rank, row_max, k1):
    """Sparse V of steps 3-5: k-reciprocal sets, expanded, Gaussian-weighted, rows summing to 1."""
    num_all = len(initial_rank)
    half = int(np.around(k1 / 2.0))
    forward = initial_rank[:, :k1 + 1]
    half_forward = initial_rank[:, :half + 1]
    half_reciprocal = np.concatenate([_reciprocal_mask(initial_rank, half, a, b)
                                      for a, b in _blocks(num_all, _ROW_BLOCK)])

    rows, cols, vals = [], [], []
    for a, b in _blocks(num_all, _ROW_BLOCK):
        cand, cand_ok = forward[a:b], _reciprocal_mask(initial_rank, k1, a, b)
        members, members_ok = half_forward[cand], half_reciprocal[cand]
        # |R(j, k1/2) ∩ R(i, k1)| for every candidate j of every row i.
        in_set = ((members[..., None] == cand[:, None, None, :])
                  & cand_ok[:, None, None, :]).any(-1) & members_ok
        accepted = cand_ok & (in_set.sum(-1) > 2.0 / 3 * members_ok.sum(-1))
        pool = np.concatenate([np.where(cand_ok, cand, num_all),
                               np.where(accepted[..., None] & members_ok, members,
                                        num_all).reshape(b - a, -1)], axis=1)
        pool.sort(axis=1)
        unique = (pool < num_all) & np.concatenate(
            [np.ones((b - a, 1), bool), pool[:, 1:] != pool[:, :-1]], axis=1)
        local_row, slot = np.nonzero(unique)
        col = pool[local_row, slot]
        row = local_row + a
        weight = np.exp(-(base.squared_pairs(row, col) / row_max[row]))
        total = np.bincount(local_row, weights=weight, minlength=b - a)
        rows.append(row)
        cols.append(col)
        vals.append((weight / total[local_row]).astype(np.float32))
    return scipy.sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(num_all, num_all))


def _query_blocks(v_queries, v_gallery_csc):
    """Consecutive query blocks, each with at most _QUERY_BLOCK_ENTRIES Jaccard distances and
    (unless one query alone has more) _OVERLAP_TERMS terms in its overlap sums."""
    num_q, num_g = v_queries.shape[0], v_gallery_csc.shape[0]
    column_size = np.diff(v_gallery_csc.indptr)
    terms = np.zeros(num_q, np.int64)
    np.add.at(terms, np.repeat(np.arange(num_q), np.diff(v_queries.indptr)),
              column_size[v_queries.indices])
    max_rows = max(1, _QUERY_BLOCK_ENTRIES // num_g)
    blocks, start = [], 0
    while start < num_q:
        within = np.searchsorted(np.cumsum(terms[start:start + max_rows]), _OVERLAP_TERMS, "right")
        stop = start + max(1, int(within))
        blocks.append((start, stop))
        start = stop
    return blocks


def _min_overlap(v_rows, v_gallery_csc, num_g):
    """sum_k min(v_rows[i, k], V[j, k]) for every row i and gallery sample j (step 7)."""
    v_rows = v_rows.tocsr()
    num_rows = v_rows.shape[0]
    row_of_entry = np.repeat(np.arange(num_rows), np.diff(v_rows.indptr))
    column = v_rows.indices
    starts = v_gallery_csc.indptr[column]
    counts = v_gallery_csc.indptr[column + 1] - starts
    total = int(counts.sum())
    if total == 0:
        return np.zeros((num_rows, num_g))
    entry = np.repeat(np.arange(len(column)), counts)
    position = starts[entry] + (np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts))
    gallery_index = v_gallery_csc.indices[position]
    smaller = np.minimum(v_rows.data[entry], v_gallery_csc.data[position])
    overlap = np.bincount(row_of_entry[entry] * num_g + gallery_index, weights=smaller,
                          minlength=num_rows * num_g)
    return overlap.reshape(num_rows, num_g)
