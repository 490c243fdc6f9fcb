"""The diversity regularisers of ABD-Net (Chen et al., ICCV 2019), which IAB-Net inherits: O.F.
on feature maps and O.W. on conv weights.

Both penalise the spread of the eigenvalues of a Gram matrix, estimated the way the released code
does (``../shared/specs/abdnet.md`` §3.3, §3.4): one power-iteration step from a random start
vector gives the largest eigenvalue λmax; the same estimate on G - λmax I, shifted back, gives the
smallest. The estimates are rough and random by design; gradients flow through them.

- O.F. (``OFPenalty``): G = F Fᵀ per sample (C x C), start vector standard normal, penalty
  β (λmax - λmin) per sample, x 0.01 at the shallow ``intermediate`` map, summed over the batch
  and divided by B / 32, averaged over parts, summed over positions.
- O.W. (``OWPenalty``): G = W Wᵀ with W the conv weight as out x (in k k), start vector uniform
  [0, 1), penalty 10 β (λmax - λmin)² per layer (layers with one output channel are skipped).
  The network says which convs it penalises (``TwoBranchNet.orthogonality_convs``).
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["OF_POSITIONS", "OFPenalty", "OWPenalty", "estimate_eigenvalue_range",
           "rayleigh_after_one_step"]

OF_POSITIONS = ("before", "after", "cam", "pam", "intermediate")
OF_BATCH_NORMALISER = 32  # the released code's "normalise to a 32 batch"
OF_INTERMEDIATE_SCALE = 0.01


def rayleigh_after_one_step(gram, start):
    """One power-iteration step: y = G x, then (yᵀ G y) / (yᵀ y). Batched over leading dims.

    Args:
        gram: (..., n, n) symmetric matrices.
        start: (..., n, 1) start vectors.
    """
    y = gram @ start
    return (y * (gram @ y)).sum(dim=(-2, -1)) / (y * y).sum(dim=(-2, -1))


def estimate_eigenvalue_range(gram, draw_start):
    """``(λmax, λmin)`` estimates of ``gram``; ``draw_start(shape)`` gives each start vector."""
    n = gram.shape[-1]
    shape = (*gram.shape[:-2], n, 1)
    largest = rayleigh_after_one_step(gram, draw_start(shape))
    identity = torch.eye(n, dtype=gram.dtype, device=gram.device)
    shifted = gram - largest[..., None, None] * identity
    smallest = rayleigh_after_one_step(shifted, draw_start(shape)) + largest
    return largest, smallest


class OFPenalty(nn.Module):
    """O.F. over the feature maps the model returns (train-mode output 4, a dict of lists)."""

    def __init__(self, beta=1e-6, positions=OF_POSITIONS):
        super().__init__()
        unknown = set(positions) - set(OF_POSITIONS)
        if unknown:
            raise ValueError(f"unknown O.F. positions {sorted(unknown)}; choose from "
                             f"{', '.join(OF_POSITIONS)}")
        self.beta, self.positions = beta, tuple(positions)

    def map_penalty(self, feature_map):
        b, c = feature_map.shape[:2]
        flat = feature_map.reshape(b, c, -1).float()
        gram = flat @ flat.transpose(1, 2)
        largest, smallest = estimate_eigenvalue_range(
            gram, lambda shape: torch.randn(shape, device=gram.device, dtype=gram.dtype))
        return self.beta * (largest - smallest).sum() / (b / OF_BATCH_NORMALISER)

    def forward(self, feature_maps):
        total = 0.0
        for position in self.positions:
            maps = feature_maps.get(position, [])
            if not maps:
                continue
            penalty = sum(self.map_penalty(m) for m in maps) / len(maps)
            if position == "intermediate":
                penalty = OF_INTERMEDIATE_SCALE * penalty
            total = total + penalty
        return total


class OWPenalty(nn.Module):
    """O.W. over conv weights: ``forward(conv_layers)`` sums the penalty of each ``nn.Conv2d``."""

    def __init__(self, beta=1e-3):
        super().__init__()
        self.beta = beta

    def forward(self, conv_layers):
        total = 0.0
        for layer in conv_layers:
            weight = layer.weight.reshape(layer.weight.shape[0], -1)
            if weight.shape[0] == 1:
                continue
            gram = weight @ weight.T
            largest, smallest = estimate_eigenvalue_range(
                gram, lambda shape: torch.rand(shape, device=gram.device, dtype=gram.dtype))
            total = total + 10 * self.beta * (largest - smallest) ** 2
        return total
