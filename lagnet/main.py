"""LAG-Net's command line: the flags of the original ``option.py`` (spec §1), plus a few more.

README command of the original (run from the repository root or anywhere, once installed):

    python lagnet/main.py --datadir ../market1501/ --batchid 8 --batchtest 4 --test_every 50 \\
        --epochs 600 --decay_type step_320_380_420 --loss 1*CrossEntropy+2*Triplet+1*L2 \\
        --margin 1.2 --nGPU 1 --lr 2e-4 --optimizer ADAM --random_erasing --amsgrad --save lagnet
"""

from __future__ import annotations

import argparse

from common.runrecord import parse_command_line
from common.runtime import add_runtime_flags, exit_on_user_error
from lagnet.trainer import DATASET_NAMES, run


def build_parser():
    parser = argparse.ArgumentParser(description="LAG-Net (IEEE TMM 2021) for person re-ID",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = parser.add_argument
    add("--nThread", type=int, default=2, help="DataLoader workers")
    add("--cpu", action="store_true", help="run on the CPU even when a GPU is present")
    add("--nGPU", type=int, default=1,
        help="GPUs for DataParallel (one process); torchrun + DDP is the faster way")
    add("--datadir", type=str, default="Market-1501-v15.09.15", help="dataset root")
    add("--data_train", type=str, default="Market1501", help=", ".join(DATASET_NAMES))
    add("--data_test", type=str, default="Market1501", help="must equal --data_train")
    add("--reset", action="store_true",
        help="delete experiment/<save> (or experiment/<load>) first; nothing else is touched")
    add("--epochs", type=int, default=80,
        help="the original trains epochs - 1 epochs (see --train_all_epochs)")
    add("--test_every", type=int, default=20, help="evaluate every N epochs (0: never)")
    add("--batchid", type=int, default=16, help="identities per batch (P)")
    add("--batchimage", type=int, default=4, help="images per identity (K)")
    add("--batchtest", type=int, default=32, help="test batch size")
    add("--test_only", action="store_true", help="evaluate once and exit")
    add("--model", type=str, default="LAG", help="only LAG")
    add("--loss", type=str, default="1*CrossEntropy+1*Triplet",
        help="weight*Name terms joined by +; names CrossEntropy, Triplet, L2")
    add("--apex", type=str, default="no", help="unsupported (use --amp)")
    add("--act", type=str, default="relu", help="unused, as in the original")
    add("--pool", type=str, default="avg", help="unused, as in the original")
    add("--feats", type=int, default=256, help="width of the triplet reductions")
    add("--height", type=int, default=384, help="input height")
    add("--width", type=int, default=128, help="input width")
    add("--num_classes", type=int, default=None,
        help="training identities; taken from the data (or, with --test_only, the weights)")
    add("--num_attentions", type=int, default=24, help="attention maps kept per sample (M)")
    add("--num_features", type=int, default=2048,
        help="channels per attention slot in the L2 feature-centre buffer")
    add("--L2_beta", type=float, default=0.05, help="feature-centre update rate")
    add("--lr", type=float, default=2e-4, help="learning rate")
    add("--optimizer", default="ADAM", choices=("SGD", "ADAM", "NADAM", "RMSprop"))
    add("--momentum", type=float, default=0.9, help="SGD / RMSprop momentum")
    add("--dampening", type=float, default=0, help="SGD dampening")
    add("--nesterov", action="store_true", help="SGD Nesterov")
    add("--beta1", type=float, default=0.9, help="Adam beta1")
    add("--beta2", type=float, default=0.999, help="Adam beta2")
    add("--amsgrad", action="store_true", help="Adam AMSGrad")
    add("--epsilon", type=float, default=1e-8, help="Adam / RMSprop epsilon")
    add("--gamma", type=float, default=0.1, help="learning-rate decay factor")
    add("--weight_decay", type=float, default=5e-4, help="weight decay")
    add("--decay_type", type=str, default="step", help="step, or step_<epoch>_<epoch>...")
    add("--lr_decay", type=int, default=60, help="StepLR step size for --decay_type step")
    add("--EPSILON", type=float, default=1e-2, help="unused, as in the original")
    add("--margin", type=float, default=1.2, help="triplet margin")
    add("--re_rank", action="store_true", help="k-reciprocal re-ranking at test")
    add("--random_erasing", action="store_true", help="random erasing (fill 0)")
    add("--probability", type=float, default=0.5, help="random-erasing probability")
    add("--savedir", type=str, default="saved_models", help="unused, as in the original")
    add("--outdir", type=str, default="out", help="unused, as in the original")
    add("--resume", type=int, default=0,
        help="-1: continue experiment/<save>/ from its latest state; 0: load --pre_train; "
             "N > 0: load model/model_N.pt")
    add("--save", type=str, default="test", help="experiment name: output in experiment/<save>/")
    add("--load", type=str, default="", help="continue in experiment/<load>/ instead")
    add("--save_models", action="store_true", help="also keep model/model_<epoch>.pt")
    add("--pre_train", type=str, default="", help="weights file for --resume 0")
    beyond = parser.add_argument_group("beyond the original")
    add_runtime_flags(beyond, separator="_")
    beyond.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    beyond.add_argument("--part_split", default="faithful", choices=("faithful", "fixed"),
                        help="faithful: p0 = p1 = p2 = 2*g_ps (released code); fixed: 3 stripes")
    beyond.add_argument("--drop_pool", default="faithful", choices=("faithful", "fixed"),
                        help="faithful: g_d = 2*GMP (released code); fixed: GMP + GAP")
    beyond.add_argument("--train_all_epochs", action="store_true",
                        help="train --epochs epochs (the original trains epochs - 1)")
    beyond.add_argument("--checkpoint_every", type=int, default=10,
                        help="also save the resumable state every N epochs")
    return parser


def parse_args(argv=None):
    args = parse_command_line(build_parser(), argv)
    for key, value in vars(args).items():  # the original turns 'True' / 'False' into booleans
        if value in ("True", "False"):
            setattr(args, key, value == "True")
    return args


def main(argv=None):
    args = parse_args(argv)
    with exit_on_user_error("lagnet/main.py"):
        run(args)


if __name__ == "__main__":
    main()
