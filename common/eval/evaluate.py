"""From features straight to results, one block of queries at a time.

:func:`evaluate_features` is what a trainer calls after extracting query and gallery features: it
computes the distances (or the k-reciprocal re-ranked distances) a block of queries at a time and
ranks each block as it comes (:class:`common.eval.rank.RankingAccumulator`), so the Q x G matrix
exists whole only when it is asked for. :func:`search_gallery` is the same walk for a deployed
model: the top-k gallery images of each query, with no labels.
"""

from __future__ import annotations

import numpy as np

from common.eval.distance import distance_blocks, smallest_per_row
from common.eval.rank import RankingAccumulator
from common.eval.rerank import re_ranked_blocks

__all__ = ["evaluate_features", "search_gallery"]


def evaluate_features(q_feats, g_feats, q_pids, g_pids, q_camids, g_camids, *,
                      metric="euclidean", re_rank=None, protocol="standard", max_rank=50,
                      return_distmat=False, num_repeats=10, seed=0):
    """CMC, mAP and mINP of query features against gallery features.

    Equal to ``evaluate_rank(compute_distance_matrix(q_feats, g_feats, metric), ...)``, or with
    ``re_rank`` to ``evaluate_rank(re_ranking_features(q_feats, g_feats, *re_rank, metric), ...)``,
    without holding the (Q, G) matrix: peak memory is the features plus one block of distances
    (plus O(N k) for re-ranking).

    Args:
        q_feats, g_feats: (Q, D) and (G, D) features (torch tensors or numpy arrays).
        q_pids, g_pids, q_camids, g_camids: identities (-1 = junk) and cameras, as for
            :func:`common.eval.evaluate_rank`.
        metric: one of :data:`common.eval.METRICS`.
        re_rank: ``None``, or ``(k1, k2, lambda_value)`` for k-reciprocal re-ranking
            (:func:`common.eval.re_ranking_features`; the paper's values are ``(20, 6, 0.3)``).
        protocol, max_rank, num_repeats, seed: as for :func:`common.eval.evaluate_rank`.
        return_distmat: also return the (Q, G) float32 matrix that was ranked, as ``"distmat"``.

    Returns:
        :func:`common.eval.evaluate_rank`'s dict, plus ``"distmat"`` when asked.

    Raises:
        ValueError: a malformed ``re_rank``, label arrays that do not match the features, or any
            error of the functions above.
    """
    metrics = RankingAccumulator(q_pids, g_pids, q_camids, g_camids, max_rank, protocol,
                                 num_repeats, seed)
    num_q, num_g = len(q_feats), len(g_feats)
    if len(metrics.q_pids) != num_q or len(metrics.g_pids) != num_g:
        raise ValueError(f"{num_q} query and {num_g} gallery features but {len(metrics.q_pids)} "
                         f"query and {len(metrics.g_pids)} gallery labels")
    distmat = np.empty((num_q, num_g), np.float32) if return_distmat else None
    for start, block in _ranked_blocks(q_feats, g_feats, metric, re_rank):
        metrics.add(block)
        if distmat is not None:
            distmat[start:start + len(block)] = block
    result = metrics.results()
    if return_distmat:
        result["distmat"] = distmat
    return result


def search_gallery(q_feats, g_feats, top_k=10, *, metric="euclidean", re_rank=None):
    """The ``top_k`` nearest gallery entries of each query, nearest first, ties by gallery order.

    Args:
        q_feats, g_feats: (Q, D) and (G, D) features.
        top_k: list length (capped at G).
        metric, re_rank: as for :func:`evaluate_features`.

    Returns:
        ``(indices, distances)``: (Q, min(top_k, G)) int64 gallery indices and their float32
        distances.
    """
    if int(top_k) < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    k = min(int(top_k), len(g_feats))
    indices = np.zeros((len(q_feats), k), np.int64)
    distances = np.zeros((len(q_feats), k), np.float32)
    if k == 0:
        return indices, distances
    for start, block in _ranked_blocks(q_feats, g_feats, metric, re_rank):
        distances[start:start + len(block)], indices[start:start + len(block)] = \
            smallest_per_row(block, k)
    return indices, distances


def _ranked_blocks(q_feats, g_feats, metric, re_rank):
    if re_rank is None:
        return distance_blocks(q_feats, g_feats, metric)
    try:
        k1, k2, lambda_value = re_rank
    except (TypeError, ValueError):
        raise ValueError(f"re_rank must be None or (k1, k2, lambda_value), e.g. (20, 6, 0.3); "
                         f"got {re_rank!r}") from None
    return re_ranked_blocks(q_feats, g_feats, int(k1), int(k2), float(lambda_value), metric)
