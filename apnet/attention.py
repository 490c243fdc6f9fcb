"""APNet's per-level attention, read from the network by forward hooks
(``common.eval.attention``).

The pyramid after the last stage (``layer4``, the map the retrieval feature pools;
``../shared/specs/apnet.md`` §4.2-§4.4) has one module per level: ``att5`` (level 1),
``att_s5`` (level 2), ``att_ss5`` (level 3).

- APNet-C (``agent="se"``, released): the levels attend over channels (SE, SAMS over 2 / 4
  groups) and have no spatial map; a level is drawn as torchreid's activation map of its
  module's output.
- APNet-S (``agent="rga_s"``): a level's map is the one its RGA-S agents multiply the features
  by, sigmoid(W) of each stripe's agent (its ``W_spatial`` output passed through the sigmoid, as
  ``RGASpatial.attention_map`` does), the stripes stacked top first.

At the README input 384x192 the maps are 24x12.
"""

from __future__ import annotations

import torch

from common.eval.attention import AttentionTap, activation_map, stripes_stacked

__all__ = ["GRADCAM_LAYER", "LEVEL_MODULES", "attention_taps"]

# Grad-CAM's layer: the last stage (layer4), before its pyramid.
GRADCAM_LAYER = "base_5"

LEVEL_MODULES = {1: "att5", 2: "att_s5", 3: "att_ss5"}


def _stripe_gates(outputs):
    return torch.sigmoid(stripes_stacked(outputs))


def attention_taps(network):
    """The taps of an :class:`apnet.model.APNet`, one per pyramid level (none at level 0):

    - APNet-C: ``level1`` ... ``level<L>``: activation maps of the level's output after layer4,
      (N, 1, H/16, W/16) at last stride 1, unit L2 norm;
    - APNet-S: ``level1`` ... : the RGA-S maps, (N, 1, H/16, W/16) in (0, 1).
    """
    taps = []
    for level in range(1, network.level + 1):
        path = LEVEL_MODULES[level]
        module = network.get_submodule(path)
        if hasattr(module, "agents"):
            taps.append(AttentionTap(
                f"level{level}", tuple(f"{path}.agents.{k}.W_spatial"
                                       for k in range(len(module.agents))),
                _stripe_gates, (f"level {level} RGA-S",), value_range=(0.0, 1.0),
                unit="RGA-S gate (sigmoid)",
                description=f"RGA-S maps of level {level} ({len(module.agents)} stripes)"))
        else:
            taps.append(AttentionTap(
                f"level{level}", (path,), lambda outputs: activation_map(outputs[0]),
                (f"level {level}",),
                description=f"activation map of level {level}'s output ({path})"))
    return taps
