"""IAB-Net's attention, read from the network by forward hooks (``common.eval.attention``).

COAB's spatial maps (``../shared/specs/iabnet.md`` §3.1-§3.2): the map sigmoid(BN(conv7x7([max_c
x, mean_c x]))) by which each COAB's spatial gate multiplies its input, read from the gate's
``spatial`` conv + BN and passed through the sigmoid, as ``SpatialGate.forward`` does. Drawn
for the shallow CBAM after layer1 and for the last bottleneck of each ResNet stage (layer4 in
both branches' copies); then the CASA branch's CAM and PAM heads
(:func:`common.layers.two_branch.attention_taps`).

At the README input 384x128 (last stride 2) the maps are 96x32 (shallow, layer1), 48x16,
24x8 and 12x4; the CAM / PAM maps 12x4.
"""

from __future__ import annotations

import torch

from common.eval.attention import AttentionTap
from common.layers import two_branch

__all__ = ["COAB_BLOCKS", "GRADCAM_LAYER", "attention_taps"]

GRADCAM_LAYER = "common_branch"

# tap name -> the COAB whose spatial map it reads
COAB_BLOCKS = {
    "coab_layer1": "common_branch.backbone1.4.2.coab",
    "coab_layer2": "common_branch.backbone2.0.3.coab",
    "coab_layer3": "common_branch.backbone2.1.5.coab",
    "coab_layer4_global": "branches.0.0.backbone.2.coab",
    "coab_layer4_casa": "branches.1.0.backbone.2.coab",
}


def _spatial_gate(outputs):
    return torch.sigmoid(outputs[0])


def attention_taps(network):
    """The taps of an :class:`iabnet.model.IABNet`:

    - ``coab_shallow`` (with ``shallow_cam``) and ``coab_layer1`` ... ``coab_layer4_casa``: the
      spatial gate of a COAB, (N, 1, h, w) in (0, 1), h, w the block's output size;
    - ``cam`` / ``pam``: ABD-Net's activation maps of the CASA heads, (N, 1, H/32, W/32).
    """
    blocks = dict(COAB_BLOCKS)
    if hasattr(network.common_branch.shallow_cam, "_cam_module"):
        blocks = {"coab_shallow": "common_branch.shallow_cam._cam_module", **blocks}
    taps = [AttentionTap(name, (f"{path}.SpatialGate.spatial",), _spatial_gate, ("spatial gate",),
                         value_range=(0.0, 1.0), unit="spatial gate (sigmoid)",
                         description=f"COAB spatial map of {path}")
            for name, path in blocks.items()]
    return taps + two_branch.attention_taps(network)
