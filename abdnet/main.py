"""ABD-Net's command line: the original ``train.py`` with its ``args.py`` flags (spec §1): torchreid's
flags and the run in ``common/torchreid_run/``, ABD-Net's architecture flags here.

The README's training command of the original, run unchanged (``path/to/dir`` is the output):

    python abdnet/main.py -s market1501 -t market1501 --flip-eval --eval-freq 1 --label-smooth \\
        --criterion htri --lambda-htri 0.1 --data-augment crop random-erase --margin 1.2 \\
        --train-batch-size 64 --height 384 --width 128 --optim adam --lr 0.0003 \\
        --stepsize 20 40 --gpu-devices 4,5 --max-epoch 80 --save-dir path/to/dir \\
        --arch resnet50 --use-of --abd-dan cam pam --abd-np 2 --shallow-cam --use-ow

and its test: the same flags plus ``--evaluate --load-weights path/to/checkpoint.pth.tar``.
"""

from __future__ import annotations

import math

from abdnet.model import WEIGHTS_HINT, build_model
from common.layers.two_branch import CLASSIFIER_KEY, HEAD_MODULES, remap_branch_order
from common.runrecord import parse_command_line
from common.torchreid_run import args as torchreid_args
from common.torchreid_run.trainer import Method, run_command_line

# The stride of the layer4 map the attentive branch splits into stripes (last stride 1).
FEATURE_STRIDE = 16


# The flags that build the network (run.json records them; evaluation and resume reuse them).
ARCHITECTURE_FLAGS = ("shallow_cam", "abd_dan", "abd_np", "global_dim", "abd_dim", "dropout",
                      "cam_softmax")


def add_architecture_flags(parser):
    """The architecture flags of the original ``args.py``, with their defaults; only the paper's
    model is built (:func:`model_options` refuses the others)."""
    arch = parser.add_argument_group("architecture")
    arch.add_argument("--compatibility", action="store_true",
                      help="the original also registered the shallow CAM a second time; unused")
    arch.add_argument("--branches", type=str, nargs="+", default=["global", "abd"],
                      help="only global abd, the paper's, is built here")
    arch.add_argument("--dropout", type=float, default=0.5)
    arch.add_argument("--global-dim", type=int, default=1024)
    arch.add_argument("--global-max-pooling", action="store_true")
    arch.add_argument("--abd-dim", type=int, default=1024)
    arch.add_argument("--abd-np", type=int, default=2)
    arch.add_argument("--abd-dan", type=str, nargs="+", default=[],
                      choices=("cam", "pam"))
    arch.add_argument("--abd-dan-no-head", action="store_true")
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


def build_parser():
    return torchreid_args.build_parser("ABD-Net (ICCV 2019) for person re-ID",
                                       add_architecture_flags)


def model_options(args):
    """``build_model`` keyword arguments for ``args``.

    Raises ValueError for the original's variants that the paper does not use and that are not
    built here (other archs, the ``np`` / ``dan`` branches, head-less or max-pooled heads), and
    for an input height whose layer4 map (height / 16 rows) does not split into ``--abd-np``
    stripes.
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
            "pretrained": not args.no_pretrained, "weights_path": args.pretrained_path}


ABD_NET = Method("ABD-Net", build_model, model_options, head_modules=HEAD_MODULES,
                 classifier_key=CLASSIFIER_KEY, remap_keys=remap_branch_order,
                 weights_hint=WEIGHTS_HINT, recorded_flags=ARCHITECTURE_FLAGS)


def main(argv=None):
    args = parse_command_line(build_parser(), argv)
    run_command_line(args, ABD_NET, "abdnet/main.py")


if __name__ == "__main__":
    main()
