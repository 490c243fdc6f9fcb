"""ABD-Net's attention taps (abdnet/attention.py): the released ``feature_maps`` (shallow CAM,
CAM and PAM heads, stripes stacked), of the documented shapes."""

import torch

from abdnet.attention import attention_taps
from abdnet.model import build_model
from common.eval.attention import activation_map, read_attention


def test_the_taps_read_the_shallow_cam_and_the_cam_pam_feature_maps():
    torch.manual_seed(0)
    network = build_model(10, pretrained=False)
    images = torch.randn(2, 3, 64, 32)
    taps = attention_taps(network)
    assert [tap.name for tap in taps] == ["shallow_cam", "cam", "pam"]
    # in training mode the network also returns the maps its O.F. regulariser reads; the same
    # dropout draws (one seed) make the two forward passes equal
    network.train()
    torch.manual_seed(1)
    maps = read_attention(network, taps, images)
    torch.manual_seed(1)
    with torch.no_grad():
        feature_maps = network(images)[3]
    assert maps["shallow_cam"].shape == (2, 1, 64 // 4, 32 // 4)
    assert maps["cam"].shape == maps["pam"].shape == (2, 1, 64 // 16, 32 // 16)
    assert torch.allclose(maps["shallow_cam"], activation_map(feature_maps["intermediate"][0]))
    for name in ("cam", "pam"):
        stacked = torch.cat(feature_maps[name], dim=2)  # stripes top to bottom
        assert torch.allclose(maps[name], activation_map(stacked), atol=1e-6)


def test_only_the_heads_the_network_has_are_tapped():
    network = build_model(10, pretrained=False, shallow_cam=False, abd_dan=("pam",))
    assert [tap.name for tap in attention_taps(network)] == ["pam"]
