"""APNet's command line: the original ``tools/train.py`` (``--config_file`` and ``KEY VALUE``
overrides), with ``--test`` for ``tools/test.py`` (``../shared/specs/apnet.md`` §2).

    python apnet/main.py --config_file apnet/configs/default.yml        # train.sh
    python apnet/main.py --test --config_file apnet/configs/default.yml TEST.WEIGHT path.pt
                                                                         # test.sh
"""

from __future__ import annotations

import argparse
from pathlib import Path

from apnet.config import load_config, with_recorded_keys
from apnet.trainer import run
from common.runrecord import RUN_RECORD, refuse_another_methods_file
from common.runtime import add_runtime_flags, exit_on_user_error


def build_parser():
    parser = argparse.ArgumentParser(description="APNet (IEEE TIP 2021) for person re-ID")
    parser.add_argument("--config_file", default="", type=str, help="path to a YAML config")
    parser.add_argument("--test", action="store_true",
                        help="evaluate TEST.WEIGHT instead of training (the original test.py)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in OUTPUT_DIR from its latest checkpoint")
    beyond = parser.add_argument_group(
        "beyond the original (every method's spelling; before the KEY VALUE pairs)")
    add_runtime_flags(beyond, separator="-")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                        help="KEY VALUE pairs overriding the config, e.g. APNET.LEVEL 1")
    return parser


def runtime_overrides(args):
    """The config keys that ``--no-pretrained``, ``--pretrained-path``, ``--amp`` and
    ``--eval-before-training`` stand for."""
    overrides = []
    if args.no_pretrained:
        overrides += ["MODEL.PRETRAINED", "False"]
    if args.pretrained_path:
        overrides += ["MODEL.PRETRAIN_PATH", args.pretrained_path]
    if args.amp:
        overrides += ["MODEL.AMP", "True"]
    if args.eval_before_training:
        overrides += ["TEST.EVAL_BEFORE_TRAINING", "True"]
    return overrides


def main(argv=None):
    args = build_parser().parse_args(argv)
    opts = [*runtime_overrides(args), *args.opts]
    with exit_on_user_error("apnet/main.py"):
        cfg = load_config(args.config_file or None, opts)
        if args.test or args.resume:  # the input size and forward options the run recorded
            weights = cfg.TEST.WEIGHT if args.test else Path(cfg.OUTPUT_DIR) / RUN_RECORD
            refuse_another_methods_file(weights, "apnet", "use {method}/main.py")
            cfg = with_recorded_keys(cfg, args.config_file or None, opts, weights)
        run(cfg, test_only=args.test, resume=args.resume)


if __name__ == "__main__":
    main()
