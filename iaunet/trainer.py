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

import json
import logging
import shutil
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from common.checkpoint import (CheckpointError, load_checkpoint, load_state_dict_checked,
                               resume_from, save_checkpoint, unwrap_model)
from common.data import ImageDataset, build_dataset
from common.data.transforms import CIFAR_MEAN, build_test_transform, build_train_transform
from common.eval import compute_distance_matrix, evaluate_rank, extract_features, format_results
from common.eval.report import results_to_dict
from common.files import atomic_write
from common.history import LossMeter, TrainingHistory
from common.runtime import (autocast, distributed_session, grad_scaler, optimizer_step,
                            OptionError, seed_everything, select_device, setup_logging,
                            step_scheduler)
from iaunet.loss import DISTANCES, IAUnetLoss
from iaunet.masks import MaskedImageDataset, find_mask_folder
from iaunet.model import build_model
from iaunet.sampler import ChunkShuffleSampler
from iaunet import video

__all__ = ["ARCHS", "DATASET_NAMES", "OptionError", "TRAINING_STATE", "run"]

log = logging.getLogger(__name__)

TRAINING_STATE = "training_state.pth.tar"
ARCHS = {"IAUnet": "iaunet", "IANet": "ianet"}
# -d: the original's one dataset (Market-1501 with part masks), or any common/ parser.
DATASET_NAMES = {"market1501_seg": "market1501", "market1501": "market1501",
                 "dukemtmcreid": "dukemtmcreid", "msmt17": "msmt17", "cuhk03np": "cuhk03np"}


def build_optimizer(args, model):
    params = model.parameters()
    if args.optim in ("adam", "amsgrad"):
        return torch.optim.Adam(params, lr=args.lr, weight_decay=args.weight_decay,
                                amsgrad=args.optim == "amsgrad")
    if args.optim == "sgd":
        return torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=args.weight_decay)
    return torch.optim.RMSprop(params, lr=args.lr, momentum=0.9, weight_decay=args.weight_decay)


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


class Trainer:
    """One run: the epochs, the evaluations and the files in ``--save-dir``."""

    def __init__(self, args, model, criterion, optimizer, scheduler, device, distributed,
                 loaders):
        self.args, self.save_dir = args, Path(args.save_dir)
        self.model, self.criterion = model, criterion
        self.optimizer, self.scheduler = optimizer, scheduler
        self.device, self.distributed = device, distributed
        self.train_loader, self.query_loader, self.gallery_loader = loaders
        self.scaler = grad_scaler(device, args.amp)
        self.history = TrainingHistory()
        self.epoch = 0
        self.best_rank1 = -1.0

    def train_epoch(self):
        args = self.args
        step_scheduler(self.scheduler)  # stepped before training: the released convention
        self.train_loader.batch_sampler.set_epoch(self.epoch)
        self.model.train()
        meter = LossMeter()
        progress = tqdm(self.train_loader, desc=f"epoch {self.epoch + 1}/{args.max_epoch}",
                        leave=False, disable=not self.distributed.is_main)
        for batch in progress:
            images, pids = batch[0].to(self.device), batch[1].to(self.device)
            masks = batch[3].to(self.device) if len(batch) > 3 else None
            with autocast(self.device, args.amp):
                outputs = self.model(images)
            total, terms = self.criterion(outputs, pids, masks)
            optimizer_step(total, self.optimizer, self.scaler)
            meter.update({**terms, "total": total})
            progress.set_postfix(loss=f"{meter.means()['total']:.3f}")
        self.epoch += 1
        losses = meter.means()
        lr = self.optimizer.param_groups[0]["lr"]
        self.history.log_epoch(self.epoch, lr, losses)
        log.info(f"Epoch {self.epoch} lr {lr:.2e} "
                 + " ".join(f"{k} {v:.4f}" for k, v in losses.items()))

    def test(self):
        args, model = self.args, unwrap_model(self.model)
        if video.is_video(args):
            return video.evaluate_tracklets(model, self.query_loader, self.gallery_loader, args,
                                            self.device, progress=self.distributed.is_main)
        extract = dict(device=self.device, flip=args.flip_cnt == 2, normalize=False,
                       amp=args.amp, progress=self.distributed.is_main)
        qf, q_pids, q_camids = extract_features(model, self.query_loader, desc="query", **extract)
        gf, g_pids, g_camids = extract_features(model, self.gallery_loader, desc="gallery",
                                                **extract)
        metric = "cosine" if DISTANCES[args.distance] == "cosine" else "sqeuclidean"
        distmat = compute_distance_matrix(qf, gf, metric)
        results = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids,
                                protocol="cuhk03" if args.use_metric_cuhk03 else "standard")
        log.info(format_results(results))
        return results

    def evaluate_and_save(self):
        results = self.test()
        cmc = results["cmc"]
        self.history.log_evaluation(self.epoch, {"mAP": results["mAP"], "rank1": cmc[0],
                                                 "rank5": cmc[4], "rank10": cmc[9],
                                                 "rank20": cmc[19]})
        path = self.save_dir / f"checkpoint_ep{self.epoch}.pth.tar"
        with atomic_write(path) as handle:
            torch.save({"state_dict": unwrap_model(self.model).state_dict(),
                        "rank1": float(cmc[0]), "epoch": self.epoch - 1}, handle)
        if cmc[0] > self.best_rank1:
            self.best_rank1 = float(cmc[0])
            shutil.copyfile(path, self.save_dir / "best_model.pth.tar")
            write_results(self.save_dir / "results_best.json", "best", self.epoch, results)

    def save_state(self):
        save_checkpoint(self.save_dir / TRAINING_STATE, model=self.model, epoch=self.epoch,
                        optimizer=self.optimizer, scheduler=self.scheduler, scaler=self.scaler,
                        best_rank1=self.best_rank1, history=self.history.state_dict())
        self.history.write(self.save_dir)

    def resume(self, path, loaded=None):
        checkpoint = resume_from(path, unwrap_model(self.model), self.optimizer, self.scheduler,
                                 self.scaler, map_location=self.device, loaded=loaded)
        self.epoch, self.best_rank1 = checkpoint["epoch"], checkpoint["best_rank1"]
        self.history.load_state_dict(checkpoint["history"])
        log.info(f"resumed {path} after epoch {self.epoch}")

    def fit(self):
        args = self.args
        while self.epoch < args.max_epoch:
            self.train_epoch()
            evaluate = (self.epoch % args.eval_step == 0 or self.epoch == 1
                        or self.epoch == args.max_epoch)
            if self.distributed.is_main:
                if evaluate:
                    self.evaluate_and_save()
                self.save_state()
            if self.distributed.enabled:
                torch.distributed.barrier()


def write_results(path, kind, epoch, results):
    payload = {"method": "IAUnet", "kind": kind, "epoch": epoch,
               "results": results_to_dict(results, ranks=(1, 5, 10, 20))}
    with atomic_write(path, "w") as handle:
        json.dump(payload, handle, indent=2)
        handle.write("\n")


def check_options(args):
    if args.dataset not in DATASET_NAMES and not video.is_video(args):
        raise OptionError(f"-d {args.dataset!r}: choose one of "
                          f"{', '.join([*DATASET_NAMES, *video.VIDEO_DATASETS])}")
    video.check_video_options(args)
    if args.arch not in ARCHS:
        raise OptionError(f"-a {args.arch!r}: choose IAUnet or IANet")
    if args.train_batch % args.num_instances:
        raise OptionError(f"--train-batch {args.train_batch} must be a multiple of "
                          f"--num-instances {args.num_instances}")
    if args.flip_cnt not in (1, 2):
        raise OptionError(f"--flip_cnt {args.flip_cnt}: 1 (no flip) or 2 (plus the mirror)")
    if args.evaluate and not args.resume:
        raise OptionError("--evaluate needs --resume PATH, the weights to evaluate")


def run(args):
    check_options(args)
    with distributed_session(cpu=args.use_cpu) as distributed:
        _run(args, distributed)


def _run(args, distributed):
    save_dir = Path(args.save_dir)
    setup_logging(save_dir / ("log_test.txt" if args.evaluate else "log_train.txt"),
                  main_process=distributed.is_main)
    log.info(f"Args: {vars(args)}")
    seed_everything(args.seed + distributed.rank)
    device = select_device(args.use_cpu, distributed.local_rank)
    state_path = save_dir / TRAINING_STATE
    resume = Path(args.resume) if args.resume else None
    if resume is not None and not resume.is_file():
        raise CheckpointError(f"--resume {resume} does not exist")
    if not args.evaluate and resume is None and state_path.exists():
        raise OptionError(f"{save_dir} already holds a run ({TRAINING_STATE}); continue it with "
                          f"--resume {state_path}, or pick another --save-dir")
    checkpoint = load_checkpoint(resume) if resume is not None else None
    exact_resume = checkpoint is not None and "optimizer" in checkpoint and not args.evaluate
    weights = None
    if checkpoint is not None and not exact_resume:
        weights = checkpoint.get("state_dict", checkpoint.get("model"))
        if not isinstance(weights, dict) or "classifier.weight" not in weights:
            raise CheckpointError(f"--resume {resume} holds no IAUnet/IANet state_dict")

    dataset = (video.load_video_dataset(args) if video.is_video(args)
               else build_dataset(DATASET_NAMES[args.dataset], args.root))
    log.info(dataset.summary())
    loaders = (video.build_video_loaders if video.is_video(args) else build_loaders)(
        args, dataset, distributed, pin_memory=device.type == "cuda")
    num_classes = (int(weights["classifier.weight"].shape[0]) if weights is not None
                   else dataset.num_train_pids)
    arch = ARCHS[args.arch]
    options = {"input_size": (args.height, args.width)} if arch == "ianet" else {}
    if video.is_video(args):
        arch, options = "iaunet_video", {"seq_len": args.seq_len}
    model = build_model(num_classes, arch=arch,
                        pretrained=not args.no_pretrained and checkpoint is None,
                        weights_path=args.pretrained_path, **options).to(device)
    if weights is not None:
        load_state_dict_checked(model, weights, source=f"--resume {resume}",
                                hint=". Was it trained with the same -a/--arch?")
    criterion = IAUnetLoss(num_classes, margin=args.margin, distance=args.distance,
                           alpha=args.alpha, mode=args.mode)
    optimizer = build_optimizer(args, model)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=args.stepsize,
                                                     gamma=args.gamma)
    trainer = Trainer(args, model, criterion, optimizer, scheduler, device, distributed, loaders)
    if args.evaluate:
        if distributed.is_main:
            results = trainer.test()
            write_results(save_dir / "results_test.json", "test", checkpoint.get("epoch"),
                          results)
            print(format_results(results), flush=True)
        return
    if exact_resume:
        trainer.resume(resume, loaded=checkpoint)
    elif weights is not None:  # a checkpoint_ep file: weights and epoch; the schedule follows
        finished = int(checkpoint.get("epoch", -1)) + 1
        step_scheduler(scheduler, finished)
        trainer.epoch = finished
        log.warning(f"--resume {resume}: weights only, continuing after epoch {finished}; the "
                    f"optimizer starts afresh (resume from {TRAINING_STATE} for an exact "
                    f"continuation)")
    del checkpoint, weights  # the model and optimizer hold copies: the file is not kept for the run
    if distributed.enabled:
        trainer.model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    elif device.type == "cuda" and torch.cuda.device_count() > 1:
        trainer.model = nn.DataParallel(model)
    log.info(f"Start training {args.max_epoch - trainer.epoch} epochs on {device}")
    trainer.fit()
    best = save_dir / "results_best.json"
    if distributed.is_main and best.exists():
        row = json.loads(best.read_text())
        r = row["results"]
        print(f"{args.arch} best rank-1 at epoch {row['epoch']}: mAP {100 * r['mAP']:.1f} "
              f"R1 {100 * r['rank1']:.1f} R5 {100 * r['rank5']:.1f} R10 {100 * r['rank10']:.1f} "
              f"R20 {100 * r['rank20']:.1f}", flush=True)
