"""The run skeleton that every method's ``main.py`` shares.

A method's run is a subclass of :class:`Engine` that states only its recipe:

* :meth:`Engine.compute_loss`: a training batch -> ``(total loss, {term: value})``;
* :meth:`Engine.evaluation_due` and :meth:`Engine.state_due`: its evaluation and checkpoint
  schedule;
* :meth:`Engine.save_weights`: the weight files in the original code's format;
* :attr:`Engine.schedule_at_epoch_start`, :attr:`Engine.best_key`, :attr:`Engine.state_file`
  and, for extra resumable state (a loss's buffers), :meth:`Engine.extra_state`.

The engine does everything else once, the same way for every method: the output folder (one run
at a time, see :mod:`common.runfolder`), logging, seeding, device, DDP / DataParallel wrapping,
the epoch loop with a divergence check, evaluation with the method's retrieval convention
(:class:`common.eval.Retrieval`), the best evaluation, the resumable state (written before the
weight files, so a folder that looks resumable always is), exact resume, Ctrl-C / SIGTERM, and
one results file layout with one printed table (:mod:`common.eval.report`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from tqdm import tqdm

from common.checkpoint import CheckpointError, resume_from, save_checkpoint, unwrap_model
from common.data.dataset import DatasetError
from common.eval import NonFiniteFeaturesError, evaluate_features, extract_features
from common.eval.report import format_run_table, read_run_results, run_results, write_run_results
from common.history import LossMeter, TrainingHistory
from common.runfolder import RunFolder
from common.runtime import (Distributed, OptionError, RunInterrupted, TrainingDiverged, autocast,
                            grad_scaler, optimizer_step, seed_everything, select_device,
                            setup_logging, step_scheduler)

__all__ = ["EXPLODED_LOSS", "Engine", "EvalTarget", "RunContext", "open_run",
           "refuse_to_overwrite", "resume_file"]

log = logging.getLogger(__name__)

# k-reciprocal re-ranking (k1, k2, lambda) of the paper (Zhong et al. 2017), which every method's
# --re_rank / TEST.RE_RANK uses.
RE_RANKING = (20, 6, 0.3)

# A batch loss above this is taken as divergence: the methods' losses (cross-entropy, triplet on
# features of a healthy network, regularisers) stay orders of magnitude below it.
EXPLODED_LOSS = 1e6


@dataclass
class EvalTarget:
    """A query/gallery set to evaluate on: the dataset (for names and counts) and its loaders."""

    dataset: object
    query_loader: object
    gallery_loader: object


@dataclass
class RunContext:
    """Where and how a run runs: its folder, device, process group, and the command-line flags
    that continue it (printed when it is interrupted)."""

    folder: Path
    device: torch.device
    distributed: Distributed
    resume_hint: str = ""

    @property
    def is_main(self):
        return self.distributed.is_main

    def barrier(self):
        if self.distributed.enabled:
            torch.distributed.barrier()


@contextlib.contextmanager
def open_run(folder, *, log_name, seed, cpu, distributed, resume_hint="", clear=False):
    """Holds ``folder`` for one run (lock, stale temporary files removed; with ``clear`` all its
    contents deleted first), logs to ``folder/log_name``, seeds every generator with
    ``seed + rank`` and picks the device; yields the :class:`RunContext`."""
    folder = Path(folder)
    with RunFolder(folder, enabled=distributed.is_main, logs=(log_name,)) as run_folder:
        cleared = clear and distributed.is_main and run_folder.clear()
        if distributed.enabled:
            torch.distributed.barrier()
        setup_logging(folder / log_name, main_process=distributed.is_main)
        if cleared:
            log.info(f"removed the previous contents of {folder}")
        for tmp in run_folder.removed:
            log.info(f"removed {tmp}, a partial file left by an interrupted run")
        seed_everything(seed + distributed.rank)
        device = select_device(cpu, distributed.local_rank)
        yield RunContext(folder, device, distributed, resume_hint)


def refuse_to_overwrite(saved, how_to_continue):
    """Refuses a new training run where ``saved`` (a run's resumable state) exists, so that no
    run is overwritten by accident.

    Raises:
        OptionError: naming the folder, the file and ``how_to_continue`` (the method's flags).
    """
    saved = Path(saved)
    if saved.exists():
        raise OptionError(f"{saved.parent} already holds a run ({saved.name}); {how_to_continue}")


def resume_file(resume, state_path, evaluating, expected=""):
    """The ``--resume`` file of a torchreid-style command line (``--resume``, ``--evaluate``,
    ``--save-dir``) as a Path, or None when not given.

    Raises:
        CheckpointError: ``resume`` is not a file (``expected`` says what to pass instead).
        OptionError: a training run where ``state_path`` holds one, unless it resumes from
            ``state_path`` itself: a new run, or one resumed from another file (an earlier
            ``checkpoint_ep<N>``), would overwrite that run's state, history and best weights.
    """
    resume = Path(resume) if resume else None
    if resume is not None and not resume.is_file():
        what = "is a folder" if resume.is_dir() else "does not exist"
        raise CheckpointError(f"--resume {resume} {what}{expected}")
    if evaluating:
        return resume
    state_path = Path(state_path)
    if resume is None:
        refuse_to_overwrite(state_path, f"continue it with --resume {state_path}, or pick "
                                        f"another --save-dir")
    elif state_path.exists() and resume.resolve() != state_path.resolve():
        refuse_to_overwrite(state_path, f"resuming from {resume} here would overwrite it: "
                                        f"continue that run with --resume {state_path}, or "
                                        f"resume from {resume.name} into another --save-dir")
    return resume


class Engine:
    """One run of one method: training epochs, evaluations, files. Subclass it per method.

    Attributes:
        epoch: epochs finished (the next epoch's 0-based index).
        history: losses per epoch and metrics per evaluation (:class:`TrainingHistory`).
    """

    name = "method"  # in logs, tables and results files
    best_key = "rank1"  # the metric of the last target that picks the best evaluation
    schedule_at_epoch_start = False  # step the LR schedule before an epoch (pre-1.1 torch code)
    state_file = "training_state.pt"  # the resumable state in the run folder

    def __init__(self, context, model, *, targets, retrieval, optimizer=None, scheduler=None,
                 criterion=None, train_loader=None, max_epoch=0, amp=False, re_rank=False,
                 weights_source="the initial weights", eval_before_training=False):
        self.context, self.folder = context, Path(context.folder)
        self.device = context.device
        self.model, self.criterion = model, criterion
        self.optimizer, self.scheduler = optimizer, scheduler
        self.train_loader, self.targets = train_loader, targets
        self.retrieval, self.re_rank, self.amp = retrieval, re_rank, amp
        self.max_epoch = max_epoch
        self.weights_source = weights_source
        self.eval_before_training = eval_before_training
        self.scaler = grad_scaler(context.device, amp)
        self.history = TrainingHistory()
        self.epoch = 0
        self.saved_state = None  # the last resumable state written or resumed from
        self.in_after_epoch = False  # evaluating or saving the epoch just trained

    # --- the recipe: what a method states -------------------------------------------------------

    def compute_loss(self, batch):
        """``(total, terms)`` for one training batch; ``total`` is back-propagated."""
        raise NotImplementedError

    def evaluation_due(self):
        """Whether to evaluate after the epoch just finished (``self.epoch``)."""
        return self.epoch == self.max_epoch

    def state_due(self, evaluated):
        """Whether to write the resumable state and the weight files after this epoch."""
        return True

    def save_weights(self, evaluated, is_best):
        """Writes the method's weight files (the original's format) after an epoch."""

    def extra_state(self):
        """Entries added to the resumable state (e.g. a loss's buffers)."""
        return {}

    def load_extra_state(self, checkpoint):
        """Restores what :meth:`extra_state` added."""

    def prepare_epoch(self):
        """Before an epoch's batches: the sampler's epoch and train mode."""
        sampler = self.train_loader.batch_sampler
        if not hasattr(sampler, "set_epoch"):  # a plain BatchSampler around the sampler
            sampler = self.train_loader.sampler
        sampler.set_epoch(self.epoch)
        self.model.train()

    def state_path(self):
        return self.folder / self.state_file

    # --- the skeleton: the same for every method ------------------------------------------------

    @property
    def is_main(self):
        return self.context.is_main

    @property
    def module(self):
        return unwrap_model(self.model)

    def wrap_for_training(self, find_unused_parameters=False, data_parallel=True):
        """DistributedDataParallel under torchrun; DataParallel over every visible GPU when
        ``data_parallel`` and more than one is visible; the plain model otherwise."""
        distributed, device = self.context.distributed, self.device
        if distributed.enabled:
            self.model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=find_unused_parameters)
        elif data_parallel and device.type == "cuda" and torch.cuda.device_count() > 1:
            self.model = nn.DataParallel(self.model)

    def forward(self, images):
        """The training forward pass of a batch (moved to the device), under ``--amp``."""
        with autocast(self.device, self.amp):
            return self.model(images.to(self.device))

    def run_batches(self, title):
        """One pass over the training loader; returns the mean of each loss term and ``total``.

        Raises:
            TrainingDiverged: a batch loss is not finite or above :data:`EXPLODED_LOSS`.
        """
        meter = LossMeter()
        progress = tqdm(self.train_loader, desc=title, leave=False, disable=not self.is_main)
        for step, batch in enumerate(progress, 1):
            total, terms = self.compute_loss(batch)
            value = float(total.detach())
            if not math.isfinite(value) or abs(value) > EXPLODED_LOSS:
                raise TrainingDiverged(
                    f"training diverged in {title}, step {step} (loss {value:.4g}); the last "
                    f"good checkpoint is {self.saved_state or 'none (nothing saved yet)'}; lower "
                    f"the learning rate")
            optimizer_step(total, self.optimizer, self.scaler)
            meter.update({**terms, "total": value})
            progress.set_postfix(loss=f"{meter.means()['total']:.3f}")
        return meter.means()

    def train_epoch(self):
        """One epoch with the LR schedule stepped before or after it; logged in the history."""
        if self.schedule_at_epoch_start:
            step_scheduler(self.scheduler)
        self.prepare_epoch()
        losses = self.run_batches(f"epoch {self.epoch + 1}/{self.max_epoch}")
        lr = self.optimizer.param_groups[0]["lr"]
        if not self.schedule_at_epoch_start:
            self.scheduler.step()
        self.epoch += 1
        self.history.log_epoch(self.epoch, lr, losses)
        log.info(f"epoch {self.epoch}/{self.max_epoch} lr {lr:.2e} "
                 + " ".join(f"{name} {value:.4f}" for name, value in losses.items()))

    def evaluate_target(self, name, target, return_distmat=False):
        """Features of the target's query and gallery with the method's retrieval convention,
        then CMC/mAP/mINP (k-reciprocal re-ranked with ``re_rank``), block by block so the
        query x gallery matrix exists only when ``return_distmat``; returns ``(results,
        distmat or None)``.

        Raises:
            NonFiniteFeaturesError: the network gave NaN or infinite features (message names
                the weights).
        """
        convention = self.retrieval
        extract = dict(device=self.device, flip=convention.flip, normalize=convention.normalize,
                       amp=self.amp, progress=self.is_main)
        try:
            qf, q_pids, q_camids = extract_features(self.module, target.query_loader,
                                                    desc=f"{name} query", **extract)
            gf, g_pids, g_camids = extract_features(self.module, target.gallery_loader,
                                                    desc=f"{name} gallery", **extract)
        except NonFiniteFeaturesError as err:
            raise NonFiniteFeaturesError(f"{err} (weights: {self.weights_source}); nothing was "
                                         f"evaluated or saved") from None
        results = evaluate_features(qf, gf, q_pids, g_pids, q_camids, g_camids,
                                    metric=convention.distance,
                                    re_rank=RE_RANKING if self.re_rank else None,
                                    protocol=convention.protocol, return_distmat=return_distmat)
        return results, results.pop("distmat", None)

    def evaluate(self, on_target=None):
        """Evaluates every target (main process); returns ``{name: results}``. ``on_target(name,
        target, results, distmat)`` is called after each (e.g. to draw ranked lists)."""
        all_results = {}
        for name, target in self.targets.items():
            start = time.time()
            results, distmat = self.evaluate_target(name, target,
                                                    return_distmat=on_target is not None)
            cmc = results["cmc"]
            after = f", epoch {self.epoch}" if self.epoch else ""  # 0: untrained or unknown
            log.info(f"{self.name} on {name}{after}: mAP {100 * results['mAP']:.1f} "
                     f"R1 {100 * cmc[0]:.1f} R5 {100 * cmc[4]:.1f} R10 {100 * cmc[9]:.1f} "
                     f"({results['num_valid_queries']}/{results['num_queries']} queries with a "
                     f"valid match, {time.time() - start:.1f} s)")
            if on_target is not None:
                on_target(name, target, results, distmat)
            all_results[name] = results
        return all_results

    def results_payload(self, kind, all_results, epoch=None):
        """The results-file payload; ``epoch`` is the run's epoch for ``"best"`` and ``"last"``;
        otherwise the one given (for ``"evaluate"`` the epoch the weights file records, None when
        unknown)."""
        return run_results(self.name, kind, self.epoch if kind in ("best", "last") else epoch,
                           all_results,
                           {name: target.dataset for name, target in self.targets.items()},
                           retrieval=self.retrieval, re_rank=self.re_rank)

    def report(self, kind, all_results, epoch=None):
        """Writes ``results_<kind>.json`` and prints the results table once (main process)."""
        payload = self.results_payload(kind, all_results, epoch)
        write_run_results(self.folder / f"results_{kind}.json", payload)
        print(format_run_table(payload), flush=True)
        return payload

    def best(self):
        """The history row of the best evaluation so far (the earliest on ties), or None."""
        return self.history.best(self.best_key)

    def after_epoch(self):
        """Evaluation when due, then the resumable state, then the weight files (main only)."""
        evaluated = self.evaluation_due()
        if evaluated:
            if self.is_main:
                try:
                    all_results = self.evaluate()
                except DatasetError:  # an unreadable test image: the epoch's training is kept
                    self.save_state(evaluated=False)
                    log.info(f"epoch {self.epoch} is saved unevaluated; after fixing the data, "
                             f"continue with {self.context.resume_hint or 'the same command'}")
                    raise
                last = list(all_results.values())[-1]
                self.history.log_evaluation(self.epoch, _metrics(last))
                write_run_results(self.folder / "results_last.json",
                                  self.results_payload("last", all_results))
                best = self.best()
                if best is not None and best["epoch"] == self.epoch:
                    write_run_results(self.folder / "results_best.json",
                                      self.results_payload("best", all_results))
            self.context.barrier()
        if self.state_due(evaluated):
            if self.is_main:
                self.save_state(evaluated)
            self.context.barrier()

    def evaluate_before_training(self):
        """Evaluates the initial weights (``--eval-before-training``): printed, written to
        ``results_before_training.json`` and kept in the history as the first point of
        ``metrics.png``, at the epoch number before the first training epoch; never the best."""
        if self.is_main:
            all_results = self.evaluate()
            self.history.log_evaluation(self.epoch_before_training, _metrics(
                list(all_results.values())[-1]), before_training=True)
            self.report("before_training", all_results, epoch=self.epoch_before_training)
        self.context.barrier()

    @property
    def epoch_before_training(self):
        """The history's epoch number of the weights before the first training epoch."""
        return self.epoch

    def save_state(self, evaluated):
        """The resumable state first, then the weight files and the history plots."""
        path = self.state_path()
        save_checkpoint(path, model=self.model, epoch=self.epoch, optimizer=self.optimizer,
                        scheduler=self.scheduler, scaler=self.scaler,
                        history=self.history.state_dict(), evaluated=evaluated,
                        **self.extra_state())
        self.saved_state = path
        best = self.best()
        self.save_weights(evaluated, best is not None and best["epoch"] == self.epoch)
        self.history.write(self.folder)
        log.info(f"saved epoch {self.epoch} to {self.folder} (the folder holds "
                 f"{_folder_size(self.folder) / 1e6:,.0f} MB)")

    def resume(self, path, loaded=None):
        """Continues the run saved in ``path`` exactly (``loaded``: its contents, if read)."""
        checkpoint = resume_from(path, self.module, self.optimizer, self.scheduler, self.scaler,
                                 map_location=self.device, loaded=loaded)
        self.epoch = checkpoint["epoch"]
        self.history.load_state_dict(checkpoint["history"])
        self.load_extra_state(checkpoint)
        self.saved_state = Path(path)
        log.info(f"resumed {path} after epoch {self.epoch}")
        if self.is_main:  # a run killed between its state and its weight files: write them now
            best = self.best()
            self.save_weights(bool(checkpoint.get("evaluated", False)),
                              best is not None and best["epoch"] == self.epoch)

    def fit(self):
        """Trains until ``max_epoch``; Ctrl-C or SIGTERM end it with where to continue. With
        ``eval_before_training`` a run that has trained nothing yet is evaluated first."""
        if self.epoch >= self.max_epoch:
            log.warning(f"nothing to train: the run has finished {self.epoch} of "
                        f"{self.max_epoch} epochs; raise the epoch count to train further")
        with _sigterm_as_interrupt():
            try:
                if self.eval_before_training and not self.history.epochs:
                    self.evaluate_before_training()
                self.train_loop()
            except KeyboardInterrupt as err:
                raise RunInterrupted(self.interrupted_message(),
                                     getattr(err, "exit_status", 130)) from None

    def train_loop(self):
        """The epochs: train, then evaluate and save as due (a method with phases extends it)."""
        while self.epoch < self.max_epoch:
            self.train_epoch()
            self.in_after_epoch = True
            self.after_epoch()
            self.in_after_epoch = False

    def interrupted_where(self):
        """Where in the run an interruption came (a method with phases extends it)."""
        return (f"after epoch {self.epoch} (evaluating or saving it)" if self.in_after_epoch
                else f"in epoch {self.epoch + 1}")

    def interrupted_message(self):
        where = self.interrupted_where()
        if self.saved_state is None:
            return f"interrupted {where}; nothing was saved yet"
        return (f"interrupted {where}; the last saved state is {self.saved_state}; continue "
                f"with {self.context.resume_hint or 'the same command'}")

    def report_best(self):
        """Prints the best evaluation of the run, as ``results_best.json`` holds it (also one
        written before a resume)."""
        path = self.folder / "results_best.json"
        if self.is_main and path.exists():
            payload = read_run_results(path)
            print(format_run_table(payload), flush=True)
            return payload
        return None


def _metrics(results):
    cmc = results["cmc"]
    return {"mAP": results["mAP"], "mINP": results["mINP"], "rank1": cmc[0], "rank3": cmc[2],
            "rank5": cmc[4], "rank10": cmc[9], "rank20": cmc[19]}


def _folder_size(folder):
    """Bytes of the files under ``folder``."""
    return sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C; the process then exits with status 128 + 15, as a shell
    reports a terminated program."""

    exit_status = 128 + signal.SIGTERM


def _raise_terminated(signum, frame):
    raise _Terminated()


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM raises :class:`_Terminated` (a KeyboardInterrupt) in the main thread for the
    block, so it ends a run as Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
