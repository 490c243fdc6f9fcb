"""The command-line flags of ABD-Net's ``args.py`` (``../shared/specs/abdnet.md`` §1.2), which
IAB-Net's code keeps (``iabnet.md`` §1.2).

Every flag keeps its name, type and default, including the ones that only matter for the original's
other architectures or video data; a method changes defaults with ``parser.set_defaults`` and
adds its own flags. :func:`data_augment_steps` reads ``--data-augment`` (the
default's quirk kept, the comma forms fixed); :func:`model_options` turns the architecture flags into
 the methods' ``build_model`` arguments and refuses the variants that are not built here.
"""

from __future__ import annotations

import argparse

from common.runtime import add_runtime_flags

__all__ = ["ALIASABLE_FLAGS", "DATA_AUGMENT_CHOICES", "build_parser", "data_augment_steps",
           "model_options"]

ALIASABLE_FLAGS = ("--abd-dim", "--abd-np", "--abd-dan", "--abd-dan-no-head")

DATA_AUGMENT_CHOICES = ("none", "crop", "random-erase", "color-jitter", "crop,random-erase",
                        "crop,color-jitter", "crop,color-jitter,random-erase")


def build_parser(description, aliases=None):
    """The parser; ``aliases`` maps an ``--abd-*`` flag to more names for it (IAB-Net's guide
    spells ``--abd-dim`` as ``--iab-dim``)."""
    aliases = aliases or {}
    unknown = set(aliases) - set(ALIASABLE_FLAGS)
    if unknown:
        raise ValueError(f"aliases can be given for {', '.join(ALIASABLE_FLAGS)}, not {sorted(unknown)}")

    def names(flag):
        return [flag, *aliases.get(flag, ())]

    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--root", type=str, default="data", help="root of the datasets")
    data.add_argument("-s", "--source-names", type=str, nargs="+", required=True,
                      help="training datasets (concatenated)")
    data.add_argument("-t", "--target-names", type=str, nargs="+", required=True,
                      help="test datasets (each evaluated)")
    data.add_argument("-j", "--workers", type=int, default=4, help="DataLoader workers")
    data.add_argument("--height", type=int, default=256, help="input height")
    data.add_argument("--width", type=int, default=128, help="input width")
    data.add_argument("--split-id", type=int, default=0, help="split of CUHK01 / PRID-450s")
    data.add_argument("--train-sampler", type=str, default="",
                      help="ignored: the identity sampler is used whenever --criterion is htri")
    data.add_argument("--data-augment", type=str, nargs="+", default="crop",
                      choices=DATA_AUGMENT_CHOICES,
                      help="space-separated or comma forms; the default applies no augmentation "
                           "(the original's quirk, kept)")
    data.add_argument("--seq-len", type=int, default=15, help="video only; unused")
    data.add_argument("--sample-method", type=str, default="evenly", help="video only; unused")
    data.add_argument("--pool-tracklet-features", type=str, default="avg",
                      help="video only; unused")
    data.add_argument("--cuhk03-labeled", action="store_true", help="CUHK03 labeled boxes")
    data.add_argument("--cuhk03-classic-split", action="store_true",
                      help="CUHK03 classic split (unsupported: the 767/700 split is used)")
    data.add_argument("--use-metric-cuhk03", action="store_true",
                      help="CUHK03 single-gallery-shot CMC")

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--optim", type=str, default="adam",
                       choices=("adam", "amsgrad", "sgd", "rmsprop"))
    optim.add_argument("--lr", type=float, default=3e-4)
    optim.add_argument("--weight-decay", type=float, default=5e-4)
    optim.add_argument("--momentum", type=float, default=0.9)
    optim.add_argument("--sgd-dampening", type=float, default=0)
    optim.add_argument("--sgd-nesterov", action="store_true")
    optim.add_argument("--rmsprop-alpha", type=float, default=0.99)
    optim.add_argument("--adam-beta1", type=float, default=0.9)
    optim.add_argument("--adam-beta2", type=float, default=0.999)

    schedule = parser.add_argument_group("schedule and losses")
    schedule.add_argument("--max-epoch", type=int, default=60, help="main epochs")
    schedule.add_argument("--start-epoch", type=int, default=0)
    schedule.add_argument("--stepsize", type=int, nargs="+", default=[20, 40],
                          help="MultiStepLR milestones")
    schedule.add_argument("--gamma", type=float, default=0.1)
    schedule.add_argument("--train-batch-size", type=int, default=32)
    schedule.add_argument("--test-batch-size", type=int, default=100)
    schedule.add_argument("--fixbase", action="store_true", help="keep the base frozen throughout")
    schedule.add_argument("--fixbase-epoch", type=int, default=10,
                          help="warm-up epochs with the backbone frozen, before the main epochs")
    schedule.add_argument("--open-layers", type=str, nargs="+", default=["classifier"],
                          help="layers trained during the warm-up (besides the heads)")
    schedule.add_argument("--criterion", type=str, default="xent", choices=("xent", "htri"))
    schedule.add_argument("--label-smooth", action="store_true", help="label smoothing, 0.1")
    schedule.add_argument("--margin", type=float, default=0.3, help="triplet margin")
    schedule.add_argument("--num-instances", type=int, default=4, help="K images per identity")
    schedule.add_argument("--htri-only", action="store_true", help="unused, as in the original")
    schedule.add_argument("--lambda-xent", type=float, default=1)
    schedule.add_argument("--lambda-htri", type=float, default=0.1)
    schedule.add_argument("-a", "--arch", type=str, default="resnet50")

    misc = parser.add_argument_group("evaluation and misc")
    misc.add_argument("--load-weights", type=str, default="", help="weights file to start from")
    misc.add_argument("--evaluate", action="store_true", help="evaluate only")
    misc.add_argument("--eval-freq", type=int, default=-1,
                      help="evaluate every N epochs (-1: only the last)")
    misc.add_argument("--start-eval", type=int, default=0)
    misc.add_argument("--flip-eval", action="store_true", help="average with the flipped image")
    misc.add_argument("--print-freq", type=int, default=10)
    misc.add_argument("--seed", type=int, default=1)
    misc.add_argument("--resume", type=str, default="", help="checkpoint to continue from")
    misc.add_argument("--save-dir", type=str, default="log")
    misc.add_argument("--use-cpu", action="store_true")
    misc.add_argument("--gpu-devices", type=str, default="0")
    misc.add_argument("--use-avai-gpus", action="store_true")
    misc.add_argument("--visualize-ranks", action="store_true")

    arch = parser.add_argument_group("architecture")
    arch.add_argument("--compatibility", action="store_true",
                      help="the original also registered the shallow CAM a second time; unused")
    arch.add_argument("--branches", type=str, nargs="+", default=["global", "abd"])
    arch.add_argument("--dropout", type=float, default=0.5)
    arch.add_argument("--global-dim", type=int, default=1024)
    arch.add_argument("--global-max-pooling", action="store_true")
    arch.add_argument(*names("--abd-dim"), type=int, default=1024)
    arch.add_argument(*names("--abd-np"), type=int, default=2)
    arch.add_argument(*names("--abd-dan"), type=str, nargs="+", default=[])
    arch.add_argument(*names("--abd-dan-no-head"), action="store_true")
    arch.add_argument("--shallow-cam", action="store_true")
    arch.add_argument("--np-dim", type=int, default=1024)
    arch.add_argument("--np-np", type=int, default=2)
    arch.add_argument("--np-with-global", action="store_true")
    arch.add_argument("--np-max-pooling", action="store_true")
    arch.add_argument("--dan-dim", type=int, default=1024)
    arch.add_argument("--dan-dan", type=str, nargs="+", default=[])
    arch.add_argument("--dan-dan-no-head", action="store_true")

    regular = parser.add_argument_group("regularisers")
    regular.add_argument("--use-of", action="store_true", help="O.F. on feature maps")
    regular.add_argument("--of-beta", type=float, default=1e-6)
    regular.add_argument("--of-start-epoch", type=int, default=23)
    regular.add_argument("--of-position", type=str, nargs="+",
                         default=["before", "after", "cam", "pam", "intermediate"])
    regular.add_argument("--use-ow", action="store_true", help="O.W. on conv weights")
    regular.add_argument("--ow-beta", type=float, default=1e-3)

    beyond = parser.add_argument_group("beyond the original")
    add_runtime_flags(beyond, separator="-")
    beyond.add_argument("--cam-softmax", default="code", choices=("code", "paper"),
                        help="code: softmax(-E) (released); paper: softmax(+E)")
    beyond.add_argument("--ow-scope", default="stem_only", choices=("stem_only", "all"),
                        help="stem_only: the stem conv (released); all: every backbone conv")
    beyond.add_argument("--no-epoch-checkpoints", action="store_true",
                        help="skip checkpoint_ep<N>.pth.tar (the original writes one per main "
                             "epoch, about 280 MB each); best and training state are still kept")
    beyond.add_argument("--all-splits", action="store_true",
                        help="cuhk01 / prid450s: train and evaluate splits 0-9 in turn (each in "
                             "<save-dir>/split<k>) and report their mean and standard deviation")
    return parser


def data_augment_steps(data_augment):
    """``(crop, random_erase)`` as decided by ``--data-augment``.

    Given as flags (a list), each value may also be a comma form (``crop,random-erase``): the
    original accepted those but matched none of their steps (issue #9, spec §6.6), which silently
    trained without augmentation; here they mean what they say. The default is kept as released:
    it is the string ``'crop'``, which the original reads letter by letter, so a run without
    ``--data-augment`` applies neither crop nor erasing. ``color-jitter`` adds a jitter of
    strength zero in the original, so it changes nothing.
    """
    if isinstance(data_augment, str):  # the default: set('crop') == {'c', 'r', 'o', 'p'}
        return False, False
    steps = {step for value in data_augment for step in value.split(",")}
    return "crop" in steps, "random-erase" in steps


def model_options(args):
    """``build_model`` keyword arguments for ``args`` (ABD-Net's and IAB-Net's take the same).

    Raises ValueError for the original's variants that the papers do not use and that are not
    built here (other archs, the ``np`` / ``dan`` branches, head-less or max-pooled heads).
    """
    unsupported = []
    if args.arch != "resnet50":
        unsupported.append(f"--arch {args.arch}")
    if sorted(args.branches) != ["abd", "global"]:
        unsupported.append(f"--branches {' '.join(args.branches)}")
    for flag in ("global_max_pooling", "abd_dan_no_head"):
        if getattr(args, flag):
            unsupported.append("--" + flag.replace("_", "-"))
    if unsupported:
        raise ValueError(f"{', '.join(unsupported)}: only the paper's model is built here "
                         f"(--arch resnet50 --branches global abd, average-pooled heads); the "
                         f"original's other variants were not used for its results")
    return {"shallow_cam": args.shallow_cam, "abd_dan": tuple(args.abd_dan),
            "abd_np": args.abd_np, "global_dim": args.global_dim, "abd_dim": args.abd_dim,
            "dropout": args.dropout, "cam_softmax": args.cam_softmax,
            "pretrained": not args.no_pretrained, "weights_path": args.pretrained_path}
