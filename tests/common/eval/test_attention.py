"""Forward-hook taps, activation maps and Grad-CAM (common/eval/attention.py), checked against
direct computations on tiny networks."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from common.eval.attention import (AttentionTap, AttentionTapError, activation_map, grad_cam,
                                   read_attention, stripes_stacked)


class StripeNet(nn.Module):
    """conv -> the same 1x1 ``head`` on each of two horizontal stripes -> GAP -> linear; ``side``
    runs on the conv's output but its result is discarded."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Conv2d(4, 4, 1)
        self.unused = nn.Conv2d(4, 4, 1)
        self.side = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        x = F.relu(self.conv(x))
        self.side(x)
        x = torch.cat([self.head(part) for part in x.chunk(2, dim=2)], dim=2)
        return self.fc(x.mean(dim=(2, 3)))


def test_activation_map_is_the_l2_normalised_mean_of_squares():
    features = torch.randn(2, 3, 4, 2)
    direct = (features ** 2).mean(dim=1).reshape(2, 8)
    direct = direct / direct.norm(dim=1, keepdim=True)
    assert torch.allclose(activation_map(features), direct.reshape(2, 1, 4, 2), atol=1e-6)


def test_a_tap_reads_every_stripe_of_a_module_and_leaves_no_hook():
    torch.manual_seed(0)
    net, images = StripeNet().eval(), torch.randn(2, 3, 8, 4)
    tap = AttentionTap("head", ("head",), lambda outputs: activation_map(stripes_stacked(outputs)))
    maps = read_attention(net, [tap], images)
    with torch.no_grad():
        x = F.relu(net.conv(images))
        direct = torch.cat([net.head(part) for part in x.chunk(2, dim=2)], dim=2)
    assert maps["head"].shape == (2, 1, 8, 4)
    assert torch.allclose(maps["head"], activation_map(direct), atol=1e-6)
    assert not net.head._forward_hooks and not net.conv._forward_hooks


def test_a_tap_on_a_missing_or_idle_module_is_named():
    net, images = StripeNet().eval(), torch.randn(1, 3, 8, 4)
    with pytest.raises(AttentionTapError, match="'gone'.*no module.*'nowhere'"):
        read_attention(net, [AttentionTap("gone", ("nowhere",), lambda o: o[0])], images)
    with pytest.raises(AttentionTapError, match="'idle'.*'unused' did not run"):
        read_attention(net, [AttentionTap("idle", ("unused",), lambda o: o[0])], images)
    assert not net.unused._forward_hooks


def test_grad_cam_matches_the_closed_form_on_a_conv_gap_linear_network():
    # f = W mean_pos(A) + b and S = f . stop_gradient(f): dS/dA_k = (f . W[:, k]) / (h w)
    torch.manual_seed(1)
    conv, fc = nn.Conv2d(3, 6, 3, padding=1), nn.Linear(6, 4)
    net = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), fc).eval()
    images = torch.randn(3, 3, 8, 4)
    cam = grad_cam(net, "1", images)
    with torch.no_grad():
        activations = F.relu(conv(images))
        feature = fc(activations.mean(dim=(2, 3)))
        alpha = feature @ fc.weight / (8 * 4)  # (N, C)
        direct = F.relu((alpha[:, :, None, None] * activations).sum(dim=1, keepdim=True))
    assert cam.shape == (3, 1, 8, 4)
    assert torch.allclose(cam, direct, rtol=1e-4, atol=1e-7)
    assert cam.max() > 0


def test_grad_cam_refuses_a_layer_that_runs_twice_or_does_not_reach_the_feature():
    net, images = StripeNet().eval(), torch.randn(1, 3, 8, 4)
    with pytest.raises(AttentionTapError, match="'head' ran 2 times"):
        grad_cam(net, "head", images)
    with pytest.raises(AttentionTapError, match="no such module"):
        grad_cam(net, "nowhere", images)
    with pytest.raises(AttentionTapError, match="'side' does not lead to the retrieval feature"):
        grad_cam(net, "side", images)
