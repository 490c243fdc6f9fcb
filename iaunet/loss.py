"""IAUnet's training loss (``../shared/specs/iaunet.md`` §4):

L = CE_ls(logits) + Triplet(f) + alpha * L_mask

- CE with label smoothing 0.1 on the logits;
- batch-hard triplet with margin 0.3 on f, the post-BN feature, with ``--distance``: the
  released default "consine" is -cos (here 1 - cos, which gives the same loss), or Euclidean;
- L_mask: each IAU block's four part maps against the part masks, bilinearly resized to the map
  (``align_corners=True``), with BCE (``--mode ce``), L1 or L2, averaged over the two blocks and
  the four parts. Without masks the term is left out.
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from common.losses import CrossEntropyLabelSmooth, TripletLoss

__all__ = ["DISTANCES", "IAUnetLoss", "MASK_LOSSES", "mask_loss"]

MASK_LOSSES = {"ce": F.binary_cross_entropy, "l1": F.l1_loss, "l2": F.mse_loss}
DISTANCES = {"consine": "cosine", "cosine": "cosine", "euclidean": "euclidean"}


def mask_loss(attention_maps, masks, mode="ce"):
    """Mean over the blocks' (B, 4, h, w) maps of the loss against ``masks`` (B, 4, H, W)
    resized to (h, w); each loss is the mean over samples, parts and pixels."""
    criterion = MASK_LOSSES[mode]
    total = 0.0
    for attention in attention_maps:
        target = F.interpolate(masks, size=attention.shape[-2:], mode="bilinear",
                               align_corners=True)
        total = total + criterion(attention.float(), target.float())
    return total / len(attention_maps)


class IAUnetLoss(nn.Module):
    """Returns the total and a dict of its terms for one batch."""

    def __init__(self, num_classes, margin=0.3, distance="consine", alpha=0.5, mode="ce"):
        super().__init__()
        if distance not in DISTANCES:
            raise ValueError(f"--distance {distance!r}: use consine (the released spelling), "
                             f"cosine or euclidean")
        if mode not in MASK_LOSSES:
            raise ValueError(f"--mode {mode!r}: use ce, l1 or l2")
        self.cross_entropy = CrossEntropyLabelSmooth(num_classes, epsilon=0.1)
        self.triplet = TripletLoss(margin, metric=DISTANCES[distance])
        self.alpha, self.mode = alpha, mode

    def forward(self, outputs, labels, masks=None):
        """``outputs``: the model's train-mode tuple; ``masks``: (B, 4, H, W) in [0, 1] or None."""
        logits, feature = outputs[0], outputs[1]
        terms = {"xent": self.cross_entropy(logits.float(), labels),
                 "htri": self.triplet(feature.float(), labels)}
        if masks is not None and len(outputs) > 2:
            terms["mask"] = self.alpha * mask_loss(outputs[2], masks, self.mode)
        return sum(terms.values()), terms
