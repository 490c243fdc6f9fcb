"""The run of torchreid's (2018) ``train.py`` as ABD-Net's released code extends it
(``../shared/specs/abdnet.md`` §4-§5), which IAB-Net's code keeps unchanged (``iabnet.md`` §5),
on the shared run skeleton (:mod:`common.engine`). A method passes what differs (:class:`Method`):
its name, network, architecture flags, head modules and key conventions.

The run is the released ``train.py``'s:

1. ``--fixbase-epoch`` warm-up epochs (10 by default) before the main loop: only the method's
   head modules train (:func:`open_specified_layers`), the rest is frozen and kept in eval mode;
   no O.F./O.W.; the scheduler is not stepped; afterwards the optimizer state is reset.
2. ``--max-epoch`` main epochs with every layer open, MultiStepLR stepped after each epoch, O.W.
   from main epoch 0 and O.F. from ``--of-start-epoch``. After each one ``checkpoint_ep{N}.pth.tar``
   is written (``{state_dict, rank1: 0, epoch}``); every ``--eval-freq`` epochs and at the last,
   each ``-t`` dataset is evaluated (the eval-mode features, flip-averaged with ``--flip-eval``,
   not normalised, squared Euclidean distance) and ``checkpoint_best.pth.tar`` keeps the best
   rank-1 of the last target.

Beyond the original: ``training_state.pth.tar`` (weights, optimizer, schedule, random states,
history) after every epoch, so ``--resume`` continues exactly; python, NumPy and torch seeded;
a run never overwrites another run's files; torchrun DDP, ``--amp``, progress bars,
``history.json`` with loss and metric plots.
"""

from __future__ import annotations

import copy
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from common.checkpoint import load_checkpoint
from common.data import ImageDataset, RandomIdentitySampler, Sample, build_dataset
from common.data.datasets import NUM_RANDOM_SPLITS
from common.data.transforms import CIFAR_MEAN, build_test_transform, build_train_transform
from common.engine import Engine, EvalTarget, open_run, resume_file
from common.eval import Retrieval, visualize_ranked_results
from common.eval.report import read_run_results, write_run_results
from common.files import atomic_write
from common.runrecord import (adopt_recorded_flags, command_line_values,
                              refuse_another_methods_file, write_run_record)
from common.runtime import (OptionError, distributed_session, exit_on_user_error,
                            optimizer_by_name, refuse_counts_below, step_scheduler)
from common.torchreid_run.args import data_augment_steps
from common.torchreid_run.checkpoint import load_torchreid_checkpoint, read_torchreid_checkpoint
from common.torchreid_run.loss import TrainingLoss

__all__ = ["Method", "OptionError", "TRAINING_STATE", "open_all_layers", "open_specified_layers",
           "run", "run_command_line"]

log = logging.getLogger(__name__)

TRAINING_STATE = "training_state.pth.tar"
# -s / -t keys of the original that common/ reads; the others (viper, grid, ilids, ...) are refused.
SUPPORTED_DATASETS = ("market1501", "dukemtmcreid", "msmt17", "cuhk03", "cuhk01", "prid450s")
SPLIT_DATASETS = ("cuhk01", "prid450s")  # --split-id selects one of NUM_RANDOM_SPLITS


@dataclass(frozen=True)
class Method:
    """What differs between the methods that share this run.

    Attributes:
        name: the method's name in logs and reports (``"ABD-Net"``).
        build_model: ``build_model(num_classes, **model_options(args))`` -> the network; in
            training mode its forward returns ``(predict, logits, triplet_features,
            feature_maps)``, in eval mode the retrieval feature (B, D); with ``--use-ow`` it has
            ``orthogonality_convs(scope)``.
        model_options: ``args`` -> ``build_model``'s keyword arguments; raises ValueError (one
            line, with the fix) for flags the method does not build.
        head_modules: a module whose name contains one of these trains in the fixbase warm-up.
        classifier_key: the state_dict key whose rows count the training identities.
        remap_keys: state_dict -> state_dict for the method's released files (key order,
            historical names), or None.
        weights_hint: ends the error message when a weights file does not fit the network.
        recorded_flags: the architecture flags' destinations (``"abd_dan"``), written to
            ``run.json`` with the input size and taken from it when a run's weights are
            evaluated or resumed: some (attention heads, softmax sign) leave no trace in the
            weights, so a wrong value would silently build another network.
    """

    name: str
    build_model: Callable
    model_options: Callable
    head_modules: tuple
    classifier_key: str
    remap_keys: Callable | None = None
    weights_hint: str = ""
    recorded_flags: tuple = ()

    @property
    def record_name(self):
        """The method's folder name, as ``run.json`` records it (``"abdnet"``)."""
        return self.name.lower().replace("-", "")


def open_specified_layers(model, open_layers, head_modules=()):
    """The fixbase rule of the original (§4.3), applied recursively from ``model``'s children: a
    child whose name is in ``open_layers`` or contains one of ``head_modules`` is put in train
    mode with gradients; any other is frozen, put in eval mode, and searched the same way.
    """
    for name, module in model.named_children():
        if name in open_layers or any(key in name for key in head_modules):
            module.train()
            module.requires_grad_(True)
        else:
            module.eval()
            module.requires_grad_(False)
            open_specified_layers(module, open_layers, head_modules)


def open_all_layers(model):
    model.train()
    model.requires_grad_(True)


def load_dataset(name, args):
    """One ``-s`` / ``-t`` dataset under ``--root``."""
    if name not in SUPPORTED_DATASETS:
        raise OptionError(f"dataset {name!r} is not supported here; choose from "
                          f"{', '.join(SUPPORTED_DATASETS)}")
    if name == "cuhk03":
        if args.cuhk03_classic_split:
            raise OptionError("--cuhk03-classic-split: only the 767/700 split (CUHK03-NP) is "
                              "read; drop the flag")
        return build_dataset("cuhk03np", args.root,
                             variant="labeled" if args.cuhk03_labeled else "detected")
    if name in ("cuhk01", "prid450s"):
        return build_dataset(name, args.root, split_id=args.split_id)
    return build_dataset(name, args.root)


def combine_train_sets(datasets):
    """The ``-s`` training sets concatenated, identities and cameras offset per set (§4.1)."""
    samples, num_pids, num_cams = [], 0, 0
    for dataset in datasets:
        samples += [Sample(s.path, s.pid + num_pids, s.camid + num_cams) for s in dataset.train]
        num_pids += dataset.num_train_pids
        num_cams += dataset.num_train_cams
    return samples, num_pids


def build_optimizer(args, model):
    """The released ``init_optim``: adam / amsgrad / sgd / rmsprop with the CLI's options."""
    adam = {"betas": (args.adam_beta1, args.adam_beta2)}
    options = {"adam": adam, "amsgrad": adam,
               "sgd": {"momentum": args.momentum, "dampening": args.sgd_dampening,
                       "nesterov": args.sgd_nesterov},
               "rmsprop": {"momentum": args.momentum, "alpha": args.rmsprop_alpha}}
    return optimizer_by_name(args.optim, model.parameters(), lr=args.lr,
                             weight_decay=args.weight_decay, **options[args.optim])


def build_train_loader(args, samples, distributed, pin_memory):
    crop, erase = data_augment_steps(args.data_augment)
    transform = build_train_transform(args.height, args.width, translation=crop, flip=0.5,
                                      erasing=0.5 if erase else 0.0, erasing_mean=CIFAR_MEAN)
    pids = [s.pid for s in samples]
    if args.criterion == "htri":
        try:
            sampler = RandomIdentitySampler(pids, args.train_batch_size, args.num_instances,
                                            seed=args.seed, num_replicas=distributed.world_size,
                                            rank=distributed.rank)
        except ValueError as err:
            raise OptionError(f"--train-batch-size {args.train_batch_size} with --num-instances "
                              f"{args.num_instances}: {err}") from None
    else:
        sampler = DistributedSampler(samples, num_replicas=distributed.world_size,
                                     rank=distributed.rank, shuffle=True, seed=args.seed,
                                     drop_last=True)
    loader = DataLoader(ImageDataset(samples, transform), batch_size=args.train_batch_size,
                        sampler=sampler, num_workers=args.workers, pin_memory=pin_memory,
                        drop_last=True)
    if len(loader) == 0:
        raise OptionError(f"the training set ({len(samples)} images, {len(set(pids))} identities"
                          f") gives no full batch of --train-batch-size {args.train_batch_size}"
                          f"; lower the batch size")
    return loader


def build_test_loaders(args, dataset, pin_memory):
    transform = build_test_transform(args.height, args.width)
    return tuple(DataLoader(ImageDataset(samples, transform), batch_size=args.test_batch_size,
                            num_workers=args.workers, pin_memory=pin_memory)
                 for samples in (dataset.query, dataset.gallery))


class TwoPhaseEngine(Engine):
    """The released ``train.py`` (§4-§5) on the shared run skeleton: the fixbase warm-up phase,
    then the main epochs."""

    state_file = TRAINING_STATE

    def __init__(self, context, model, method, args, **parts):
        retrieval = Retrieval("bilinear", flip=args.flip_eval, normalize=False,
                              distance="sqeuclidean")
        super().__init__(context, model, retrieval=retrieval, max_epoch=args.max_epoch,
                         amp=args.amp, eval_before_training=args.eval_before_training, **parts)
        self.name, self.method, self.args = method.name, method, args
        self.initial_optimizer_state = copy.deepcopy(self.optimizer.state_dict())
        self.fixbase_done = 0  # warm-up epochs finished
        self.in_fixbase = False
        self.epoch = args.start_epoch  # main epochs finished (the next one's 0-based index)

    @property
    def epoch_before_training(self):
        """Before the warm-up (whose epochs the history numbers up to 0), or before the first
        main epoch when there is none."""
        return -self.args.fixbase_epoch if self.args.fixbase_epoch else self.epoch

    def prepare_epoch(self):
        self.train_loader.sampler.set_epoch(self.fixbase_done + self.epoch)
        self.module.train()
        if self.in_fixbase or self.args.fixbase:
            open_specified_layers(self.module, self.args.open_layers,
                                  self.method.head_modules)
        else:
            open_all_layers(self.module)

    def compute_loss(self, batch):
        images, pids, _ = batch
        return self.criterion(self.module, self.forward(images), pids.to(self.device),
                              self.epoch, self.in_fixbase)

    def evaluation_due(self):
        args = self.args
        return (self.epoch > args.start_eval and args.eval_freq > 0
                and self.epoch % args.eval_freq == 0) or self.epoch == args.max_epoch

    def save_weights(self, evaluated, is_best):
        """``checkpoint_ep{N}.pth.tar`` after each main epoch (rank1 0) and
        ``checkpoint_best.pth.tar`` for the best rank-1 of the last target, in the original's
        format (§2.10), readable by the released code."""
        if self.in_fixbase:
            return
        if not self.args.no_epoch_checkpoints:
            self._save_released(f"checkpoint_ep{self.epoch}.pth.tar", 0)
        if is_best:
            rank1 = self.history.evaluations[-1]["rank1"]
            log.info(f"Save! rank-1 {rank1:.4f} on {list(self.targets)[-1]} is the best so far")
            self._save_released("checkpoint_best.pth.tar", rank1)

    def _save_released(self, name, rank1):
        state = {"state_dict": self.module.state_dict(), "rank1": float(rank1),
                 "epoch": self.epoch - 1}
        with atomic_write(self.folder / name) as handle:
            torch.save(state, handle)

    def extra_state(self):
        return {"fixbase_done": self.fixbase_done}

    def load_extra_state(self, checkpoint):
        self.fixbase_done = checkpoint["fixbase_done"]

    def train_loop(self):
        args = self.args
        if self.fixbase_done < args.fixbase_epoch:
            log.info(f"Train {args.open_layers} and the heads for {args.fixbase_epoch} epochs "
                     f"while keeping other layers frozen")
            self.in_fixbase = True
            while self.fixbase_done < args.fixbase_epoch:
                self.fixbase_epoch()
            self.in_fixbase = False
            log.info(f"Done. All layers are open to train for {args.max_epoch} epochs")
        super().train_loop()

    def interrupted_where(self):
        if self.in_fixbase:
            return f"in warm-up epoch {self.fixbase_done + 1}/{self.args.fixbase_epoch}"
        return super().interrupted_where()

    def fixbase_epoch(self):
        """A warm-up epoch: no O.F./O.W., no schedule step; the optimizer is reset after the
        last one. History epochs of the warm-up are numbered up to 0."""
        args = self.args
        self.prepare_epoch()
        title = f"fixbase {self.fixbase_done + 1}/{args.fixbase_epoch}"
        losses = self.run_batches(title)
        lr = self.optimizer.param_groups[0]["lr"]
        self.fixbase_done += 1
        self.history.log_epoch(self.fixbase_done - args.fixbase_epoch, lr, losses)
        log.info(f"{title} lr {lr:.2e} " + " ".join(f"{k} {v:.4f}" for k, v in losses.items()))
        if self.fixbase_done == args.fixbase_epoch:
            self.optimizer.load_state_dict(self.initial_optimizer_state)
        if self.is_main:
            self.save_state(evaluated=False)
        self.context.barrier()


def check_options(args, method):
    """Rejects values the original accepts but that cannot run, with the fix."""
    try:
        method.model_options(args)
    except ValueError as err:
        raise OptionError(str(err)) from None
    if not args.evaluate and (args.max_epoch < 1 or not 0 <= args.start_epoch < args.max_epoch):
        raise OptionError(f"--max-epoch {args.max_epoch} --start-epoch {args.start_epoch}: train "
                          f"at least one main epoch (0 <= start-epoch < max-epoch)")
    refuse_counts_below(1, {"--height": args.height, "--width": args.width,
                            "--test-batch-size": args.test_batch_size,
                            "--num-instances": args.num_instances})
    refuse_counts_below(0, {"--fixbase-epoch": args.fixbase_epoch, "-j": args.workers})
    if args.train_batch_size < 2:
        raise OptionError(f"--train-batch-size {args.train_batch_size}: a training batch of one "
                          f"image cannot train BatchNorm; use 2 or more")
    if args.criterion == "htri" and args.train_batch_size % args.num_instances:
        raise OptionError(f"--train-batch-size {args.train_batch_size} must be a multiple of "
                          f"--num-instances {args.num_instances} with --criterion htri")
    if args.resume and args.load_weights:
        raise OptionError("--evaluate takes the weights from --load-weights or --resume, not both"
                          if args.evaluate else
                          "--resume continues a run with its own weights; --load-weights starts "
                          "a new run from a file's weights: give one of them")
    if args.all_splits:
        if args.evaluate or args.resume:
            raise OptionError("--all-splits trains every split from the start; it cannot be "
                              "combined with --evaluate or --resume (use --split-id for one)")
        if not set(args.source_names + args.target_names) & set(SPLIT_DATASETS):
            raise OptionError(f"--all-splits: none of -s/-t is a dataset with random splits "
                              f"({', '.join(SPLIT_DATASETS)})")


def run_command_line(args, method, program):
    """What ``main.py`` does with parsed ``args``: selects the ``--gpu-devices`` as the original
    (before CUDA starts; under torchrun the launcher's CUDA_VISIBLE_DEVICES and LOCAL_RANK decide
    instead), runs, and turns a user error into a one-line message and exit status 1."""
    if not args.use_avai_gpus and "LOCAL_RANK" not in os.environ:
        os.environ["CUDA_VISIBLE_DEVICES"] = args.gpu_devices
    with exit_on_user_error(program):
        run(args, method)


def run(args, method):
    """Runs ``main.py``'s job for ``method``: train (and evaluate), or only evaluate with
    ``--evaluate``; with ``--all-splits``, once per split."""
    check_options(args, method)
    with distributed_session(cpu=args.use_cpu) as distributed:
        if args.all_splits:
            _run_all_splits(args, method, distributed)
        else:
            _run_in_folder(args, method, distributed)


def _run_in_folder(args, method, distributed):
    save_dir = Path(args.save_dir)
    with open_run(save_dir, log_name="log_test.txt" if args.evaluate else "log_train.txt",
                  seed=args.seed, cpu=args.use_cpu, distributed=distributed,
                  resume_hint=f"--resume {save_dir / TRAINING_STATE}") as context:
        _run(args, method, context)


def _run_all_splits(args, method, distributed):
    """Trains and evaluates splits 0..NUM_RANDOM_SPLITS-1 into ``<save-dir>/split<k>``, then
    writes ``results_splits.json`` and prints the mean and standard deviation over the splits."""
    per_split = []
    for split_id in range(NUM_RANDOM_SPLITS):
        split_args = copy.copy(args)
        split_args.split_id = split_id
        split_args.save_dir = str(Path(args.save_dir) / f"split{split_id}")
        _run_in_folder(split_args, method, distributed)
        if distributed.is_main:
            per_split.append(read_run_results(Path(split_args.save_dir) / "results_best.json"))
    if not distributed.is_main:
        return
    keys = ("mAP", "rank1", "rank5", "rank10", "rank20")
    summary = {"method": method.name, "kind": "splits", "num_splits": len(per_split),
               "targets": {}}
    for name in per_split[0]["targets"]:
        values = {key: np.array([run["targets"][name][key] for run in per_split]) for key in keys}
        summary["targets"][name] = {
            "mean": {key: float(v.mean()) for key, v in values.items()},
            "std": {key: float(v.std()) for key, v in values.items()},
            "per_split": {key: v.tolist() for key, v in values.items()}}
    write_run_results(Path(args.save_dir) / "results_splits.json", summary)
    lines = [f"{method.name}, best rank-1 of each of {len(per_split)} splits: mean ± std (%)",
             f"{'target':<16} " + " ".join(f"{k:>13}" for k in ("mAP", "R1", "R5", "R10", "R20"))]
    for name, row in summary["targets"].items():
        lines.append(f"{name:<16} " + " ".join(
            f"{100 * row['mean'][k]:6.1f} ± {100 * row['std'][k]:4.1f}" for k in keys))
    print("\n".join(lines), flush=True)


def _run(args, method, context):
    save_dir, device, distributed = context.folder, context.device, context.distributed
    if device.type == "cpu" and not args.use_cpu:
        log.warning(f"no GPU is visible (--gpu-devices {args.gpu_devices} sets "
                    f"CUDA_VISIBLE_DEVICES), so this runs on the CPU; name GPUs this machine "
                    f"has (nvidia-smi lists them) or pass --use-avai-gpus")
    pin_memory = device.type == "cuda"

    state_path = save_dir / TRAINING_STATE
    resume = resume_file(args.resume, state_path, args.evaluate,
                         f"; pass the {TRAINING_STATE} or a checkpoint_ep<N>.pth.tar of a run")
    refuse_another_methods_file(args.load_weights or resume, method.record_name,
                                "use {method}/main.py")
    if args.evaluate or resume is not None:  # evaluated or continued as it was trained
        adopt_recorded_flags(args, args.load_weights or resume, getattr(args, "explicit", ()),
                             _recorded_flags(method), _spell, OptionError)
    log.info(f"==========\nArgs:{command_line_values(args)}\n==========")
    resume_state = load_checkpoint(resume) if resume is not None and not args.evaluate else None
    resumable = resume_state is not None and "optimizer" in resume_state
    weights = args.load_weights or ("" if resumable else args.resume)
    released = read_torchreid_checkpoint(
        weights, method.remap_keys,
        loaded=None if args.load_weights else resume_state) if weights else None

    targets = {}
    for name in args.target_names:
        dataset = load_dataset(name, args)
        log.info(dataset.summary())
        targets[name] = EvalTarget(dataset, *build_test_loaders(args, dataset, pin_memory))
    train_loader = None
    if args.evaluate:  # the class count of the weights; any when there are none
        num_classes = (released.num_classes(method.classifier_key)
                       if released is not None else None) or 1
    else:
        train_samples, num_classes = combine_train_sets(
            [targets[n].dataset if n in targets else load_dataset(n, args)
             for n in args.source_names])
        log.info(f"training on {', '.join(args.source_names)}: {num_classes} identities, "
                 f"{len(train_samples)} images")
        train_loader = build_train_loader(args, train_samples, distributed, pin_memory)

    options = method.model_options(args)
    if options.get("pretrained"):  # ImageNet weights only for a network that loads no others
        options["pretrained"] = released is None and not resumable
    model = method.build_model(num_classes, **options).to(device)
    if released is not None:
        if resume is not None and not args.evaluate:
            _refuse_other_training_data(released, method, num_classes)
        _load_weights(model, released, method, fine_tuning=not args.evaluate)
    criterion = None if args.evaluate else TrainingLoss(
        num_classes, criterion=args.criterion, label_smooth=args.label_smooth, margin=args.margin,
        lambda_xent=args.lambda_xent, lambda_htri=args.lambda_htri, use_of=args.use_of,
        of_beta=args.of_beta, of_start_epoch=args.of_start_epoch, of_positions=args.of_position,
        use_ow=args.use_ow, ow_beta=args.ow_beta, ow_scope=args.ow_scope)
    optimizer, scheduler = _optimizer_and_schedule(args, model)
    engine = TwoPhaseEngine(
        context, model, method, args, criterion=criterion, optimizer=optimizer,
        scheduler=scheduler, train_loader=train_loader, targets=targets,
        weights_source=str(released.path) if released is not None else "random initialisation")
    if args.evaluate:
        if distributed.is_main:
            _evaluate_only(engine, released)
        return
    if resumable:
        engine.resume(resume, loaded=resume_state)
    elif resume is not None:
        _continue_from_weights(engine, released)
    del resume_state  # the model and optimizer hold copies: the file's GB is not kept for the run

    # frozen layers (fixbase) and unused heads get no gradient under DDP
    engine.wrap_for_training(find_unused_parameters=True)
    log.info(f"==> Start training on {device}"
             f"{f' x {distributed.world_size} processes' if distributed.enabled else ''}")
    if context.is_main:
        write_run_record(save_dir, method.record_name, (args.height, args.width), "bilinear",
                         model_options={name: value for name, value in options.items()
                                        if name not in ("pretrained", "weights_path")},
                         flags={name: getattr(args, name) for name in _recorded_flags(method)})
    engine.fit()
    engine.report_best()


def _recorded_flags(method):
    return ("height", "width", *method.recorded_flags)


def _spell(name):
    """``--abd-dan`` for ``abd_dan``."""
    return "--" + name.replace("_", "-")


def _optimizer_and_schedule(args, model):
    optimizer = build_optimizer(args, model)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=args.stepsize,
                                                     gamma=args.gamma)
    step_scheduler(scheduler, args.start_epoch)  # --start-epoch: the schedule starts there
    return optimizer, scheduler


def _load_weights(model, released, method, fine_tuning):
    """Loads ``released`` strictly. When fine-tuning from a file trained with another class
    count (another dataset), the classifiers are left at their initialisation and listed."""
    info = load_torchreid_checkpoint(model, released, new_classes_ok=fine_tuning,
                                     hint=method.weights_hint)
    if info["reinitialized"]:
        file_classes, data_classes = info["class_counts"]
        log.warning(f"{released.path}: its classifiers have {file_classes} classes and the "
                    f"training data {data_classes}; these keys are not loaded and start from "
                    f"the initialisation: {', '.join(info['reinitialized'])}")
    trained = (f"after main epoch {info['epoch'] + 1}" if info["epoch"] >= 0 else
               "no epoch recorded")
    if not math.isnan(info["rank1"]):
        trained += f", rank-1 {info['rank1']:.4f}"
    log.info(f"Loaded weights from {released.path} ({trained})")


def _refuse_other_training_data(released, method, num_classes):
    """``--resume`` continues a run on its own data: a file whose classifier has another class
    count than the training data was trained on other data."""
    file_classes = released.num_classes(method.classifier_key)
    if file_classes not in (None, num_classes):
        raise OptionError(f"--resume {released.path}: its classifier has {file_classes} classes "
                          f"and the training data {num_classes}, so it is another data set's run; "
                          f"to fine-tune it on this data use --load-weights {released.path} "
                          f"in a new --save-dir")


def _continue_from_weights(engine, released):
    """``--resume`` on a weights-only file (``checkpoint_ep<N>``, a released file): the epoch
    and the schedule continue after the file's epoch; its optimizer state is not in the file."""
    engine.fixbase_done = engine.args.fixbase_epoch
    steps = released.epoch + 1 - engine.epoch
    engine.epoch += steps
    step_scheduler(engine.scheduler, steps)
    log.warning(f"--resume {released.path}: weights only, continuing after main epoch "
                f"{engine.epoch}; the file holds no optimizer state, so {engine.args.optim} "
                f"starts afresh. For an exact continuation resume from {TRAINING_STATE}")


def _evaluate_only(engine, released):
    if released is None:
        log.warning("--evaluate without --load-weights: evaluating randomly initialised weights")

    def draw_ranked_lists(name, target, results, distmat):
        if engine.args.visualize_ranks:
            folder = engine.folder / "ranked_results" / name
            visualize_ranked_results(distmat, target.dataset.query, target.dataset.gallery,
                                     folder, topk=10, height=engine.args.height,
                                     width=engine.args.width)
            log.info(f"ranked lists of {len(target.dataset.query)} queries in {folder}")

    if released is not None and released.epoch >= 0:
        engine.epoch = released.epoch + 1  # the main epochs the weights were trained for
    all_results = engine.evaluate(on_target=draw_ranked_lists)
    engine.report("evaluate", all_results, epoch=engine.epoch if engine.epoch else None)
