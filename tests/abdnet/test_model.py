"""ABD-Net's network against the spec's counts, names and equations (abdnet.md §2)."""

import numpy as np
import pytest
import torch

from abdnet.model import build_model
from common.layers.two_branch import remap_branch_order
from common.checkpoint import CheckpointError
from common.torchreid_run.checkpoint import load_torchreid_checkpoint, read_torchreid_checkpoint


def count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def market_model():
    torch.manual_seed(0)
    return build_model(751, pretrained=False)


def test_parameter_counts_match_the_released_model(market_model):
    total = count(market_model)
    classifiers = sum(p.numel() for name, p in market_model.named_parameters()
                      if "classifier" in name)
    assert total == 69_175_184  # "Model size: 69.175 M" (issue #9)
    assert total - classifiers == 66_865_859
    assert len(market_model.state_dict()) == 450
    assert count(build_model(702, pretrained=False)) == 69_024_509
    assert count(market_model.common_branch.backbone1) == 225_344
    assert count(market_model.common_branch.shallow_cam) == 1
    assert count(market_model.common_branch.backbone2) == 8_317_952
    assert count(market_model.branches[0][0]) == count(market_model.branches[1][0]) == 14_964_736
    assert count(market_model.branches[0][1]) - 751 * 1025 == 2_100_224
    assert count(market_model.branches[1][1]) - 2 * 751 * 1025 == 26_292_866


def test_state_dict_is_the_originals_with_global_first(market_model, original_state_dict):
    # every name and shape of the original's README model, dumped with the global branch first
    assert {name: tuple(tensor.shape) for name, tensor in market_model.state_dict().items()} == \
        original_state_dict("original_state_dict.txt")
    assert market_model.branches[1][0].backbone[0].conv2.stride == (1, 1)  # last stride 1


def test_full_size_outputs_and_feature_maps(market_model):
    market_model.train()
    with torch.no_grad():
        predict, logits, triplet, maps = market_model(torch.randn(2, 3, 384, 128))
        market_model.eval()
        features = market_model(torch.randn(2, 3, 384, 128))
    assert predict.shape == features.shape == (2, 3072)
    assert [tuple(l.shape) for l in logits] == [(2, 751)] * 3
    assert [tuple(t.shape) for t in triplet] == [(2, 1024)] * 3
    assert [tuple(m.shape) for m in maps["intermediate"]] == [(2, 256, 96, 32)]
    for key in ("before", "cam", "pam", "after"):
        assert [tuple(m.shape) for m in maps[key]] == [(2, 1024, 12, 8)] * 2


def swap_branches(state):
    swapped = {}
    for key, value in state.items():
        if key.startswith("branches."):
            index = "1" if key.split(".")[1] == "0" else "0"
            key = f"branches.{index}." + key.split(".", 2)[2]
        swapped[f"module.{key}"] = value
    return swapped


def load_released(model, path):
    return load_torchreid_checkpoint(model, read_torchreid_checkpoint(path, remap_branch_order))


def test_original_checkpoints_load_in_either_branch_order():
    torch.manual_seed(0)
    source = build_model(10, pretrained=False, abd_dan=("cam",))
    target = build_model(10, pretrained=False, abd_dan=("cam",))
    original = swap_branches(source.state_dict())  # an "abd first" file, saved from DataParallel
    assert "module.branches.0.1.reduction.0.weight" in original
    target.load_state_dict(remap_branch_order(original))
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_tiny_input_trace_export_and_bad_height():
    torch.manual_seed(0)
    model = build_model(10, pretrained=False).eval()
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        eager = model(x)
        torch.testing.assert_close(torch.jit.trace(model, x)(x), eager)
        torch.testing.assert_close(torch.export.export(model, (x,)).module()(x), eager)
        with pytest.raises(ValueError, match="does not split into 2 stripes"):
            model(torch.randn(1, 3, 80, 32))  # layer4 height 5
    with pytest.raises(ValueError, match="'cam' and/or 'pam', got \\['sam'\\]"):
        build_model(10, pretrained=False, abd_dan=("sam",))


def test_released_checkpoint_format_loads_with_numpy_rank1(tmp_path):
    torch.manual_seed(0)
    source = build_model(10, pretrained=False, abd_dan=("pam",))
    torch.save({"state_dict": swap_branches(source.state_dict()), "rank1": np.float32(0.956),
                "epoch": 79}, tmp_path / "checkpoint_best.pth.tar")
    target = build_model(10, pretrained=False, abd_dan=("pam",))
    info = load_released(target, tmp_path / "checkpoint_best.pth.tar")
    assert info == {"rank1": pytest.approx(0.956), "epoch": 79, "reinitialized": [],
                    "class_counts": None}
    assert torch.equal(target.state_dict()["branches.1.1.sum_conv.1.weight"],
                       source.state_dict()["branches.1.1.sum_conv.1.weight"])
    broken = {k: v for k, v in source.state_dict().items() if "pam_module" not in k}
    torch.save({"state_dict": broken, "rank1": 0, "epoch": 0}, tmp_path / "broken.pth.tar")
    with pytest.raises(CheckpointError, match="missing key"):
        load_released(build_model(10, pretrained=False), tmp_path / "broken.pth.tar")
