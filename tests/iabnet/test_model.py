"""IAB-Net's network against the spec's counts, names, shapes and equations (iabnet.md §3)."""

import pytest
import torch
import torch.nn.functional as F

from common.checkpoint import CheckpointError
from common.torchreid_run.checkpoint import load_torchreid_checkpoint, read_torchreid_checkpoint
from iabnet.model import COAB, ChannelGate, SpatialGate, build_model, remap_original_keys


def count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def market_model():
    torch.manual_seed(0)
    return build_model(751, pretrained=False)


def test_parameter_counts_match_the_released_model(market_model):
    classifiers = sum(p.numel() for n, p in market_model.named_parameters() if "classifier" in n)
    assert count(market_model) == 73_296_031
    assert count(market_model) - classifiers == 70_986_706
    trunk = market_model.common_branch
    assert [count(trunk.backbone1), count(trunk.shallow_cam), count(trunk.backbone2)] == [
        251_036, 8_564, 9_245_160]
    assert [count(branch[0]) for branch in market_model.branches] == [16_544_428] * 2
    assert [count(branch[1]) for branch in market_model.branches] == [
        2_100_224 + 1024 * 751 + 751, 26_292_866 + 2 * (1024 * 751 + 751)]
    for num_classes, total in ((702, 73_145_356), (225, 71_678_581)):
        assert count(build_model(num_classes, pretrained=False)) == total


def test_state_dict_is_the_originals(market_model, original_state_dict):
    # every name and shape of the original's README model, dumped with the global branch first
    assert {name: tuple(tensor.shape) for name, tensor in market_model.state_dict().items()} == \
        original_state_dict("original_state_dict.txt")


def test_initialisation_as_the_original(market_model):
    state = market_model.state_dict()
    gates = [k for k in state if k.endswith("coab.SpatialGate.spatial.bn.weight")]
    assert len(gates) == 19 and all(state[k].item() == 0.0 for k in gates)  # sigmoid(0) = 0.5
    assert all(state[k].abs().sum() == 0 for k in state if ".coab." in k and k.endswith(".bias"))
    # the shallow CBAM is built outside ResNet.__init__: PyTorch's default init
    assert state["common_branch.shallow_cam._cam_module.SpatialGate.spatial.bn.weight"].item() == 1
    assert state["common_branch.shallow_cam._cam_module.ChannelGate.mlp.1.bias"].abs().sum() > 0
    spatial = torch.cat([state[k.replace("bn.weight", "conv.weight")].flatten() for k in gates])
    assert spatial.std().item() == pytest.approx((2 / 49) ** 0.5, rel=0.1)  # kaiming, fan_out


def test_full_size_shapes(market_model):
    market_model.eval()
    with torch.no_grad():
        assert market_model(torch.randn(1, 3, 384, 128)).shape == (1, 3072)
    market_model.train()
    predict, logits, triplet, maps = market_model(torch.randn(2, 3, 384, 128))
    assert predict.shape == (2, 3072) and [l.shape for l in logits] == [(2, 751)] * 3
    assert [f.shape for f in triplet] == [(2, 1024)] * 3
    assert maps["intermediate"][0].shape == (2, 256, 96, 32)
    assert [m.shape for m in maps["after"]] == [(2, 1024, 6, 4)] * 2  # layer4 12x4 (stride 2)


def test_coab_against_the_direct_formula():
    torch.manual_seed(0)
    coab = COAB(32)
    with torch.no_grad():
        coab.SpatialGate.spatial.bn.weight.fill_(0.7)
        coab.SpatialGate.spatial.bn.bias.fill_(0.1)
    coab.eval()  # BN with its running statistics (0 mean, 1 variance)
    x = torch.randn(2, 32, 5, 3)
    mlp = coab.ChannelGate.mlp
    channel = torch.sigmoid(mlp(x.mean(dim=(2, 3))) + mlp(x.amax(dim=(2, 3))))
    y = x * channel[:, :, None, None]
    pooled = torch.stack([y.amax(dim=1), y.mean(dim=1)], dim=1)
    conv = F.conv2d(pooled, coab.SpatialGate.spatial.conv.weight, padding=3)
    spatial = torch.sigmoid(0.7 * conv / (1 + 1e-5) ** 0.5 + 0.1)
    torch.testing.assert_close(coab(x), y * spatial)
    assert isinstance(coab.ChannelGate, ChannelGate) and isinstance(coab.SpatialGate, SpatialGate)


def test_coab_sits_before_the_residual_add():
    torch.manual_seed(0)
    block = build_model(10, pretrained=False).common_branch.backbone1[4][1]  # no downsample
    block.eval()
    x = torch.randn(1, 256, 6, 4)
    out = block.bn3(block.conv3(block.relu(block.bn2(block.conv2(block.relu(block.bn1(
        block.conv1(x))))))))
    torch.testing.assert_close(block(x), torch.relu(block.coab(out) + x))


def load_released(model, path):
    """A released file into ``model``, strictly, as ``load_trained`` reads it."""
    return load_torchreid_checkpoint(model, read_torchreid_checkpoint(path, remap_original_keys))


def test_tiny_input_trace_export_and_released_layout(tmp_path):
    torch.manual_seed(0)
    model = build_model(10, pretrained=False).eval()
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(torch.jit.trace(model, x)(x), expected)
        exported = torch.export.export(model, (x,))
        torch.testing.assert_close(exported.module()(x), expected)
    # a released-layout file: CASA branch first, saved from DataParallel
    swapped = {}
    for key, value in model.state_dict().items():
        if key.startswith("branches."):
            key = f"branches.{1 - int(key.split('.')[1])}." + key.split(".", 2)[2]
        swapped[f"module.{key}"] = value
    torch.save({"state_dict": swapped, "rank1": 0.8988, "epoch": 19}, tmp_path / "best.pth.tar")
    target = build_model(10, pretrained=False)
    assert load_released(target, tmp_path / "best.pth.tar") == {
        "rank1": pytest.approx(0.8988), "epoch": 19, "reinitialized": [], "class_counts": None}
    assert all(torch.equal(target.state_dict()[k], v) for k, v in model.state_dict().items())
    # the bottleneck attention named cbam, as a sibling file of the original names it
    cbam = {k.replace(".coab.", ".cbam."): v for k, v in swapped.items()}
    torch.save({"state_dict": cbam, "rank1": 0.5, "epoch": 3}, tmp_path / "cbam.pth.tar")
    assert load_released(build_model(10, pretrained=False), tmp_path / "cbam.pth.tar")["epoch"] == 3
    # a file without the COABs (an ABD-Net-shaped backbone) is refused, the keys listed (190
    # COAB entries less the 19 num_batches_tracked, which torch tolerates missing)
    plain = {k: v for k, v in model.state_dict().items() if ".coab." not in k}
    torch.save({"state_dict": plain, "rank1": 0, "epoch": 0}, tmp_path / "plain.pth.tar")
    with pytest.raises(CheckpointError, match=r"171 missing key\(s\).*coab"):
        load_released(target, tmp_path / "plain.pth.tar")


def test_casa_channel_switch_puts_a_coab_where_the_code_has_cam():
    model = build_model(751, pretrained=False, casa_channel="coab")
    assert isinstance(model.branches[1][1].cam_module.attention_module, COAB)
    # one CAM gamma less, one COAB(512) more: 512*32 + 32 + 32*512 + 512 + 98 + 2
    assert count(model) == 73_296_031 - 1 + 33_412
    with pytest.raises(ValueError, match="casa_channel"):
        build_model(10, pretrained=False, casa_channel="sam")
