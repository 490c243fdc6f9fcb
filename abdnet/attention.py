"""ABD-Net's attention, read from the network by forward hooks (``common.eval.attention``).

The released code's ``feature_maps`` (``../shared/specs/abdnet.md`` §2.3-§2.5; its O.F.
regulariser reads them): the shallow CAM's output after layer1, and in the attentive branch
the outputs of the CAM and PAM heads (``cam_module``, ``pam_module``: conv5c -> attention ->
conv52 -> conv7), which run once per horizontal stripe; the stripes are stacked back, top
first. Each output (N, C, h, w) is drawn as torchreid's activation map
(:func:`common.eval.attention.activation_map`), as the paper's attention figures are.

At the README input 384x128 the shallow CAM map is 96x32 and the CAM / PAM maps 24x8.
"""

from __future__ import annotations

import torch.nn as nn

from common.eval.attention import AttentionTap, activation_map
from common.layers import two_branch

__all__ = ["GRADCAM_LAYER", "attention_taps"]

# Grad-CAM's layer: the shared trunk's layer3 (the first output of ``common_branch``), before
# the global and the attentive branch split.
GRADCAM_LAYER = "common_branch"


def attention_taps(network):
    """The taps of an :class:`abdnet.model.ABDNet`:

    - ``shallow_cam``: activation map of the CAM after layer1, (N, 1, H/4, W/4), unit L2 norm
      (only with ``shallow_cam``);
    - ``cam`` / ``pam``: activation maps of the attentive branch's CAM / PAM head, stripes
      stacked, (N, 1, H/16, W/16), unit L2 norm (only for the heads in ``abd_dan``;
      :func:`common.layers.two_branch.attention_taps`).
    """
    taps = []
    if not isinstance(network.common_branch.shallow_cam, nn.Identity):
        taps.append(AttentionTap("shallow_cam", ("common_branch.shallow_cam",),
                                 lambda outputs: activation_map(outputs[0]), ("shallow CAM",),
                                 description="activation map of the CAM after layer1"))
    return taps + two_branch.attention_taps(network)
