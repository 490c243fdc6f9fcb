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

from common.eval.attention import AttentionTap, activation_map, stripes_stacked

__all__ = ["GRADCAM_LAYER", "attention_taps"]

# Grad-CAM's layer: the shared trunk's layer3 (the first output of ``common_branch``), before
# the global and the attentive branch split.
GRADCAM_LAYER = "common_branch"


def _stacked_activation(outputs):
    return activation_map(stripes_stacked(outputs))


def attention_taps(network):
    """The taps of a two-branch network (:class:`abdnet.model.ABDNet`, and IAB-Net's):

    - ``shallow_cam``: activation map of the CAM after layer1, (N, 1, H/4, W/4), unit L2 norm
      (only with ``shallow_cam``);
    - ``cam`` / ``pam``: activation maps of the attentive branch's CAM / PAM head, stripes
      stacked, (N, 1, H/16, W/16) at last stride 1 (H/32, W/32 at stride 2), unit L2 norm
      (only for the heads in ``abd_dan``).
    """
    taps = []
    if not isinstance(network.common_branch.shallow_cam, nn.Identity):
        taps.append(AttentionTap("shallow_cam", ("common_branch.shallow_cam",),
                                 lambda outputs: activation_map(outputs[0]), ("shallow CAM",),
                                 description="activation map of the CAM after layer1"))
    head = network.branches[1][1]
    for name in ("cam", "pam"):
        if name in head.dan:
            taps.append(AttentionTap(name, (f"branches.1.1.{name}_module",), _stacked_activation,
                                     (name.upper(),),
                                     description=f"activation map of the attentive branch's "
                                                 f"{name.upper()} head, stripes stacked"))
    return taps
