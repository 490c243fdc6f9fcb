"""DANet's CAM and PAM against direct formulas (abdnet.md §2.4-§2.5)."""

import pytest
import torch
import torch.nn.functional as F

from common.layers.danet import CAM, PAM


def test_attention_starts_as_the_identity():
    torch.manual_seed(0)
    x = torch.randn(2, 16, 3, 2)
    assert torch.equal(CAM()(x), x)
    assert torch.equal(PAM(16)(x), x)


@pytest.mark.parametrize("softmax, sign", [("code", -1.0), ("paper", 1.0)])
def test_cam_weights_channels_by_softmax_of_the_signed_energy(softmax, sign):
    torch.manual_seed(0)
    x = torch.randn(1, 4, 2, 3)
    cam = CAM(softmax)
    with torch.no_grad():
        cam.gamma.fill_(0.5)
    a = x.reshape(4, 6)
    expected = 0.5 * (F.softmax(sign * (a @ a.T), dim=1) @ a) + a
    torch.testing.assert_close(cam(x).reshape(4, 6), expected)


def test_pam_attends_over_positions():
    torch.manual_seed(0)
    pam = PAM(16)
    with torch.no_grad():
        pam.gamma.fill_(2.0)
    x = torch.randn(1, 16, 2, 3)
    q = pam.query_conv(x).reshape(2, 6)
    k = pam.key_conv(x).reshape(2, 6)
    v = pam.value_conv(x).reshape(16, 6)
    attention = F.softmax(q.T @ k, dim=1)  # rows: query positions, softmax over keys
    expected = 2.0 * (v @ attention.T) + x.reshape(16, 6)
    torch.testing.assert_close(pam(x).reshape(16, 6), expected)
