"""LAG-Net's attention, read from the network by forward hooks (``common.eval.attention``).

The Local Attention System (``../shared/specs/lagnet.md`` §3.2; released ``model/lag.py``) makes
2,048 maps from the LA stream (``attentions``: 1x1 conv + BN + ReLU) and keeps, per image, the
M = ``num_attentions`` maps with the largest spatial sums (``select_top_maps``), which the LA
module adds to the stream's features. The tap reads the 2,048 maps and applies the network's
own selection, so the maps drawn are those the retrieval feature used. BA-DropBlock's pick among
them is random and only in training; evaluation does not drop, so it is not drawn.

At the README input 384x128 the maps are 24x8 (the LA stream has stride 16).
"""

from __future__ import annotations

from common.eval.attention import AttentionTap
from lagnet.model import select_top_maps

__all__ = ["GRADCAM_LAYER", "attention_taps"]

# Grad-CAM's layer: the shared trunk (layer3's first block), before the three streams split,
# so the gradient of the whole 3,584-d feature reaches it.
GRADCAM_LAYER = "backbone"


def attention_taps(network):
    """The taps of a :class:`lagnet.model.LAG`:

    - ``local_attention``: the M selected LAS maps, (N, M, H/16, W/16), largest spatial sum
      first, values >= 0 (after ReLU), unitless.
    """
    def selected(outputs):
        return select_top_maps(outputs[0], network.num_attentions)

    labels = tuple(f"LAS map {k + 1}" for k in range(network.num_attentions))
    return [AttentionTap("local_attention", ("attentions",), selected, labels,
                         unit="LAS map (after ReLU)",
                         description="the M LAS maps kept by select_top_maps (lagnet.md §3.2)")]
