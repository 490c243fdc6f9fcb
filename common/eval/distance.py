"""Query x gallery distance matrices, computed in blocks of queries.

An MSMT17-size problem (11,659 x 82,161) has a 3.8 GB float32 result; computing it in blocks
keeps the temporaries to one block instead of several full-size matrices.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["METRICS", "compute_distance_matrix"]

METRICS = ("euclidean", "sqeuclidean", "cosine")


def compute_distance_matrix(query, gallery, metric="euclidean", block_size=2048):
    """Returns the (Q, G) float32 numpy distance matrix between two feature sets.

    Args:
        query, gallery: (Q, D) and (G, D) features (torch tensors or numpy arrays).
        metric: ``"euclidean"`` (the L2 distance), ``"sqeuclidean"`` (its square, torchreid's
            "euclidean"), or ``"cosine"`` (1 - cosine similarity).
        block_size: number of queries per block.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    q = torch.as_tensor(query).detach().float().cpu()
    g = torch.as_tensor(gallery).detach().float().cpu()
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(f"features must be (N, D) with the same D; got query {tuple(q.shape)} "
                         f"and gallery {tuple(g.shape)}")
    if metric == "cosine":
        q, g = F.normalize(q, dim=1), F.normalize(g, dim=1)
    else:
        g_sq = (g * g).sum(1)[None, :]
    out = np.empty((q.shape[0], g.shape[0]), np.float32)
    for start in range(0, q.shape[0], block_size):
        block = q[start:start + block_size]
        if metric == "cosine":
            dist = 1.0 - block @ g.T
        else:
            dist = torch.addmm(g_sq + (block * block).sum(1, keepdim=True), block, g.T,
                               beta=1.0, alpha=-2.0).clamp_(min=0.0)
            if metric == "euclidean":
                dist = dist.sqrt_()
        out[start:start + block.shape[0]] = dist.numpy()
    return out
