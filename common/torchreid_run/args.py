"""The command-line flags of torchreid's (2018) ``args.py`` as ABD-Net's released code extends
it (``../shared/specs/abdnet.md`` §1.2), which IAB-Net's code keeps (``iabnet.md`` §1.2).

Every flag keeps its name, type and default, including the ones that only matter for the original's
other architectures or video data. A method adds its architecture flags (and any of its own) with
the ``add_architecture_flags(parser)`` it passes to :func:`build_parser`, and changes defaults with
``parser.set_defaults``. :func:`data_augment_steps` reads ``--data-augment`` (the default's quirk
kept, the comma forms fixed).
"""

from __future__ import annotations

import argparse

from common.runtime import add_runtime_flags

__all__ = ["DATA_AUGMENT_CHOICES", "build_parser", "data_augment_steps"]

DATA_AUGMENT_CHOICES = ("none", "crop", "random-erase", "color-jitter", "crop,random-erase",
                        "crop,color-jitter", "crop,color-jitter,random-erase")


def build_parser(description, add_architecture_flags):
    """The parser: torchreid's data, optimisation, schedule and evaluation flags, the method's
    architecture flags (``add_architecture_flags(parser)`` adds them, in their own group), the
    O.F./O.W. regularisers and the flags beyond the original."""
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
                      choices=DATA_AUGMENT_CHOICES, metavar="STEP",
                      help=f"{' | '.join(DATA_AUGMENT_CHOICES)}: space-separated or comma "
                           f"forms; the default applies no augmentation (the original's quirk, "
                           f"kept)")
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
                       choices=("adam", "amsgrad", "sgd", "rmsprop"), help="optimizer")
    optim.add_argument("--lr", type=float, default=3e-4, help="learning rate")
    optim.add_argument("--weight-decay", type=float, default=5e-4, help="L2 weight decay")
    optim.add_argument("--momentum", type=float, default=0.9)
    optim.add_argument("--sgd-dampening", type=float, default=0)
    optim.add_argument("--sgd-nesterov", action="store_true")
    optim.add_argument("--rmsprop-alpha", type=float, default=0.99)
    optim.add_argument("--adam-beta1", type=float, default=0.9)
    optim.add_argument("--adam-beta2", type=float, default=0.999)

    schedule = parser.add_argument_group("schedule and losses")
    schedule.add_argument("--max-epoch", type=int, default=60, help="main epochs")
    schedule.add_argument("--start-epoch", type=int, default=0,
                          help="first main epoch (the schedule starts there)")
    schedule.add_argument("--stepsize", type=int, nargs="+", default=[20, 40],
                          help="MultiStepLR milestones")
    schedule.add_argument("--gamma", type=float, default=0.1,
                          help="learning-rate factor at each --stepsize milestone")
    schedule.add_argument("--train-batch-size", type=int, default=32, help="images per batch")
    schedule.add_argument("--test-batch-size", type=int, default=100, help="images per batch")
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
    schedule.add_argument("-a", "--arch", type=str, default="resnet50",
                          help="backbone; only resnet50, the paper's, is built here")

    misc = parser.add_argument_group("evaluation and misc")
    misc.add_argument("--load-weights", type=str, default="", help="weights file to start from")
    misc.add_argument("--evaluate", action="store_true", help="evaluate only")
    misc.add_argument("--eval-freq", type=int, default=-1,
                      help="evaluate every N epochs (-1: only the last)")
    misc.add_argument("--start-eval", type=int, default=0)
    misc.add_argument("--flip-eval", action="store_true", help="average with the flipped image")
    misc.add_argument("--print-freq", type=int, default=10)
    misc.add_argument("--seed", type=int, default=1, help="seeds Python, NumPy and torch")
    misc.add_argument("--resume", type=str, default="", help="checkpoint to continue from")
    misc.add_argument("--save-dir", type=str, default="log")
    misc.add_argument("--use-cpu", action="store_true")
    misc.add_argument("--gpu-devices", type=str, default="0")
    misc.add_argument("--use-avai-gpus", action="store_true")
    misc.add_argument("--visualize-ranks", action="store_true")

    add_architecture_flags(parser)

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
    beyond.add_argument("--ow-scope", default="stem_only", choices=("stem_only", "all"),
                        help="stem_only: the stem conv (released); all: every backbone conv")
    beyond.add_argument("--no-epoch-checkpoints", action="store_true",
                        help="skip checkpoint_ep<N>.pth.tar (the original writes one per main "
                             "epoch, about 280 MB each); best and training state are still kept")
    beyond.add_argument("--all-splits", action="store_true",
                        help="cuhk01 / prid450s: train and evaluate splits 0-9 in turn (each in "
                             "<save-dir>/split<k>) and report their mean and standard deviation")
    for action in parser._actions:  # so that --help shows every flag's default
        if action.help is None and action.default is not None:
            action.help = "as the original"
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
