"""How closely a deployed or compiled network reproduces eager PyTorch's features: the one check
``bench.export`` (before it keeps a file) and ``bench.compile_speed`` (before it times a backend)
share.

On a query/gallery pair of feature batches (the reference from eager, the other from the
artifact): the largest absolute difference relative to the reference's largest value, the lowest
cosine similarity of matching rows, and the mean overlap of each query's top-10 gallery list.
FP32 passes within :data:`FP32_TOLERANCE` of the features' scale (FastReID's rtol); any other
precision (half, bfloat16, INT8) passes with cosine >= :data:`LOW_PRECISION_COSINE` and top-10
agreement >= 0.9. INT8 files are gated on accuracy by ``bench.export`` on top of this.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["FP32_TOLERANCE", "LOW_PRECISION_COSINE", "TOP10_AGREEMENT", "parity"]

FP32_TOLERANCE = 1e-3  # max |difference| / max |eager feature| (FastReID's rtol)
LOW_PRECISION_COSINE = 0.999
TOP10_AGREEMENT = 0.9


def parity(reference, features, dtype):
    """``{"max_abs_diff_relative", "min_cosine", "top10_agreement", "passed"}`` of ``features``
    (a (query, gallery) pair of (N, D) tensors) against ``reference`` (the same from eager);
    ``dtype`` (``torch.float32`` or another) chooses the rule for ``passed``."""
    queries, gallery = reference
    q, g = features
    diff = max((q - queries).abs().max().item(), (g - gallery).abs().max().item())
    scale = max(queries.abs().max().item(), gallery.abs().max().item(), 1e-12)
    cosine = min(F.cosine_similarity(q, queries).min().item(),
                 F.cosine_similarity(g, gallery).min().item())
    k = min(10, gallery.shape[0])
    top_ref = (F.normalize(queries) @ F.normalize(gallery).T).topk(k).indices
    top = (F.normalize(q) @ F.normalize(g).T).topk(k).indices
    overlap = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(top_ref, top))
    agreement = overlap / (k * len(top))
    passed = (cosine >= LOW_PRECISION_COSINE and agreement >= TOP10_AGREEMENT) \
        if dtype != torch.float32 else diff / scale <= FP32_TOLERANCE
    return {"max_abs_diff_relative": diff / scale, "min_cosine": cosine,
            "top10_agreement": agreement, "passed": passed}
