"""The five command lines keep their original flags and share the extra ones, in one spelling
(with the underscore form accepted too)."""

import pytest

from abdnet.main import build_parser as abdnet_parser
from apnet.main import build_parser as apnet_parser
from apnet.main import runtime_overrides
from iabnet.main import build_parser as iabnet_parser
from iaunet.main import build_parser as iaunet_parser
from lagnet.main import build_parser as lagnet_parser

PARSERS = {"lagnet": lagnet_parser, "abdnet": abdnet_parser,
           "iabnet": iabnet_parser, "iaunet": iaunet_parser, "apnet": apnet_parser}
REQUIRED = {"abdnet": ["-s", "market1501", "-t", "market1501"],
            "iabnet": ["-s", "market1501", "-t", "market1501"]}


@pytest.mark.parametrize("method", list(PARSERS))
@pytest.mark.parametrize("spelling", ["--no-pretrained", "--no_pretrained"])
def test_every_cli_takes_both_spellings_of_the_shared_flags(method, spelling):
    required = REQUIRED.get(method, [])
    args = PARSERS[method]().parse_args([spelling, "--pretrained-path", "w.pth", "--amp",
                                         "--eval-before-training", *required])
    assert args.no_pretrained and args.pretrained_path == "w.pth" and args.amp
    assert args.eval_before_training
    args = PARSERS[method]().parse_args(["--pretrained_path", "v.pth", "--eval_before_training",
                                         *required])
    assert not args.no_pretrained and args.pretrained_path == "v.pth"
    assert args.eval_before_training and not args.amp


def test_apnet_turns_the_shared_flags_into_its_config_keys():
    args = apnet_parser().parse_args(["--no-pretrained", "--amp", "--eval-before-training",
                                      "--config_file", "c.yml", "SOLVER.MAX_EPOCHS", "2"])
    assert runtime_overrides(args) == ["MODEL.PRETRAINED", "False", "MODEL.AMP", "True",
                                       "TEST.EVAL_BEFORE_TRAINING", "True"]
    assert args.opts == ["SOLVER.MAX_EPOCHS", "2"]
