"""IAUnet's and IANet's attention, read from the network by forward hooks
(``common.eval.attention``).

IAUnet: the SIAU part maps A = sigmoid(BN(conv1x1(Z))) of the IAU blocks after layer2 and
layer3 (``IAU2.sa``, ``IAU3.sa``; ``../shared/specs/iaunet.md`` §3.2), four per image (head,
upper body, lower body, shoes), the maps the part-mask loss supervises in training. IANet: the
IA blocks appended to layer2 and layer3 (``layer2.4``, ``layer3.6``, §3.4) have no map of their
own; their outputs are drawn as torchreid's activation maps.

At the README input 256x128 the layer2 maps are 32x16 and the layer3 maps 16x8.
"""

from __future__ import annotations

from common.eval.attention import AttentionTap, activation_map
from iaunet.model import PARTS, IANet, IAUnet

__all__ = ["GRADCAM_LAYER", "attention_taps"]

# Grad-CAM's layer: the last stage, whose pooled output is the retrieval feature.
GRADCAM_LAYER = "layer4"


def attention_taps(network):
    """The taps of an image network:

    - :class:`IAUnet`: ``parts_layer2``, ``parts_layer3``: (N, 4, H/8, W/8) and (N, 4, H/16,
      W/16) part maps in (0, 1), labelled head, upper, lower, shoes;
    - :class:`IANet`: ``ia_layer2``, ``ia_layer3``: activation maps of the IA blocks' outputs,
      (N, 1, H/8, W/8) and (N, 1, H/16, W/16), unit L2 norm.

    Raises:
        ValueError: the video IAUnet (its maps are per frame of a clip; draw frames with the
            image network).
    """
    if isinstance(network, IAUnet):
        return [AttentionTap(f"parts_{stage}", (f"{block}.sa",), lambda outputs: outputs[0],
                             PARTS, value_range=(0.0, 1.0), unit="part map (sigmoid)",
                             description=f"SIAU part maps of the IAU block after {stage}")
                for stage, block in (("layer2", "IAU2"), ("layer3", "IAU3"))]
    if isinstance(network, IANet):
        return [AttentionTap(f"ia_{stage}", (path,), lambda outputs: activation_map(outputs[0]),
                             ("IA block",),
                             description=f"activation map of the IA block after {stage}")
                for stage, path in (("layer2", "layer2.4"), ("layer3", "layer3.6"))]
    raise ValueError(f"attention taps are defined for the image networks IAUnet and IANet, not "
                     f"{type(network).__name__}")
