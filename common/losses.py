"""Losses shared by the five methods: label-smoothed cross-entropy and batch-hard triplet."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["CrossEntropyLabelSmooth", "TripletLoss", "pairwise_distance"]


class CrossEntropyLabelSmooth(nn.Module):
    """Cross-entropy against ``(1 - epsilon) * onehot + epsilon / K`` (Szegedy et al.), K =
    ``smoothing_classes`` or, by default, ``num_classes`` (the logits' width).

    ``epsilon=0`` is plain cross-entropy. The loss is averaged over the batch. A K other than the
    width reproduces APNet's released code, which fixes K at 751 on every dataset.
    """

    def __init__(self, num_classes, epsilon=0.1, smoothing_classes=None):
        super().__init__()
        self.num_classes, self.epsilon = num_classes, epsilon
        self.smoothing_classes = smoothing_classes or num_classes

    def forward(self, logits, targets):
        if logits.shape[1] != self.num_classes:
            raise ValueError(f"logits have {logits.shape[1]} classes, the loss expects "
                             f"{self.num_classes}")
        log_probs = F.log_softmax(logits, dim=1)
        share = self.epsilon / self.smoothing_classes
        smoothed = torch.full_like(log_probs, share)
        smoothed.scatter_(1, targets[:, None], 1 - self.epsilon + share)
        return -(smoothed * log_probs).sum(1).mean()


def pairwise_distance(features, metric="euclidean"):
    """(B, B) distances: ``"euclidean"`` = sqrt(clamp(squared distance, 1e-12)), ``"cosine"`` =
    1 - cosine similarity."""
    if metric == "cosine":
        normed = F.normalize(features, dim=1)
        return 1 - normed @ normed.T
    if metric != "euclidean":
        raise ValueError(f"unknown triplet metric {metric!r}; use 'euclidean' or 'cosine'")
    squared = (features * features).sum(1)
    dist = squared[:, None] + squared[None, :] - 2 * features @ features.T
    return dist.clamp(min=1e-12).sqrt()


class TripletLoss(nn.Module):
    """Batch-hard triplet loss (Hermans et al. 2017).

    For each anchor, the farthest positive and the nearest negative in the batch; the loss is the
    mean over anchors of ``max(0, d_ap - d_an + margin)``, or of ``softplus(d_ap - d_an)`` with
    ``soft_margin=True``.
    """

    def __init__(self, margin=0.3, metric="euclidean", soft_margin=False):
        super().__init__()
        self.margin, self.metric, self.soft_margin = margin, metric, soft_margin

    def forward(self, features, targets):
        """``features`` (B, D), ``targets`` (B,) identity labels; returns the scalar loss.

        Raises:
            ValueError: the batch holds a single identity (no negative exists); the samplers of
                this project never build such a batch.
        A non-finite feature gives a non-finite loss (the training loop reports divergence)."""
        same = targets[:, None] == targets[None, :]
        if bool(same.all()):
            raise ValueError(f"a triplet batch needs at least two identities; this one holds "
                             f"{len(targets)} images of one identity")
        dist = pairwise_distance(features, self.metric)
        hardest_positive = dist.masked_fill(~same, float("-inf")).max(1).values
        hardest_negative = dist.masked_fill(same, float("inf")).min(1).values
        gap = hardest_positive - hardest_negative
        if self.soft_margin:
            return F.softplus(gap).mean()
        return F.relu(gap + self.margin).mean()
