"""LAG-Net's losses and its ``--loss`` string (``../shared/specs/lagnet.md`` §4).

The string is ``weight*Name`` terms joined by ``+``, e.g. ``1*CrossEntropy+2*Triplet+1*L2``:

- ``CrossEntropy``: plain cross-entropy on each of the seven logits, averaged;
- ``Triplet``: batch-hard triplet (Euclidean, ``--margin``) on each of the five embeddings, averaged;
- ``L2``: the attention feature regulariser, a WS-DAN-style centre loss on the LAS feature matrix
  (:class:`FeatureCenterLoss`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from common.losses import TripletLoss

__all__ = ["LOSS_TYPES", "FeatureCenterLoss", "LAGLoss", "LossTerm", "parse_loss_string"]

LOSS_TYPES = ("CrossEntropy", "Triplet", "L2")


class LossTerm(NamedTuple):
    weight: float
    name: str


def parse_loss_string(text):
    """``"1*CrossEntropy+2*Triplet"`` -> ``[LossTerm(1.0, "CrossEntropy"), LossTerm(2.0, "Triplet")]``.

    The original silently reuses the previous term's function for an unknown name; here every
    malformed term is an error that names it.
    """
    terms = []
    for part in text.split("+"):
        weight, star, name = part.strip().partition("*")
        if not star:
            raise ValueError(f"loss term {part!r} in --loss {text!r} is not of the form "
                             f"weight*Name (e.g. 1*CrossEntropy+2*Triplet+1*L2)")
        try:
            weight = float(weight)
        except ValueError:
            raise ValueError(f"loss term {part!r} in --loss {text!r} has weight {weight!r}, "
                             f"which is not a number") from None
        if name not in LOSS_TYPES:
            raise ValueError(f"unknown loss {name!r} in --loss {text!r}; the names are "
                             f"{', '.join(LOSS_TYPES)} (case-sensitive)")
        if name in {term.name for term in terms}:
            raise ValueError(f"loss {name!r} appears twice in --loss {text!r}; give it once "
                             f"with the summed weight")
        terms.append(LossTerm(weight, name))
    return terms


class FeatureCenterLoss(nn.Module):
    """The ``L2`` attention regulariser (§4, "What L2 is").

    One centre per class of the normalised feature matrix, in the buffer ``feature_center``
    (num_classes x M*2048, zeros at first). For a batch, ``centre = normalize(feature_center[y])``;
    the loss is sum((f - centre)^2) / B against that pre-update centre; in training mode the
    buffer then moves ``beta`` of the way to f: ``feature_center[y] += beta * (f - centre)``.

    With K images of one class in a batch the original keeps one of the K writes (which one is
    unspecified on GPU); here it is always the last one in the batch, so runs are repeatable.
    Under DistributedDataParallel every process applies the whole global batch, so the buffers
    stay equal.
    """

    def __init__(self, num_classes, feature_dim, beta=0.05):
        super().__init__()
        self.beta = beta
        self.register_buffer("feature_center", torch.zeros(num_classes, feature_dim))

    def forward(self, feature_matrix, labels):
        centre = F.normalize(self.feature_center[labels], dim=1)
        loss = (feature_matrix - centre).pow(2).sum() / len(labels)
        if self.training:
            self._update(feature_matrix.detach().float(), labels)
        return loss

    @torch.no_grad()
    def _update(self, features, labels):
        if dist.is_available() and dist.is_initialized():
            features, labels = _all_gather(features), _all_gather(labels)
        centre = F.normalize(self.feature_center[labels], dim=1)
        position = torch.arange(len(labels), device=labels.device)
        last = torch.full((self.feature_center.shape[0],), -1, dtype=torch.long,
                          device=labels.device).scatter_reduce(0, labels, position, "amax")
        winners = last[labels] == position
        self.feature_center[labels[winners]] += self.beta * (features[winners] - centre[winners])


def _all_gather(tensor):
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


class LAGLoss(nn.Module):
    """The weighted sum of the ``--loss`` terms over :class:`lagnet.model.LAGOutputs`.

    Returns the total and a dict of each term's weighted value (for the loss log and plots).
    """

    def __init__(self, terms, num_classes, margin=1.2, feature_dim=24 * 2048, beta=0.05):
        super().__init__()
        self.terms = list(terms)
        names = {term.name for term in self.terms}
        self.cross_entropy = nn.CrossEntropyLoss()
        self.triplet = TripletLoss(margin=margin, metric="euclidean")
        self.center = FeatureCenterLoss(num_classes, feature_dim, beta) if "L2" in names else None

    def forward(self, outputs, labels):
        """Computed in float32, also when the model ran under float16 autocast."""
        values = {}
        for weight, name in self.terms:
            if name == "CrossEntropy":
                value = _mean(self.cross_entropy(logits.float(), labels)
                              for logits in outputs.logits)
            elif name == "Triplet":
                value = _mean(self.triplet(embedding.float(), labels)
                              for embedding in outputs.embeddings)
            else:
                value = self.center(outputs.feature_matrix.float(), labels)
            values[name] = weight * value
        return sum(values.values()), values


def _mean(values):
    values = list(values)
    return sum(values) / len(values)
