"""APNet-S: RGA-S (Zhang et al., CVPR 2020, released ``RGA_Module`` spatial-only) against a
direct loop over positions, the stripe split and merge, the pyramid's parameter counts and key
names, export, and the errors (apnet.md §4.4; apnet/README.md "APNet-S")."""

import pytest
import torch

from apnet.model import (APNet, RGASpatial, StripeAttention, architecture_of, build_model,
                         stage_sizes)

STAGE_CHANNELS = (64, 256, 512, 1024, 2048)


def count(module):
    return sum(p.numel() for p in module.parameters())


def randomise_batchnorms(module):
    """Non-trivial running statistics and affine parameters, so eval-mode BN is not identity."""
    for bn in module.modules():
        if isinstance(bn, torch.nn.BatchNorm2d):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.uniform_(-0.5, 0.5)


def conv_bn(sequential, vector, relu=True, conv=0):
    """conv (1x1, no bias) + eval BN (+ ReLU) of a Sequential, on one position's vector."""
    weight = sequential[conv].weight[:, :, 0, 0]
    bn = sequential[conv + 1]
    out = (weight @ vector - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps)
    out = out * bn.weight + bn.bias
    return out.clamp(min=0) if relu else out


def rga_s_by_positions(agent, x):
    """RGA-S written position by position from the paper's definitions: r(i, j) = theta_i . phi_j;
    the relation feature of i is [r(i, 1..N), r(1..N, i)]; y_i = [mean_c gx_i, gg(relation_i)];
    the map at i is sigmoid(W y_i)."""
    b, c, h, w = x.shape
    n = h * w
    out = torch.empty_like(x)
    for k in range(b):
        feats = [x[k, :, i // w, i % w] for i in range(n)]  # row-major positions
        theta = [conv_bn(agent.theta_spatial, f) for f in feats]
        phi = [conv_bn(agent.phi_spatial, f) for f in feats]
        r = [[torch.dot(theta[i], phi[j]) for j in range(n)] for i in range(n)]
        for i in range(n):
            relation = torch.stack([r[i][j] for j in range(n)] + [r[j][i] for j in range(n)])
            y = torch.cat([conv_bn(agent.gx_spatial, feats[i]).mean().reshape(1),
                           conv_bn(agent.gg_spatial, relation)])
            hidden = conv_bn(agent.W_spatial, y)
            score = conv_bn(agent.W_spatial, hidden, relu=False, conv=3)
            out[k, :, i // w, i % w] = feats[i] * torch.sigmoid(score)
    return out


def released_agent_params(channels, positions):
    """Parameters of the released RGA_Module(use_channel=False) with ratios 8, 8, 8 (widths
    floored at 1 where its formula gives 0)."""
    inter_c, inter_s = channels // 8, max(positions // 8, 1)
    hidden = max((1 + inter_s) // 8, 1)
    embeddings = 3 * (channels * inter_c + 2 * inter_c)  # theta, phi, gx: conv + BN
    relation = 2 * positions * inter_s + 2 * inter_s  # gg
    weights = (1 + inter_s) * hidden + 2 * hidden + hidden + 2  # W: conv, BN, conv, BN(1)
    return embeddings + relation + weights


def test_rga_s_against_a_loop_over_positions():
    torch.manual_seed(0)
    agent = RGASpatial(16, 6)
    randomise_batchnorms(agent)
    agent.eval()
    x = torch.randn(2, 16, 3, 2)
    with torch.no_grad():
        torch.testing.assert_close(agent(x), rga_s_by_positions(agent, x), rtol=1e-4, atol=1e-5)
        # the relation is not symmetric: swapping theta and phi changes the output
        swapped = RGASpatial(16, 6)
        swapped.load_state_dict(agent.state_dict())
        swapped.theta_spatial, swapped.phi_spatial = swapped.phi_spatial, swapped.theta_spatial
        swapped.eval()
        assert not torch.allclose(swapped(x), agent(x))


def test_rga_s_layers_names_and_count_are_the_released_modules():
    # RGA-Net's module after layer1 at 256x128: 256 channels, 64 x 32 = 2048 positions
    agent = RGASpatial(256, 2048)
    shapes = {k: tuple(v.shape) for k, v in agent.state_dict().items()}
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    expected_keys = [f"{name}.0.weight" if part == "conv" else f"{name}.1.{part}"
                     for name in ("theta_spatial", "phi_spatial", "gx_spatial", "gg_spatial")
                     for part in ["conv"] + bn]
    expected_keys += ["W_spatial.0.weight"] + [f"W_spatial.1.{p}" for p in bn]
    expected_keys += ["W_spatial.3.weight"] + [f"W_spatial.4.{p}" for p in bn]
    assert list(shapes) == expected_keys
    assert shapes["theta_spatial.0.weight"] == (32, 256, 1, 1)
    assert shapes["gg_spatial.0.weight"] == (256, 4096, 1, 1)  # 2N -> N/8
    assert shapes["W_spatial.0.weight"] == (32, 257, 1, 1)  # 1 + N/8 -> (1 + N/8) / 8
    assert shapes["W_spatial.3.weight"] == (1, 32, 1, 1)
    # 3 x (256*32 + 64) + (4096*256 + 512) + (257*32 + 64 + 32 + 2), by hand
    assert count(agent) == 1_082_178 == released_agent_params(256, 2048)
    # widths the released formula makes 0 are 1: 4 positions -> N/8 = 0, (1 + 0) / 8 = 0
    small = RGASpatial(16, 4)
    assert small.gg_spatial[0].weight.shape == (1, 8, 1, 1)
    assert small.W_spatial[0].weight.shape == (1, 2, 1, 1)


def test_stripes_are_attended_each_by_its_own_agent_and_merged():
    torch.manual_seed(0)
    level = StripeAttention(8, (4, 3), stripes=2)
    randomise_batchnorms(level)
    level.eval()
    assert len(level.agents) == 2 and level.agents[0].positions == 6
    x = torch.randn(2, 8, 4, 3)
    with torch.no_grad():
        top, bottom = level.agents[0](x[:, :, :2]), level.agents[1](x[:, :, 2:])
        torch.testing.assert_close(level(x), torch.cat([top, bottom], dim=2))
        assert not torch.allclose(level.agents[0](x[:, :, 2:]), bottom)
        whole = StripeAttention(8, (4, 3), stripes=1).eval()
        torch.testing.assert_close(whole(x), whole.agents[0](x))
    with pytest.raises(ValueError, match="cannot be split into 4 stripes"):
        StripeAttention(8, (6, 3), stripes=4)


def test_stage_sizes_are_the_backbone_outputs():
    model = build_model(5, level=0, pretrained=False).eval()
    for size in ((64, 32), (100, 50)):
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            shapes = []
            for stage in (model.base_1, model.base_2, model.base_3, model.base_4, model.base_5):
                x = stage(x)
                shapes.append(tuple(x.shape[2:]))
        assert shapes == stage_sizes(size)
    assert stage_sizes((384, 192)) == [(96, 48), (96, 48), (48, 24), (24, 12), (24, 12)]
    assert stage_sizes((384, 192), last_stride=2)[-1] == (12, 6)


# (level, total with 751 classes, state_dict entries) at the configuration's 384x192, at 256x128
# and at the tests' 64x32 (apnet/README.md); level 0 is the same baseline as APNet-C's
COUNTS = {(384, 192): [(1, 38_222_930, 822), (2, 47_958_974, 1207), (3, 59_112_830, 1952)],
          (256, 128): [(1, 29_332_970, 822), (2, 34_623_086, 1207), (3, 43_553_142, 1952)],
          (64, 32): [(1, 27_152_264, 822), (2, 31_351_356, 1207), (3, 39_735_256, 1952)]}


@pytest.mark.parametrize("size, level, total, entries",
                         [(size, *row) for size, rows in COUNTS.items() for row in rows])
def test_parameter_counts_per_level(size, level, total, entries):
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        model = build_model(751, level=level, agent="rga_s", input_size=size, pretrained=False)
    assert count(model) == total
    # = the baseline + one RGA-S per stripe (1, 2, 4 per level) + a BN2d per split level
    agents = sum(stripes * released_agent_params(c, h // stripes * w)
                 for c, (h, w) in zip(STAGE_CHANNELS, stage_sizes(size))
                 for stripes in (1, 2, 4)[:level])
    bn2d = sum(2 * c for c in STAGE_CHANNELS) * (level - 1)
    assert total == 25_050_176 + agents + bn2d
    state = model.state_dict()
    assert len(state) == entries
    assert sum(k.startswith("base.") for k in state) == 318
    assert "att5.agents.0.gg_spatial.0.weight" in state
    if level >= 2:
        assert "att_s1.agents.1.W_spatial.4.running_var" in state
        assert "BN3.bottleneck2.weight" in state and not model.BN3.bottleneck2.bias.requires_grad
    if level == 3:
        assert "att_ss5.agents.3.theta_spatial.0.weight" in state and "BN_2.bottleneck2.bias" in state
    if size == (384, 192):  # the released widths, nothing floored: the smallest stripe, 6x12
        smallest = model.att_ss5.agents[0] if level == 3 else model.att5.agents[0]
        n = smallest.positions
        assert smallest.W_spatial[0].out_channels == (1 + n // 8) // 8 >= 1
    assert architecture_of(state) == {"level": level, "agent": "rga_s"}


def test_apnet_c_keys_are_unchanged_by_the_agent_option():
    released = build_model(751, pretrained=False).state_dict()
    explicit = build_model(751, agent="se", input_size=(64, 32), pretrained=False).state_dict()
    assert list(released) == list(explicit) and len(released) == 722
    assert architecture_of(released) == {"level": 2, "agent": "se"}
    baseline = build_model(751, level=0, agent="rga_s", input_size=(64, 32), pretrained=False)
    assert len(baseline.state_dict()) == 642


def test_pyramid_stacks_the_levels_in_the_released_order():
    torch.manual_seed(0)
    model = build_model(5, level=3, agent="rga_s", input_size=(64, 32), pretrained=False)
    randomise_batchnorms(model)
    model.eval()
    x = torch.randn(1, 3, 64, 32)
    with torch.no_grad():
        stage = model.base_1(x)
        # fine to coarse: 4 stripes -> BN2d -> 2 stripes -> BN2d -> whole map
        expected = model.att1(model.BN1(model.att_s1(model.BN_1(model.att_ss1(stage)))))
        hooked = []
        model.base_2.register_forward_hook(lambda module, args, out: hooked.append(args[0]))
        model(x)
        torch.testing.assert_close(hooked[0], expected)
        coarse = build_model(5, level=3, agent="rga_s", input_size=(64, 32),
                             order="coarse_to_fine", pretrained=False)
        coarse.load_state_dict(model.state_dict())
        assert not torch.allclose(coarse.eval()(x), model(x))


@pytest.mark.slow
@pytest.mark.parametrize("level, order", [(3, "fine_to_coarse"), (2, "coarse_to_fine")])
def test_script_trace_and_export_match_eager(level, order):
    torch.manual_seed(0)
    model = build_model(5, level=level, agent="rga_s", input_size=(64, 32), order=order,
                        pretrained=False).eval()
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        expected = model(x)
        assert expected.shape == (2, 2048)
        torch.testing.assert_close(torch.jit.script(model)(x), expected)
        torch.testing.assert_close(torch.jit.trace(model, x, check_trace=False)(x), expected)
        batch = torch.export.Dim("batch", min=1, max=64)
        exported = torch.export.export(model, (x,), dynamic_shapes=({0: batch},)).module()
        torch.testing.assert_close(exported(x), expected)
        torch.testing.assert_close(exported(x[:1]), model(x[:1]))


def test_wrong_sizes_and_agents_are_clear_errors():
    model = build_model(5, level=1, agent="rga_s", input_size=(64, 32), pretrained=False).eval()
    with pytest.raises(ValueError, match="built for 128 positions and got a 32x16 map"):
        model(torch.randn(1, 3, 128, 64))
    with pytest.raises(ValueError, match=r"level 3 splits every stage map into 4 stripes.*"
                                         r"\[24, 24, 12, 6, 6\].*multiple of 64"):
        build_model(5, level=3, agent="rga_s", input_size=(96, 32), pretrained=False)
    with pytest.raises(ValueError, match="agent must be 'se'.*got 'rga'"):
        APNet(5, agent="rga", pretrained=False)
