"""The shared trainer's pieces: the open-layer rule, the training-set union, the option checks,
the flag aliases (abdnet.md §1, §4)."""

import pytest
import torch.nn as nn

from common.data import ReidDataset, Sample
from common.torchreid2018.args import build_parser
from common.torchreid2018.trainer import (OptionError, check_options, combine_train_sets,
                                          open_specified_layers)


def test_open_layers_names_more_modules():
    model = nn.Sequential()
    model.add_module("backbone", nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)))
    model.add_module("head", nn.Linear(2, 2))
    model.add_module("fc_out", nn.Linear(2, 1))
    open_specified_layers(model, ["head"])
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [
        "head.weight", "head.bias", "fc_out.weight", "fc_out.bias"]
    assert not model.backbone[1].training


def test_sources_are_concatenated_with_identity_and_camera_offsets():
    first = ReidDataset("a", ".", train=[Sample("x", 0, 0), Sample("y", 1, 1)])
    second = ReidDataset("b", ".", train=[Sample("z", 0, 0), Sample("w", 2, 2), Sample("v", 1, 0)])
    samples, num_pids = combine_train_sets([first, second])
    assert num_pids == 5
    assert [(s.pid, s.camid) for s in samples] == [(0, 0), (1, 1), (2, 2), (4, 4), (3, 2)]


@pytest.mark.parametrize("extra, message", [
    (["--height", "72"], "--height 72"),
    (["--criterion", "htri", "--train-batch-size", "30"], "multiple of --num-instances 4"),
    (["--max-epoch", "0"], "at least one main epoch"),
    (["--fixbase-epoch", "-1"], "--fixbase-epoch -1"),
    (["--arch", "densenet121"], "--arch densenet121"),
    (["--evaluate", "--resume", "a", "--load-weights", "b"], "not both"),
])
def test_options_that_cannot_run_are_refused(extra, message):
    args = build_parser("test").parse_args(["-s", "market1501", "-t", "market1501", *extra])
    with pytest.raises(OptionError, match=message):
        check_options(args)


def test_aliases_name_the_same_flag():
    parser = build_parser("test", aliases={"--abd-dan": ["--iab-dan"], "--abd-np": ["--iab-np"]})
    args = parser.parse_args(["-s", "a", "-t", "a", "--iab-dan", "cam", "pam", "--iab-np", "3"])
    assert (args.abd_dan, args.abd_np) == (["cam", "pam"], 3)
    with pytest.raises(ValueError, match="--margin"):
        build_parser("test", aliases={"--margin": ["--m"]})
