"""ABD-Net's run pieces: the fixbase rule, the training-set union, the option checks (§4)."""

import pytest
import torch.nn as nn

from abdnet.args import build_parser
from abdnet.model import build_model
from abdnet.trainer import (OptionError, check_options, combine_train_sets, open_all_layers,
                            open_specified_layers)
from common.data import ReidDataset, Sample


def trainable(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_fixbase_opens_the_heads_and_attention_and_freezes_the_backbone():
    model = build_model(751, pretrained=False)
    model.train()
    open_specified_layers(model, ["classifier"])
    # shallow CAM gamma + ABD head + global head + three 751-way classifiers (spec §2.8)
    assert trainable(model) == 1 + 26_292_866 + 2_100_224 + 3 * (1024 * 751 + 751)
    assert model.common_branch.shallow_cam._cam_module.gamma.requires_grad
    assert not model.common_branch.backbone1[0].weight.requires_grad
    assert not any(p.requires_grad for p in model.branches[0][0].parameters())
    # frozen BatchNorms keep their statistics (eval); the heads' dropout is active (train)
    assert not model.common_branch.backbone2[0][0].bn1.training
    assert not model.branches[1][0].backbone[0].bn1.training
    assert model.branches[0][1].fc[3].training and model.branches[1][1].sum_conv[0].training
    open_all_layers(model)
    assert trainable(model) == 69_175_184
    assert all(m.training for m in model.modules())


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
    args = build_parser().parse_args(["-s", "market1501", "-t", "market1501", *extra])
    with pytest.raises(OptionError, match=message):
        check_options(args)
