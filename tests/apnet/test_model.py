"""APNet's network against the spec's counts, names and equations (apnet.md §4, §7)."""

import pytest
import torch
import torch.nn.functional as F

from apnet.model import SAMS, SELayer, build_model


def count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("level, total, entries", [
    (0, 25_050_176, 642), (1, 25_112_640, 652), (2, 29_311_200, 722)])
def test_parameter_counts_and_names_per_level(level, total, entries):
    model = build_model(751, level=level, pretrained=False)
    assert count(model) == total
    assert count(model) - 751 * 2048 == total - 1_538_048
    state = model.state_dict()
    assert len(state) == entries
    # the backbone is registered twice, as the original does: same tensors, two names
    assert state["base.conv1.weight"].data_ptr() == state["base_1.0.weight"].data_ptr()
    assert state["base.layer4.2.conv3.weight"].data_ptr() == state["base_5.0.2.conv3.weight"].data_ptr()
    assert sum(k.startswith("base.") for k in state) == 318
    if level == 2:
        assert state["att1.fc.0.weight"].shape == (8, 64)
        assert state["att5.fc.2.weight"].shape == (2048, 8)
        assert state["att_s1.fc1.weight"].shape == (32, 32, 1, 1)
        assert state["att_s5.fc1.weight"].shape == (1024, 1024, 1, 1)
        assert state["att_s5.fc2.weight"].shape == (2048, 1024, 1, 1)
        assert "BN3.bottleneck2.running_var" in state
        assert not model.BN3.bottleneck2.bias.requires_grad
        assert not model.bottleneck.bias.requires_grad
        assert model.classifier.bias is None


@pytest.mark.parametrize("level", [0, 1, 2])
def test_state_dict_is_the_originals(level, original_state_dict):
    # every name and shape of the original's Baseline at this pyramid level (it has no level 3)
    model = build_model(751, level=level, pretrained=False)
    assert {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()} == \
        original_state_dict(f"original_state_dict_level{level}.txt")


def test_level_three_is_the_papers_and_four_is_refused():
    model = build_model(10, level=3, pretrained=False)
    assert model.att_ss2.radix == 4 and model.att_s2.radix == 2
    with pytest.raises(ValueError, match="levels 0 to 3"):
        build_model(10, level=4, pretrained=False)


def test_se_layer_against_the_formula():
    torch.manual_seed(0)
    se = SELayer(16, 2)
    x = torch.randn(2, 16, 3, 4)
    w1, w2 = se.fc[0].weight, se.fc[2].weight
    gate = torch.sigmoid(torch.relu(x.mean(dim=(2, 3)) @ w1.T) @ w2.T)
    torch.testing.assert_close(se(x), x * gate[:, :, None, None])


def test_sams_splits_channels_and_softmaxes_over_the_groups():
    torch.manual_seed(0)
    sams = SAMS(8, radix=2).eval()
    x = torch.randn(2, 8, 3, 2)
    groups = x[:, :4], x[:, 4:]
    s = (groups[0] + groups[1]).mean(dim=(2, 3))
    bn = sams.bn1
    z = torch.relu((s @ sams.fc1.weight[:, :, 0, 0].T + sams.fc1.bias - bn.running_mean)
                   / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias)
    a = (z @ sams.fc2.weight[:, :, 0, 0].T + sams.fc2.bias).reshape(2, 2, 4)
    a = F.softmax(a, dim=1)  # over the two groups, per channel index
    expected = torch.cat([groups[0] * a[:, 0, :, None, None], groups[1] * a[:, 1, :, None, None]],
                         dim=1)
    torch.testing.assert_close(sams(x), expected)
    with pytest.raises(ValueError, match="divisible by 3"):
        SAMS(64, radix=3)


@pytest.mark.parametrize("level", [0, 2, 3])
def test_script_trace_and_export_match_eager(level):
    torch.manual_seed(0)
    model = build_model(5, level=level, pretrained=False).eval()
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        expected = model(x)
        assert expected.shape == (2, 2048)
        torch.testing.assert_close(torch.jit.script(model)(x), expected)
        torch.testing.assert_close(torch.jit.trace(model, x)(x), expected)
        torch.testing.assert_close(torch.export.export(model, (x,)).module()(x), expected)


def test_train_outputs_and_the_msmt_test_feature():
    torch.manual_seed(0)
    model = build_model(7, pretrained=False)
    logits, global_feat = model(torch.randn(4, 3, 64, 32))
    assert logits.shape == (4, 7) and global_feat.shape == (4, 2048)
    msmt = build_model(7, pretrained=False, test_feature="logits").eval()
    with torch.no_grad():
        assert msmt(torch.randn(2, 3, 64, 32)).shape == (2, 7)


def test_order_and_stem_relu_switches():
    torch.manual_seed(0)
    fine = build_model(5, level=3, pretrained=False).eval()
    coarse = build_model(5, level=3, order="coarse_to_fine", pretrained=False).eval()
    coarse.load_state_dict(fine.state_dict())  # same parameters, other order
    x = torch.randn(1, 3, 64, 32)
    with torch.no_grad():
        stage = fine.base_1(x)
        expected = coarse.BN_1(coarse.att_ss1(coarse.BN1(coarse.att_s1(coarse.att1(stage)))))
        assert not torch.allclose(coarse(x), fine(x))
        torch.testing.assert_close(torch.jit.script(coarse)(x), coarse(x))
    hooked = []
    coarse.base_2.register_forward_hook(lambda module, args, out: hooked.append(args[0]))
    with torch.no_grad():
        coarse(x)
    torch.testing.assert_close(hooked[0], expected)
    plain = build_model(5, level=0, pretrained=False).eval()
    relu = build_model(5, level=0, stem_relu=True, pretrained=False).eval()
    relu.load_state_dict(plain.state_dict())
    stem = plain.base.bn1(plain.base.conv1(x))
    with torch.no_grad():
        torch.testing.assert_close(relu.base_1(x), F.max_pool2d(stem.relu(), 3, 2, 1))
        torch.testing.assert_close(plain.base_1(x), F.max_pool2d(stem, 3, 2, 1))
    with pytest.raises(ValueError, match="order"):
        build_model(5, order="sideways", pretrained=False)
