"""Training and evaluation behind ``iaunet/main.py``: the released ``train.py``
(``../shared/specs/iaunet.md`` §2, §4-§7).

Adam with coupled weight decay; MultiStepLR stepped at the *start* of each epoch (the released
pre-1.1 convention: 1-based epochs 1-19 at the base LR, 20-39 x0.1, ...); chunk-shuffled
identity batches; CE-LS + cosine triplet + alpha x mask loss (mask loss only when the training
folder has a ``_seg`` sibling of part masks). Evaluation after the first epoch and every
``--eval-step`` epochs (and, here, the last): the post-BN feature (plus its mirror's with
``--flip_cnt 2``), cosine or squared Euclidean ranking. At each evaluation
``checkpoint_ep{E}.pth.tar`` (``{state_dict, rank1, epoch}``) and, for the best rank-1,
``best_model.pth.tar``.

Fixed here (README): the dataset root is ``--root``; ``--gpu-devices`` defaults to one GPU and
the CPU works; ``--resume`` restores optimizer, schedule and random states from
``training_state.pth.tar``; ``--evaluate --resume PATH`` evaluates a weights file; the last epoch
is always evaluated; the flipped query features work.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from common.checkpoint import load_checkpoint, read_state_dict
from common.data import ImageDataset, build_dataset
from common.data.transforms import CIFAR_MEAN, build_test_transform, build_train_transform
from common.engine import Engine, EvalTarget, open_run, resume_file
from common.eval import Retrieval
from common.files import atomic_write
from common.runrecord import (adopt_recorded_flags, command_line_values,
                              refuse_another_methods_file, write_run_record)
from common.runtime import (OptionError, distributed_session, optimizer_by_name,
                            refuse_counts_below, step_scheduler)
from iaunet.loss import DISTANCES, IAUnetLoss
from iaunet.masks import MaskedImageDataset, find_mask_folder
from iaunet.model import build_model, load_weights
from iaunet.sampler import ChunkShuffleSampler
from iaunet import video

__all__ = ["ARCHS", "DATASET_NAMES", "IAUnetEngine", "OptionError", "TRAINING_STATE", "run"]

log = logging.getLogger(__name__)

TRAINING_STATE = "training_state.pth.tar"
ARCHS = {"IAUnet": "iaunet", "IANet": "ianet"}
# -d: the original's one dataset (Market-1501 with part masks), or any common/ parser.
DATASET_NAMES = {"market1501_seg": "market1501", "market1501": "market1501",
                 "dukemtmcreid": "dukemtmcreid", "msmt17": "msmt17", "cuhk03np": "cuhk03np"}


def build_optimizer(args, model):
    """The released choice: Adam / AMSGrad, or SGD / RMSprop with momentum 0.9."""
    momentum = {} if args.optim in ("adam", "amsgrad") else {"momentum": 0.9}
    return optimizer_by_name(args.optim, model.parameters(), lr=args.lr,
                             weight_decay=args.weight_decay, **momentum)


def build_loaders(args, dataset, distributed, pin_memory):
    """The train loader (with masks when the ``_seg`` folder exists; None for ``--evaluate``)
    and the query and gallery loaders."""
    options = {"num_workers": args.workers, "pin_memory": pin_memory}
    transform = build_test_transform(args.height, args.width, interpolation="bicubic")
    test_loaders = [DataLoader(ImageDataset(samples, transform), batch_size=args.test_batch,
                               **options) for samples in (dataset.query, dataset.gallery)]
    if args.evaluate:
        return None, *test_loaders
    sampler = ChunkShuffleSampler([s.pid for s in dataset.train], args.train_batch,
                                  args.num_instances, seed=args.seed,
                                  num_replicas=distributed.world_size, rank=distributed.rank)
    masks = dataset.train and find_mask_folder(Path(dataset.train[0].path).parent)
    if masks:
        train_set = MaskedImageDataset(dataset.train, args.height, args.width)
        log.info(f"part masks from {masks}: mask loss on (alpha {args.alpha}, mode {args.mode})")
    else:
        train_set = ImageDataset(dataset.train, build_train_transform(
            args.height, args.width, erasing=0.5, erasing_mean=CIFAR_MEAN,
            interpolation="bicubic"))
        log.warning(f"no part masks ('<split>_seg' folder beside "
                    f"{Path(dataset.train[0].path).parent if dataset.train else 'the train set'})"
                    f": training WITHOUT the mask loss, the part maps unsupervised "
                    f"(see iaunet/README.md for the mask layout)")
    train_loader = DataLoader(train_set, batch_sampler=sampler, **options)
    if len(train_loader) == 0:
        raise OptionError(f"the training set ({len(dataset.train)} images) gives no full batch "
                          f"of --train-batch {args.train_batch}; lower it")
    return train_loader, *test_loaders


class IAUnetEngine(Engine):
    """The released ``train.py`` loop (spec §5-§7) on the shared run skeleton."""

    name = "IAUnet"
    schedule_at_epoch_start = True  # the released pre-1.1 convention
    state_file = TRAINING_STATE

    def __init__(self, context, model, args, **parts):
        distance = "cosine" if DISTANCES[args.distance] == "cosine" else "sqeuclidean"
        retrieval = Retrieval("bicubic", flip=args.flip_cnt == 2, normalize=False,
                              distance=distance,
                              protocol="cuhk03" if args.use_metric_cuhk03 else "standard")
        super().__init__(context, model, retrieval=retrieval, max_epoch=args.max_epoch,
                         amp=args.amp, eval_before_training=args.eval_before_training, **parts)
        self.args = args
        self.name = args.arch

    def evaluate_target(self, name, target, return_distmat=False):
        """Images: the engine's evaluation. Video (``-d mars`` ...): tracklet features, the mean
        of their clip features (``iaunet/video.py``); no distance matrix is returned."""
        if not video.is_video(self.args):
            return super().evaluate_target(name, target, return_distmat)
        results = video.evaluate_tracklets(self.module, target.query_loader,
                                           target.gallery_loader, self.args, self.device,
                                           progress=self.is_main)
        return results, None

    def compute_loss(self, batch):
        pids = batch[1].to(self.device)
        masks = batch[3].to(self.device) if len(batch) > 3 else None
        return self.criterion(self.forward(batch[0]), pids, masks)

    def evaluation_due(self):
        return (self.epoch % self.args.eval_step == 0 or self.epoch == 1
                or self.epoch == self.max_epoch)

    def save_weights(self, evaluated, is_best):
        """At each evaluation ``checkpoint_ep{E}.pth.tar`` (``{state_dict, rank1, epoch}``, the
        original's format, epoch 0-based; not with ``--no-epoch-checkpoints``) and, for the best
        rank-1, ``best_model.pth.tar``."""
        if not evaluated:
            return
        names = [] if self.args.no_epoch_checkpoints else [f"checkpoint_ep{self.epoch}.pth.tar"]
        if is_best:
            names.append("best_model.pth.tar")
        checkpoint = {"state_dict": self.module.state_dict(),
                      "rank1": self.history.evaluations[-1]["rank1"], "epoch": self.epoch - 1}
        for name in names:
            with atomic_write(self.folder / name) as handle:
                torch.save(checkpoint, handle)


def check_options(args):
    if args.dataset not in DATASET_NAMES and not video.is_video(args):
        raise OptionError(f"-d {args.dataset!r}: choose one of "
                          f"{', '.join([*DATASET_NAMES, *video.VIDEO_DATASETS])}")
    video.check_video_options(args)
    if args.arch not in ARCHS:
        raise OptionError(f"-a {args.arch!r}: choose IAUnet or IANet")
    refuse_counts_below(1, {"--height": args.height, "--width": args.width,
                            "--train-batch": args.train_batch, "--test-batch": args.test_batch,
                            "--num-instances": args.num_instances})
    refuse_counts_below(0, {"-j": args.workers})
    if args.train_batch % args.num_instances:
        raise OptionError(f"--train-batch {args.train_batch} must be a multiple of "
                          f"--num-instances {args.num_instances}")
    if args.flip_cnt not in (1, 2):
        raise OptionError(f"--flip_cnt {args.flip_cnt}: 1 (no flip) or 2 (plus the mirror)")
    if args.evaluate and not args.resume:
        raise OptionError("--evaluate needs --resume PATH, the weights to evaluate")


def run(args):
    check_options(args)
    save_dir = Path(args.save_dir)
    with distributed_session(cpu=args.use_cpu) as distributed:
        with open_run(save_dir, log_name="log_test.txt" if args.evaluate else "log_train.txt",
                      seed=args.seed, cpu=args.use_cpu, distributed=distributed,
                      resume_hint=f"--resume {save_dir / TRAINING_STATE}") as context:
            _run(args, context)


def _run(args, context):
    save_dir, distributed = context.folder, context.distributed
    state_path = save_dir / TRAINING_STATE
    resume = resume_file(args.resume, state_path, args.evaluate)
    refuse_another_methods_file(resume, "iaunet", "use {method}/main.py")
    if resume is not None:  # evaluated or continued at the trained size
        adopt_recorded_flags(args, resume, getattr(args, "explicit", ()), ("height", "width"),
                             lambda name: f"--{name}", OptionError)
    log.info(f"Args: {command_line_values(args)}")
    checkpoint = load_checkpoint(resume) if resume is not None else None
    exact_resume = checkpoint is not None and "optimizer" in checkpoint and not args.evaluate
    weights = None
    if checkpoint is not None and not exact_resume:
        weights = read_state_dict(resume, loaded=checkpoint)[0]

    is_video = video.is_video(args)
    dataset = (video.load_video_dataset(args) if is_video
               else build_dataset(DATASET_NAMES[args.dataset], args.root))
    log.info(dataset.summary())
    loaders = (video.build_video_loaders if is_video else build_loaders)(
        args, dataset, distributed, pin_memory=context.device.type == "cuda")
    num_classes = (int(weights["classifier.weight"].shape[0])
                   if args.evaluate and "classifier.weight" in weights
                   else dataset.num_train_pids)
    arch = ARCHS[args.arch]
    options = {"input_size": (args.height, args.width)} if arch == "ianet" else {}
    if is_video:
        arch, options = "iaunet_video", {"seq_len": args.seq_len}
    model = build_model(num_classes, arch=arch,
                        pretrained=not args.no_pretrained and checkpoint is None,
                        weights_path=args.pretrained_path, **options).to(context.device)
    if weights is not None:
        report = load_weights(model, weights, source=f"--resume {resume}",
                              new_classes_ok=not args.evaluate)
        if report.reinitialized:
            log.warning(f"fine-tuning: {resume} was trained with {report.class_counts[0]} "
                        f"classes and the training data has {report.class_counts[1]}; these keys "
                        f"start from their initialisation: {', '.join(report.reinitialized)}")
    criterion = IAUnetLoss(num_classes, margin=args.margin, distance=args.distance,
                           alpha=args.alpha, mode=args.mode)
    optimizer = build_optimizer(args, model)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=args.stepsize,
                                                     gamma=args.gamma)
    engine = IAUnetEngine(
        context, model, args, criterion=criterion, optimizer=optimizer, scheduler=scheduler,
        train_loader=loaders[0],
        targets={dataset.name: EvalTarget(dataset, *loaders[1:])},
        weights_source=str(resume) if resume is not None else "random initialisation")
    if args.evaluate:
        if distributed.is_main:
            epoch = checkpoint.get("epoch") if isinstance(checkpoint, dict) else None
            engine.report("evaluate", engine.evaluate(),
                          epoch=None if epoch is None else int(epoch) + 1)
        return
    if exact_resume:
        engine.resume(resume, loaded=checkpoint)
    elif weights is not None:  # a checkpoint_ep file: weights and epoch; the schedule follows
        finished = int(checkpoint.get("epoch", -1)) + 1
        step_scheduler(scheduler, finished)
        engine.epoch = finished
        log.warning(f"--resume {resume}: weights only, continuing after epoch {finished}; the "
                    f"optimizer starts afresh (resume from {TRAINING_STATE} for an exact "
                    f"continuation)")
    del checkpoint, weights  # the model and optimizer hold copies: the file is not kept for the run
    engine.wrap_for_training()
    log.info(f"Start training {args.max_epoch - engine.epoch} epochs on {context.device}")
    if context.is_main:
        write_run_record(save_dir, "iaunet", (args.height, args.width), "bicubic",
                         flags={"height": args.height, "width": args.width})
    engine.fit()
    engine.report_best()
