"""The two-branch network frame of ABD-Net (Chen et al., ICCV 2019), which IAB-Net reuses with
another backbone and shallow module (``../shared/specs/abdnet.md`` §2.1-§2.3, §2.6, §2.7;
``iabnet.md`` §3.3).

A :class:`TwoBranchNet` has ``common_branch`` (the shared trunk) and ``branches``, a ModuleList of
two ``Sequential(DeepStage, head)``: :class:`GlobalBranch` first, then :class:`AttentiveBranch`
(ABD-Net's "ABD" branch, IAB-Net's "CASA" branch). The originals ordered the two by iterating a
``frozenset``, so a checkpoint may hold them either way round; :func:`remap_branch_order` puts
its keys in this order.

The frame also states what its training recipe needs from it: :data:`HEAD_MODULES` (the modules
trained in the frozen-backbone warm-up), :data:`CLASSIFIER_KEY` (the key that counts the classes),
:meth:`TwoBranchNet.orthogonality_convs` (the convs an O.W. penalty reads) and
:func:`attention_taps` (its attention maps, for figures).
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.checkpoint import strip_parallel_prefix
from common.eval.attention import AttentionTap, activation_map, stripes_stacked
from common.layers.danet import CAM, PAM, DANetHead

__all__ = ["AttentiveBranch", "CLASSIFIER_KEY", "CommonBranch", "DeepStage", "GlobalBranch",
           "HEAD_MODULES", "TwoBranchNet", "attention_taps", "init_head", "remap_branch_order"]

# A module whose name contains one of these is a head or an attention module: it trains in the
# frozen-backbone warm-up (abdnet.md §4.3).
HEAD_MODULES = ("classifier", "fc", "reduction", "cam_module", "pam_module", "sum_conv",
                "before_module")
# The global classifier: its rows are the training identities.
CLASSIFIER_KEY = "branches.0.1.classifier.weight"


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


class AttentiveBranch(nn.Module):
    """The attentive branch (§2.3): reduction, ``num_parts`` horizontal stripes, and on each the
    sum of three DANet heads (identity, CAM, PAM) through ``sum_conv``, then GAP.

    Args:
        num_classes: training identities (one classifier per stripe).
        dim: the reduced channel count (``--abd-dim``).
        num_parts: horizontal stripes (``--abd-np``).
        dan: the attention heads, a subset of ``("cam", "pam")`` (``--abd-dan``); ``()`` for none.
        cam_softmax: ``"code"`` (softmax(-E), released) or ``"paper"`` (softmax(+E)), §2.4.
    """

    def __init__(self, num_classes, dim=1024, num_parts=2, dan=("cam", "pam"),
                 cam_softmax="code"):
        super().__init__()
        unknown = set(dan) - {"cam", "pam"}
        if unknown:
            raise ValueError(f"the attention heads are 'cam' and/or 'pam', got {sorted(unknown)}")
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
            raise ValueError(f"the feature map height {reduced.shape[2]} does not split into "
                             f"{self.num_parts} stripes; choose the input height accordingly")
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


def init_head(module):
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


class CommonBranch(nn.Module):
    """Stem + layer1, the shallow attention module, then layer2 + layer3 (abdnet.md §2.1).

    Returns the layer3 map and the shallow module's output (the O.F. ``intermediate`` map).
    """

    def __init__(self, resnet, shallow):
        super().__init__()
        self.backbone1 = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool,
                                       resnet.layer1)
        self.shallow_cam = shallow
        self.backbone2 = nn.Sequential(resnet.layer2, resnet.layer3)

    def forward(self, x):
        intermediate = self.shallow_cam(self.backbone1(x))
        return self.backbone2(intermediate), intermediate


class TwoBranchNet(nn.Module):
    """The shared trunk, then the global and the attentive branch, each on its own copy of
    layer4 (abdnet.md §2.1-§2.3, §2.7).

    Forward: (B, 3, H, W) -> ``(predict, logits, triplet_features, feature_maps)`` in training
    mode and the ``predict`` vector (B, global_dim + num_parts * part_dim: global, then the
    parts top to bottom) in eval mode.

    Args:
        resnet: the backbone with ``conv1`` ... ``layer4`` (its layer4 is copied per branch).
        shallow: the module after layer1 (``nn.Identity()`` for none).
        num_classes: training identities.
        dan, num_parts, part_dim, cam_softmax: the attentive branch's (:class:`AttentiveBranch`).
        global_dim, dropout: the global branch's (:class:`GlobalBranch`).
    """

    def __init__(self, resnet, shallow, num_classes, dan=("cam", "pam"), num_parts=2,
                 global_dim=1024, part_dim=1024, dropout=0.5, cam_softmax="code"):
        super().__init__()
        self.common_branch = CommonBranch(resnet, shallow)
        global_head = GlobalBranch(num_classes, global_dim, dropout)
        attentive_head = AttentiveBranch(num_classes, part_dim, num_parts, dan, cam_softmax)
        init_head(global_head)
        init_head(attentive_head)
        self.branches = nn.ModuleList([nn.Sequential(DeepStage(resnet.layer4), global_head),
                                       nn.Sequential(DeepStage(resnet.layer4), attentive_head)])

    @property
    def attentive_branch(self):
        """The attentive branch's head (``branches.1.1``)."""
        return self.branches[1][1]

    def orthogonality_convs(self, scope="stem_only"):
        """The convs an O.W. penalty reads (abdnet.md §3.4): the stem conv only
        (``"stem_only"``, what the released code's layer collector reaches) or every conv of
        the trunk and of both layer4 copies (``"all"``, the paper)."""
        if scope == "stem_only":
            return [self.common_branch.backbone1[0]]
        if scope != "all":
            raise ValueError(f"the O.W. scope is 'stem_only' or 'all', got {scope!r}")
        trunk = [self.common_branch.backbone1, self.common_branch.backbone2,
                 *(branch[0] for branch in self.branches)]
        return [layer for part in trunk for layer in part.modules()
                if isinstance(layer, nn.Conv2d)]

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


def remap_branch_order(state_dict):
    """Puts an original checkpoint's branches in this order: global ``branches.0``, attentive
    ``branches.1``, whichever order its PYTHONHASHSEED gave them (§2.7, §2.10).

    A branch is recognised by its head: ``fc.0.weight`` is global, ``reduction.0.weight`` is
    attentive. Keys are also stripped of a ``module.`` prefix. Keys of a branch that cannot be
    recognised are left as they are, so the loader reports them.
    """
    state = strip_parallel_prefix(state_dict)
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


def _stacked_activation(outputs):
    return activation_map(stripes_stacked(outputs))


def attention_taps(network):
    """The attentive branch's taps of a :class:`TwoBranchNet` (read by forward hooks,
    :mod:`common.eval.attention`): ``cam`` / ``pam``, the activation maps of its CAM / PAM head
    (conv5c -> attention -> conv52 -> conv7), run once per horizontal stripe and stacked back top
    first: (N, 1, H/16, W/16) at last stride 1 (H/32, W/32 at stride 2), unit L2 norm; only the
    heads the branch has (abdnet.md §2.3-§2.5)."""
    return [AttentionTap(name, (f"branches.1.1.{name}_module",), _stacked_activation,
                         (name.upper(),),
                         description=f"activation map of the attentive branch's {name.upper()} "
                                     f"head, stripes stacked")
            for name in ("cam", "pam") if name in network.attentive_branch.dan]
