"""Run-time plumbing for the methods' ``main.py``: device, seeding, DDP, mixed precision, logs.

DDP is used when the process was launched by ``torchrun`` (``WORLD_SIZE`` > 1 in the
environment): the gloo backend on the CPU, NCCL on GPUs, one GPU per process (``LOCAL_RANK``).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import random
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from common.checkpoint import CheckpointError
from common.data import DatasetError
from common.eval import NonFiniteFeaturesError
from common.files import FileWriteError
from common.layers.resnet import PretrainedWeightsError
from common.runfolder import FolderInUseError

__all__ = ["Distributed", "OptionError", "RunInterrupted", "TrainingDiverged", "USER_ERRORS",
           "add_runtime_flags", "autocast", "close_distributed", "distributed_session",
           "exit_on_user_error", "grad_scaler", "init_distributed", "is_main_process",
           "optimizer_by_name", "optimizer_step", "refuse_counts_below", "seed_everything",
           "select_device", "setup_logging", "step_scheduler", "user_error_message"]


class OptionError(ValueError):
    """A command-line or configuration value that cannot run; the message names it and the fix."""


class TrainingDiverged(RuntimeError):
    """The loss became non-finite or exploded; the message names the epoch, step and last good
    checkpoint."""


class RunInterrupted(RuntimeError):
    """Ctrl-C or SIGTERM ended a run; the message says what was saved and how to continue.
    ``exit_status`` is the program's: 130 for Ctrl-C (SIGINT), 143 for SIGTERM."""

    def __init__(self, message, exit_status=130):
        super().__init__(message)
        self.exit_status = exit_status


# What the user can fix: options, data, files, weights, folders, a diverging recipe.
USER_ERRORS = (OptionError, DatasetError, CheckpointError, PretrainedWeightsError, FileWriteError,
               FolderInUseError, NonFiniteFeaturesError, TrainingDiverged)


@contextlib.contextmanager
def exit_on_user_error(program):
    """What a ``main.py`` wraps its run in: an error in what the user gave (options, data,
    checkpoints, ImageNet weights, output folder) or a diverged run ends the program with
    ``<program>: error: <message>`` and exit status 1, without a traceback; an interruption
    (Ctrl-C, SIGTERM) with one line and status 130 (Ctrl-C) or 143 (SIGTERM)."""
    try:
        yield
    except USER_ERRORS as err:
        sys.exit(f"{program}: error: {user_error_message(err)}")
    except (RunInterrupted, KeyboardInterrupt) as err:
        print(f"{program}: {str(err) or 'interrupted'}", file=sys.stderr, flush=True)
        sys.exit(getattr(err, "exit_status", 130))


def user_error_message(err):
    """The message of ``err`` for the user. An error raised in a DataLoader worker reaches the
    main process with the worker's whole traceback in its message ("Caught DatasetError in
    DataLoader worker process 0. Original Traceback ..."); only the original message is kept."""
    message = str(err)
    if message.startswith("Caught ") and "Original Traceback" in message:
        marker = f"{type(err).__name__}: "
        message = message[message.rfind(marker) + len(marker):] if marker in message else \
            message.strip().splitlines()[-1]
    return message.strip()


def refuse_counts_below(minimum, counts):
    """Refuses a count the user gave below ``minimum`` (an image size, a batch, workers), which
    would otherwise fail deep inside PIL, a DataLoader or a sampler.

    Args:
        minimum: the smallest allowed value (1 for sizes and batches, 0 for workers).
        counts: ``{flag as the user writes it: value}``.

    Raises:
        OptionError: naming the first flag below ``minimum``.
    """
    for flag, value in counts.items():
        if value < minimum:
            raise OptionError(f"{flag} {value} must be >= {minimum}")


def step_scheduler(scheduler, steps=1):
    """Steps ``scheduler`` where that is meant to happen before any optimizer step (an epoch-start
    schedule, or one advanced to a resumed epoch), without torch's warning about the order."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
        for _ in range(steps):
            scheduler.step()


# The optimizer names of the four CLIs (case-insensitive) -> torch.optim classes; "amsgrad" is
# torchreid's name for Adam with amsgrad=True.
OPTIMIZERS = {"sgd": "SGD", "adam": "Adam", "amsgrad": "Adam", "adamw": "AdamW", "nadam": "NAdam",
              "rmsprop": "RMSprop", "adagrad": "Adagrad"}


def optimizer_by_name(name, params, flag="--optim", **options):
    """``torch.optim.<name>(params, **options)``: the one place a run's optimizer is made.

    Args:
        name: as the method's CLI spells it, case-insensitive (``adam``, ``ADAM``, ``Adam``,
            ``amsgrad``, ``sgd``, ``NADAM``, ``RMSprop``, ...); ``amsgrad`` sets
            ``amsgrad=True`` on Adam.
        params: parameters or parameter groups.
        flag: the option that named it, for the error message.
        options: the constructor's keyword arguments (lr, weight_decay, momentum, betas, ...).

    Raises:
        OptionError: ``name`` is not one of :data:`OPTIMIZERS`, or torch refuses a value
            (a negative learning rate, weight decay or momentum).
    """
    key = str(name).lower()
    if key not in OPTIMIZERS:
        raise OptionError(f"{flag} {name!r}: choose one of {', '.join(sorted(OPTIMIZERS))}")
    if key == "amsgrad":
        options = {**options, "amsgrad": True}
    try:
        return getattr(torch.optim, OPTIMIZERS[key])(params, **options)
    except ValueError as err:
        given = ", ".join(f"{k} {v}" for k, v in options.items() if k != "amsgrad")
        raise OptionError(f"{flag} {name}: {err} (given {given}); learning rate, weight decay "
                          f"and momentum must be >= 0") from None


def add_runtime_flags(group, separator="-"):
    """Adds the flags every method has beyond its original CLI. Each is accepted in both
    spellings (``--no-pretrained`` and ``--no_pretrained``), the help shows the one of that CLI's
    style (``separator``); the attribute names are ``no_pretrained``, ``pretrained_path``,
    ``amp`` and ``eval_before_training`` either way."""
    other = "_" if separator == "-" else "-"
    group.add_argument(f"--no{separator}pretrained", f"--no{other}pretrained", action="store_true",
                       help="random initialisation instead of ImageNet weights")
    group.add_argument(f"--pretrained{separator}path", f"--pretrained{other}path", type=str,
                       default=None,
                       help="ImageNet ResNet-50 weights file; when not given, the torch hub "
                            "cache")
    group.add_argument("--amp", action="store_true", help="float16 mixed precision on CUDA")
    group.add_argument(f"--eval{separator}before{separator}training",
                       f"--eval{other}before{other}training", action="store_true",
                       help="evaluate the initial weights before the first epoch (the first point "
                            "of metrics.png; results_before_training.json; never the best)")


def select_device(cpu=False, local_rank=0):
    """``cuda:<local_rank>`` when a GPU is present and ``cpu`` is False, else the CPU."""
    if not cpu and torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def seed_everything(seed):
    """Seeds Python's ``random``, NumPy's global generator and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self):
        return self.world_size > 1

    @property
    def is_main(self):
        return self.rank == 0


def init_distributed(cpu=False):
    """Joins the process group when launched by ``torchrun``; a no-op otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_nccl = not cpu and torch.cuda.is_available()
    if use_nccl:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_nccl else "gloo")
    return Distributed(rank, world_size, local_rank)


@contextlib.contextmanager
def distributed_session(cpu=False):
    """:func:`init_distributed`, then :func:`close_distributed` however the block ends."""
    distributed = init_distributed(cpu)
    try:
        yield distributed
    finally:
        close_distributed()


def close_distributed():
    """Leaves the process group cleanly; call it after the DDP model is no longer referenced.

    A DDP reducer that is still alive (or only held by a reference cycle) when the group is
    destroyed lets gloo's worker threads outlive the interpreter, and the process aborts at
    exit with "terminate called without an active exception" in about one run in eight.
    Collecting garbage first frees the reducer; the barrier lets every rank finish its
    collectives before any of them tears the group down.
    """
    if not dist.is_initialized():
        return
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


def is_main_process():
    return not dist.is_initialized() or dist.get_rank() == 0


def autocast(device, enabled):
    """float16 autocast on CUDA when ``enabled``; a no-op context on the CPU."""
    if enabled and torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def grad_scaler(device, enabled):
    """A GradScaler that is active only for mixed precision on CUDA."""
    return torch.amp.GradScaler("cuda", enabled=enabled and torch.device(device).type == "cuda")


def optimizer_step(loss, optimizer, scaler):
    """zero_grad, backward of ``loss`` (scaled for float16), optimizer step, scaler update."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


def setup_logging(log_file=None, main_process=True):
    """Logs INFO to stdout (main process only) and, if given, to ``log_file`` (appended)."""
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(logging.INFO if main_process else logging.WARNING)
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(console)
    if log_file is not None and main_process:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        root.addHandler(handler)
    return root
