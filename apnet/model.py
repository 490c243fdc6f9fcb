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

``agent="rga_s"`` builds APNet-S, the paper's spatial pyramid (its Figure 2), whose code was never
released (spec §4.4; authors: the released pyramid with RGA-S as the attention agent). Level l
splits the feature map into 2^(l-1) horizontal stripes, attends each stripe with its own RGA-S
(:class:`RGASpatial`) and merges the stripes' attention maps back into one map of the whole
height (:class:`StripeAttention`); the levels are stacked as the released code stacks APNet-C's
(same order, same BatchNorm2d after each split level). How merge and stack are read is an
interpretation, set out in ``README.md``.

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

__all__ = ["AGENTS", "APNet", "BN2d", "BoTResNet", "INPUT_SIZE", "MAX_LEVEL", "RETRIEVAL",
           "RGASpatial", "SAMS", "SELayer", "StripeAttention", "architecture_of", "build_model",
           "check_stripes", "load_trained", "load_weights", "stage_sizes"]

# What evaluation and deployment need (spec §6): the default.yml input size and the released
# test convention: bilinear resize, the feature of the image plus that of its mirror,
# L2-normalised, Euclidean distance.
INPUT_SIZE = (384, 192)
RETRIEVAL = Retrieval(interpolation="bilinear", flip=True, normalize=True, distance="euclidean")

MAX_LEVEL = 3
STAGE_CHANNELS = (64, 256, 512, 1024, 2048)
AGENTS = ("se", "rga_s")  # released APNet-C; APNet-S


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


def _embedding(in_channels, out_channels):
    """1x1 conv (no bias) -> BatchNorm2d -> ReLU, RGA's embedding functions."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU())


class RGASpatial(nn.Module):
    """Relation-aware global attention, spatial (RGA-S; Zhang et al., CVPR 2020), as the released
    ``RGA_Module`` with ``use_spatial=True, use_channel=False`` computes it.

    For x (B, C, H, W) with N = H W positions (row-major):

    - theta, phi: 1x1 conv C -> C/8 + BN + ReLU; the relation r[i, j] = theta_i . phi_j (B, N, N);
    - at position i the relation feature is [r[i, :], r[:, i]] (2N channels, outgoing first),
      embedded by gg: 1x1 conv 2N -> N/8 + BN + ReLU;
    - gx: 1x1 conv C -> C/8 + BN + ReLU, then the mean over its channels (1 channel);
    - W: [gx, gg] (1 + N/8 channels) -> 1x1 conv to (1 + N/8)/8 + BN + ReLU -> 1x1 conv to 1 +
      BN; the output is x * sigmoid(W) (the map broadcast over channels).

    Ratios 8 / 8 / 8 are the released defaults (``cha_ratio``, ``spa_ratio``, ``down_ratio``),
    integer division as released. Where the released formula gives a 0-wide layer (fewer than 8
    positions for N/8, fewer than 56 for (1 + N/8)/8), which PyTorch cannot run, the width is 1
    here. Initialisation: PyTorch's defaults (the released code applies none to these modules).
    Submodule names are the released ones, so an RGA-S module's weights load unchanged.

    Args:
        channels: C.
        positions: N, the number of positions the module is built for; the input must have it.
    """

    def __init__(self, channels, positions, channel_ratio=8, spatial_ratio=8, down_ratio=8):
        super().__init__()
        self.positions = positions
        inter_channels = max(channels // channel_ratio, 1)
        inter_positions = max(positions // spatial_ratio, 1)
        hidden = max((1 + inter_positions) // down_ratio, 1)
        self.theta_spatial = _embedding(channels, inter_channels)
        self.phi_spatial = _embedding(channels, inter_channels)
        self.gx_spatial = _embedding(channels, inter_channels)
        self.gg_spatial = _embedding(2 * positions, inter_positions)
        self.W_spatial = nn.Sequential(nn.Conv2d(1 + inter_positions, hidden, 1, bias=False),
                                       nn.BatchNorm2d(hidden), nn.ReLU(),
                                       nn.Conv2d(hidden, 1, 1, bias=False), nn.BatchNorm2d(1))

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The map sigmoid(W) of x (B, C, H, W): (B, 1, H, W), values in (0, 1)."""
        b, _, h, w = x.shape
        if not torch.jit.is_tracing() and h * w != self.positions:  # a trace has fixed sizes
            raise ValueError(f"RGA-S was built for {self.positions} positions and got a {h}x{w} "
                             f"map: APNet-S runs at the input size it was built for "
                             f"(input_size, INPUT.SIZE_TRAIN)")
        theta = self.theta_spatial(x).flatten(2)  # (B, C/8, N)
        phi = self.phi_spatial(x).flatten(2)
        relation = torch.bmm(theta.transpose(1, 2), phi)  # (B, N, N), r[i, j]
        # channel j at position i: r[i, j] (outgoing), then r[j, i] (incoming)
        joint = torch.cat((relation.transpose(1, 2), relation), dim=1).reshape(b, 2 * h * w, h, w)
        appearance = self.gx_spatial(x).mean(dim=1, keepdim=True)
        return torch.sigmoid(self.W_spatial(torch.cat((appearance, self.gg_spatial(joint)), 1)))

    def forward(self, x):
        return x * self.attention_map(x)


class StripeAttention(nn.Module):
    """One level of APNet-S's pyramid: split, attend, merge (spec §4.4; the paper's Figure 2).

    x (B, C, H, W) is split into ``stripes`` horizontal stripes of H/stripes rows (split); each
    stripe has its own :class:`RGASpatial` (attend); the stripes' maps, concatenated along the
    height, form one (B, 1, H, W) map for the level, which multiplies x (merge). Output: (B, C,
    H, W). With one stripe this is RGA-S on the whole map.

    Args:
        channels: C.
        size: (H, W) of the map it is built for; ``stripes`` must divide H (ValueError).
        stripes: 1, 2 or 4 at levels 1, 2, 3.
    """

    def __init__(self, channels, size, stripes):
        super().__init__()
        height, width = size
        if height % stripes:
            raise ValueError(f"a {height}x{width} map cannot be split into {stripes} stripes of "
                             f"equal height")
        self.num_stripes = stripes
        self.agents = nn.ModuleList(RGASpatial(channels, height // stripes * width)
                                    for _ in range(stripes))

    def forward(self, x):
        parts = x.chunk(self.num_stripes, dim=2)
        maps = []
        for i, agent in enumerate(self.agents):
            maps.append(agent.attention_map(parts[i]))
        return x * torch.cat(maps, dim=2)


def stage_sizes(input_size, last_stride=1):
    """(H, W) of the five stage outputs (stem, layer1-4) for an input (H, W): the stem's stride-2
    conv and max-pool and layer2-4's stride-2 convs each give ceil(size / 2); layer4 keeps its
    input size with ``last_stride`` 1. E.g. 384x192 -> 96x48, 96x48, 48x24, 24x12, 24x12."""
    def halve(size):
        return tuple((s + 1) // 2 for s in size)

    stem = halve(halve(tuple(input_size)))
    layer2 = halve(stem)
    layer3 = halve(layer2)
    layer4 = layer3 if last_stride == 1 else halve(layer3)
    return [stem, stem, layer2, layer3, layer4]


def check_stripes(input_size, level, last_stride=1):
    """ValueError unless every stage map of an (H, W) input splits into the 2^(level-1) equal
    stripes of APNet-S's finest level."""
    stripes = 2 ** (max(level, 1) - 1)
    heights = [h for h, _ in stage_sizes(input_size, last_stride)]
    if any(h % stripes for h in heights):
        raise ValueError(f"APNet-S level {level} splits every stage map into {stripes} stripes, "
                         f"and at input {input_size[0]}x{input_size[1]} the stage heights are "
                         f"{heights}: use an input height that is a multiple of "
                         f"{stripes * (16 if last_stride == 1 else 32)}")


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
    """APNet-C (§4), or APNet-S with ``agent="rga_s"``. Train forward: ``(logits, global_feat)``
    with the pre-BN pooled feature for the triplet loss; eval forward: the post-BN 2,048-d
    feature, or the classifier's logits when ``test_feature="logits"`` (the MSMT17
    configuration, ``APNET.MSMT``).

    Args:
        num_classes: training identities.
        level: pyramid levels, 0 (the BNNeck baseline) to 3.
        agent: ``"se"`` (released APNet-C: SE at level 1, SAMS over 2 / 4 channel groups at
            levels 2 / 3) or ``"rga_s"`` (APNet-S: :class:`StripeAttention` over 1 / 2 / 4
            horizontal stripes at levels 1 / 2 / 3).
        input_size: (H, W) of the input; only APNet-S uses it (RGA-S is built for a number of
            positions) and then accepts no other size. Every stage height must split into the
            level's stripes (ValueError otherwise).
        test_feature: ``"bn"`` (released default) or ``"logits"``.
        order: ``"fine_to_coarse"`` (released: the finest level first, level 1 last) or
            ``"coarse_to_fine"`` (the paper's Figure 2: level 1, then 2 parts, then 4).
        last_stride: 1 (released) or 2.
        stem_relu: False (BoT's and the released code's ResNet) or True (torchvision's).
        pretrained / weights_path: ImageNet initialisation of the ResNet-50 (from
            ``weights_path``, or the torch hub cache).
    """

    def __init__(self, num_classes, level=2, agent="se", input_size=(384, 192), test_feature="bn",
                 order="fine_to_coarse", last_stride=1, stem_relu=False, pretrained=True,
                 weights_path=None):
        super().__init__()
        if not 0 <= level <= MAX_LEVEL:
            raise ValueError(f"APNET.LEVEL {level}: levels 0 to {MAX_LEVEL} are built (the "
                             f"original supports 0-2 and refuses more than 3)")
        if agent not in AGENTS:
            raise ValueError(f"agent must be 'se' (APNet-C, released) or 'rga_s' (APNet-S), got "
                             f"{agent!r}")
        if agent == "rga_s":
            check_stripes(input_size, level, last_stride)
        sizes = stage_sizes(input_size, last_stride)
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
        # APNet-S keeps these slots and swaps the agent: att{i} / att_s{i} / att_ss{i} hold a
        # StripeAttention over 1 / 2 / 4 stripes instead of SE / SAMS.
        if agent == "se":
            levels = (lambda c, size: SELayer(c, c // 8), lambda c, size: SAMS(c, radix=2),
                      lambda c, size: SAMS(c, radix=4))
        else:
            levels = tuple(lambda c, size, stripes=stripes: StripeAttention(c, size, stripes)
                           for stripes in (1, 2, 4))
        for name, build, used in (("att", levels[0], level >= 1),
                                  ("att_s", levels[1], level >= 2),
                                  ("BN", lambda c, size: BN2d(c), level >= 2),
                                  ("att_ss", levels[2], level >= 3),
                                  ("BN_", lambda c, size: BN2d(c), level >= 3)):
            for i, (channels, size) in enumerate(zip(STAGE_CHANNELS, sizes), start=1):
                self.add_module(f"{name}{i}", build(channels, size) if used else nn.Identity())
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


def architecture_of(state_dict):
    """``{"level": ..., "agent": ...}`` of the APNet that wrote ``state_dict``, read from its
    keys (the input size of an APNet-S is not in them)."""
    level = next((lvl for prefix, lvl in (("att_ss1.", 3), ("att_s1.", 2), ("att1.", 1))
                  if any(key.startswith(prefix) for key in state_dict)), 0)
    agent = "rga_s" if any(".theta_spatial." in key for key in state_dict) else "se"
    return {"level": level, "agent": agent}


def load_weights(model, state, source="weights"):
    """Loads a state_dict strictly (every key and shape named on a mismatch)."""
    return load_state_dict_checked(model, state, source=source,
                                   hint=". Was it trained with the same APNET.LEVEL and APNET.AGENT?")


def load_trained(path, **options):
    """The network of a file written by ``apnet/main.py`` or the original (an ignite
    ``*_checkpoint_*.pt``, a ``*_best.pt`` or a bare state_dict): the class count, the pyramid
    level and the attention agent are read from the weights (an APNet-S trained at another
    size than 384x192 also needs ``input_size=(H, W)`` in ``options``)."""
    state = read_state_dict(path, entries=("model", "state_dict"))[0]
    classifier = state.get("classifier.weight")
    model = build_model(751 if classifier is None else int(classifier.shape[0]),
                        **{**architecture_of(state), **options}, pretrained=False)
    load_weights(model, state, source=str(path))
    return model
