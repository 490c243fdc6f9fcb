"""LAG-Net's network against the spec's counts, names and equations (lagnet.md §3, §7, §8)."""

import logging
import re

import pytest
import torch

from common.checkpoint import CheckpointError
from lagnet.model import (ORIGINAL_UNUSED_PREFIXES, FcWeight, ba_dropblock, build_model,
                          load_weights, local_attention, normalize_feature_matrix,
                          read_weights, rename_legacy_stream_keys, select_top_maps)


def count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def full_model():
    torch.manual_seed(0)
    return build_model(751, pretrained=False).eval()


@pytest.fixture(scope="module")
def tiny_input():
    torch.manual_seed(1)
    return torch.randn(4, 3, 64, 32)


def test_parameter_counts_match_the_spec(full_model):
    assert count(full_model) == 80_974_400  # every kept parameter receives a gradient (§8)
    descriptor = sum(p.numel() for name, p in full_model.named_parameters()
                     if not name.startswith("reduction_") and not name.endswith("classifier.0.weight"))
    assert descriptor == 76_183_616  # what computes the 3,584-d test feature
    assert count(full_model.backbone) == 2_957_376
    for stream in ("global_stream", "part_stream", "la_stream"):
        assert count(getattr(full_model, stream)) == 20_550_656
    assert count(full_model.reduction_0) == 524_800
    assert count(full_model.classifier_gs) == 1_438_208
    assert count(full_model.attentions) == 4_198_400


def shapes(state):
    return {name: tuple(tensor.shape) for name, tensor in state.items()}


def test_state_dict_is_the_originals_less_its_unused_modules(full_model, original_state_dict):
    original = original_state_dict("original_state_dict.txt")
    assert len(original) == 1072  # §7
    unused = [name for name in original if name.startswith(ORIGINAL_UNUSED_PREFIXES)]
    assert len(unused) == 320 + 2 + 3 * 6  # test., channel_attention., reduction_4..6
    kept = {name: shape for name, shape in original.items() if name not in unused}
    assert shapes(full_model.state_dict()) == kept
    assert full_model.attentions.bn.eps == 1e-3


def test_streams_and_strides(full_model):
    assert full_model.global_stream[1][0].conv2.stride == (2, 2)
    for stream in (full_model.part_stream, full_model.la_stream):
        assert stream[1][0].conv2.stride == (1, 1)
        assert stream[1][0].downsample[0].stride == (1, 1)
    shared = full_model.backbone(torch.zeros(1, 3, 384, 128))
    assert shared.shape == (1, 1024, 24, 8)
    # the three streams and the seven reductions start as copies of one initialisation
    for name, tensor in full_model.global_stream.state_dict().items():
        assert torch.equal(tensor, full_model.la_stream.state_dict()[name])


def test_full_size_eval_forward_is_the_3584_d_descriptor(full_model):
    with torch.no_grad():
        out = full_model(torch.randn(2, 3, 384, 128))
    assert out.shape == (2, 3584)


def test_select_top_maps_orders_by_spatial_sum():
    maps = torch.zeros(2, 4, 2, 2)
    maps[0, 0] = 1.0
    maps[0, 2] = 3.0
    maps[0, 3] = 2.0
    maps[1, 1] = 5.0
    top = select_top_maps(maps, 2)
    assert torch.equal(top[0, 0], maps[0, 2]) and torch.equal(top[0, 1], maps[0, 3])
    assert torch.equal(top[1, 0], maps[1, 1])


def test_local_attention_adds_each_map_to_every_channel():
    torch.manual_seed(0)
    features, attention = torch.randn(2, 5, 3, 2), torch.rand(2, 4, 3, 2)
    vectors = local_attention(features, attention)
    assert vectors.shape == (2, 4, 5)
    for b in range(2):
        for i in range(4):
            combined = features[b] + attention[b, i]
            expected = combined.flatten(1).mean(1) + combined.flatten(1).max(1).values
            torch.testing.assert_close(vectors[b, i], expected)


def test_feature_matrix_is_sign_sqrt_then_l2():
    vectors = torch.tensor([[[4.0, -9.0]], [[0.0, 1.0]]])
    matrix = normalize_feature_matrix(vectors)
    torch.testing.assert_close(matrix[0], torch.tensor([2.0, -3.0]) / 13 ** 0.5)
    torch.testing.assert_close(matrix.norm(dim=1), torch.ones(2))


def test_ba_dropblock_zeroes_where_the_chosen_map_reaches_half_its_max():
    features = torch.ones(1, 3, 2, 3)
    attention = torch.tensor([[[[0.0, 1.0, 0.4], [0.6, 0.2, 0.5]]]])  # one map: it is chosen
    dropped = ba_dropblock(features, attention)
    keep = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])  # >= 0.5 * max is dropped
    assert torch.equal(dropped, keep.expand(1, 3, 2, 3))


def capture_inputs(model, names, x):
    seen = {}
    hooks = [getattr(model, name).register_forward_hook(
        lambda module, args, out, name=name: seen.__setitem__(name, args[0].detach()))
        for name in names]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return seen


@pytest.fixture(scope="module")
def tiny_models():
    torch.manual_seed(0)
    faithful = build_model(10, pretrained=False).eval()
    fixed = build_model(10, pretrained=False, part_split="fixed", drop_pool="fixed").eval()
    fixed.load_state_dict(faithful.state_dict())
    return faithful, fixed


def test_faithful_part_split_is_degenerate_and_fixed_uses_stripes(tiny_models):
    faithful, fixed = tiny_models
    x = torch.randn(2, 3, 96, 32)
    names = ["classifier_ps", "classifier_p0_ps", "classifier_p1_ps", "classifier_p2_ps"]
    seen = capture_inputs(faithful, names, x)
    for part in ("classifier_p0_ps", "classifier_p1_ps", "classifier_p2_ps"):
        torch.testing.assert_close(seen[part], 2 * seen["classifier_ps"])  # §3.4 [bug]
    seen = capture_inputs(fixed, names, x)
    part_map = fixed.part_stream(fixed.backbone(x)).detach()  # 2048 x 6 x 2: stripes of 2 rows
    for k, part in enumerate(("classifier_p0_ps", "classifier_p1_ps", "classifier_p2_ps")):
        stripe = part_map[:, :, 2 * k:2 * k + 2].flatten(2)
        torch.testing.assert_close(seen[part], stripe.max(2).values + stripe.mean(2))


def test_faithful_parts_equal_the_released_adaptive_pooling_bit_for_bit(tiny_models, tiny_input):
    # the released code pools the 1x1 g_ps to (3, 1) with adaptive max + avg pooling; the model
    # writes it as 2 * g_ps expanded (ONNX has no such adaptive pooling): the same numbers
    faithful = tiny_models[0]
    names = ["classifier_ps", "classifier_p0_ps", "classifier_p1_ps", "classifier_p2_ps"]
    seen = capture_inputs(faithful, names, tiny_input)
    g_ps = seen["classifier_ps"][:, :, None, None]
    released = (torch.nn.functional.adaptive_max_pool2d(g_ps, (3, 1))
                + torch.nn.functional.adaptive_avg_pool2d(g_ps, (3, 1)))
    for k, part in enumerate(names[1:]):
        assert torch.equal(seen[part], released[:, :, k].flatten(1))


def test_drop_branch_pooling(tiny_models, tiny_input):
    faithful, fixed = tiny_models
    la_map = faithful.la_stream(faithful.backbone(tiny_input)).detach()
    seen = capture_inputs(faithful, ["classifier_d"], tiny_input)
    torch.testing.assert_close(seen["classifier_d"], 2 * la_map.flatten(2).max(2).values)
    seen = capture_inputs(fixed, ["classifier_d"], tiny_input)
    torch.testing.assert_close(seen["classifier_d"],
                               la_map.flatten(2).max(2).values + la_map.flatten(2).mean(2))


def test_training_outputs_and_every_parameter_gets_a_gradient(tiny_input):
    torch.manual_seed(0)
    model = build_model(10, pretrained=False, num_attentions=4).train()
    out = model(tiny_input)
    assert out.predict.shape == (4, 3584)
    assert out.feature_matrix.shape == (4, 4 * 2048)
    torch.testing.assert_close(out.feature_matrix.norm(dim=1), torch.ones(4))
    assert [e.shape[1] for e in out.embeddings] == [256, 256, 256, 256, 512]
    assert len(out.logits) == 7 and all(l.shape == (4, 10) for l in out.logits)
    loss = (sum(l.logsumexp(1).sum() for l in out.logits) + sum(e.sum() for e in out.embeddings)
            + out.feature_matrix.sum())
    loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert missing == []


def test_trace_and_export_match_eager(tiny_models, tiny_input):
    model = tiny_models[0]
    with torch.no_grad():
        eager = model(tiny_input)
        traced = torch.jit.trace(model, tiny_input)
        torch.testing.assert_close(traced(tiny_input), eager)
        exported = torch.export.export(model, (tiny_input,))
        torch.testing.assert_close(exported.module()(tiny_input), eager)


def test_fc_weight_initialisation():
    torch.manual_seed(0)
    head = FcWeight(2048, 751)
    assert head.classifier[0].weight.std().item() == pytest.approx(0.001, rel=0.05)
    assert head.fc_block2[0].weight.mean().item() == pytest.approx(1.0, abs=0.01)
    assert torch.equal(head.fc_block2[0].bias, torch.zeros(512))
    assert isinstance(head.fc_block1[1], torch.nn.LeakyReLU)
    assert head.fc_block1[1].negative_slope == 0.1


def test_a_file_of_the_original_code_loads_with_unused_keys_reported(
        tiny_models, original_state_dict):
    original = original_state_dict("original_state_dict.txt")
    model = tiny_models[0]
    ours = model.state_dict()
    # every name and shape of the original: the model's own tensors (loading them back changes
    # nothing; the names are under test), zeros for the original's unused modules
    state = {name: ours[name] if name in ours else torch.zeros(shape)
             for name, shape in original.items()}
    ignored = load_weights(model, state).ignored
    assert sorted(ignored) == sorted(k for k in original if k.startswith(ORIGINAL_UNUSED_PREFIXES))

    del state["attentions.conv.weight"]
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="attentions.conv.weight"):
        load_weights(model, state)


def legacy_numbering(state):
    """``state`` named as earlier versions of this project did: layer3 blocks ``.0.1``-``.0.5``."""
    block = re.compile(r"^(global_stream|part_stream|la_stream)\.0\.(\d)\.")
    return {block.sub(lambda m: f"{m[1]}.0.{int(m[2]) + 1}.", key): value
            for key, value in state.items()}


def test_names_of_earlier_versions_are_renamed_with_a_notice(tiny_models, caplog):
    state = tiny_models[0].state_dict()
    legacy = legacy_numbering(state)
    assert "global_stream.0.5.conv3.weight" in legacy and "la_stream.0.0.conv1.weight" not in legacy
    assert "part_stream.1.0.downsample.0.weight" in legacy  # conv5 keeps its names
    caplog.set_level(logging.WARNING, logger="lagnet")
    renamed = rename_legacy_stream_keys(legacy, source="old/model_best.pt")
    assert list(renamed) == list(state)
    assert all(renamed[key] is value for key, value in state.items())
    notices = [record.getMessage() for record in caplog.records]
    assert len(notices) == 1 and notices[0].startswith("old/model_best.pt uses the layer3 block "
                                                       "numbering of earlier versions")
    caplog.clear()
    assert rename_legacy_stream_keys(state) is state and caplog.records == []


def test_read_weights_renames_earlier_versions_files(tmp_path, caplog):
    legacy = {"module.global_stream.0.5.conv1.weight": torch.ones(1),
              "module.global_stream.0.1.bn1.bias": torch.zeros(1),
              "module.global_stream.1.0.conv1.weight": torch.full((1,), 2.0)}
    torch.save(legacy, tmp_path / "model_latest.pt")
    caplog.set_level(logging.WARNING, logger="lagnet")
    state = read_weights(tmp_path / "model_latest.pt")
    assert list(state) == ["global_stream.0.4.conv1.weight", "global_stream.0.0.bn1.bias",
                           "global_stream.1.0.conv1.weight"]
    assert [record.getMessage().split(" uses ")[0] for record in caplog.records] == [
        str(tmp_path / "model_latest.pt")]


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="part_split"):
        build_model(10, pretrained=False, part_split="stripes")
    with pytest.raises(ValueError, match="num_attentions"):
        build_model(10, pretrained=False, num_attentions=0)
