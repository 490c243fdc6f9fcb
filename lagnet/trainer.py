"""Training and evaluation behind ``lagnet/main.py`` (``../shared/specs/lagnet.md`` §1-§2, §5-§7).

The run follows the released code: MGN's identity sampler, Adam (AMSGrad in the README command),
the scheduler stepped at the start of each epoch, evaluation every ``--test_every`` epochs with
flip-summed, L2-normalised 3,584-d features and Euclidean distances, and an experiment folder
``experiment/<save>/``. Where the original would hurt a user it is fixed and said so in the README:
``--reset`` deletes only that experiment folder, ``--num_classes`` comes from the data, the last
epoch is always evaluated and saved, and an interrupted run resumes exactly with ``--resume -1``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from common.checkpoint import CheckpointError, load_checkpoint
from common.data import ImageDataset, build_dataset
from common.data.transforms import build_test_transform, build_train_transform
from common.engine import Engine, EvalTarget, open_run, refuse_to_overwrite
from common.files import atomic_write
from common.runrecord import (adopt_recorded_flags, command_line_values,
                              refuse_another_methods_file, write_run_record)
from common.runtime import (OptionError, distributed_session, optimizer_by_name,
                            refuse_counts_below)
from lagnet.loss import LAGLoss, parse_loss_string
from lagnet.model import (RETRIEVAL, build_model, load_weights, read_weights,
                          rename_legacy_stream_keys)
from lagnet.sampler import IdentityGroupSampler

__all__ = ["DATASET_NAMES", "OptionError", "parse_decay_type", "run"]

log = logging.getLogger("lagnet")

EXPERIMENT_ROOT = Path("experiment")
# The original's main loop counter starts at 200, so evaluation falls on epochs where
# (200 + epoch) % test_every == 0 (spec §1, "Main loop").
EVAL_COUNTER_START = 200

# What evaluating the weights needs that they do not show (written to run.json): the input size
# and the build_model options that change only the forward pass (--feats shows in the shapes).
RECORDED_FLAGS = ("height", "width", "num_attentions", "part_split", "drop_pool")

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
    """The released ``make_optimizer``: SGD, ADAM, NADAM or RMSprop over the trainable tensors."""
    betas = (args.beta1, args.beta2)
    options = {"SGD": {"momentum": args.momentum, "dampening": args.dampening,
                       "nesterov": args.nesterov},
               "ADAM": {"betas": betas, "eps": args.epsilon, "amsgrad": args.amsgrad},
               "NADAM": {"betas": betas, "eps": args.epsilon},
               "RMSprop": {"eps": args.epsilon, "momentum": args.momentum}}
    params = [p for p in model.parameters() if p.requires_grad]
    return optimizer_by_name(args.optimizer, params, flag="--optimizer", lr=args.lr,
                             weight_decay=args.weight_decay, **options[args.optimizer])


def experiment_dir(args):
    """``experiment/<load>`` when continuing an experiment, else ``experiment/<save>``."""
    name = args.load or args.save
    path = EXPERIMENT_ROOT / name
    if path.resolve().parent != EXPERIMENT_ROOT.resolve():
        raise OptionError(f"experiment name {name!r} must be a plain folder name (no '/', '..' or "
                          f"links out of {EXPERIMENT_ROOT}/); it becomes {EXPERIMENT_ROOT}/<name>")
    return path


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


class LAGNetEngine(Engine):
    """The released training loop (spec §1, §5, §7) on the shared run skeleton."""

    name = "LAG-Net"
    best_key = "mAP"
    schedule_at_epoch_start = True  # the original steps its scheduler before each epoch (§5)

    def __init__(self, context, model, args, **parts):
        super().__init__(context, model, amp=args.amp, re_rank=args.re_rank, retrieval=RETRIEVAL,
                         eval_before_training=args.eval_before_training,
                         max_epoch=args.epochs if args.train_all_epochs else args.epochs - 1,
                         **parts)
        self.args = args

    def prepare_epoch(self):
        self.train_loader.batch_sampler.set_epoch(self.epoch + 1)
        self.model.train()
        self.criterion.train()

    def compute_loss(self, batch):
        images, labels, _ = batch
        return self.criterion(self.forward(images), labels.to(self.device))

    def evaluation_due(self):
        every = self.args.test_every
        return every > 0 and ((EVAL_COUNTER_START + self.epoch) % every == 0
                              or self.epoch == self.max_epoch)

    def state_due(self, evaluated):
        return (evaluated or self.epoch == self.max_epoch
                or self.epoch % self.args.checkpoint_every == 0)

    def save_weights(self, evaluated, is_best):
        """``model/model_latest.pt``, ``model_best.pt`` and with ``--save_models``
        ``model_<epoch>.pt``: plain state_dicts, as the original writes them (§7)."""
        state = self.module.state_dict()
        models = self.folder / "model"
        _save_state_dict(state, models / "model_latest.pt")
        if is_best:
            _save_state_dict(state, models / "model_best.pt")
        if self.args.save_models:
            _save_state_dict(state, models / f"model_{self.epoch}.pt")

    def extra_state(self):
        return {"loss": self.criterion.state_dict()}

    def resume(self, path, loaded=None):
        """The engine's exact resume; a state of an earlier version of this project has its
        layer3 block names renamed first (:func:`lagnet.model.rename_legacy_stream_keys`)."""
        loaded = load_checkpoint(path, map_location=self.device) if loaded is None else loaded
        if isinstance(loaded, dict) and isinstance(loaded.get("model"), dict):
            loaded["model"] = rename_legacy_stream_keys(loaded["model"], source=str(path))
        super().resume(path, loaded)

    def load_extra_state(self, checkpoint):
        self.criterion.load_state_dict(checkpoint["loss"])


def _save_state_dict(state, path):
    with atomic_write(path) as handle:
        torch.save(state, handle)


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
    refuse_counts_below(1, {"--checkpoint_every": args.checkpoint_every, "--height": args.height,
                            "--width": args.width, "--batchid": args.batchid,
                            "--batchimage": args.batchimage, "--batchtest": args.batchtest})
    refuse_counts_below(0, {"--nThread": args.nThread})
    if args.batchid * args.batchimage < 2:
        raise OptionError(f"--batchid {args.batchid} --batchimage {args.batchimage}: a training "
                          f"batch of one image cannot train BatchNorm; use 2 or more images")
    if args.batchid < 2 and "Triplet" in args.loss:
        raise OptionError(f"--batchid {args.batchid}: a batch of one identity gives the Triplet "
                          f"loss no negative; use --batchid 2 or more")
    try:
        parse_loss_string(args.loss)
        parse_decay_type(args.decay_type, args.lr_decay)
    except ValueError as err:
        raise OptionError(str(err)) from None


def run(args):
    """Runs ``main.py``'s job: train (and evaluate), or only evaluate with ``--test_only``."""
    check_options(args)
    folder = experiment_dir(args)
    if args.load and not folder.is_dir():
        raise OptionError(f"--load {args.load}: {folder} does not exist, so there is no run to "
                          f"continue; start a new one with --save {args.load}")
    if args.reset and folder.is_symlink():
        raise OptionError(f"--reset: {folder} is a link; remove it by hand")
    with distributed_session(cpu=args.cpu) as distributed:
        hint = f"--resume -1 --load {folder.name}"
        with open_run(folder, log_name="log.txt", seed=args.seed, cpu=args.cpu,
                      distributed=distributed, resume_hint=hint, clear=args.reset) as context:
            _run(args, context)


def _run(args, context):
    folder, distributed = context.folder, context.distributed
    state_path = folder / "training_state.pt"
    if not args.test_only and args.resume != -1:
        refuse_to_overwrite(state_path, "continue it with --resume -1, start it over with --reset, "
                                        "or pick another --save name")
    full_resume = args.resume == -1 and state_path.exists() and not args.test_only
    weights = None if full_resume else weights_to_load(args, folder)
    if weights is not None and not weights.is_file():
        raise CheckpointError(f"weights file {weights} does not exist (--resume {args.resume}"
                              f"{' --pre_train' if args.resume == 0 else ''}); check the path, "
                              f"or for --resume -1 the --save / --load name")
    if args.resume == -1 and not full_resume and not args.test_only:
        log.warning(f"--resume -1: {folder} has {weights.name} but no {state_path.name}, so only "
                    f"the weights can be restored; training restarts at epoch 1 with a fresh "
                    f"optimizer, schedule and L2 centres")
    source = state_path if full_resume else weights
    refuse_another_methods_file(source, "lagnet", "use {method}/main.py")
    if args.test_only or args.resume != 0:  # evaluated or continued as it was trained
        adopt_recorded_flags(args, source, getattr(args, "explicit", ()), RECORDED_FLAGS,
                             lambda name: f"--{name}", OptionError)
    dataset, train_loader, query_loader, gallery_loader = load_data(args, distributed)
    log.info(dataset.summary())
    if distributed.is_main:
        with atomic_write(folder / "config.txt", "w") as handle:
            handle.writelines(f"{key}: {value}\n"
                              for key, value in sorted(command_line_values(args).items()))
    state = read_weights(weights) if weights is not None else None
    num_classes = resolve_num_classes(args, dataset, weights, state)
    from_file = full_resume or state is not None
    model = build_model(num_classes, num_attentions=args.num_attentions, feats=args.feats,
                        part_split=args.part_split, drop_pool=args.drop_pool,
                        pretrained=not args.no_pretrained and not from_file,
                        weights_path=args.pretrained_path).to(context.device)
    terms = parse_loss_string(args.loss)
    criterion = LAGLoss(terms, num_classes, margin=args.margin,
                        feature_dim=args.num_attentions * args.num_features,
                        beta=args.L2_beta).to(context.device)
    optimizer = build_optimizer(args, model)
    engine = LAGNetEngine(
        context, model, args, criterion=criterion, optimizer=optimizer,
        scheduler=build_scheduler(args, optimizer), train_loader=train_loader,
        targets={dataset.name: EvalTarget(dataset, query_loader, gallery_loader)},
        weights_source=str(weights) if weights is not None else "random initialisation")

    if full_resume:
        engine.resume(state_path)
    elif state is not None:
        report = load_weights(model, state, source=f"weights {weights}",
                              new_classes_ok=not args.test_only)
        message = f"loaded weights {weights}"
        if report.ignored:
            modules = ", ".join(sorted({key.split(".")[0] for key in report.ignored}))
            message += (f"; ignored {len(report.ignored)} keys of the original's unused modules "
                        f"({modules})")
        log.info(message)
        if report.reinitialized:
            log.warning(f"fine-tuning: {weights} was trained with {report.class_counts[0]} "
                        f"classes and the training data has {report.class_counts[1]}; these "
                        f"classifier keys start from their initialisation: "
                        f"{', '.join(report.reinitialized)}")
    elif args.test_only:
        log.warning("--test_only without --pre_train (or --resume): evaluating a randomly "
                    "initialised network")

    if args.test_only:
        if distributed.is_main:
            engine.report("evaluate", engine.evaluate())
        return

    names = {term.name for term in terms}
    if args.nGPU > 1 and not distributed.enabled and context.device.type == "cuda":
        engine.model = nn.DataParallel(model, device_ids=list(range(args.nGPU)))
    else:
        engine.wrap_for_training(find_unused_parameters=not {"CrossEntropy", "Triplet"} <= names,
                                 data_parallel=False)
    log.info(f"training epochs {engine.epoch + 1} to {engine.max_epoch} on "
             f"{context.device}"
             f"{f' x {distributed.world_size} processes' if distributed.enabled else ''}")
    if distributed.is_main:
        write_run_record(folder, "lagnet", (args.height, args.width), RETRIEVAL.interpolation,
                         model_options={name: getattr(args, name) for name in RECORDED_FLAGS[2:]},
                         flags={name: getattr(args, name) for name in RECORDED_FLAGS})
    engine.fit()
    engine.report_best()
