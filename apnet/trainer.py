"""Training and evaluation behind ``apnet/main.py``: the released ``tools/train.py`` /
``engine/trainer.py`` and ``tools/test.py`` (``../shared/specs/apnet.md`` §2, §5, §6).

Training is BoT's: P x K identity batches (``softmax_triplet``) or shuffled batches
(``softmax``); Adam with one parameter group per tensor (biases at ``BIAS_LR_FACTOR`` x the LR
and ``WEIGHT_DECAY_BIAS``); a linear warm-up then multi-step schedule stepped after each epoch;
label-smoothed cross-entropy on the logits + batch-hard triplet on the pre-BN feature.
Evaluation (at epochs that are multiples of ``EVAL_PERIOD``, and the last, in the second half
of training): the test feature of the image plus that of its mirror, L2-normalised, Euclidean
distance, the standard protocol. After each epoch ``<MODEL.NAME>_checkpoint_<iteration>.pt`` with
``model`` and ``optimizer`` (the original's ignite file) plus the schedule, random states and
history, so ``--resume`` continues exactly; the last five are kept, as in the original.

Fixed here (README): the label-smoothing class count comes from the data (``SOLVER.CLASSNUM 0``);
Market's pid-0 distractors stay in the gallery (``DATASETS.KEEP_DISTRACTORS``); the dataset root
is a key (``DATASETS.ROOT_DIR``).
"""

from __future__ import annotations

import bisect
import json
import logging
import re
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, DistributedSampler

from apnet.config import RECORDED_KEYS, config_value
from apnet.model import RETRIEVAL, build_model, load_weights
from common.checkpoint import CheckpointError, read_state_dict
from common.data import DATASETS, ImageDataset, RandomIdentitySampler, build_dataset
from common.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_test_transform, build_train_transform
from common.engine import Engine, EvalTarget, open_run, refuse_to_overwrite
from common.files import atomic_write
from common.losses import CrossEntropyLabelSmooth, TripletLoss
from common.runrecord import write_run_record
from common.runtime import (OptionError, distributed_session, optimizer_by_name,
                            refuse_counts_below)

__all__ = ["APNetEngine", "DATASET_NAMES", "OptionError", "build_optimizer", "run",
           "warmup_multistep_factor"]

log = logging.getLogger(__name__)

KEEP_CHECKPOINTS = 5  # ignite's ModelCheckpoint(n_saved=5)
# DATASETS.NAMES of the original -> (common/ parser, folder under DATASETS.ROOT_DIR); any other
# common/ parser name works too, in a folder of that name.
DATASET_NAMES = {"market1501": ("market1501", "market1501"), "dukemtmc": ("dukemtmcreid", "duke"),
                 "msmt17": ("msmt17", "msmt17")}


def warmup_multistep_factor(epoch, steps, gamma, warmup_factor, warmup_iters, method):
    """BoT's WarmupMultiStepLR factor at ``epoch`` (0-based; the scheduler counts epochs here):
    gamma ** (milestones passed), times a warm-up factor rising from ``warmup_factor`` to 1 over
    ``warmup_iters`` epochs (linearly, or constant for ``"constant"``)."""
    warmup = 1.0
    if epoch < warmup_iters:
        if method == "constant":
            warmup = warmup_factor
        else:
            alpha = epoch / warmup_iters
            warmup = warmup_factor * (1 - alpha) + alpha
    return warmup * gamma ** bisect.bisect_right(steps, epoch)


def build_optimizer(cfg, model):
    """One parameter group per trainable tensor (frozen BN biases are left out), as BoT."""
    solver = cfg.SOLVER
    groups = []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        bias = "bias" in name
        groups.append({"params": [parameter],
                       "lr": solver.BASE_LR * (solver.BIAS_LR_FACTOR if bias else 1),
                       "weight_decay": solver.WEIGHT_DECAY_BIAS if bias else solver.WEIGHT_DECAY})
    momentum = {"momentum": solver.MOMENTUM} if solver.OPTIMIZER_NAME == "SGD" else {}
    return optimizer_by_name(solver.OPTIMIZER_NAME, groups, flag="SOLVER.OPTIMIZER_NAME",
                             **momentum)


class APNetLoss(nn.Module):
    """CE with label smoothing on the logits, + batch-hard triplet (Euclidean, margin) on the
    pre-BN feature with the ``softmax_triplet`` sampler (§5). Returns the total and its terms."""

    def __init__(self, num_classes, smoothing_classes, epsilon, margin, triplet):
        super().__init__()
        self.cross_entropy = CrossEntropyLabelSmooth(num_classes, epsilon, smoothing_classes)
        self.triplet = TripletLoss(margin) if triplet else None

    def forward(self, logits, feature, labels):
        terms = {"xent": self.cross_entropy(logits.float(), labels)}
        if self.triplet is not None:
            terms["triplet"] = self.triplet(feature.float(), labels)
        return sum(terms.values()), terms


def check_config(cfg):
    """Refuses values the original cannot run, naming the key and the fix."""
    if cfg.MODEL.NAME != "resnet50":
        raise OptionError(f"MODEL.NAME {cfg.MODEL.NAME!r}: APNet is built on resnet50 only "
                          f"(the original's build_model accepts nothing else)")
    if cfg.DATALOADER.SAMPLER not in ("softmax", "softmax_triplet"):
        raise OptionError(f"DATALOADER.SAMPLER {cfg.DATALOADER.SAMPLER!r}: use softmax or "
                          f"softmax_triplet")
    refuse_counts_below(1, {"INPUT.SIZE_TRAIN": min(cfg.INPUT.SIZE_TRAIN),
                            "INPUT.SIZE_TEST": min(cfg.INPUT.SIZE_TEST),
                            "TEST.IMS_PER_BATCH": cfg.TEST.IMS_PER_BATCH,
                            "DATALOADER.NUM_INSTANCE": cfg.DATALOADER.NUM_INSTANCE})
    refuse_counts_below(0, {"DATALOADER.NUM_WORKERS": cfg.DATALOADER.NUM_WORKERS})
    if cfg.SOLVER.IMS_PER_BATCH < 2:
        raise OptionError(f"SOLVER.IMS_PER_BATCH {cfg.SOLVER.IMS_PER_BATCH}: a training batch of "
                          f"one image cannot train BatchNorm; use 2 or more")
    if cfg.DATALOADER.SAMPLER == "softmax_triplet" and (
            cfg.SOLVER.IMS_PER_BATCH % cfg.DATALOADER.NUM_INSTANCE):
        raise OptionError(f"SOLVER.IMS_PER_BATCH {cfg.SOLVER.IMS_PER_BATCH} must be a multiple "
                          f"of DATALOADER.NUM_INSTANCE {cfg.DATALOADER.NUM_INSTANCE}")
    if (tuple(cfg.INPUT.PIXEL_MEAN), tuple(cfg.INPUT.PIXEL_STD)) != (IMAGENET_MEAN, IMAGENET_STD):
        raise OptionError("INPUT.PIXEL_MEAN / PIXEL_STD: only the ImageNet values are supported "
                          "(the ResNet-50 weights expect them)")
    if cfg.MODEL.LAST_STRIDE not in (1, 2):
        raise OptionError(f"MODEL.LAST_STRIDE {cfg.MODEL.LAST_STRIDE}: use 1 (as released) or 2")
    if cfg.APNET.LEVEL > 3 or cfg.APNET.LEVEL < 0:
        raise OptionError(f"APNET.LEVEL {cfg.APNET.LEVEL}: levels 0-3 exist (the original runs "
                          f"0-2 and refuses more than 3; level 3 here is the paper's, see the "
                          f"README)")
    if cfg.APNET.ORDER not in ("fine_to_coarse", "coarse_to_fine"):
        raise OptionError(f"APNET.ORDER {cfg.APNET.ORDER!r}: use fine_to_coarse (released) or "
                          f"coarse_to_fine (the paper's figure)")
    if not cfg.OUTPUT_DIR:
        raise OptionError("OUTPUT_DIR is empty; set it (e.g. OUTPUT_DIR ./output/apnet)")


def load_dataset(cfg):
    name = cfg.DATASETS.NAMES
    parser, folder = DATASET_NAMES.get(name, (name, name))
    if parser not in DATASETS:
        raise OptionError(f"DATASETS.NAMES {name!r}: use market1501, dukemtmc, msmt17 or one of "
                          f"{', '.join(DATASETS)}")
    root = Path(cfg.DATASETS.ROOT_DIR)
    dataset = build_dataset(parser, root / folder if (root / folder).is_dir() else root)
    if not cfg.DATASETS.KEEP_DISTRACTORS and parser == "market1501":
        dataset.query = [s for s in dataset.query if s.pid != 0]
        dataset.gallery = [s for s in dataset.gallery if s.pid != 0]
    return dataset


def build_loaders(cfg, dataset, distributed, pin_memory, test_only=False):
    """The train loader (None for ``--test``), and the query and gallery loaders."""
    options = {"num_workers": cfg.DATALOADER.NUM_WORKERS, "pin_memory": pin_memory}
    test_transform = build_test_transform(*cfg.INPUT.SIZE_TEST)
    query_loader, gallery_loader = (
        DataLoader(ImageDataset(samples, test_transform), batch_size=cfg.TEST.IMS_PER_BATCH,
                   **options) for samples in (dataset.query, dataset.gallery))
    if test_only:
        return None, query_loader, gallery_loader
    height, width = cfg.INPUT.SIZE_TRAIN
    transform = build_train_transform(height, width, flip=cfg.INPUT.PROB,
                                      pad=cfg.INPUT.PADDING, erasing=cfg.INPUT.PROB,
                                      erasing_mean=IMAGENET_MEAN)
    pids = [s.pid for s in dataset.train]
    if cfg.DATALOADER.SAMPLER == "softmax_triplet":
        try:
            sampler = RandomIdentitySampler(pids, cfg.SOLVER.IMS_PER_BATCH,
                                            cfg.DATALOADER.NUM_INSTANCE, seed=cfg.SOLVER.SEED,
                                            num_replicas=distributed.world_size,
                                            rank=distributed.rank)
        except ValueError as err:
            raise OptionError(f"SOLVER.IMS_PER_BATCH {cfg.SOLVER.IMS_PER_BATCH} with "
                              f"DATALOADER.NUM_INSTANCE {cfg.DATALOADER.NUM_INSTANCE}: "
                              f"{err}") from None
    else:
        sampler = DistributedSampler(dataset.train, num_replicas=distributed.world_size,
                                     rank=distributed.rank, seed=cfg.SOLVER.SEED)
    train_loader = DataLoader(ImageDataset(dataset.train, transform), sampler=sampler,
                              batch_size=cfg.SOLVER.IMS_PER_BATCH, drop_last=True, **options)
    if len(train_loader) == 0:
        raise OptionError(f"the training set ({len(pids)} images, {len(set(pids))} identities) "
                          f"gives no full batch of SOLVER.IMS_PER_BATCH {cfg.SOLVER.IMS_PER_BATCH}")
    return train_loader, query_loader, gallery_loader


class APNetEngine(Engine):
    """The released BoT/ignite loop (spec §5-§6) on the shared run skeleton."""

    name = "APNet"

    def __init__(self, context, model, cfg, **parts):
        super().__init__(context, model, retrieval=RETRIEVAL, max_epoch=cfg.SOLVER.MAX_EPOCHS,
                         amp=cfg.MODEL.AMP, re_rank=cfg.TEST.RE_RANK,
                         eval_before_training=cfg.TEST.EVAL_BEFORE_TRAINING, **parts)
        self.cfg = cfg

    def compute_loss(self, batch):
        images, pids, _ = batch
        logits, feature = self.forward(images)
        return self.criterion(logits, feature, pids.to(self.device))

    def evaluation_due(self):
        solver = self.cfg.SOLVER
        return ((self.epoch % solver.EVAL_PERIOD == 0 or self.epoch == solver.MAX_EPOCHS)
                and self.epoch > 0.5 * solver.MAX_EPOCHS)

    def state_path(self):
        """``<MODEL.NAME>_checkpoint_<iteration>.pt``: the original's ignite file name."""
        iteration = self.epoch * len(self.train_loader)
        return self.folder / f"{self.cfg.MODEL.NAME}_checkpoint_{iteration}.pt"

    def save_weights(self, evaluated, is_best):
        """Keeps the last five checkpoints, as ignite's ``ModelCheckpoint(n_saved=5)``; for the
        best rank-1 also ``<MODEL.NAME>_best.pt`` (``{"model": state_dict}``)."""
        for old in sorted_checkpoints(self.folder, self.cfg.MODEL.NAME)[:-KEEP_CHECKPOINTS]:
            old.unlink()
        if is_best:
            with atomic_write(self.folder / f"{self.cfg.MODEL.NAME}_best.pt") as handle:
                torch.save({"model": self.module.state_dict()}, handle)


def model_options(cfg):
    """``build_model`` keyword arguments from the configuration (besides the level, which the
    weights show)."""
    return {"agent": cfg.APNET.AGENT, "input_size": tuple(cfg.INPUT.SIZE_TRAIN),
            "test_feature": "logits" if cfg.APNET.MSMT else "bn", "order": cfg.APNET.ORDER,
            "last_stride": cfg.MODEL.LAST_STRIDE, "stem_relu": cfg.MODEL.STEM_RELU}


def sorted_checkpoints(folder, prefix):
    """``<prefix>_checkpoint_<iteration>.pt`` files in ``folder``, oldest first."""
    pattern = re.compile(rf"^{re.escape(prefix)}_checkpoint_(\d+)\.pt$")
    found = [(int(m.group(1)), p) for p in Path(folder).glob(f"{prefix}_checkpoint_*.pt")
             if (m := pattern.match(p.name))]
    return [path for _, path in sorted(found)]


def run(cfg, test_only=False, resume=False):
    """``tools/train.py`` (or ``tools/test.py`` with ``test_only``) for the configuration."""
    check_config(cfg)
    cpu = not cfg.MODEL.DEVICE.startswith("cuda")
    with distributed_session(cpu=cpu) as distributed:
        with open_run(cfg.OUTPUT_DIR, log_name="test_log.txt" if test_only else "log.txt",
                      seed=cfg.SOLVER.SEED, cpu=cpu, distributed=distributed,
                      resume_hint="--resume and the same configuration") as context:
            _run(cfg, test_only, resume, context)


def _run(cfg, test_only, resume, context):
    output_dir, device = context.folder, context.device
    log.info(f"Running with config:\n{json.dumps(cfg, indent=1)}")
    if cfg.MODEL.DEVICE.startswith("cuda") and device.type == "cpu":
        log.warning(f"MODEL.DEVICE {cfg.MODEL.DEVICE} but no GPU is visible: running on the CPU")
    existing = sorted_checkpoints(output_dir, cfg.MODEL.NAME)
    if not test_only and existing and not resume:
        refuse_to_overwrite(existing[-1], "continue it with --resume, or set another OUTPUT_DIR")
    if resume and not existing:
        raise CheckpointError(f"--resume: no {cfg.MODEL.NAME}_checkpoint_<iteration>.pt in "
                              f"{output_dir}")

    dataset = load_dataset(cfg)
    log.info(dataset.summary())
    loaders = build_loaders(cfg, dataset, context.distributed, pin_memory=device.type == "cuda",
                            test_only=test_only)
    weights = None
    if test_only:
        weights = read_state_dict(cfg.TEST.WEIGHT, entries=("model", "state_dict"))[0]
        if "classifier.weight" not in weights:
            raise CheckpointError(f"TEST.WEIGHT {cfg.TEST.WEIGHT} holds no APNet state_dict "
                                  f"(no classifier.weight)")
        num_classes = int(weights["classifier.weight"].shape[0])
    else:
        num_classes = dataset.num_train_pids
    pretrain = cfg.MODEL.PRETRAIN_PATH
    model = build_model(num_classes, level=cfg.APNET.LEVEL, **model_options(cfg),
                        pretrained=cfg.MODEL.PRETRAINED and weights is None and not resume,
                        weights_path=None if pretrain in ("", "RESNET_PATH") else pretrain)
    model.to(device)
    if weights is not None:
        load_weights(model, weights, source=f"TEST.WEIGHT {cfg.TEST.WEIGHT}")
    optimizer = build_optimizer(cfg, model)
    solver = cfg.SOLVER
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: warmup_multistep_factor(
        epoch, solver.STEPS, solver.GAMMA, solver.WARMUP_FACTOR, solver.WARMUP_ITERS,
        solver.WARMUP_METHOD))
    criterion = APNetLoss(num_classes, solver.CLASSNUM or num_classes, solver.SMOOTH,
                          solver.MARGIN, cfg.DATALOADER.SAMPLER == "softmax_triplet")
    engine = APNetEngine(
        context, model, cfg, criterion=criterion, optimizer=optimizer, scheduler=scheduler,
        train_loader=loaders[0], targets={dataset.name: EvalTarget(dataset, *loaders[1:])},
        weights_source=f"TEST.WEIGHT {cfg.TEST.WEIGHT}" if test_only else "random initialisation")
    if test_only:
        if context.is_main:
            engine.report("evaluate", engine.evaluate(), epoch=None)
        return
    if resume:
        engine.resume(existing[-1])
    engine.wrap_for_training()  # the original trained on two GPUs with DataParallel
    log.info(f"Start training: {solver.MAX_EPOCHS - engine.epoch} epochs on {device}")
    if context.is_main:
        write_run_record(output_dir, "apnet", cfg.INPUT.SIZE_TEST, RETRIEVAL.interpolation,
                         model_options=model_options(cfg),
                         flags={key: config_value(cfg, key) for key in RECORDED_KEYS})
    engine.fit()
    engine.report_best()
