"""The video IAUnet and its spatial-temporal block against counts, the released block's names,
the STIAU mask rule, the image block, and a direct computation (iaunet.md §3.5)."""

import pytest
import torch

from iaunet.loss import IAUnetLoss
from iaunet.model import IAU, IAU3D, EdgeWeights, build_model, stiau_blocked_edges

# IAUBlock3D's state_dict, in the order of its definition (models/IAU3D.py, models/STIAU.py)
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
RELEASED_BLOCK_KEYS = (["SA.conv.conv.weight", "SA.conv.conv.bias"]
                       + [f"SA.conv.bn.{k}" for k in BN] + ["g.weight", "g.bias"]
                       + ["STIAU.module_w.relation.0.weight", "STIAU.module_w.relation.0.bias"]
                       + [f"STIAU.module_w.relation.1.{k}" for k in BN]
                       + ["STIAU.module_l.fsm.0.weight", "STIAU.module_l.fsm.0.bias"]
                       + [f"STIAU.module_l.fsm.1.{k}" for k in BN]
                       + [f"W{i}.{j}" for i in (1, 2) for j in ["0.weight", "0.bias"]
                          + [f"1.{k}" for k in BN]])


def count(module):
    return sum(p.numel() for p in module.parameters())


def test_counts_and_state_dict_names():
    model = build_model(751, arch="iaunet_video", pretrained=False)
    assert count(model) == 29_003_085  # the 3-D block has the image block's parameters
    assert count(model) - count(model.classifier) == 27_464_286
    assert (count(model.IAU2), count(model.IAU3)) == (793_103, 3_159_055)
    assert count(build_model(625, arch="iaunet_video", pretrained=False)) == 28_744_911  # MARS
    state = model.state_dict()
    image = build_model(751, pretrained=False).state_dict()
    for block in ("IAU2", "IAU3"):
        assert [k[5:] for k in state if k.startswith(f"{block}.")] == RELEASED_BLOCK_KEYS
    assert [k for k in state if not k.startswith("IAU")] == [
        k for k in image if not k.startswith("IAU")]
    assert len(state) == 399
    assert state["IAU2.SA.conv.conv.weight"].shape == (4, 512, 1, 1, 1)
    assert state["IAU2.g.weight"].shape == (256, 512, 1, 1)
    assert state["IAU2.STIAU.module_w.relation.0.weight"].shape == (1, 512, 1, 1)
    assert state["IAU3.STIAU.module_l.fsm.0.weight"].shape == (512, 1024, 1, 1)
    assert state["IAU3.W1.0.weight"].shape == (1024, 1024, 1, 1, 1)
    assert state["IAU3.W2.1.weight"].abs().sum() == 0  # zero-initialised: identity at start


@pytest.mark.parametrize("frames", [1, 2, 4])
def test_stiau_mask_against_the_rule(frames):
    parts = 4
    expected = torch.zeros(frames * parts, frames * parts)
    for t1 in range(frames):
        for p1 in range(parts):
            for t2 in range(frames):
                for p2 in range(parts):
                    spatial = t1 == t2 and p1 != p2  # another part of the same frame
                    temporal = t1 != t2 and p1 == p2  # the same part in another frame
                    expected[t1 * parts + p1, t2 * parts + p2] = 0.0 if spatial or temporal else 1.0
    torch.testing.assert_close(stiau_blocked_edges(frames), expected)
    assert stiau_blocked_edges(frames).diagonal().eq(1).all()  # no self loop


def test_blocked_edges_get_no_weight():
    torch.manual_seed(0)
    edges = EdgeWeights(6).eval()
    blocked = stiau_blocked_edges(3)
    weights = edges(torch.randn(2, 6, 12), torch.randn(2, 6), blocked)
    assert weights[:, blocked.bool()].abs().max() == 0
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 12))
    assert (weights[:, ~blocked.bool()] > 0).all()


def randomise_batchnorms(module):
    with torch.no_grad():
        for bn in module.modules():
            if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm):
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.normal_()
                bn.running_mean.normal_()
                bn.running_var.uniform_(0.5, 2.0)


def test_one_frame_is_the_image_block():
    """With T = 1 the mask is the self loops and every 3-D layer is the 2-D one."""
    torch.manual_seed(0)
    block3d = IAU3D(8, seq_len=1)
    randomise_batchnorms(block3d)
    image = IAU(8)
    image.load_state_dict({k.replace("SA.", "sa.").replace("STIAU.", "SIAU."):
                           v.reshape(image.state_dict()[k.replace("SA.", "sa.").replace(
                               "STIAU.", "SIAU.")].shape)
                           for k, v in block3d.state_dict().items()})
    x = torch.randn(3, 8, 4, 2)
    for mode in (True, False):  # batch statistics, then running statistics
        block3d.train(mode), image.train(mode)
        out3d, attention3d = block3d(x[:, :, None])
        out, attention = image(x)
        torch.testing.assert_close(out3d[:, :, 0], out, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(attention3d, attention)


def bn_eval(bn, x):
    """BatchNorm with its running statistics on channels-first x: (C,) or (C, N)."""
    shape = (-1,) + (1,) * (x.dim() - 1)
    return ((x - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + bn.eps)
            * bn.weight.view(shape) + bn.bias.view(shape))


def test_block_against_a_direct_computation():
    torch.manual_seed(1)
    c, t, h, w, parts = 6, 3, 2, 2, 4
    block = IAU3D(c, seq_len=t)
    randomise_batchnorms(block)
    block.eval()
    x = torch.randn(2, c, t, h, w)
    out, attention = block(x)

    def conv(layer, v):  # a 1x1 (x1) convolution on (C,) or (C, N)
        shape = (-1,) + (1,) * (v.dim() - 1)
        return layer.weight.reshape(layer.out_channels, -1) @ v + layer.bias.view(shape)

    sa, graph = block.SA.conv, block.STIAU
    relation, fsm = graph.module_w.relation, graph.module_l.fsm
    for i in range(2):
        rows = x[i].reshape(c * t, h * w)  # channel-time rows
        y = (torch.softmax(rows @ rows.T, 1) @ rows).reshape(c, t * h * w)
        z = x[i] + bn_eval(block.W1[1], conv(block.W1[0], y)).reshape(c, t, h, w)
        a = torch.sigmoid(bn_eval(sa.bn, conv(sa.conv, z.reshape(c, -1)))).reshape(parts, t, h, w)
        torch.testing.assert_close(attention[i * t:(i + 1) * t], a.transpose(0, 1))
        u = conv(block.g, z.mean((1, 2, 3)))
        nodes = {(f, p): conv(block.g, (a[p, f] * z[:, f]).sum((1, 2)))
                 for f in range(t) for p in range(parts)}
        order = list(nodes)
        open_edge = {(m, n): (m[0] == n[0]) != (m[1] == n[1]) for m in order for n in order}
        scores = torch.stack([torch.stack([
            bn_eval(relation[1], conv(relation[0], torch.cat([(nodes[m] - nodes[n]).abs(),
                                                               u])))[0]
            - (0.0 if open_edge[m, n] else 1e8) for n in order]) for m in order])
        weights = torch.softmax(scores, 1)
        updated = {m: torch.relu(bn_eval(fsm[1], conv(fsm[0], torch.cat(
            [nodes[m], sum(weights[j, k] * nodes[n] for k, n in enumerate(order))]))))
            for j, m in enumerate(order)}
        for f in range(t):
            readout = torch.cat([torch.stack([updated[f, p] for p in range(parts)]).mean(0), u])
            w2 = bn_eval(block.W2[1], conv(block.W2[0], readout))
            torch.testing.assert_close(out[i, :, f], z[:, f] + w2[:, None, None],
                                       rtol=1e-4, atol=1e-4)


def test_block_starts_as_the_identity_and_every_weight_learns():
    block = IAU3D(8, seq_len=2)
    x = torch.randn(2, 8, 2, 3, 2)
    torch.testing.assert_close(block.eval()(x)[0], x)
    with torch.no_grad():
        block.W1[1].weight.fill_(1.0)
        block.W2[1].weight.fill_(1.0)
    out, attention = block.train()(x)
    (out.square().sum() + attention.sum()).backward()
    assert all(p.grad.abs().sum() > 0 for p in block.parameters() if p.dim() > 1)


@pytest.mark.slow
def test_tiny_network_shapes_gradients_and_frame_order():
    torch.manual_seed(0)
    model = build_model(5, arch="iaunet_video", seq_len=2, pretrained=False)
    with torch.no_grad():
        for block in (model.IAU2, model.IAU3):  # open the residual branches (trained state)
            block.W1[1].weight.fill_(1.0)
            block.W2[1].weight.fill_(1.0)
    clips = torch.randn(4, 2, 3, 32, 16)
    labels = torch.tensor([0, 0, 1, 1])
    model.train()
    logits, feature, maps = model(clips)
    assert logits.shape == (4, 5) and feature.shape == (4, 2048)
    assert [m.shape for m in maps] == [(8, 4, 4, 2), (8, 4, 2, 1)]
    masks = torch.rand(8, 4, 32, 16)
    total, terms = IAUnetLoss(5)((logits, feature, maps), labels, masks)
    assert set(terms) == {"xent", "htri", "mask"}
    total.backward()
    assert all(p.grad is not None for p in model.parameters())
    # every weight moves (a conv bias straight before a training-mode BN has no gradient)
    assert all(p.grad.abs().sum() > 0 for name, p in model.named_parameters() if p.dim() > 1)
    model.eval()
    with torch.no_grad():
        f = model(clips)
        assert f.shape == (4, 2048)
        torch.testing.assert_close(model(clips.flip(1)), f, rtol=1e-3, atol=1e-3)  # frame order
        torch.testing.assert_close(model(clips[[2, 3, 0, 1]]), f[[2, 3, 0, 1]])  # clips apart
    with pytest.raises(ValueError, match=r"clips \(B, T, 3, H, W\)"):
        model(clips[:, 0])


def test_no_device_is_hard_coded():
    """The whole forward runs on the meta device: nothing is built on a fixed device."""
    model = build_model(5, arch="iaunet_video", seq_len=2, pretrained=False).to("meta").eval()
    assert model(torch.empty(2, 2, 3, 64, 32, device="meta")).device.type == "meta"
