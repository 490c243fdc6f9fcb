"""ABD-Net: Attentive but Diverse person re-ID (Chen et al., ICCV 2019).

The network of the released code (``torchreid/models/resnet.py``, arch ``resnet50``) with the
README's architecture flags (``--shallow-cam --abd-dan cam pam --abd-np 2``), restated in
``../shared/specs/abdnet.md`` §2; section numbers below refer to that spec.

The released code orders its two branches by iterating a ``frozenset``, so the order (and with it
the state_dict prefixes and the layout of the 3,072-d feature) changes with ``PYTHONHASHSEED``
(§2.7). Here the order is fixed: ``branches.0`` is the global branch, ``branches.1`` the attentive
branch. :func:`read_released_checkpoint` moves the keys of an original checkpoint to this order by
looking at what each branch holds (``common.layers.abd_heads.remap_branch_order``).

The branches, the DANet modules and the O.F./O.W. regularisers are shared with IAB-Net and live in
``common/`` (``layers/abd_heads.py``, ``layers/danet.py``, ``regularizers.py``). One
paper-vs-code divergence lives in the model and has a switch (default = the code):
``cam_softmax="code"`` weights channels with softmax(-E), as DANet's reference CAM does;
``"paper"`` uses softmax(+E) (§2.4).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from common.checkpoint import CheckpointError, load_checkpoint, load_state_dict_checked
from common.layers.abd_heads import (ABDBranch, DeepStage, GlobalBranch, init_head,
                                     remap_branch_order)
from common.layers.danet import CAM
from common.layers.resnet import build_resnet50

__all__ = ["ABDNet", "CommonBranch", "ReleasedCheckpoint", "ShallowCAM", "build_model",
           "load_released_checkpoint", "read_released_checkpoint"]


class ShallowCAM(nn.Module):
    """The CAM on layer1's output, without a head (``--shallow-cam``, §2.1)."""

    def __init__(self, cam_softmax="code"):
        super().__init__()
        self._cam_module = CAM(cam_softmax)

    def forward(self, x):
        return self._cam_module(x)


class CommonBranch(nn.Module):
    """Stem + layer1, the shallow CAM, then layer2 + layer3 (§2.1).

    Returns the layer3 map and the shallow-CAM output (the O.F. ``intermediate`` map).
    """

    def __init__(self, resnet, shallow_cam=True, cam_softmax="code"):
        super().__init__()
        self.backbone1 = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool,
                                       resnet.layer1)
        self.shallow_cam = ShallowCAM(cam_softmax) if shallow_cam else nn.Identity()
        self.backbone2 = nn.Sequential(resnet.layer2, resnet.layer3)

    def forward(self, x):
        intermediate = self.shallow_cam(self.backbone1(x))
        return self.backbone2(intermediate), intermediate


class ABDNet(nn.Module):
    """ABD-Net (§2). Forward returns ``(predict, logits, triplet_features, feature_maps)`` in
    training mode (§2.7) and the 3,072-d ``predict`` (global, then the parts) in eval mode.

    Args:
        num_classes: training identities.
        shallow_cam: the CAM after layer1 (``--shallow-cam``).
        abd_dan: the attention heads of the attentive branch (``--abd-dan``), ``()`` for none.
        abd_np: horizontal stripes (``--abd-np``).
        global_dim, abd_dim, dropout: ``--global-dim``, ``--abd-dim``, ``--dropout``.
        cam_softmax: ``"code"`` (softmax(-E), the default) or ``"paper"`` (softmax(+E)).
        pretrained / weights_path: ImageNet initialisation of the ResNet-50 (last stride 1).
    """

    def __init__(self, num_classes, shallow_cam=True, abd_dan=("cam", "pam"), abd_np=2,
                 global_dim=1024, abd_dim=1024, dropout=0.5, cam_softmax="code",
                 pretrained=True, weights_path=None):
        super().__init__()
        resnet = build_resnet50(last_stride=1, pretrained=pretrained, weights_path=weights_path)
        self.common_branch = CommonBranch(resnet, shallow_cam, cam_softmax)
        global_head = GlobalBranch(num_classes, global_dim, dropout)
        abd_head = ABDBranch(num_classes, abd_dim, abd_np, abd_dan, cam_softmax)
        init_head(global_head)
        init_head(abd_head)
        self.branches = nn.ModuleList([nn.Sequential(DeepStage(resnet.layer4), global_head),
                                       nn.Sequential(DeepStage(resnet.layer4), abd_head)])

    def forward(self, x):
        shared, intermediate = self.common_branch(x)
        predict, logits, triplet, maps = [], [], [], {"intermediate": [intermediate]}
        for branch in self.branches:
            features, branch_logits, branch_triplet, branch_maps = branch(shared)
            predict += features
            logits += branch_logits
            triplet += branch_triplet
            maps.update(branch_maps)
        predict = torch.cat(predict, dim=1)
        if not self.training:
            return predict
        return predict, tuple(logits), tuple(triplet), maps


def build_model(num_classes, **options):
    """An :class:`ABDNet`; ``options`` are its keyword arguments (defaults = the README's)."""
    return ABDNet(num_classes, **options)


@dataclass
class ReleasedCheckpoint:
    """An original ABD-Net file read by :func:`read_released_checkpoint`: its state_dict already
    in this model's branch order, and the ``rank1`` and ``epoch`` it records."""

    path: Path
    state_dict: dict
    rank1: float
    epoch: int

    @property
    def num_classes(self):
        """The width of the global classifier, or None when the file has none."""
        weight = self.state_dict.get("branches.0.1.classifier.weight")
        return None if weight is None else int(weight.shape[0])


def read_released_checkpoint(path):
    """Reads an original file (``{"state_dict", "rank1", "epoch"}``, §2.10; a bare state_dict and
    this folder's ``training_state.pth.tar`` are accepted too).

    ``rank1`` is a pickled NumPy scalar; it loads through common.checkpoint's allow-list, never
    through unrestricted unpickling.
    """
    checkpoint = load_checkpoint(path)
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path} holds no state_dict")
    state = checkpoint.get("state_dict", checkpoint.get("model", checkpoint))
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"{path} holds no state_dict (a dict of tensors under "
                              f"'state_dict')")
    return ReleasedCheckpoint(Path(path), remap_branch_order(state),
                              float(checkpoint.get("rank1", float("nan"))),
                              int(checkpoint.get("epoch", -1)))


def load_released_checkpoint(model, checkpoint):
    """Loads an original ABD-Net file (a path, or what :func:`read_released_checkpoint` returned)
    into ``model``, either branch order; returns ``{"rank1", "epoch"}`` as the file records them.

    Unlike the original loader, which skips keys that do not match, every missing or unexpected
    key, and every shape mismatch, is an error that lists them.
    """
    if not isinstance(checkpoint, ReleasedCheckpoint):
        checkpoint = read_released_checkpoint(checkpoint)
    load_state_dict_checked(model, checkpoint.state_dict, source=str(checkpoint.path),
                            hint=". Was it trained with the same architecture flags (--abd-dan, "
                                 "--abd-np, --shallow-cam) and class count?")
    return {"rank1": checkpoint.rank1, "epoch": checkpoint.epoch}
