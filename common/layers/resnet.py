"""ResNet-50 with torchvision's state_dict names, a ``last_stride`` option, and offline weights.

The five methods all start from torchvision's ImageNet ResNet-50 (v1.5: the stride sits on the
3x3 conv). ``last_stride=1`` removes the downsampling of ``layer4`` (the "last stride" trick):
a 256x128 input then gives a 16x8 map instead of 8x4.

Weights are never downloaded. They come from an explicit path, or from the torch hub cache
(``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``), where torchvision
saves them; :class:`PretrainedWeightsError` says how to get them when neither has them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.models import resnet50

from common.checkpoint import load_state_dict_checked, read_state_dict

__all__ = ["IMAGENET_WEIGHT_FILES", "PretrainedWeightsError", "build_resnet50",
           "find_imagenet_weights", "remove_stage_stride"]

# torchvision's IMAGENET1K_V1 file under its current and its pre-0.13 name.
IMAGENET_WEIGHT_FILES = ("resnet50-0676ba61.pth", "resnet50-19c8e357.pth")
WEIGHTS_URL = "https://download.pytorch.org/models/resnet50-0676ba61.pth"


class PretrainedWeightsError(FileNotFoundError):
    """ImageNet weights were asked for and are not on this machine."""


def _hub_checkpoint_dir():
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_imagenet_weights(path=None):
    """The path of the ImageNet ResNet-50 weights: ``path`` if given, else the hub cache."""
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise PretrainedWeightsError(f"ImageNet weights file {path} does not exist")
        return path
    for name in IMAGENET_WEIGHT_FILES:
        candidate = _hub_checkpoint_dir() / name
        if candidate.is_file():
            return candidate
    raise PretrainedWeightsError(
        f"ImageNet ResNet-50 weights not found in {_hub_checkpoint_dir()} "
        f"(looked for {', '.join(IMAGENET_WEIGHT_FILES)}). Nothing is downloaded at run time. "
        f"Get them once on a machine with internet: python -c \"import torchvision; "
        f"torchvision.models.resnet50(weights='IMAGENET1K_V1')\" (this saves {IMAGENET_WEIGHT_FILES[0]} "
        f"in the hub cache; copy it to the same folder here), or download {WEIGHTS_URL} and pass "
        f"its path. To train from scratch instead, use the no-pretrained switch.")


def build_resnet50(last_stride=2, pretrained=True, weights_path=None):
    """torchvision's ResNet-50 (``conv1`` ... ``layer4``, ``avgpool``, ``fc``).

    Args:
        last_stride: 2 (torchvision) or 1 (no downsampling in ``layer4``).
        pretrained: load ImageNet weights (from ``weights_path`` or the hub cache).
        weights_path: explicit weights file; implies ``pretrained``.
    """
    if last_stride not in (1, 2):
        raise ValueError(f"last_stride must be 1 or 2, got {last_stride}")
    model = resnet50(weights=None)
    if pretrained or weights_path is not None:
        path = find_imagenet_weights(weights_path)
        state = read_state_dict(path)[0]
        load_state_dict_checked(model, state, source=f"ImageNet weights {path}")
    if last_stride == 1:
        remove_stage_stride(model.layer4)
    return model


def remove_stage_stride(stage):
    """Sets the stride of a ResNet stage (e.g. ``layer4``) to 1 in place and returns it.

    In v1.5 bottlenecks the stride sits on the first block's 3x3 conv and on its 1x1 downsample
    conv; no weight changes shape, so ImageNet weights load either way.
    """
    stage[0].conv2.stride = (1, 1)
    stage[0].downsample[0].stride = (1, 1)
    return stage

