"""APNet: person re-identification via attention pyramid (Chen et al., IEEE TIP 2021).

The network of the released code (``modeling/baseline.py``), restated in ``../shared/specs/apnet.md``
§4 and §7; section numbers below refer to that spec. It is the BoT strong baseline (ResNet-50
without the stem ReLU, last stride 1, BNNeck) with an attention pyramid after each of the five
stages (the stem and layer1-4):

- level 1: an SE gate with 8 hidden units at every stage;
- level 2: a split-attend-merge-stack (SAMS) module over 2 channel groups, then a BatchNorm2d,
  applied before the SE gate (fine to coarse, as released).

``level`` 0, 1 and 2 are the released model. The released level 3 cannot run (its second SAMS
set also uses 3 groups, which no stage width divides); here level 3 adds the paper's next level,
SAMS over 4 groups, before the level-2 set (a documented deviation). Levels above 3 are refused,
as in the original.

State_dict names follow the original, including its duplicate registration of the backbone as
``base`` and again as ``base_1`` ... ``base_5`` (the same tensors under two names), so files
written by the original load unchanged.
"""

from __future__ import annotations

from typing import Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.checkpoint import load_state_dict_checked, read_state_dict
from common.eval import Retrieval
from common.layers.resnet import build_resnet50

__all__ = ["APNet", "BN2d", "BoTResNet", "INPUT_SIZE", "MAX_LEVEL", "RETRIEVAL", "SAMS", "SELayer",
           "build_model", "load_trained", "load_weights"]

# What evaluation and deployment need (spec §6): the default.yml input size and the released
# test convention: bilinear resize, the feature of the image plus that of its mirror,
# L2-normalised, Euclidean distance.
INPUT_SIZE = (384, 192)
RETRIEVAL = Retrieval(interpolation="bilinear", flip=True, normalize=True, distance="euclidean")

MAX_LEVEL = 3
STAGE_CHANNELS = (64, 256, 512, 1024, 2048)


class SELayer(nn.Module):
    """The level-1 gate (§4.3): x * sigmoid(W2 ReLU(W1 GAP(x))), bias-free, C -> C/reduction -> C.
    (The original returns the gate and multiplies outside; the parameters are the same.)"""

    def __init__(self, channels, reduction):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(channels, channels // reduction, bias=False),
                                nn.ReLU(inplace=True),
                                nn.Linear(channels // reduction, channels, bias=False),
                                nn.Sigmoid())

    def forward(self, x):
        return x * self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))[:, :, None, None]


class SAMS(nn.Module):
    """Split-attend-merge-stack over ``radix`` channel groups (§4.4).

    x is split along channels into ``radix`` groups X_i of c = C / radix channels; s = GAP(sum_i
    X_i); a = fc2(ReLU(BN(fc1(s)))) reshaped to (radix, c) and softmaxed over the groups; the
    output concatenates a_i * X_i. fc1 maps c -> max(C radix / 4, 32), fc2 back to C (1x1 convs).
    The group sum is a tensor sum over a stacked dimension (no Python ``sum``), so the module
    scripts as well as traces.
    """

    def __init__(self, channels, radix, reduction_factor=4):
        super().__init__()
        if channels % radix:
            raise ValueError(f"SAMS over {radix} groups needs the channels ({channels}) to be "
                             f"divisible by {radix}")
        inter_channels = max(channels * radix // reduction_factor, 32)
        self.radix, self.channels = radix, channels // radix
        self.fc1 = nn.Conv2d(self.channels, inter_channels, 1)
        self.bn1 = nn.BatchNorm2d(inter_channels)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(inter_channels, channels, 1)

    def forward(self, x):
        b, _, h, w = x.shape
        groups = x.reshape(b, self.radix, self.channels, h, w)
        squeezed = F.adaptive_avg_pool2d(groups.sum(dim=1), 1)
        attention = self.fc2(self.relu(self.bn1(self.fc1(squeezed))))
        attention = F.softmax(attention.reshape(b, self.radix, self.channels), dim=1)
        return (groups * attention[:, :, :, None, None]).reshape(b, -1, h, w)


class BN2d(nn.Module):
    """The BatchNorm2d after a SAMS: weight 1, bias 0 and frozen (``bottleneck2``)."""

    def __init__(self, channels):
        super().__init__()
        self.bottleneck2 = nn.BatchNorm2d(channels)
        self.bottleneck2.bias.requires_grad_(False)

    def forward(self, x):
        return self.bottleneck2(x)


class BoTResNet(nn.Module):
    """BoT's ResNet-50 layers (§4.1) under the original's names: conv1, bn1, maxpool (BoT has no
    stem ReLU), layer1-4, last stride 1 by default. It only holds them (the ``base.*`` keys);
    :class:`APNet` runs them as its five stages ``base_1`` ... ``base_5``."""

    def __init__(self, last_stride=1, pretrained=True, weights_path=None):
        super().__init__()
        resnet = build_resnet50(last_stride=last_stride, pretrained=pretrained,
                                weights_path=weights_path if pretrained else None)
        self.conv1, self.bn1, self.maxpool = resnet.conv1, resnet.bn1, resnet.maxpool
        self.layer1, self.layer2 = resnet.layer1, resnet.layer2
        self.layer3, self.layer4 = resnet.layer3, resnet.layer4


class APNet(nn.Module):
    """APNet-C (§4). Train forward: ``(logits, global_feat)`` with the pre-BN pooled feature for
    the triplet loss; eval forward: the post-BN 2,048-d feature, or the classifier's logits when
    ``test_feature="logits"`` (the MSMT17 configuration, ``APNET.MSMT``).

    Args:
        num_classes: training identities.
        level: pyramid levels, 0 (the BNNeck baseline) to 3.
        test_feature: ``"bn"`` (released default) or ``"logits"``.
        order: ``"fine_to_coarse"`` (released: SAMS before SE) or ``"coarse_to_fine"`` (the
            paper's Figure 2: SE, then 2 groups, then 4).
        last_stride: 1 (released) or 2.
        stem_relu: False (BoT's and the released code's ResNet) or True (torchvision's).
        pretrained / weights_path: ImageNet initialisation of the ResNet-50 (from
            ``weights_path``, or the torch hub cache).
    """

    def __init__(self, num_classes, level=2, test_feature="bn", order="fine_to_coarse",
                 last_stride=1, stem_relu=False, pretrained=True, weights_path=None):
        super().__init__()
        if not 0 <= level <= MAX_LEVEL:
            raise ValueError(f"APNET.LEVEL {level}: levels 0 to {MAX_LEVEL} are built (the "
                             f"original supports 0-2 and refuses more than 3)")
        if test_feature not in ("bn", "logits"):
            raise ValueError(f"test_feature must be 'bn' or 'logits', got {test_feature!r}")
        if order not in ("fine_to_coarse", "coarse_to_fine"):
            raise ValueError(f"order must be 'fine_to_coarse' or 'coarse_to_fine', got {order!r}")
        self.level, self.test_feature = level, test_feature
        self.coarse_to_fine = order == "coarse_to_fine"
        self.base = BoTResNet(last_stride, pretrained, weights_path)
        children = list(self.base.children())
        stem_relu = [nn.ReLU()] if stem_relu else []  # no parameters: the keys stay the same
        self.base_1 = nn.Sequential(children[0], children[1], *stem_relu, children[2])
        self.base_2 = nn.Sequential(children[3])
        self.base_3 = nn.Sequential(children[4])
        self.base_4 = nn.Sequential(children[5])
        self.base_5 = nn.Sequential(children[6])
        # The pyramid after stage i: att_ss{i} + BN_{i} (level 3), att_s{i} + BN{i} (level >= 2),
        # att{i} (level >= 1). A level's modules are nn.Identity (no state) when it is off, so
        # the state_dict is the original's and forward is one scriptable path.
        for name, build, used in (("att", lambda c: SELayer(c, c // 8), level >= 1),
                                  ("att_s", lambda c: SAMS(c, radix=2), level >= 2),
                                  ("BN", BN2d, level >= 2),
                                  ("att_ss", lambda c: SAMS(c, radix=4), level >= 3),
                                  ("BN_", BN2d, level >= 3)):
            for i, channels in enumerate(STAGE_CHANNELS, start=1):
                self.add_module(f"{name}{i}", build(channels) if used else nn.Identity())
        self.bottleneck = nn.BatchNorm1d(2048)
        self.bottleneck.bias.requires_grad_(False)
        self.classifier = nn.Linear(2048, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        # each stage, then its pyramid (§4.2)
        if self.coarse_to_fine:
            x = self.BN_1(self.att_ss1(self.BN1(self.att_s1(self.att1(self.base_1(x))))))
            x = self.BN_2(self.att_ss2(self.BN2(self.att_s2(self.att2(self.base_2(x))))))
            x = self.BN_3(self.att_ss3(self.BN3(self.att_s3(self.att3(self.base_3(x))))))
            x = self.BN_4(self.att_ss4(self.BN4(self.att_s4(self.att4(self.base_4(x))))))
            x = self.BN_5(self.att_ss5(self.BN5(self.att_s5(self.att5(self.base_5(x))))))
        else:
            x = self.att1(self.BN1(self.att_s1(self.BN_1(self.att_ss1(self.base_1(x))))))
            x = self.att2(self.BN2(self.att_s2(self.BN_2(self.att_ss2(self.base_2(x))))))
            x = self.att3(self.BN3(self.att_s3(self.BN_3(self.att_ss3(self.base_3(x))))))
            x = self.att4(self.BN4(self.att_s4(self.BN_4(self.att_ss4(self.base_4(x))))))
            x = self.att5(self.BN5(self.att_s5(self.BN_5(self.att_ss5(self.base_5(x))))))
        global_feat = F.adaptive_avg_pool2d(x, 1).flatten(1)
        feat = self.bottleneck(global_feat)
        if self.training:
            return self.classifier(feat), global_feat
        if self.test_feature == "logits":
            return self.classifier(feat)
        return feat


def build_model(num_classes, **options):
    """An :class:`APNet`; ``options`` are its keyword arguments (defaults = ``configs/default.yml``)."""
    return APNet(num_classes, **options)


def load_weights(model, state, source="weights"):
    """Loads a state_dict strictly (every key and shape named on a mismatch)."""
    return load_state_dict_checked(model, state, source=source,
                                   hint=". Was it trained with the same APNET.LEVEL?")


# A key that only exists from that pyramid level on (spec §7.1).
LEVEL_KEYS = (("att_ss1.fc1.weight", 3), ("att_s1.fc1.weight", 2), ("att1.fc.0.weight", 1))


def load_trained(path, **options):
    """The network of a file written by ``apnet/main.py`` or the original (an ignite
    ``*_checkpoint_*.pt``, a ``*_best.pt`` or a bare state_dict): the class count and the
    pyramid level are read from the weights."""
    state = read_state_dict(path, entries=("model", "state_dict"))[0]
    level = next((lvl for key, lvl in LEVEL_KEYS if key in state), 0)
    classifier = state.get("classifier.weight")
    model = build_model(751 if classifier is None else int(classifier.shape[0]),
                        **{"level": level, **options}, pretrained=False)
    load_weights(model, state, source=str(path))
    return model
