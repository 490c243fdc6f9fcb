"""IAUnet's and IANet's attention taps (iaunet/attention.py): IAUnet's SIAU part maps, the maps
its training forward hands to the part-mask loss; IANet's IA blocks; documented shapes."""

import pytest
import torch

from common.eval.attention import read_attention
from iaunet.attention import attention_taps
from iaunet.model import PARTS, build_model


def test_part_map_taps_are_the_maps_the_mask_loss_supervises():
    torch.manual_seed(0)
    network = build_model(10, pretrained=False).train()  # training returns [A2, A3]
    images = torch.randn(2, 3, 64, 32)
    taps = attention_taps(network)
    assert [tap.name for tap in taps] == ["parts_layer2", "parts_layer3"]
    assert all(tap.labels == PARTS for tap in taps)
    maps = read_attention(network, taps, images)
    with torch.no_grad():
        supervised = network(images)[2]
    assert maps["parts_layer2"].shape == (2, 4, 64 // 8, 32 // 8)
    assert maps["parts_layer3"].shape == (2, 4, 64 // 16, 32 // 16)
    assert torch.allclose(maps["parts_layer2"], supervised[0], atol=1e-6)
    assert torch.allclose(maps["parts_layer3"], supervised[1], atol=1e-6)


def test_ianet_taps_its_ia_blocks_and_the_video_network_is_refused():
    network = build_model(10, arch="ianet", input_size=(64, 32), pretrained=False).eval()
    maps = read_attention(network, attention_taps(network), torch.randn(1, 3, 64, 32))
    assert {k: tuple(v.shape) for k, v in maps.items()} == {"ia_layer2": (1, 1, 8, 4),
                                                           "ia_layer3": (1, 1, 4, 2)}
    assert torch.allclose(maps["ia_layer2"].flatten().norm(), torch.tensor(1.0))
    with pytest.raises(ValueError, match="image networks"):
        attention_taps(build_model(10, arch="iaunet_video", pretrained=False))
