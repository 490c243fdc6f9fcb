"""k-reciprocal re-ranking (Zhong et al., CVPR'17), memory-light and vectorised.

Same inputs and semantics as the ``re_ranking`` function of torchreid and of the person-re-ranking
release (``shared/specs/evaluation.md`` §2.3): the three distance matrices are stacked queries
first, **squared**, and each row of the transposed matrix is divided by its maximum. Pass plain
Euclidean distances to get the official squared-Euclidean base distance.

What differs from those implementations is only how the work is done:

* the N x N base distance is never held whole; it is rebuilt in blocks of rows from the three
  input matrices whenever a pass needs it;
* only the first ``max(k1 + 1, k2)`` neighbours of each sample are found (``torch.topk``), not a
  full sort of every row;
* the encoding V is a sparse matrix; local query expansion is one sparse product, and the Jaccard
  overlap ``sum_k min(V[i, k], V[j, k])`` walks the non-zero entries of V's columns (the inverted
  index of the paper), for the gallery columns only.

Among samples at exactly equal distance the neighbour order is by index (the reference's
quicksort leaves it unspecified).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
import torch

__all__ = ["re_ranking"]

_ROW_BLOCK = 1024
_QUERY_BLOCK = 256


def re_ranking(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3):
    """Returns the (Q, G) float32 re-ranked distance: (1 - lambda) Jaccard + lambda original.

    Args:
        q_g_dist: (Q, G) query-gallery distances.
        q_q_dist: (Q, Q) query-query distances.
        g_g_dist: (G, G) gallery-gallery distances.
        k1, k2, lambda_value: the paper's parameters (defaults 20, 6, 0.3).
    """
    q_g = _as_float32(q_g_dist, "q_g_dist")
    q_q = _as_float32(q_q_dist, "q_q_dist")
    g_g = _as_float32(g_g_dist, "g_g_dist")
    num_q, num_g = q_g.shape
    if q_q.shape != (num_q, num_q) or g_g.shape != (num_g, num_g):
        raise ValueError(f"re_ranking needs q_q_dist {num_q}x{num_q} and g_g_dist {num_g}x{num_g} "
                         f"for q_g_dist {num_q}x{num_g}; got {q_q.shape} and {g_g.shape}")
    if k1 < 1 or k2 < 1:
        raise ValueError(f"k1 and k2 must be >= 1, got k1={k1}, k2={k2}")
    if num_q == 0 or num_g == 0:
        return np.zeros((num_q, num_g), np.float32)
    base = _BaseDistance(q_g, q_q, g_g)
    num_all = num_q + num_g

    num_neighbours = min(max(k1 + 1, k2), num_all)
    initial_rank = np.concatenate([_nearest(base.rows(a, b), num_neighbours)
                                   for a, b in _blocks(num_all, _ROW_BLOCK)])
    v = _encode(base, initial_rank, k1)
    if k2 != 1:
        neighbours = initial_rank[:, :k2]
        expansion = scipy.sparse.csr_matrix(
            (np.full(neighbours.size, 1.0 / neighbours.shape[1], np.float32),
             neighbours.ravel(), np.arange(0, neighbours.size + 1, neighbours.shape[1])),
            shape=(num_all, num_all))
        v = (expansion @ v).tocsr()
    v_gallery = v[num_q:].tocsc()

    final = np.empty((num_q, num_g), np.float32)
    for a, b in _blocks(num_q, _QUERY_BLOCK):
        overlap = _min_overlap(v[a:b], v_gallery, num_g)
        jaccard = 1.0 - overlap / (2.0 - overlap)
        final[a:b] = jaccard * (1 - lambda_value) + base.rows(a, b)[:, num_q:] * lambda_value
    return final


def _as_float32(matrix, name):
    arr = matrix.detach().cpu().numpy() if torch.is_tensor(matrix) else np.asarray(matrix)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {arr.shape}")
    return arr.astype(np.float32, copy=False)


def _blocks(n, size):
    return [(a, min(a + size, n)) for a in range(0, n, size)]


class _BaseDistance:
    """Rows of the normalised base distance, built on demand from the three input blocks.

    Row i is column i of D = [[q_q, q_g], [q_g^T, g_g]], squared and divided by its maximum
    (steps 1-2 of evaluation.md §2.3).
    """

    def __init__(self, q_g, q_q, g_g):
        self.q_g, self.q_q, self.g_g = q_g, q_q, g_g
        self.num_q = q_g.shape[0]

    def rows(self, start, stop):
        parts = []
        if start < self.num_q:
            s, e = start, min(stop, self.num_q)
            parts.append(np.concatenate([self.q_q[:, s:e].T, self.q_g[s:e]], axis=1))
        if stop > self.num_q:
            s, e = max(start, self.num_q) - self.num_q, stop - self.num_q
            parts.append(np.concatenate([self.q_g[:, s:e].T, self.g_g[:, s:e].T], axis=1))
        block = np.square(np.concatenate(parts, axis=0))
        row_max = block.max(axis=1, keepdims=True)
        return block / np.where(row_max > 0, row_max, 1.0)


def _nearest(rows, k):
    """Indices of the k smallest entries of each row, ascending, ties by index."""
    values, index = torch.topk(torch.from_numpy(rows), k, dim=1, largest=False, sorted=True)
    index, by_index = torch.sort(index, dim=1)
    values = values.gather(1, by_index)
    order = torch.sort(values, dim=1, stable=True).indices
    return index.gather(1, order).numpy()


def _reciprocal_mask(initial_rank, k):
    """mask[i, m]: whether initial_rank[i, m] (m <= k) has i among its own first k + 1."""
    forward = initial_rank[:, :k + 1]
    backward = forward[forward]
    return (backward == np.arange(len(initial_rank))[:, None, None]).any(-1)


def _encode(base, initial_rank, k1):
    """Sparse V of steps 3-5: k-reciprocal sets, expanded, Gaussian-weighted, rows summing to 1."""
    num_all = len(initial_rank)
    half = int(np.around(k1 / 2.0))
    forward = initial_rank[:, :k1 + 1]
    is_reciprocal = _reciprocal_mask(initial_rank, k1)
    half_forward = initial_rank[:, :half + 1]
    half_reciprocal = _reciprocal_mask(initial_rank, half)

    rows, cols, vals = [], [], []
    for a, b in _blocks(num_all, _ROW_BLOCK):
        cand, cand_ok = forward[a:b], is_reciprocal[a:b]
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
        weight = np.exp(-base.rows(a, b)[local_row, col])
        total = np.bincount(local_row, weights=weight, minlength=b - a)
        rows.append(local_row + a)
        cols.append(col)
        vals.append((weight / total[local_row]).astype(np.float32))
    return scipy.sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(num_all, num_all))


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
