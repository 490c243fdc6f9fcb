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
from tqdm import tqdm

from apnet.model import build_model
from common.checkpoint import (CheckpointError, load_checkpoint, load_state_dict_checked,
                               resume_from, save_checkpoint, unwrap_model)
from common.data import DATASETS, ImageDataset, RandomIdentitySampler, build_dataset
from common.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_test_transform, build_train_transform
from common.eval import (compute_distance_matrix, evaluate_rank, extract_features, format_results,
                         re_ranking)
from common.eval.report import results_to_dict
from common.files import atomic_write
from common.history import LossMeter, TrainingHistory
from common.losses import CrossEntropyLabelSmooth, TripletLoss
from common.runtime import (autocast, distributed_session, grad_scaler, optimizer_step,
                            OptionError, seed_everything, select_device, setup_logging)

__all__ = ["DATASET_NAMES", "OptionError", "build_optimizer", "run", "warmup_multistep_factor"]

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
    if solver.OPTIMIZER_NAME == "SGD":
        return torch.optim.SGD(groups, momentum=solver.MOMENTUM)
    if solver.OPTIMIZER_NAME not in ("Adam", "AdamW", "RMSprop", "Adagrad"):
        raise OptionError(f"SOLVER.OPTIMIZER_NAME {solver.OPTIMIZER_NAME!r}: use Adam (as "
                          f"released), AdamW, SGD, RMSprop or Adagrad")
    return getattr(torch.optim, solver.OPTIMIZER_NAME)(groups)


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


class Trainer:
    """One APNet run: the epochs, the evaluations and the files in ``OUTPUT_DIR``."""

    def __init__(self, cfg, model, criterion, optimizer, scheduler, device, distributed,
                 loaders):
        self.cfg, self.output_dir = cfg, Path(cfg.OUTPUT_DIR)
        self.model, self.criterion = model, criterion
        self.optimizer, self.scheduler = optimizer, scheduler
        self.device, self.distributed = device, distributed
        self.train_loader, self.query_loader, self.gallery_loader = loaders
        self.scaler = grad_scaler(device, cfg.MODEL.AMP)
        self.history = TrainingHistory()
        self.epoch = 0

    def train_epoch(self):
        cfg = self.cfg
        self.train_loader.sampler.set_epoch(self.epoch)
        self.model.train()
        meter = LossMeter()
        progress = tqdm(self.train_loader, desc=f"epoch {self.epoch + 1}/{cfg.SOLVER.MAX_EPOCHS}",
                        leave=False, disable=not self.distributed.is_main)
        for images, pids, _ in progress:
            images, pids = images.to(self.device), pids.to(self.device)
            with autocast(self.device, cfg.MODEL.AMP):
                logits, feature = self.model(images)
            total, terms = self.criterion(logits, feature, pids)
            optimizer_step(total, self.optimizer, self.scaler)
            accuracy = (logits.argmax(1) == pids).float().mean()
            meter.update({**terms, "total": total, "accuracy": accuracy})
            progress.set_postfix(loss=f"{meter.means()['total']:.3f}")
        means = meter.means()
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        self.epoch += 1
        accuracy = means.pop("accuracy")
        self.history.log_epoch(self.epoch, lr, means)
        log.info(f"Epoch[{self.epoch}] Loss: {means['total']:.3f}, Acc: {accuracy:.3f}, "
                 f"Base Lr: {lr:.2e}")

    def test(self):
        """Evaluates on query + gallery (§6); returns evaluate_rank's dict."""
        model = unwrap_model(self.model)
        extract = dict(device=self.device, flip=True, normalize=True, amp=self.cfg.MODEL.AMP,
                       progress=self.distributed.is_main)
        qf, q_pids, q_camids = extract_features(model, self.query_loader, desc="query", **extract)
        gf, g_pids, g_camids = extract_features(model, self.gallery_loader, desc="gallery",
                                                **extract)
        distmat = compute_distance_matrix(qf, gf, "euclidean")
        if self.cfg.TEST.RE_RANK:
            distmat = re_ranking(distmat, compute_distance_matrix(qf, qf, "euclidean"),
                                 compute_distance_matrix(gf, gf, "euclidean"))
        results = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids)
        log.info(f"Validation Results - Epoch: {self.epoch}\n" + format_results(results))
        return results

    def checkpoint_path(self):
        return self.output_dir / f"{self.cfg.MODEL.NAME}_checkpoint_{self.epoch * len(self.train_loader)}.pt"

    def save(self):
        save_checkpoint(self.checkpoint_path(), model=self.model, epoch=self.epoch,
                        optimizer=self.optimizer, scheduler=self.scheduler, scaler=self.scaler,
                        history=self.history.state_dict())
        for old in sorted_checkpoints(self.output_dir, self.cfg.MODEL.NAME)[:-KEEP_CHECKPOINTS]:
            old.unlink()
        self.history.write(self.output_dir)

    def resume(self, path):
        checkpoint = resume_from(path, unwrap_model(self.model), self.optimizer, self.scheduler,
                                 self.scaler, map_location=self.device)
        self.epoch = checkpoint["epoch"]
        self.history.load_state_dict(checkpoint["history"])
        log.info(f"resumed {path} after epoch {self.epoch}")

    def fit(self):
        solver = self.cfg.SOLVER
        while self.epoch < solver.MAX_EPOCHS:
            self.train_epoch()
            evaluate = ((self.epoch % solver.EVAL_PERIOD == 0 or self.epoch == solver.MAX_EPOCHS)
                        and self.epoch > 0.5 * solver.MAX_EPOCHS)
            if self.distributed.is_main:
                if evaluate:
                    results = self.test()
                    cmc = results["cmc"]
                    self.history.log_evaluation(self.epoch, {
                        "mAP": results["mAP"], "rank1": cmc[0], "rank5": cmc[4],
                        "rank10": cmc[9]})
                    write_results(self.output_dir / "results_last.json", "train", self.epoch,
                                  results)
                self.save()
            if self.distributed.enabled:
                torch.distributed.barrier()


def sorted_checkpoints(folder, prefix):
    """``<prefix>_checkpoint_<iteration>.pt`` files in ``folder``, oldest first."""
    pattern = re.compile(rf"^{re.escape(prefix)}_checkpoint_(\d+)\.pt$")
    found = [(int(m.group(1)), p) for p in Path(folder).glob(f"{prefix}_checkpoint_*.pt")
             if (m := pattern.match(p.name))]
    return [path for _, path in sorted(found)]


def write_results(path, kind, epoch, results):
    payload = {"method": "APNet", "kind": kind, "epoch": epoch,
               "results": results_to_dict(results, ranks=(1, 5, 10, 20))}
    with atomic_write(path, "w") as handle:
        json.dump(payload, handle, indent=2)
        handle.write("\n")


def run(cfg, test_only=False, resume=False):
    """``tools/train.py`` (or ``tools/test.py`` with ``test_only``) for the configuration."""
    check_config(cfg)
    with distributed_session(cpu=not cfg.MODEL.DEVICE.startswith("cuda")) as distributed:
        _run(cfg, test_only, resume, distributed)


def _run(cfg, test_only, resume, distributed):
    output_dir = Path(cfg.OUTPUT_DIR)
    setup_logging(output_dir / ("test_log.txt" if test_only else "log.txt"),
                  main_process=distributed.is_main)
    log.info(f"Running with config:\n{json.dumps(cfg, indent=1)}")
    seed_everything(cfg.SOLVER.SEED + distributed.rank)
    device = select_device(not cfg.MODEL.DEVICE.startswith("cuda"), distributed.local_rank)
    if cfg.MODEL.DEVICE.startswith("cuda") and device.type == "cpu":
        log.warning(f"MODEL.DEVICE {cfg.MODEL.DEVICE} but no GPU is visible: running on the CPU")
    existing = sorted_checkpoints(output_dir, cfg.MODEL.NAME)
    if not test_only and existing and not resume:
        raise OptionError(f"{output_dir} already holds a run ({existing[-1].name}); continue it "
                          f"with --resume, or set another OUTPUT_DIR")
    if resume and not existing:
        raise CheckpointError(f"--resume: no {cfg.MODEL.NAME}_checkpoint_<iteration>.pt in "
                              f"{output_dir}")

    dataset = load_dataset(cfg)
    log.info(dataset.summary())
    loaders = build_loaders(cfg, dataset, distributed, pin_memory=device.type == "cuda",
                            test_only=test_only)
    weights = None
    if test_only:
        weights = load_checkpoint(cfg.TEST.WEIGHT)
        weights = weights.get("model", weights) if isinstance(weights, dict) else None
        if not isinstance(weights, dict) or "classifier.weight" not in weights:
            raise CheckpointError(f"TEST.WEIGHT {cfg.TEST.WEIGHT} holds no APNet state_dict "
                                  f"(a 'model' entry with classifier.weight)")
        num_classes = int(weights["classifier.weight"].shape[0])
    else:
        num_classes = dataset.num_train_pids
    pretrain = cfg.MODEL.PRETRAIN_PATH
    model = build_model(num_classes, level=cfg.APNET.LEVEL,
                        agent=cfg.APNET.AGENT, input_size=tuple(cfg.INPUT.SIZE_TRAIN),
                        test_feature="logits" if cfg.APNET.MSMT else "bn",
                        order=cfg.APNET.ORDER, last_stride=cfg.MODEL.LAST_STRIDE,
                        stem_relu=cfg.MODEL.STEM_RELU,
                        pretrained=cfg.MODEL.PRETRAINED and weights is None and not resume,
                        weights_path=None if pretrain in ("", "RESNET_PATH") else pretrain)
    model.to(device)
    if weights is not None:
        load_state_dict_checked(model, weights, source=f"TEST.WEIGHT {cfg.TEST.WEIGHT}",
                                hint=". Was it trained with the same APNET.LEVEL?")
    optimizer = build_optimizer(cfg, model)
    solver = cfg.SOLVER
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: warmup_multistep_factor(
        epoch, solver.STEPS, solver.GAMMA, solver.WARMUP_FACTOR, solver.WARMUP_ITERS,
        solver.WARMUP_METHOD))
    criterion = APNetLoss(num_classes, solver.CLASSNUM or num_classes, solver.SMOOTH,
                          solver.MARGIN, cfg.DATALOADER.SAMPLER == "softmax_triplet")
    trainer = Trainer(cfg, model, criterion, optimizer, scheduler, device, distributed, loaders)
    if test_only:
        if distributed.is_main:
            results = trainer.test()
            write_results(output_dir / "results_test.json", "test", None, results)
            print(format_results(results), flush=True)
        return
    if resume:
        trainer.resume(existing[-1])
    if distributed.enabled:
        trainer.model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    elif device.type == "cuda" and torch.cuda.device_count() > 1:
        trainer.model = nn.DataParallel(model)  # the original's two-GPU setting
    log.info(f"Start training: {solver.MAX_EPOCHS - trainer.epoch} epochs on {device}")
    trainer.fit()
    if distributed.is_main and trainer.history.evaluations:
        last = trainer.history.evaluations[-1]
        print(f"APNet (level {cfg.APNET.LEVEL}) on {dataset.name}, epoch {last['epoch']}: "
              f"mAP {100 * last['mAP']:.1f}  R1 {100 * last['rank1']:.1f}  "
              f"R5 {100 * last['rank5']:.1f}  R10 {100 * last['rank10']:.1f}", flush=True)
