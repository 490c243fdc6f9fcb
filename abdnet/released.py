"""Checkpoints in the released ABD-Net / IAB-Net format (``../shared/specs/abdnet.md`` §2.10,
``iabnet.md`` §3.6): ``torch.save({"state_dict", "rank1", "epoch"})`` with the state_dict taken
from inside DataParallel, ``rank1`` a NumPy scalar in the best file, ``epoch`` 0-based.

The two branches may be in either order (the originals' order follows ``PYTHONHASHSEED``) and keys
may carry a ``module.`` prefix; :func:`read_released_checkpoint` normalises both. Unlike the
original loader, which skipped keys that did not match, :func:`load_released_checkpoint` fails on
any missing or unexpected key and any shape mismatch, listing them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.checkpoint import load_state_dict_checked, read_state_dict
from abdnet.two_branch import remap_branch_order

__all__ = ["ReleasedCheckpoint", "load_released_checkpoint", "read_released_checkpoint"]


@dataclass
class ReleasedCheckpoint:
    """A file read by :func:`read_released_checkpoint`: its state_dict with the global branch
    first, and the ``rank1`` and ``epoch`` it records."""

    path: Path
    state_dict: dict
    rank1: float
    epoch: int

    @property
    def num_classes(self):
        """The width of the global classifier, or None when the file has none."""
        weight = self.state_dict.get("branches.0.1.classifier.weight")
        return None if weight is None else int(weight.shape[0])


def read_released_checkpoint(path, rename_keys=None, loaded=None):
    """Reads a released file (``{"state_dict", "rank1", "epoch"}``); a bare state_dict and the
    trainer's ``training_state.pth.tar`` are accepted too. ``rename_keys`` (state_dict ->
    state_dict) maps a method's other historical key names to the current ones; ``loaded`` is
    what ``load_checkpoint(path)`` already returned, so the file is not read twice.

    ``rank1`` is a pickled NumPy scalar; it loads through common.checkpoint's allow-list, never
    through unrestricted unpickling.
    """
    state, checkpoint = read_state_dict(path, loaded=loaded)
    state = remap_branch_order(state)
    if rename_keys is not None:
        state = rename_keys(state)
    return ReleasedCheckpoint(Path(path), state,
                              float(checkpoint.get("rank1", float("nan"))),
                              int(checkpoint.get("epoch", -1)))


def load_released_checkpoint(model, checkpoint, new_classes_ok=False):
    """Loads a released file (a path, or what :func:`read_released_checkpoint` returned) into
    ``model`` strictly; returns ``{"rank1", "epoch"}`` as the file records them, and the
    ``reinitialized`` classifier keys and ``class_counts`` (file, model) when ``new_classes_ok``
    let classifiers of another class count start from their initialisation."""
    if not isinstance(checkpoint, ReleasedCheckpoint):
        checkpoint = read_released_checkpoint(checkpoint)
    report = load_state_dict_checked(
        model, checkpoint.state_dict, source=str(checkpoint.path), new_classes_ok=new_classes_ok,
        hint=". Was it trained with the same architecture flags (--abd-dan, --abd-np, "
             "--shallow-cam)?")
    return {"rank1": checkpoint.rank1, "epoch": checkpoint.epoch,
            "reinitialized": report.reinitialized, "class_counts": report.class_counts}
