"""ABD-Net's command line: the original ``train.py`` with its ``args.py`` flags (spec §1); the
flags, losses and training loop, shared with IAB-Net, are in ``abdnet/``.

The README's training command of the original, run unchanged (``path/to/dir`` is the output):

    python abdnet/main.py -s market1501 -t market1501 --flip-eval --eval-freq 1 --label-smooth \\
        --criterion htri --lambda-htri 0.1 --data-augment crop random-erase --margin 1.2 \\
        --train-batch-size 64 --height 384 --width 128 --optim adam --lr 0.0003 \\
        --stepsize 20 40 --gpu-devices 4,5 --max-epoch 80 --save-dir path/to/dir \\
        --arch resnet50 --use-of --abd-dan cam pam --abd-np 2 --shallow-cam --use-ow

and its test: the same flags plus ``--evaluate --load-weights path/to/checkpoint.pth.tar``.
"""

from __future__ import annotations

from abdnet.args import build_parser
from abdnet.model import build_model
from abdnet.trainer import Method, run_command_line
from common.runrecord import parse_command_line

ABD_NET = Method("ABD-Net", build_model)


def main(argv=None):
    args = parse_command_line(build_parser("ABD-Net (ICCV 2019) for person re-ID"), argv)
    run_command_line(args, ABD_NET, "abdnet/main.py")


if __name__ == "__main__":
    main()
