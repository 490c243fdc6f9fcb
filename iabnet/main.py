"""IAB-Net's command line: ABD-Net's ``train.py`` and ``args.py``, which IAB-Net's code keeps
(``../shared/specs/iabnet.md`` §1), with IAB-Net's defaults (``--max-epoch 20``, ``--seed 4``),
its three unused flags, and the training guide's ``--iab-*`` names as aliases of ``--abd-*``.

The guide's training command, run unchanged (``path/to/dir`` is the output):

    python iabnet/main.py -s market1501 -t market1501 --flip-eval --eval-freq 1 --label-smooth \\
        --criterion htri --lambda-htri 0.1 --data-augment crop random-erase --margin 1.2 \\
        --train-batch-size 32 --height 384 --width 128 --optim adam --lr 0.0003 \\
        --stepsize 20 40 --gpu-devices 4,5 --max-epoch 20 --save-dir path/to/dir \\
        --arch resnet50 --use-of --abd-dan cam pam --abd-np 2 --shallow-cam --use-ow

and its test: the same flags plus ``--evaluate --load-weights path/to/checkpoint.pth.tar``.
"""

from __future__ import annotations

import functools

from abdnet.args import build_parser
from abdnet.trainer import Method, run_command_line
from common.runrecord import parse_command_line
from iabnet.model import build_model, rename_original_keys

# The guide documents --iab-* flags that the code never had; both spellings work here.
GUIDE_ALIASES = {"--abd-dim": ["--iab-dim"], "--abd-np": ["--iab-np"],
                 "--abd-dan": ["--iab-dan"], "--abd-dan-no-head": ["--iab-dan-no-head"]}


def build_iab_parser():
    parser = build_parser("IAB-Net for person re-ID", aliases=GUIDE_ALIASES)
    parser.set_defaults(max_epoch=20, seed=4)
    own = parser.add_argument_group("IAB-Net's own flags (unused by its resnet50, as released)")
    own.add_argument("--ksize", type=list, default=None)
    own.add_argument("--depth", type=int, default=50)
    own.add_argument("--att-type", type=str, default=None, choices=("BAM", "CBAM"))
    own.add_argument("--casa-channel", default="cam", choices=("cam", "coab"),
                     help="the CASA branch's channel module: cam (released code) or coab (the "
                          "paper's figure)")
    return parser


def main(argv=None):
    args = parse_command_line(build_iab_parser(), argv)
    method = Method("IAB-Net", functools.partial(build_model, casa_channel=args.casa_channel),
                    rename_keys=rename_original_keys)
    run_command_line(args, method, "iabnet/main.py")


if __name__ == "__main__":
    main()
