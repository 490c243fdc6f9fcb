"""APNet's per-level attention taps (apnet/attention.py): APNet-C's levels as activation maps,
APNet-S's RGA-S maps stripe by stripe; documented shapes."""

import pytest
import torch

from apnet.attention import attention_taps
from apnet.model import build_model
from common.eval.attention import read_attention


def test_apnet_c_has_one_tap_per_level():
    network = build_model(10, level=2, input_size=(64, 32), pretrained=False).eval()
    taps = attention_taps(network)
    assert [(tap.name, tap.modules) for tap in taps] == [("level1", ("att5",)),
                                                         ("level2", ("att_s5",))]
    maps = read_attention(network, taps, torch.randn(1, 3, 64, 32))
    assert all(m.shape == (1, 1, 64 // 16, 32 // 16) for m in maps.values())
    assert attention_taps(build_model(10, level=0, pretrained=False)) == []


@pytest.mark.slow
def test_apnet_s_taps_are_the_rga_s_maps_of_every_stripe():
    torch.manual_seed(0)
    network = build_model(10, level=3, agent="rga_s", input_size=(64, 32),
                          pretrained=False).eval()
    taps = attention_taps(network)
    assert [len(tap.modules) for tap in taps] == [1, 2, 4]  # stripes at levels 1, 2, 3
    inputs = []
    handle = network.att_ss5.register_forward_pre_hook(lambda module, args: inputs.append(
        args[0]))
    try:
        maps = read_attention(network, taps, torch.randn(2, 3, 64, 32))
    finally:
        handle.remove()
    assert all(m.shape == (2, 1, 4, 2) for m in maps.values())
    with torch.no_grad():  # the level-3 module's own maps of its four stripes
        stripes = inputs[0].chunk(4, dim=2)
        direct = torch.cat([agent.attention_map(part)
                            for agent, part in zip(network.att_ss5.agents, stripes)], dim=2)
    assert torch.allclose(maps["level3"], direct, atol=1e-6)
