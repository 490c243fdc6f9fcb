"""Weights files in torchreid's (2018) format, which ABD-Net's and IAB-Net's released code write
(``../shared/specs/abdnet.md`` §2.10, ``iabnet.md`` §3.6): ``torch.save({"state_dict", "rank1",
"epoch"})`` with the state_dict taken from inside DataParallel, ``rank1`` a NumPy scalar in the
best file, ``epoch`` 0-based.

A method's own key conventions (branch order, historical names) are applied by the ``remap_keys``
it passes. Unlike the original loader, which skipped keys that did not match,
:func:`load_torchreid_checkpoint` fails on any missing or unexpected key and any shape mismatch,
listing them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.checkpoint import load_state_dict_checked, read_state_dict

__all__ = ["TorchreidCheckpoint", "load_torchreid_checkpoint", "read_torchreid_checkpoint"]


@dataclass
class TorchreidCheckpoint:
    """A file read by :func:`read_torchreid_checkpoint`: its state_dict (keys remapped), the
    ``rank1`` it records (NaN when none) and the 0-based index of its last main epoch (-1 when
    it records none)."""

    path: Path
    state_dict: dict
    rank1: float
    epoch: int

    def num_classes(self, classifier_key):
        """The row count of ``classifier_key`` (a classifier's weight), or None when the file
        has no such key."""
        weight = self.state_dict.get(classifier_key)
        return None if weight is None else int(weight.shape[0])


def read_torchreid_checkpoint(path, remap_keys=None, loaded=None):
    """Reads a ``{"state_dict", "rank1", "epoch"}`` file; a bare state_dict and this project's
    ``training_state.pth.tar`` are accepted too. ``remap_keys`` (state_dict -> state_dict) maps
    a method's other key conventions to its network's; ``loaded`` is what
    ``load_checkpoint(path)`` already returned, so the file is not read twice.

    ``rank1`` is a pickled NumPy scalar; it loads through common.checkpoint's allow-list, never
    through unrestricted unpickling.

    Raises:
        common.checkpoint.CheckpointError: the file cannot be read or holds no state_dict.
    """
    state, checkpoint = read_state_dict(path, loaded=loaded)
    if remap_keys is not None:
        state = remap_keys(state)
    epoch = int(checkpoint.get("epoch", -1))
    if "state_dict" not in checkpoint and isinstance(checkpoint.get("model"), dict):
        epoch -= 1  # a training state counts the epochs finished; the format, the last one's index
    return TorchreidCheckpoint(Path(path), state, float(checkpoint.get("rank1", float("nan"))),
                               epoch)


def load_torchreid_checkpoint(model, checkpoint, new_classes_ok=False, hint=""):
    """Loads ``checkpoint`` (what :func:`read_torchreid_checkpoint` returned) into ``model``
    strictly; returns ``{"rank1", "epoch"}`` as the file records them, and the ``reinitialized``
    classifier keys and ``class_counts`` (file, model) when ``new_classes_ok`` let classifiers
    of another class count start from their initialisation. ``hint`` ends the error message.

    Raises:
        common.checkpoint.CheckpointError: a key is missing or unexpected, or a shape differs.
    """
    report = load_state_dict_checked(model, checkpoint.state_dict, source=str(checkpoint.path),
                                     new_classes_ok=new_classes_ok, hint=hint)
    return {"rank1": checkpoint.rank1, "epoch": checkpoint.epoch,
            "reinitialized": report.reinitialized, "class_counts": report.class_counts}
