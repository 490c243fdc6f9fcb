"""Training and evaluation behind ``lagnet/main.py`` (``../shared/specs/lagnet.md`` §1-§2, §5-§7).

The run follows the released code: MGN's identity sampler, Adam (AMSGrad in the README command),
the scheduler stepped at the start of each epoch, evaluation every ``--test_every`` epochs with
flip-summed, L2-normalised 3,584-d features and Euclidean distances, and an experiment folder
``experiment/<save>/``. Where the original would hurt a user it is fixed and said so in the README:
``--reset`` deletes only that experiment folder, ``--num_classes`` comes from the data, the last
epoch is always evaluated and saved, and an interrupted run resumes exactly with ``--resume -1``.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from common.checkpoint import (CheckpointError, load_checkpoint, resume_from, save_checkpoint,
                               unwrap_model)
from common.data import ImageDataset, build_dataset
from common.data.transforms import build_test_transform, build_train_transform
from common.eval import compute_distance_matrix, evaluate_rank, extract_features, re_ranking
from common.eval.report import results_to_dict
from common.files import atomic_write
from common.history import LossMeter, TrainingHistory
from common.runtime import (autocast, distributed_session, grad_scaler, optimizer_step,
                            OptionError, seed_everything, select_device, setup_logging,
                            step_scheduler)
from lagnet.loss import LAGLoss, parse_loss_string
from lagnet.model import build_model, load_weights, read_weights, rename_legacy_stream_keys
from lagnet.sampler import IdentityGroupSampler

__all__ = ["DATASET_NAMES", "OptionError", "parse_decay_type", "run"]

log = logging.getLogger("lagnet")

EXPERIMENT_ROOT = Path("experiment")
# The original's main loop counter starts at 200, so evaluation falls on epochs where
# (200 + epoch) % test_every == 0 (spec §1, "Main loop").
EVAL_COUNTER_START = 200

# --data_train / --data_test: the original's class name, or any of common/'s dataset names.
DATASET_NAMES = {
    "Market1501": ("market1501", {}),
    "market1501": ("market1501", {}),
    "DukeMTMC": ("dukemtmcreid", {}),
    "dukemtmcreid": ("dukemtmcreid", {}),
    "cuhk03np-detected": ("cuhk03np", {"variant": "detected"}),
    "cuhk03np-labeled": ("cuhk03np", {"variant": "labeled"}),
    "msmt17": ("msmt17", {}),
}


def parse_decay_type(decay_type, lr_decay):
    """``"step"`` -> ``[lr_decay]`` (StepLR); ``"step_320_380_420"`` -> ``[320, 380, 420]``
    (MultiStepLR). Returns ``(kind, values)`` with kind ``"step"`` or ``"multistep"``."""
    if decay_type == "step":
        return "step", [lr_decay]
    fields = decay_type.split("_")
    if "step" not in decay_type or len(fields) < 2:
        raise ValueError(f"--decay_type {decay_type!r} is not 'step' or 'step_<epoch>_<epoch>...' "
                         f"(e.g. step_320_380_420)")
    try:
        milestones = [int(field) for field in fields[1:]]
    except ValueError:
        raise ValueError(f"--decay_type {decay_type!r}: the milestones after the first '_' must "
                         f"be whole epochs, e.g. step_320_380_420") from None
    if milestones != sorted(milestones) or min(milestones) < 1:
        raise ValueError(f"--decay_type {decay_type!r}: milestones must be positive and increasing")
    return "multistep", milestones


def build_scheduler(args, optimizer):
    kind, values = parse_decay_type(args.decay_type, args.lr_decay)
    if kind == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=values[0], gamma=args.gamma)
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=values, gamma=args.gamma)


def build_optimizer(args, model):
    params = [p for p in model.parameters() if p.requires_grad]
    if args.optimizer == "SGD":
        return torch.optim.SGD(params, lr=args.lr, momentum=args.momentum,
                               dampening=args.dampening, nesterov=args.nesterov,
                               weight_decay=args.weight_decay)
    if args.optimizer == "ADAM":
        return torch.optim.Adam(params, lr=args.lr, betas=(args.beta1, args.beta2),
                                eps=args.epsilon, amsgrad=args.amsgrad,
                                weight_decay=args.weight_decay)
    if args.optimizer == "NADAM":
        return torch.optim.NAdam(params, lr=args.lr, betas=(args.beta1, args.beta2),
                                 eps=args.epsilon, weight_decay=args.weight_decay)
    return torch.optim.RMSprop(params, lr=args.lr, eps=args.epsilon, momentum=args.momentum,
                               weight_decay=args.weight_decay)


def experiment_dir(args):
    """``experiment/<load>`` when continuing an experiment, else ``experiment/<save>``."""
    name = args.load or args.save
    path = EXPERIMENT_ROOT / name
    if path.resolve().parent != EXPERIMENT_ROOT.resolve():
        raise OptionError(f"experiment name {name!r} must be a plain folder name (no '/', '..' or "
                          f"links out of {EXPERIMENT_ROOT}/); it becomes {EXPERIMENT_ROOT}/<name>")
    return path


def reset_experiment(path):
    """``--reset``: deletes ``experiment/<name>`` and nothing else (the original ran rm -rf).

    Returns whether there was something to delete."""
    if path.is_symlink():
        raise OptionError(f"--reset: {path} is a link; remove it by hand")
    if not path.exists():
        return False
    shutil.rmtree(path)
    return True


def load_data(args, distributed):
    if args.data_train not in DATASET_NAMES:
        raise OptionError(f"unknown --data_train {args.data_train!r}; choose one of "
                          f"{', '.join(DATASET_NAMES)}")
    if args.data_test != args.data_train:
        raise OptionError(f"--data_test {args.data_test!r} differs from --data_train "
                          f"{args.data_train!r}; both name the dataset at --datadir. To test a "
                          f"model on another dataset, run --test_only with --data_train and "
                          f"--datadir set to that dataset")
    name, options = DATASET_NAMES[args.data_train]
    dataset = build_dataset(name, args.datadir, **options)
    train_set = ImageDataset(dataset.train, build_train_transform(
        args.height, args.width, flip=0.5,
        erasing=args.probability if args.random_erasing else 0.0,
        erasing_mean=(0.0, 0.0, 0.0), interpolation="bicubic"))
    test_transform = build_test_transform(args.height, args.width, interpolation="bicubic")
    sampler = IdentityGroupSampler([s.pid for s in dataset.train], args.batchid, args.batchimage,
                                   seed=args.seed, num_replicas=distributed.world_size,
                                   rank=distributed.rank)
    loader_options = {"num_workers": args.nThread,
                      "pin_memory": not args.cpu and torch.cuda.is_available()}
    train_loader = DataLoader(train_set, batch_sampler=sampler, persistent_workers=args.nThread > 0,
                              **loader_options)
    query_loader = DataLoader(ImageDataset(dataset.query, test_transform),
                              batch_size=args.batchtest, **loader_options)
    gallery_loader = DataLoader(ImageDataset(dataset.gallery, test_transform),
                                batch_size=args.batchtest, **loader_options)
    return dataset, train_loader, query_loader, gallery_loader


def weights_to_load(args, folder):
    """The weights file that ``--resume`` / ``--pre_train`` name (spec §1), or None."""
    if args.resume == -1:
        return folder / "model" / "model_latest.pt"
    if args.resume > 0:
        return folder / "model" / f"model_{args.resume}.pt"
    return Path(args.pre_train) if args.pre_train else None


def resolve_num_classes(args, dataset, weights, state):
    """``--num_classes``: the training identities; for ``--test_only``, the width of the
    classifiers in ``state`` (the weights read from the file ``weights``)."""
    if args.test_only and state is not None:
        classifier = state.get("classifier_gs.classifier.0.weight")
        found = None if classifier is None else int(classifier.shape[0])
        if args.num_classes is not None and found is not None and args.num_classes != found:
            raise OptionError(f"--num_classes {args.num_classes} but {weights} was trained with "
                              f"{found} classes; drop --num_classes")
        return found or args.num_classes or dataset.num_train_pids
    if args.num_classes is not None and args.num_classes != dataset.num_train_pids:
        raise OptionError(f"--num_classes {args.num_classes} but {dataset.name} at {args.datadir} "
                          f"has {dataset.num_train_pids} training identities; drop --num_classes "
                          f"(it is taken from the data) or point --datadir at the right dataset")
    return dataset.num_train_pids


class Trainer:
    """One LAG-Net run: the epochs, the evaluations and the files in the experiment folder."""

    def __init__(self, args, folder, model, criterion, optimizer, scheduler, device,
                 distributed, data):
        self.args, self.folder = args, folder
        self.model, self.criterion = model, criterion
        self.optimizer, self.scheduler = optimizer, scheduler
        self.device, self.distributed = device, distributed
        self.dataset, self.train_loader, self.query_loader, self.gallery_loader = data
        self.scaler = grad_scaler(device, args.amp)
        self.history = TrainingHistory()
        self.epoch = 0
        self.num_epochs = args.epochs if args.train_all_epochs else args.epochs - 1

    @property
    def is_main(self):
        return self.distributed.is_main

    def train_epoch(self):
        """Trains one epoch; returns the mean of each weighted loss term and ``Total``."""
        self.epoch += 1
        step_scheduler(self.scheduler)  # before the epoch: the original's schedule (spec §5)
        self.train_loader.batch_sampler.set_epoch(self.epoch)
        self.model.train()
        self.criterion.train()
        meter = LossMeter()
        progress = tqdm(self.train_loader, desc=f"epoch {self.epoch}/{self.num_epochs}",
                        leave=False, disable=not self.is_main)
        for images, labels, _ in progress:
            images, labels = images.to(self.device), labels.to(self.device)
            with autocast(self.device, self.args.amp):
                outputs = self.model(images)
            total, terms = self.criterion(outputs, labels)
            optimizer_step(total, self.optimizer, self.scaler)
            meter.update({**terms, "Total": total})
            progress.set_postfix(loss=f"{meter.means()['Total']:.3f}")
        losses = meter.means()
        lr = self.optimizer.param_groups[0]["lr"]
        self.history.log_epoch(self.epoch, lr, losses)
        log.info(f"[Epoch {self.epoch}/{self.num_epochs}] lr {lr:.2e} "
                 + " ".join(f"{name} {value:.4f}" for name, value in losses.items()))
        return losses

    def test(self):
        """Evaluates on the query and gallery sets (spec §6); returns evaluate_rank's dict."""
        model = unwrap_model(self.model)
        start = time.time()
        extract = dict(device=self.device, flip=True, normalize=True, amp=self.args.amp,
                       progress=self.is_main)
        qf, q_pids, q_camids = extract_features(model, self.query_loader, desc="query", **extract)
        gf, g_pids, g_camids = extract_features(model, self.gallery_loader, desc="gallery",
                                                **extract)
        distmat = compute_distance_matrix(qf, gf, "euclidean")
        if self.args.re_rank:
            distmat = re_ranking(distmat, compute_distance_matrix(qf, qf, "euclidean"),
                                 compute_distance_matrix(gf, gf, "euclidean"))
        results = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, protocol="standard")
        self.history.log_evaluation(self.epoch, _metrics(results))
        best = self.history.best()
        cmc = results["cmc"]
        log.info(f"[mAP: {results['mAP']:.4f} rank1: {cmc[0]:.4f} rank3: {cmc[2]:.4f} "
                 f"rank5: {cmc[4]:.4f} rank10: {cmc[9]:.4f} (Best: {best['mAP']:.4f} "
                 f"@epoch {best['epoch']})] {time.time() - start:.1f}s")
        return results

    def save(self, results=None):
        """Writes the model files, the resumable state, the history and its plots (main only)."""
        if not self.is_main:
            return
        state = unwrap_model(self.model).state_dict()
        models = self.folder / "model"
        _save_state_dict(state, models / "model_latest.pt")
        best = self.history.best()
        if results is not None and best is not None and best["epoch"] == self.epoch:
            _save_state_dict(state, models / "model_best.pt")
        if self.args.save_models:
            _save_state_dict(state, models / f"model_{self.epoch}.pt")
        save_checkpoint(self.folder / "training_state.pt", model=self.model, epoch=self.epoch,
                        optimizer=self.optimizer, scheduler=self.scheduler, scaler=self.scaler,
                        loss=self.criterion.state_dict(), history=self.history.state_dict())
        self.history.write(self.folder)

    def resume(self, path):
        """Continues the run saved in ``path`` (``training_state.pt``) exactly where it stopped."""
        loaded = load_checkpoint(path, map_location=self.device)
        if isinstance(loaded, dict) and isinstance(loaded.get("model"), dict):
            loaded["model"] = rename_legacy_stream_keys(loaded["model"], source=str(path))
        checkpoint = resume_from(path, unwrap_model(self.model), self.optimizer, self.scheduler,
                                 self.scaler, map_location=self.device, loaded=loaded)
        self.criterion.load_state_dict(checkpoint["loss"])
        self.history.load_state_dict(checkpoint["history"])
        self.epoch = checkpoint["epoch"]
        log.info(f"resumed {path} after epoch {self.epoch}")

    def fit(self):
        evaluate_every = self.args.test_every
        while self.epoch < self.num_epochs:
            self.train_epoch()
            last = self.epoch == self.num_epochs
            evaluate = evaluate_every > 0 and ((EVAL_COUNTER_START + self.epoch) % evaluate_every
                                               == 0 or last)
            results = None
            if evaluate:
                if self.is_main:
                    results = self.test()
                _barrier(self.distributed)
            if evaluate or last or self.epoch % self.args.checkpoint_every == 0:
                self.save(results)
                _barrier(self.distributed)


def _save_state_dict(state, path):
    with atomic_write(path) as handle:
        torch.save(state, handle)


def _barrier(distributed):
    if distributed.enabled:
        torch.distributed.barrier()


def _metrics(results):
    cmc = results["cmc"]
    return {"mAP": results["mAP"], "rank1": cmc[0], "rank3": cmc[2], "rank5": cmc[4],
            "rank10": cmc[9]}


def format_table(title, metrics):
    """The final table: mAP and rank-1/3/5/10 in percent, as LAG-Net's README reports them."""
    header = f"{'mAP':>7} {'R1':>7} {'R3':>7} {'R5':>7} {'R10':>7}"
    values = " ".join(f"{100 * metrics[key]:7.2f}"
                      for key in ("mAP", "rank1", "rank3", "rank5", "rank10"))
    return f"{title}\n{header}\n{values}"


def check_options(args):
    """Rejects option values the original accepts but cannot run, with the fix."""
    if args.model != "LAG":
        raise OptionError(f"--model {args.model!r}: this folder implements LAG only (--model LAG)")
    if args.apex not in ("no", False):
        raise OptionError("--apex yes: NVIDIA apex is not used; pass --amp for mixed precision")
    if args.epochs < 2 and not args.test_only and not args.train_all_epochs:
        raise OptionError(f"--epochs {args.epochs} trains nothing: the original trains epochs - 1 "
                          f"epochs (spec §5); use --epochs 2 or more, or --train_all_epochs")
    if args.resume < -1:
        raise OptionError(f"--resume {args.resume}: use -1 (latest), 0 (--pre_train) or N > 0")
    if args.checkpoint_every < 1:
        raise OptionError("--checkpoint_every must be >= 1")
    try:
        parse_loss_string(args.loss)
        parse_decay_type(args.decay_type, args.lr_decay)
    except ValueError as err:
        raise OptionError(str(err)) from None


def run(args):
    """Runs ``main.py``'s job: train (and evaluate), or only evaluate with ``--test_only``."""
    check_options(args)
    with distributed_session(cpu=args.cpu) as distributed:
        _run(args, distributed)


def _run(args, distributed):
    folder = experiment_dir(args)
    removed = args.reset and distributed.is_main and reset_experiment(folder)
    _barrier(distributed)
    setup_logging(folder / "log.txt", main_process=distributed.is_main)
    if removed:
        log.info(f"--reset: removed the previous {folder}")
    seed_everything(args.seed + distributed.rank)
    device = select_device(args.cpu, distributed.local_rank)
    state_path = folder / "training_state.pt"
    if not args.test_only and args.resume != -1 and state_path.exists():
        raise OptionError(f"{folder} already holds a run ({state_path.name}); continue it with "
                          f"--resume -1, start it over with --reset, or pick another --save name")
    full_resume = args.resume == -1 and state_path.exists() and not args.test_only
    weights = None if full_resume else weights_to_load(args, folder)
    if weights is not None and not weights.is_file():
        raise CheckpointError(f"weights file {weights} does not exist (--resume {args.resume}"
                              f"{' --pre_train' if args.resume == 0 else ''}); check the path, "
                              f"or for --resume -1 the --save / --load name")
    if distributed.is_main:
        with atomic_write(folder / "config.txt", "w") as handle:
            handle.writelines(f"{key}: {value}\n" for key, value in sorted(vars(args).items()))

    dataset, *loaders = load_data(args, distributed)
    log.info(dataset.summary())
    state = read_weights(weights) if weights is not None else None
    num_classes = resolve_num_classes(args, dataset, weights, state)
    from_file = full_resume or state is not None
    model = build_model(num_classes, num_attentions=args.num_attentions, feats=args.feats,
                        part_split=args.part_split, drop_pool=args.drop_pool,
                        pretrained=not args.no_pretrained and not from_file,
                        weights_path=args.pretrained_path).to(device)
    terms = parse_loss_string(args.loss)
    criterion = LAGLoss(terms, num_classes, margin=args.margin,
                        feature_dim=args.num_attentions * args.num_features,
                        beta=args.L2_beta).to(device)
    optimizer = build_optimizer(args, model)
    scheduler = build_scheduler(args, optimizer)
    trainer = Trainer(args, folder, model, criterion, optimizer, scheduler, device, distributed,
                      (dataset, *loaders))

    if full_resume:
        trainer.resume(state_path)
    elif state is not None:
        ignored = load_weights(model, state, source=f"weights {weights}")
        message = f"loaded weights {weights}"
        if ignored:
            modules = ", ".join(sorted({key.split(".")[0] for key in ignored}))
            message += f"; ignored {len(ignored)} keys of the original's unused modules ({modules})"
        log.info(message)

    if args.test_only:
        if distributed.is_main:
            results = trainer.test()
            _report(trainer, folder, dataset, "test_only", results_to_dict(results))
        return

    if distributed.enabled:
        names = {term.name for term in terms}
        trainer.model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=not {"CrossEntropy", "Triplet"} <= names)
    elif args.nGPU > 1 and device.type == "cuda":
        trainer.model = nn.DataParallel(model, device_ids=list(range(args.nGPU)))
    log.info(f"training {trainer.num_epochs} epochs from epoch {trainer.epoch + 1} on {device}"
             f"{f' x {distributed.world_size} processes' if distributed.enabled else ''}")
    trainer.fit()
    best = trainer.history.best()
    if distributed.is_main and best is not None:
        _report(trainer, folder, dataset, "best", best)


def _report(trainer, folder, dataset, kind, metrics):
    args = trainer.args
    epoch = metrics.get("epoch", trainer.epoch)
    title = (f"LAG-Net on {dataset.name} ({kind}, epoch {epoch}"
             f"{', re-ranked' if args.re_rank else ''}; {len(dataset.query)} queries, "
             f"{len(dataset.gallery)} gallery)")
    print(format_table(title, metrics), flush=True)
    payload = {"method": "LAG-Net", "dataset": dataset.name, "kind": kind, "epoch": epoch,
               "re_rank": bool(args.re_rank), "num_query": len(dataset.query),
               "num_gallery": len(dataset.gallery),
               "metrics": {key: float(value) for key, value in metrics.items()
                           if key != "epoch" and not isinstance(value, (list, str))}}
    with atomic_write(folder / f"results_{kind}.json", "w") as handle:
        json.dump(payload, handle, indent=2)
        handle.write("\n")
