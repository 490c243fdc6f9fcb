"""IAB-Net's attention taps (iabnet/attention.py): each COAB's spatial gate, the very map the
gate multiplies its input by, and ABD-Net's CAM / PAM taps, of the documented shapes."""

import torch

from common.eval.attention import read_attention
from iabnet.attention import attention_taps
from iabnet.model import build_model


def test_coab_taps_are_the_spatial_gates_and_the_casa_heads_follow():
    torch.manual_seed(0)
    network = build_model(10, pretrained=False).eval()
    images = torch.randn(2, 3, 64, 32)
    taps = attention_taps(network)
    assert [tap.name for tap in taps] == [
        "coab_shallow", "coab_layer1", "coab_layer2", "coab_layer3", "coab_layer4_global",
        "coab_layer4_casa", "cam", "pam"]
    # the gate's input and output, to check gate = output / input where the input is not ~0
    gate = network.get_submodule("common_branch.backbone2.0.3.coab.SpatialGate")
    seen = []
    handle = gate.register_forward_hook(lambda module, inputs, output: seen.append(
        (inputs[0], output)))
    try:
        maps = read_attention(network, taps, images)
    finally:
        handle.remove()
    shapes = {name: tuple(value.shape) for name, value in maps.items()}
    assert shapes == {"coab_shallow": (2, 1, 16, 8), "coab_layer1": (2, 1, 16, 8),  # H/4
                      "coab_layer2": (2, 1, 8, 4), "coab_layer3": (2, 1, 4, 2),     # H/8, H/16
                      "coab_layer4_global": (2, 1, 2, 1), "coab_layer4_casa": (2, 1, 2, 1),
                      "cam": (2, 1, 2, 1), "pam": (2, 1, 2, 1)}                     # H/32
    for name in shapes:
        if name.startswith("coab"):
            assert ((maps[name] > 0) & (maps[name] < 1)).all(), name
    (gate_input, gate_output), = seen
    usable = gate_input.abs() > 1e-3
    ratio = gate_output / gate_input.where(usable, torch.ones_like(gate_input))
    expected = maps["coab_layer2"].expand_as(ratio)
    assert torch.allclose(ratio[usable], expected[usable], rtol=1e-3, atol=1e-5)
