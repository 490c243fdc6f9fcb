"""LAG-Net's attention tap (lagnet/attention.py): the M LAS maps of the documented shape, in the
network's own order."""

import pytest
import torch

from common.eval.attention import read_attention
from lagnet.attention import attention_taps
from lagnet.model import build_model


@pytest.mark.slow
def test_the_local_attention_tap_gives_the_m_selected_maps_largest_first():
    torch.manual_seed(0)
    network = build_model(10, num_attentions=4, pretrained=False).eval()
    images = torch.randn(2, 3, 64, 32)
    taps = attention_taps(network)
    assert [tap.name for tap in taps] == ["local_attention"] and len(taps[0].labels) == 4
    maps = read_attention(network, taps, images)["local_attention"]
    assert maps.shape == (2, 4, 64 // 16, 32 // 16)  # (N, M, H/16, W/16)
    sums = maps.sum(dim=(2, 3))
    assert (sums[:, :-1] >= sums[:, 1:]).all() and (maps >= 0).all()
    # the maps are the largest-sum maps among all 2,048 the attention module made
    with torch.no_grad():
        everything = network.attentions(network.la_stream(network.backbone(images)))
    all_sums = everything.sum(dim=(2, 3)).sort(dim=1, descending=True).values
    assert torch.allclose(sums, all_sums[:, :4], rtol=1e-5)
