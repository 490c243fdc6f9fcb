"""The training loss of the torchreid-style run: torchreid's cross-entropy and triplet, with the
orthogonality regularisers ABD-Net added to it (``../shared/specs/abdnet.md`` §3; IAB-Net keeps
it, ``iabnet.md`` §4):

L = λ_xent · mean over heads (CE) + λ_htri · mean over features (triplet) + O.W. + [O.F. once
epoch ≥ of_start_epoch]

The cross-entropy is label-smoothed (ε = 0.1) with ``--label-smooth``; the triplet is batch-hard
on the three unnormalised 1,024-d features (Euclidean, ``--margin``), only with ``--criterion
htri``. O.F. and O.W. are in :mod:`common.layers.orthogonality`; neither applies during the
fixbase epochs. O.W. reads the convs the network names (``orthogonality_convs(scope)``).
"""

from __future__ import annotations

import torch.nn as nn

from common.layers.orthogonality import OF_POSITIONS, OFPenalty, OWPenalty
from common.losses import CrossEntropyLabelSmooth, TripletLoss

__all__ = ["TrainingLoss"]


class TrainingLoss(nn.Module):
    """Returns the total and a dict of its terms for one batch.

    Args:
        criterion: ``"xent"`` (cross-entropy only) or ``"htri"`` (cross-entropy + triplet).
        use_of / use_ow: the regularisers (``--use-of``, ``--use-ow``).
        ow_scope: ``"stem_only"`` (the released code) or ``"all"`` (the paper).
    """

    def __init__(self, num_classes, criterion="xent", label_smooth=False, margin=0.3,
                 lambda_xent=1.0, lambda_htri=0.1, use_of=False, of_beta=1e-6,
                 of_start_epoch=23, of_positions=OF_POSITIONS, use_ow=False, ow_beta=1e-3,
                 ow_scope="stem_only"):
        super().__init__()
        if criterion not in ("xent", "htri"):
            raise ValueError(f"--criterion must be 'xent' or 'htri', got {criterion!r}")
        self.cross_entropy = CrossEntropyLabelSmooth(num_classes,
                                                     epsilon=0.1 if label_smooth else 0.0)
        self.triplet = TripletLoss(margin=margin) if criterion == "htri" else None
        self.lambda_xent, self.lambda_htri = lambda_xent, lambda_htri
        self.of_penalty = OFPenalty(of_beta, of_positions) if use_of else None
        self.of_start_epoch = of_start_epoch
        if ow_scope not in ("stem_only", "all"):
            raise ValueError(f"the O.W. scope is 'stem_only' or 'all', got {ow_scope!r}")
        self.ow_penalty = OWPenalty(ow_beta) if use_ow else None
        self.ow_scope = ow_scope

    def forward(self, model, outputs, labels, epoch, fixbase=False):
        """``outputs``: the model's train-mode tuple; ``epoch``: the 0-based main epoch."""
        _, logits, triplet_features, feature_maps = outputs
        terms = {"xent": self.lambda_xent * sum(self.cross_entropy(l.float(), labels)
                                                for l in logits) / len(logits)}
        if self.triplet is not None:
            terms["htri"] = self.lambda_htri * sum(self.triplet(f.float(), labels)
                                                   for f in triplet_features) / len(triplet_features)
        if not fixbase:
            if self.ow_penalty is not None:
                terms["ow"] = self.ow_penalty(model.orthogonality_convs(self.ow_scope))
            if self.of_penalty is not None and epoch >= self.of_start_epoch:
                terms["of"] = self.of_penalty(feature_maps)
        return sum(terms.values()), terms
