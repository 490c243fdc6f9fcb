"""IAUnet's command line: the original ``train.py`` flags with their defaults
(``../shared/specs/iaunet.md`` §1), plus ``--root`` and the flags every method has.

    python iaunet/main.py --root /data/market1501                  # train (the README)
    python iaunet/main.py --root /data/market1501 --resume path/to/checkpoint.pth.tar --evaluate
    python iaunet/main.py --root /data/mars -d mars --seq-len 4        # video (iaunet/video.py)
"""

from __future__ import annotations

import argparse
import os

from common.runrecord import parse_command_line
from common.runtime import add_runtime_flags, exit_on_user_error
from iaunet.trainer import ARCHS, DATASET_NAMES, run
from iaunet.video import VIDEO_DATASETS, add_video_flags


def build_parser():
    parser = argparse.ArgumentParser(description="IAUnet / IANet for person re-ID",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = parser.add_argument
    add("--root", type=str, default="data/market1501",
        help="dataset folder (the original hard-coded its own path)")
    add("-d", "--dataset", type=str, default="market1501_seg",
        help=", ".join([*DATASET_NAMES, *VIDEO_DATASETS]))
    add("-j", "--workers", type=int, default=4)
    add("--height", type=int, default=256)
    add("--width", type=int, default=128)
    add("--split-id", type=int, default=0, help="split 0-9 of ilidsvid and prid2011; unused by "
        "the original")
    add("--cuhk03-labeled", action="store_true", help="unused, as in the original")
    add("--cuhk03-classic-split", action="store_true", help="unused, as in the original")
    add("--use-metric-cuhk03", action="store_true", help="CUHK03 single-gallery-shot CMC")
    add("--optim", type=str, default="adam", choices=("adam", "amsgrad", "sgd", "rmsprop"))
    add("--max-epoch", type=int, default=60)
    add("--start-epoch", type=int, default=0, help="unused: --resume sets the epoch")
    add("--train-batch", type=int, default=64)
    add("--test-batch", type=int, default=32)
    add("--lr", "--learning-rate", type=float, default=0.00035)
    add("--stepsize", type=int, nargs="+", default=[20, 40], help="MultiStepLR milestones")
    add("--gamma", type=float, default=0.1)
    add("--weight-decay", type=float, default=5e-4)
    add("--margin", type=float, default=0.3, help="triplet margin")
    add("--num-instances", type=int, default=4, help="K images per identity")
    add("-a", "--arch", type=str, default="IAUnet", choices=tuple(ARCHS))
    add("--save-dir", type=str, default="./result/market/IAUnet")
    add("--mode", type=str, default="ce", choices=("l1", "l2", "ce"), help="mask loss")
    add("--alpha", type=float, default=0.5, help="weight of the mask loss")
    add("--flip_cnt", type=int, default=1, help="1: no test flip; 2: add the mirror's feature")
    add("--distance", type=str, default="consine", choices=("consine", "cosine", "euclidean"),
        help="triplet and test distance ('consine' is the original's spelling)")
    add("--seed", type=int, default=1, help="seeds Python, NumPy and torch")
    add("--resume", type=str, default="",
        help="training_state.pth.tar (exact continuation) or a weights file")
    add("--evaluate", action="store_true", help="evaluate the --resume weights")
    add("--eval-step", type=int, default=10, help="evaluate every N epochs (and after the first)")
    add("--start-eval", type=int, default=0, help="unused, as in the original")
    add("--gpu-devices", type=str, default="0",
        help="CUDA_VISIBLE_DEVICES (the original defaulted to '2, 3')")
    add_video_flags(parser)
    beyond = parser.add_argument_group("beyond the original")
    add_runtime_flags(beyond, separator="-")
    beyond.add_argument("--use-cpu", action="store_true", help="run on the CPU")
    beyond.add_argument("--no-epoch-checkpoints", action="store_true",
                        help="skip checkpoint_ep<E>.pth.tar (the original writes one at each "
                             "evaluation, about 116 MB each); best and training state are kept")
    return parser


def main(argv=None):
    args = parse_command_line(build_parser(), argv)
    if "LOCAL_RANK" not in os.environ:
        os.environ["CUDA_VISIBLE_DEVICES"] = args.gpu_devices
    with exit_on_user_error("iaunet/main.py"):
        run(args)


if __name__ == "__main__":
    main()
