"""ABD-Net: Attentive but Diverse person re-ID (Chen et al., ICCV 2019).

The network of the released code (``torchreid/models/resnet.py``, arch ``resnet50``) with the
README's architecture flags (``--shallow-cam --abd-dan cam pam --abd-np 2``), restated in
``../shared/specs/abdnet.md`` §2; section numbers below refer to that spec.

The released code orders its two branches by iterating a ``frozenset``, so the order (and with it
the state_dict prefixes and the layout of the 3,072-d feature) changes with ``PYTHONHASHSEED``
(§2.7). Here the order is fixed: ``branches.0`` is the global branch, ``branches.1`` the attentive
branch. :func:`remap_original_state_dict` moves the keys of an original checkpoint to this order by
looking at what each branch holds.

One paper-vs-code divergence lives in the model and has a switch (default = the code):
``cam_softmax="code"`` weights channels with softmax(-E), as DANet's reference CAM does (it
subtracts the energy from its row maximum); ``"paper"`` uses softmax(+E) (§2.4).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.checkpoint import CheckpointError, load_checkpoint, load_state_dict_checked
from common.layers.resnet import build_resnet50

__all__ = ["ABDBranch", "ABDNet", "CAM", "DANetHead", "GlobalBranch", "PAM", "ReleasedCheckpoint",
           "build_model", "load_released_checkpoint", "read_released_checkpoint",
           "remap_original_state_dict"]


class CAM(nn.Module):
    """Channel attention (DANet's CAM, §2.4): out = softmax(∓E) A with E = A Aᵀ, then γ out + A.

    γ is a scalar initialised to 0, so the module starts as the identity.
    """

    def __init__(self, softmax="code"):
        super().__init__()
        if softmax not in ("code", "paper"):
            raise ValueError(f"cam_softmax must be 'code' or 'paper', got {softmax!r}")
        self.softmax = softmax
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        b, c, h, w = x.shape
        flat = x.reshape(b, c, h * w)
        energy = flat @ flat.transpose(1, 2)
        if self.softmax == "code":  # rowmax(E) - E: the row constant cancels, softmax(-E)
            energy = energy.max(dim=-1, keepdim=True).values - energy
        attention = F.softmax(energy, dim=-1)
        out = (attention @ flat).reshape(b, c, h, w)
        return self.gamma * out + x


class PAM(nn.Module):
    """Position attention (SAGAN style, §2.5): softmax over key positions of Q K, applied to V."""

    def __init__(self, channels):
        super().__init__()
        self.query_conv = nn.Conv2d(channels, channels // 8, kernel_size=1)
        self.key_conv = nn.Conv2d(channels, channels // 8, kernel_size=1)
        self.value_conv = nn.Conv2d(channels, channels, kernel_size=1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        b, c, h, w = x.shape
        query = self.query_conv(x).reshape(b, -1, h * w).transpose(1, 2)
        key = self.key_conv(x).reshape(b, -1, h * w)
        attention = F.softmax(query @ key, dim=-1)
        value = self.value_conv(x).reshape(b, c, h * w)
        out = (value @ attention.transpose(1, 2)).reshape(b, c, h, w)
        return self.gamma * out + x


class DANetHead(nn.Module):
    """conv5c (3x3, half width) -> attention -> conv52 (3x3) -> conv7 (Dropout2d, 1x1) (§2.3)."""

    def __init__(self, in_channels, out_channels, attention):
        super().__init__()
        inter = in_channels // 2
        self.conv5c = nn.Sequential(nn.Conv2d(in_channels, inter, 3, padding=1, bias=False),
                                    nn.BatchNorm2d(inter), nn.ReLU())
        self.attention_module = attention
        self.conv52 = nn.Sequential(nn.Conv2d(inter, inter, 3, padding=1, bias=False),
                                    nn.BatchNorm2d(inter), nn.ReLU())
        self.conv7 = nn.Sequential(nn.Dropout2d(0.1), nn.Conv2d(inter, out_channels, 1))

    def forward(self, x):
        return self.conv7(self.conv52(self.attention_module(self.conv5c(x))))


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


class DeepStage(nn.Module):
    """A branch's own copy of layer4 (``branches.{i}.0.backbone``)."""

    def __init__(self, layer4):
        super().__init__()
        self.backbone = copy.deepcopy(layer4)

    def forward(self, x):
        return self.backbone(x)


class GlobalBranch(nn.Module):
    """GAP -> Linear(2048, 1024) + BN + ReLU + Dropout(0.5) -> classifier (§2.2).

    The post-dropout 1,024-d vector is both the triplet and the retrieval feature.
    """

    def __init__(self, num_classes, dim=1024, dropout=0.5):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(2048, dim), nn.BatchNorm1d(dim), nn.ReLU(),
                                nn.Dropout(dropout))
        self.classifier = nn.Linear(dim, num_classes)

    def forward(self, x):
        feature = self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
        return [feature], [self.classifier(feature)], [feature], {}


class ABDBranch(nn.Module):
    """The attentive branch (§2.3): reduction, ``num_parts`` horizontal stripes, and on each the
    sum of three DANet heads (identity, CAM, PAM) through ``sum_conv``, then GAP."""

    def __init__(self, num_classes, dim=1024, num_parts=2, dan=("cam", "pam"),
                 cam_softmax="code"):
        super().__init__()
        unknown = set(dan) - {"cam", "pam"}
        if unknown:
            raise ValueError(f"abd_dan takes 'cam' and/or 'pam', got {sorted(unknown)}")
        self.num_parts, self.dan = num_parts, tuple(dan)
        self.reduction = nn.Sequential(nn.Conv2d(2048, dim, 1, bias=False), nn.BatchNorm2d(dim),
                                       nn.ReLU())
        half = dim // 2
        self.before_module = DANetHead(dim, dim, nn.Identity())
        self.cam_module = DANetHead(dim, dim, CAM(cam_softmax))
        self.pam_module = DANetHead(dim, dim, PAM(half))
        self.sum_conv = nn.Sequential(nn.Dropout2d(0.1), nn.Conv2d(dim, dim, 1))
        self.classifiers = nn.ModuleList(nn.Linear(dim, num_classes) for _ in range(num_parts))

    def forward(self, x):
        reduced = self.reduction(x)
        if not torch.jit.is_tracing() and reduced.shape[2] % self.num_parts:
            raise ValueError(f"the feature map height {reduced.shape[2]} is not divisible by "
                             f"abd_np={self.num_parts}; choose --height accordingly")
        maps = {"before": [], "cam": [], "pam": [], "after": []}
        features, logits = [], []
        for part, classifier in zip(reduced.chunk(self.num_parts, dim=2), self.classifiers):
            if self.dan:  # "before" is the identity head's output, not the raw part (§6.4)
                heads = [self.before_module(part)]
                maps["before"].append(heads[0])
                if "cam" in self.dan:
                    heads.append(self.cam_module(part))
                    maps["cam"].append(heads[-1])
                if "pam" in self.dan:
                    heads.append(self.pam_module(part))
                    maps["pam"].append(heads[-1])
                after = self.sum_conv(sum(heads))
            else:
                after = part
                maps["before"].append(part)
            maps["after"].append(after)
            feature = F.adaptive_avg_pool2d(after, 1).flatten(1)
            features.append(feature)
            logits.append(classifier(feature))
        return features, logits, features, maps


def _init_head(module):
    """The released ``init_params`` for the heads (§2.6)."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(layer.weight, 1.0, 0.02)
            nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight, 0.0, 0.01)
            nn.init.zeros_(layer.bias)


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
        _init_head(global_head)
        _init_head(abd_head)
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


def remap_original_state_dict(state_dict):
    """Puts an original checkpoint's branches in this order: global ``branches.0``, attentive
    ``branches.1``, whichever order its PYTHONHASHSEED gave them (§2.7, §2.10).

    A branch is recognised by its head: ``fc.0.weight`` is global, ``reduction.0.weight`` is
    attentive. Keys are also stripped of a ``module.`` prefix. Keys of a branch that cannot be
    recognised are left as they are, so the loader reports them.
    """
    state = {key.removeprefix("module."): value for key, value in state_dict.items()}
    target = {}
    for index in ("0", "1"):
        if f"branches.{index}.1.fc.0.weight" in state:
            target[index] = "0"
        elif f"branches.{index}.1.reduction.0.weight" in state:
            target[index] = "1"
    remapped = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "branches" and parts[1] in target:
            parts[1] = target[parts[1]]
        remapped[".".join(parts)] = value
    return remapped


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
    return ReleasedCheckpoint(Path(path), remap_original_state_dict(state),
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
