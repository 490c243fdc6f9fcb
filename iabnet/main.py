"""IAB-Net's command line: ABD-Net's ``train.py`` and ``args.py``, which IAB-Net's code keeps
(``../shared/specs/iabnet.md`` §1): torchreid's flags and the run in ``common/torchreid_run/``;
here the architecture flags (the training guide's ``--iab-*`` names as aliases of ``--abd-*``),
IAB-Net's defaults (``--max-epoch 20``, ``--seed 4``) and its own flags.

The guide's training command, run unchanged (``path/to/dir`` is the output):

    python iabnet/main.py -s market1501 -t market1501 --flip-eval --eval-freq 1 --label-smooth \\
        --criterion htri --lambda-htri 0.1 --data-augment crop random-erase --margin 1.2 \\
        --train-batch-size 32 --height 384 --width 128 --optim adam --lr 0.0003 \\
        --stepsize 20 40 --gpu-devices 4,5 --max-epoch 20 --save-dir path/to/dir \\
        --arch resnet50 --use-of --abd-dan cam pam --abd-np 2 --shallow-cam --use-ow

and its test: the same flags plus ``--evaluate --load-weights path/to/checkpoint.pth.tar``.
"""

from __future__ import annotations

import math

from common.layers.two_branch import CLASSIFIER_KEY, HEAD_MODULES
from common.runrecord import parse_command_line
from common.torchreid_run import args as torchreid_args
from common.torchreid_run.trainer import Method, run_command_line
from iabnet.model import WEIGHTS_HINT, build_model, remap_original_keys

# The stride of the layer4 map the CASA branch splits into stripes (last stride 2).
FEATURE_STRIDE = 32


# The flags that build the network (run.json records them; evaluation and resume reuse them).
ARCHITECTURE_FLAGS = ("shallow_cam", "abd_dan", "abd_np", "global_dim", "abd_dim", "dropout",
                      "cam_softmax", "casa_channel")


def add_architecture_flags(parser):
    """The architecture flags of the code's ``args.py`` with their defaults (the guide's
    ``--iab-*`` spellings of the four ``--abd-*`` flags, which the code never had, work too),
    then IAB-Net's own flags."""
    arch = parser.add_argument_group("architecture")
    arch.add_argument("--compatibility", action="store_true",
                      help="the original also registered the shallow CAM a second time; unused")
    arch.add_argument("--branches", type=str, nargs="+", default=["global", "abd"],
                      help="only global abd, the paper's, is built here")
    arch.add_argument("--dropout", type=float, default=0.5)
    arch.add_argument("--global-dim", type=int, default=1024)
    arch.add_argument("--global-max-pooling", action="store_true")
    arch.add_argument("--abd-dim", "--iab-dim", type=int, default=1024)
    arch.add_argument("--abd-np", "--iab-np", type=int, default=2)
    arch.add_argument("--abd-dan", "--iab-dan", type=str, nargs="+", default=[],
                      choices=("cam", "pam"))
    arch.add_argument("--abd-dan-no-head", "--iab-dan-no-head", action="store_true")
    arch.add_argument("--shallow-cam", action="store_true")
    arch.add_argument("--np-dim", type=int, default=1024)
    arch.add_argument("--np-np", type=int, default=2)
    arch.add_argument("--np-with-global", action="store_true")
    arch.add_argument("--np-max-pooling", action="store_true")
    arch.add_argument("--dan-dim", type=int, default=1024)
    arch.add_argument("--dan-dan", type=str, nargs="+", default=[])
    arch.add_argument("--dan-dan-no-head", action="store_true")
    arch.add_argument("--cam-softmax", default="code", choices=("code", "paper"),
                      help="beyond the original: code: softmax(-E) (released); paper: softmax(+E)")
    own = parser.add_argument_group("IAB-Net's own flags (unused by its resnet50, as released)")
    own.add_argument("--ksize", type=list, default=None)
    own.add_argument("--depth", type=int, default=50)
    own.add_argument("--att-type", type=str, default=None, choices=("BAM", "CBAM"))
    own.add_argument("--casa-channel", default="cam", choices=("cam", "coab"),
                     help="beyond the original: the CASA branch's channel module: cam (released "
                          "code) or coab (the paper's figure)")


def build_parser():
    parser = torchreid_args.build_parser("IAB-Net for person re-ID", add_architecture_flags)
    parser.set_defaults(max_epoch=20, seed=4)
    return parser


def model_options(args):
    """``build_model`` keyword arguments for ``args``.

    Raises ValueError for the code's variants that the paper does not use and that are not built
    here (other archs or branches, head-less or max-pooled heads), and for an input height whose
    layer4 map (height / 32 rows) does not split into ``--abd-np`` stripes.
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
                         f"code's other variants were not used for its results")
    if not 0 <= args.dropout < 1:
        raise ValueError(f"--dropout {args.dropout}: a probability in [0, 1)")
    if args.abd_np < 1:
        raise ValueError(f"--abd-np {args.abd_np}: the number of stripes must be >= 1")
    if math.ceil(args.height / FEATURE_STRIDE) % args.abd_np:
        raise ValueError(f"--height {args.height}: the layer4 map (height / {FEATURE_STRIDE} rows) "
                         f"does not split into --abd-np {args.abd_np} stripes; use a multiple "
                         f"of {FEATURE_STRIDE * args.abd_np}")
    return {"shallow_cam": args.shallow_cam, "abd_dan": tuple(args.abd_dan),
            "abd_np": args.abd_np, "global_dim": args.global_dim, "abd_dim": args.abd_dim,
            "dropout": args.dropout, "cam_softmax": args.cam_softmax,
            "casa_channel": args.casa_channel,
            "pretrained": not args.no_pretrained, "weights_path": args.pretrained_path}


IAB_NET = Method("IAB-Net", build_model, model_options, head_modules=HEAD_MODULES,
                 classifier_key=CLASSIFIER_KEY, remap_keys=remap_original_keys,
                 weights_hint=WEIGHTS_HINT, recorded_flags=ARCHITECTURE_FLAGS)


def main(argv=None):
    args = parse_command_line(build_parser(), argv)
    run_command_line(args, IAB_NET, "iabnet/main.py")


if __name__ == "__main__":
    main()
