"""IAUnet and IANet against the spec's counts, names and equations (iaunet.md §3, §7, §8)."""

import math

import pytest
import torch

from iaunet.model import IABlock, IAU, build_model


def count(module):
    return sum(p.numel() for p in module.parameters())


def shapes(model):
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def test_iaunet_counts_names_and_shapes(original_state_dict):
    model = build_model(751, pretrained=False)
    assert count(model) == 29_003_085
    assert count(model) - count(model.classifier) == 27_464_286
    assert (count(model.IAU2), count(model.IAU3)) == (793_103, 3_159_055)
    assert shapes(model) == original_state_dict("original_state_dict_iaunet.txt")
    assert model.IAU3.W2[1].weight.abs().sum() == 0  # zero-initialised: identity at start
    model.train()
    logits, feature, maps = model(torch.randn(2, 3, 256, 128))
    assert logits.shape == (2, 751) and feature.shape == (2, 2048)
    assert [m.shape for m in maps] == [(2, 4, 32, 16), (2, 4, 16, 8)]
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 256, 128)).shape == (1, 2048)


def test_ianet_counts_names_and_shapes(original_state_dict):
    model = build_model(751, arch="ianet", pretrained=False)
    assert count(model) == 25_057_071
    assert count(model) - count(model.classifier) == 23_518_272
    assert shapes(model) == original_state_dict("original_state_dict_ianet.txt")
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 256, 128)).shape == (1, 2048)
    with pytest.raises(ValueError, match="location prior is built for a"):
        model(torch.randn(1, 3, 128, 64))


def bn_eval(bn, x):
    """BatchNorm with its running statistics, written out."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return ((x - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + bn.eps)
            * bn.weight.view(shape) + bn.bias.view(shape))


def test_iau_starts_as_the_identity_and_matches_the_direct_formula():
    torch.manual_seed(0)
    block = IAU(8).eval()
    x = torch.randn(2, 8, 3, 2)
    torch.testing.assert_close(block(x)[0], x)
    with torch.no_grad():
        for bn in (block.W1[1], block.W2[1]):
            bn.weight.normal_()
            bn.bias.normal_()
    out, attention = block(x)
    b, c, n, k = 2, 8, 6, 4
    flat = x.reshape(b, c, n)
    y = torch.softmax(flat @ flat.transpose(1, 2), -1) @ flat
    z = x + bn_eval(block.W1[1], block.W1[0](y.reshape(b, c, 3, 2)))
    a = torch.sigmoid(bn_eval(block.sa.conv.bn, block.sa.conv.conv(z)))
    torch.testing.assert_close(attention, a)
    g_w, g_b = block.g.weight[:, :, 0, 0], block.g.bias
    expected = []
    for i in range(b):
        zi = z[i].reshape(c, n)
        parts = [(a[i, p].reshape(n) * zi).sum(1) for p in range(k)]  # attention-weighted sums
        nodes = [g_w @ v + g_b for v in parts]
        u = g_w @ zi.mean(1) + g_b
        rel_w, rel_b = block.SIAU.module_w.relation[0].weight[0, :, 0, 0], block.SIAU.module_w.relation[0].bias
        rel_bn = block.SIAU.module_w.relation[1]
        scores = torch.stack([torch.stack([
            bn_eval(rel_bn, (rel_w @ torch.cat([(nodes[p] - nodes[q]).abs(), u]) + rel_b).view(1, 1))[0, 0]
            - (1e8 if p == q else 0.0) for q in range(k)]) for p in range(k)])
        weights = torch.softmax(scores, dim=1)
        fsm = block.SIAU.module_l.fsm
        updated = [torch.relu(bn_eval(fsm[1], (fsm[0].weight[:, :, 0, 0] @ torch.cat(
            [nodes[p], sum(weights[p, q] * nodes[q] for q in range(k))]) + fsm[0].bias)[None])[0])
            for p in range(k)]
        readout = torch.cat([torch.stack(updated).mean(0), u])
        w2 = bn_eval(block.W2[1], (block.W2[0].weight[:, :, 0, 0] @ readout + block.W2[0].bias)[None])[0]
        expected.append(z[i] + w2[:, None, None])
    torch.testing.assert_close(out, torch.stack(expected), rtol=1e-4, atol=1e-4)


def test_ia_block_against_the_direct_formula():
    torch.manual_seed(0)
    block = IABlock(4, (3, 2), alpha_x=1.0, alpha_y=2.0).eval()
    x = torch.randn(1, 4, 3, 2)
    torch.testing.assert_close(block(x), x)  # zero-initialised BNs
    with torch.no_grad():
        block.W1.weight.fill_(0.5)
        block.W2.weight.fill_(2.0)
    flat = x.reshape(4, 6)
    positions = [(r, col) for r in range(3) for col in range(2)]
    prior = torch.tensor([[-((ci - cj) ** 2 / 2.0 + (ri - rj) ** 2 / 8.0) for rj, cj in positions]
                          for ri, ci in positions]).softmax(1)
    affinity = torch.softmax(torch.softmax(flat.T @ flat / math.sqrt(4), 1) * prior, 1)
    x1 = flat + 0.5 * (flat @ affinity.T) / math.sqrt(1 + 1e-5)
    x2 = x1 + 2.0 * (torch.softmax(x1 @ x1.T, 1) @ x1) / math.sqrt(1 + 1e-5)
    torch.testing.assert_close(block(x).reshape(4, 6), x2)


@pytest.mark.parametrize("arch", ["iaunet", "ianet"])
def test_tiny_trace_and_export(arch):
    torch.manual_seed(0)
    options = {"input_size": (64, 32)} if arch == "ianet" else {}
    model = build_model(5, arch=arch, pretrained=False, **options).eval()
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(torch.jit.trace(model, x)(x), expected)
        torch.testing.assert_close(torch.export.export(model, (x,)).module()(x), expected)
    with pytest.raises(ValueError, match="iaunet or ianet"):
        build_model(5, arch="iabnet", pretrained=False)
