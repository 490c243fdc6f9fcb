"""Query x gallery distances, computed in blocks of queries.

An MSMT17-size problem (11,659 x 82,161) has a 3.8 GB float32 result; computing it in blocks of
about 16 million distances keeps the temporaries to one block, and :func:`distance_blocks` lets a
caller consume the blocks without ever holding the whole matrix.

``euclidean`` and ``sqeuclidean`` are ``||q||^2 + ||g||^2 - 2 q.g`` clamped at 0 (square-rooted
for ``euclidean``), ``cosine`` is ``1 - q.g`` of the L2-normalised features; the blocks of
:func:`distance_blocks` are those of :func:`compute_distance_matrix`, bit for bit.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["METRICS", "compute_distance_matrix", "distance_blocks", "smallest_per_row",
           "squared_norms"]

METRICS = ("euclidean", "sqeuclidean", "cosine")

_BLOCK_ENTRIES = 1 << 24


def compute_distance_matrix(query, gallery, metric="euclidean", block_size=None):
    """Returns the (Q, G) float32 numpy distance matrix between two feature sets.

    Args:
        query, gallery: (Q, D) and (G, D) features (torch tensors or numpy arrays).
        metric: ``"euclidean"`` (the L2 distance), ``"sqeuclidean"`` (its square, torchreid's
            "euclidean"), or ``"cosine"`` (1 - cosine similarity).
        block_size: number of queries per block (default: about 16 million distances a block).

    Raises:
        ValueError: unknown metric, or features that are not (N, D) with one D.
    """
    q, g = prepare_features(query, gallery, metric)
    out = np.empty((q.shape[0], g.shape[0]), np.float32)
    for start, block in _blocks(q, g, metric, block_size):
        out[start:start + block.shape[0]] = block.numpy()
    return out


def distance_blocks(query, gallery, metric="euclidean", block_size=None):
    """Yields ``(start, block)``: rows ``start:start + len(block)`` of
    ``compute_distance_matrix(query, gallery, metric, block_size)`` as float32 numpy arrays,
    bit for bit, one block at a time."""
    q, g = prepare_features(query, gallery, metric)
    for start, block in _blocks(q, g, metric, block_size):
        yield start, block.numpy()


def _default_block_rows(num_columns):
    """Rows of a block of about 16 million distances (at least one row)."""
    return max(1, _BLOCK_ENTRIES // max(num_columns, 1))


def prepare_features(query, gallery, metric):
    """Both feature sets as float32 CPU tensors (L2-normalised for ``"cosine"``), checked."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    q = torch.as_tensor(query).detach().float().cpu()
    g = torch.as_tensor(gallery).detach().float().cpu()
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(f"features must be (N, D) with the same D; got query {tuple(q.shape)} "
                         f"and gallery {tuple(g.shape)}")
    if metric == "cosine":
        q, g = F.normalize(q, dim=1), F.normalize(g, dim=1)
    return q, g


def _blocks(q, g, metric, block_size):
    """(start, (B, G) float32 tensor) for each block of query rows."""
    rows = block_size or _default_block_rows(g.shape[0])
    g_sq = None if metric == "cosine" else squared_norms(g)[None, :]
    for start in range(0, q.shape[0], rows):
        yield start, _distance_block(q[start:start + rows], g, metric, g_sq)


def squared_norms(features, rows=8192):
    """``(features * features).sum(1)`` (same bits), without a temporary the size of
    ``features``: a 2048-d MSMT17 gallery is 0.67 GB."""
    return torch.cat([(chunk * chunk).sum(1) for chunk in features.split(rows)])


def _distance_block(query, gallery, metric, gallery_sq):
    """The (B, G) float32 tensor of distances between two float32 tensors, already normalised
    for ``"cosine"``; ``gallery_sq`` is ``(gallery ** 2).sum(1)[None, :]`` (None for cosine)."""
    if metric == "cosine":
        return 1.0 - query @ gallery.T
    dist = torch.addmm(gallery_sq + (query * query).sum(1, keepdim=True), query, gallery.T,
                       beta=1.0, alpha=-2.0).clamp_(min=0.0)
    return dist.sqrt_() if metric == "euclidean" else dist


def smallest_per_row(rows, k):
    """The k smallest entries of each row, ascending, equal values by column index.

    Args:
        rows: (R, C) float32 array or tensor.
        k: how many (capped at C).

    Returns:
        ``(values, index)``: (R, min(k, C)) numpy arrays.

    ``torch.topk`` picks the k + 1 smallest (any of the entries tied at a value); where the
    (k+1)-th equals the k-th, the row is sorted again with a stable sort so the choice among ties
    is by index.
    """
    rows = torch.as_tensor(rows)
    num_cols = rows.shape[1]
    k = min(k, num_cols)
    values, index = torch.topk(rows, min(k + 1, num_cols), dim=1, largest=False, sorted=False)
    values, index = _sorted_by_value_then_index(values.numpy(), index.numpy())
    if num_cols > k:
        tied = np.flatnonzero(values[:, k] == values[:, k - 1])
        if len(tied):
            stable = np.argsort(rows[tied].numpy(), axis=1, kind="stable")[:, :k]
            index[tied, :k] = stable
            values[tied, :k] = np.take_along_axis(rows[tied].numpy(), stable, axis=1)
    return values[:, :k], index[:, :k]


def _sorted_by_value_then_index(values, index):
    """(values, index) with each row reordered ascending by value, equal values by index."""
    order = np.lexsort((index, values), axis=1)
    return np.take_along_axis(values, order, axis=1), np.take_along_axis(index, order, axis=1)
