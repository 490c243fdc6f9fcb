"""Training checkpoints: written atomically, loaded safely, resumed exactly.

A checkpoint is a dict with ``model``, ``optimizer``, ``scheduler``, ``scaler`` (state dicts or
None), ``epoch`` (the number of finished epochs), ``rng`` (Python, NumPy and torch generator
states) and any extra entries the caller adds. :func:`resume_from` restores all of it, so a run
stopped after epoch N and resumed gives the same weights as an uninterrupted one.

Loading always uses ``torch.load(weights_only=True)``. Checkpoints of the original code bases hold
NumPy scalars (ABD-Net's ``rank1``); these load through an explicit allow-list of NumPy scalar and
dtype constructors, never through unrestricted unpickling.
"""

from __future__ import annotations

import logging
import pickle
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from common.files import atomic_write

__all__ = ["CheckpointError", "LEGACY_NUMPY_GLOBALS", "LoadReport", "capture_rng_state",
           "is_classifier_key", "load_checkpoint", "load_state_dict_checked", "read_state_dict",
           "restore_rng_state", "resume_from", "save_checkpoint", "strip_parallel_prefix",
           "unwrap_model"]


log = logging.getLogger(__name__)

LISTED_KEYS = 10  # mismatched keys of each kind named in an error message (all go to the log)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read; the message names the file and the fix."""


def _legacy_numpy_globals():
    scalar = np._core.multiarray.scalar
    allowed = [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype]
    for name in ("Float64DType", "Float32DType", "Float16DType", "Int64DType", "Int32DType",
                 "Int16DType", "Int8DType", "UInt8DType", "BoolDType"):
        allowed.append(getattr(np.dtypes, name))
    return allowed


LEGACY_NUMPY_GLOBALS = _legacy_numpy_globals()


@dataclass
class LoadReport:
    """What :func:`load_state_dict_checked` did besides loading: ``ignored`` unexpected keys it
    was told to ignore, ``reinitialized`` classifier keys left at their initialisation because
    the file was trained with another class count, and the two ``class_counts``
    ``(file, model)`` (None when every classifier matched)."""

    ignored: list = field(default_factory=list)
    reinitialized: list = field(default_factory=list)
    class_counts: tuple | None = None


def is_classifier_key(key):
    """A parameter of an identity classifier: a module named ``classifier*`` on its path."""
    return any(part.startswith("classifier") for part in key.split(".")[:-1])


def strip_parallel_prefix(state_dict):
    """``module.x`` -> ``x`` for every key: weights saved from inside DataParallel / DDP."""
    return {key.removeprefix("module."): value for key, value in state_dict.items()}


def read_state_dict(path, entries=("state_dict", "model"), loaded=None):
    """The model weights in a file, as every loader of the project reads them.

    The file may be a bare state_dict or a dict holding one under the first of ``entries``
    present (the originals' ``{"state_dict", "rank1", "epoch"}``, ignite's ``{"model", ...}``,
    this project's training states); a DataParallel/DDP ``module.`` prefix is removed.
    ``loaded`` is what :func:`load_checkpoint` already returned for ``path``.

    Returns:
        ``(state_dict, checkpoint)``: the weights and the whole file's contents.

    Raises:
        CheckpointError: the file cannot be read or holds no dict of tensors.
    """
    checkpoint = load_checkpoint(path) if loaded is None else loaded
    state = checkpoint
    if isinstance(checkpoint, dict):
        state = next((checkpoint[name] for name in entries if isinstance(checkpoint.get(name), dict)),
                     checkpoint)
    if not isinstance(state, dict) or not state or not all(
            torch.is_tensor(value) for value in state.values()):
        raise CheckpointError(f"{path} holds no state_dict (a dict of tensors, bare or under "
                              f"{' / '.join(repr(name) for name in entries)})")
    return strip_parallel_prefix(state), checkpoint


def load_state_dict_checked(module, state_dict, ignore_unexpected=(), source="checkpoint",
                            hint="", new_classes_ok=False):
    """Loads ``state_dict`` and reports every key and shape that did not match.

    A missing key, an unexpected key (unless it starts with one of ``ignore_unexpected``) and a
    shape mismatch are each a :class:`CheckpointError` naming ``source``, every offending key and
    both shapes, and ending with ``hint`` (what to check). With ``new_classes_ok`` (fine-tuning),
    classifier parameters (:func:`is_classifier_key`) whose class count differs are left at the
    module's initialisation and listed in the returned :class:`LoadReport` instead.
    """
    own = module.state_dict()
    report = LoadReport()
    mismatched = []
    state_dict = dict(state_dict)
    for key, value in list(state_dict.items()):
        if key in own and tuple(value.shape) != tuple(own[key].shape):
            if new_classes_ok and is_classifier_key(key) and value.shape[1:] == own[key].shape[1:]:
                report.reinitialized.append(key)
                report.class_counts = (int(value.shape[0]), int(own[key].shape[0]))
                state_dict[key] = own[key]
            else:
                mismatched.append(f"{key}: file {tuple(value.shape)}, model {tuple(own[key].shape)}")
    # as torch's own loader: a BatchNorm counter absent from an old file is not missing
    missing = [key for key in own
               if key not in state_dict and not key.endswith("num_batches_tracked")]
    unexpected = [key for key in state_dict if key not in own]
    report.ignored = [key for key in unexpected if key.startswith(tuple(ignore_unexpected))]
    unexpected = [key for key in unexpected if key not in report.ignored]
    if missing or unexpected or mismatched:
        kinds = [(label, items) for label, items in (
            ("missing key(s)", missing), ("unexpected key(s)", unexpected),
            ("shape mismatch(es)", mismatched)) if items]
        for label, items in kinds:  # every key, in the log; the message names the first ones
            log.warning(f"{source}: {len(items)} {label}:\n  " + "\n  ".join(items))
        parts = [f"{len(items)} {label}: {', '.join(items[:LISTED_KEYS])}"
                 + (f" and {len(items) - LISTED_KEYS} more (all in the log)"
                    if len(items) > LISTED_KEYS else "") for label, items in kinds]
        raise CheckpointError(f"{source} does not match the model: {'; '.join(parts)}{hint}")
    module.load_state_dict(state_dict, strict=False)
    return report


def unwrap_model(model):
    """The module inside DataParallel / DistributedDataParallel wrappers."""
    return model.module if hasattr(model, "module") else model


def capture_rng_state():
    np_state = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                       "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                       "cached_gaussian": float(np_state[4])}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state):
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["name"], numpy_state["keys"].numpy().astype(np.uint32),
                         numpy_state["pos"], numpy_state["has_gauss"],
                         numpy_state["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path, *, model, epoch, optimizer=None, scheduler=None, scaler=None, **extra):
    """Writes a resumable checkpoint to ``path`` atomically (temporary file + rename)."""
    state = {
        "model": unwrap_model(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": int(epoch),
        "rng": capture_rng_state(),
    }
    state.update(extra)
    with atomic_write(path) as handle:
        torch.save(state, handle)
    return Path(path)


def load_checkpoint(path, map_location="cpu"):
    """``torch.load(path, weights_only=True)`` with the legacy NumPy allow-list."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with torch.serialization.safe_globals(LEGACY_NUMPY_GLOBALS):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        refused = [line.strip() for line in str(err).splitlines() if "GLOBAL" in line]
        if refused:
            raise CheckpointError(
                f"checkpoint {path} holds objects that are not tensors, containers or NumPy "
                f"scalars, so it is not loaded (unpickling them could run arbitrary code): "
                f"{refused[0]} If the file is yours, re-save only its state_dict.") from None
        raise CheckpointError(f"checkpoint {path} is not a torch checkpoint (corrupt or another "
                              f"format)") from None
    except Exception as err:  # any other failure to unpickle: an empty, cut or foreign file
        reason = ": ".join([type(err).__name__, *str(err).strip().splitlines()[:1]])
        size = path.stat().st_size
        raise CheckpointError(f"checkpoint {path} ({size} bytes) is not a torch checkpoint "
                              f"(empty, truncated or another format: {reason})") from None


def resume_from(path, model, optimizer=None, scheduler=None, scaler=None, map_location="cpu",
                loaded=None):
    """Restores model, optimizer, scheduler, scaler and RNG states from a checkpoint written by
    :func:`save_checkpoint`; returns the checkpoint dict (``["epoch"]`` = epochs finished).

    ``loaded`` is what :func:`load_checkpoint` already returned for ``path``, so a caller that had
    to look inside the file first does not read it (up to a GB) twice.
    """
    checkpoint = load_checkpoint(path, map_location) if loaded is None else loaded
    if not isinstance(checkpoint, dict) or "model" not in checkpoint or "epoch" not in checkpoint:
        raise CheckpointError(f"{path} is not a resumable checkpoint (it lacks 'model' and "
                              f"'epoch'); load it as weights instead")
    load_state_dict_checked(unwrap_model(model), checkpoint["model"], source=str(path))
    for name, target in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        if target is not None:
            if checkpoint.get(name) is None:
                raise CheckpointError(f"{path} has no {name} state to resume from")
            target.load_state_dict(checkpoint[name])
    restore_rng_state(checkpoint["rng"])
    return checkpoint
