"""IAB-Net (Rao Faizan & Muhammad Moazam Fraz): ABD-Net's network with CBAM-style attention
("COAB") in every ResNet bottleneck, a shallow CBAM after layer1, and last stride 2.

Restated from the released code in ``../shared/specs/iabnet.md`` §3; section numbers below refer
to that spec. The two branches (the global branch and the "CASA" branch, which is ABD-Net's
attentive branch with CAM and PAM) come unchanged from ABD-Net's frame,
``common/layers/two_branch.py``; the global branch is ``branches.0``, whatever order a released
file has (§3.3).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.resnet import Bottleneck

from common.eval import Retrieval
from common.layers.resnet import build_resnet50
from common.layers.two_branch import CLASSIFIER_KEY, TwoBranchNet, remap_branch_order
from common.torchreid_run.checkpoint import load_torchreid_checkpoint, read_torchreid_checkpoint

__all__ = ["INPUT_SIZE", "RETRIEVAL", "WEIGHTS_HINT", "COAB", "COABBottleneck", "ChannelGate",
           "IABNet", "SpatialGate", "build_coab_resnet50", "build_model", "init_like_original",
           "load_trained", "remap_original_keys"]

REDUCTION = 16

# What evaluation and deployment need (README command): the input size and the test convention
# with --flip-eval: bilinear resize, the mean of the image's and its mirror's 3,072-d feature, not
# normalised, squared Euclidean distance.
INPUT_SIZE = (384, 128)
RETRIEVAL = Retrieval(interpolation="bilinear", flip=True, normalize=False, distance="sqeuclidean")
# Ends the message when a weights file does not fit the network.
WEIGHTS_HINT = (". Was it trained with the same architecture flags (--abd-dan, --abd-np, "
                "--shallow-cam, --casa-channel)?")


class ChannelGate(nn.Module):
    """x * sigmoid(MLP(avgpool(x)) + MLP(maxpool(x))), one MLP C -> C/16 -> C shared (§3.1).

    ``mlp`` keeps the original's indices: 0 Flatten, 1 Linear, 2 ReLU, 3 Linear.
    """

    def __init__(self, channels, reduction=REDUCTION):
        super().__init__()
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(channels, channels // reduction),
                                 nn.ReLU(), nn.Linear(channels // reduction, channels))

    def forward(self, x):
        attention = (self.mlp(F.adaptive_avg_pool2d(x, 1))
                     + self.mlp(F.adaptive_max_pool2d(x, 1)))
        return x * torch.sigmoid(attention)[:, :, None, None]


class ChannelPool(nn.Module):
    """The channel-wise maximum, then the channel-wise mean: (B, C, H, W) -> (B, 2, H, W)."""

    def forward(self, x):
        return torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)


class BasicConv(nn.Module):
    """7x7 conv 2 -> 1 without bias, then BatchNorm2d(1) (eps 1e-5, momentum 0.01); no ReLU."""

    def __init__(self, kernel_size=7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01)

    def forward(self, x):
        return self.bn(self.conv(x))


class SpatialGate(nn.Module):
    """x * sigmoid(BN(conv7x7([max_c x, mean_c x]))) (§3.1)."""

    def __init__(self):
        super().__init__()
        self.compress = ChannelPool()
        self.spatial = BasicConv()

    def forward(self, x):
        return x * torch.sigmoid(self.spatial(self.compress(x)))


class COAB(nn.Module):
    """CBAM (Woo et al., ECCV 2018) under IAB-Net's name: the channel gate, then the spatial gate.
    The shallow CBAM after layer1 is the same module (§3.2)."""

    def __init__(self, channels, reduction=REDUCTION):
        super().__init__()
        self.ChannelGate = ChannelGate(channels, reduction)
        self.SpatialGate = SpatialGate()

    def forward(self, x):
        return self.SpatialGate(self.ChannelGate(x))


class COABBottleneck(nn.Module):
    """A torchvision Bottleneck with COAB on the residual branch (§3.1):
    conv3 -> bn3 -> COAB -> (+ identity or downsample) -> ReLU. Takes over ``block``'s layers,
    so the state_dict names stay torchvision's plus ``coab.*``."""

    def __init__(self, block: Bottleneck):
        super().__init__()
        self.conv1, self.bn1 = block.conv1, block.bn1
        self.conv2, self.bn2 = block.conv2, block.bn2
        self.conv3, self.bn3 = block.conv3, block.bn3
        self.relu, self.downsample = block.relu, block.downsample
        self.coab = COAB(block.bn3.num_features)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.coab(self.bn3(self.conv3(out)))
        return self.relu(out + identity)


def init_like_original(module):
    """The released ``ResNet.__init__`` initialisation, by state_dict key (§3.1): weights whose
    key contains ``conv`` are kaiming-normal (fan_out); weights whose key contains ``bn`` are 1,
    or 0 inside ``SpatialGate``; every bias is 0. Other weights (the MLPs, the downsample convs)
    keep PyTorch's default."""
    with torch.no_grad():
        for key, tensor in module.state_dict(keep_vars=True).items():
            name = key.rsplit(".", 1)[-1]
            if name == "weight" and "conv" in key:
                nn.init.kaiming_normal_(tensor, mode="fan_out")
            if name == "weight" and "bn" in key:
                tensor.fill_(0.0 if "SpatialGate" in key else 1.0)
            elif name == "bias":
                tensor.zero_()


def build_coab_resnet50(pretrained=True, weights_path=None):
    """ResNet-50 (last stride 2) with a COAB in each of its 16 bottlenecks.

    ImageNet weights fill every torchvision key; the COABs keep the original's initialisation
    (there are no pretrained CBAM weights, §3.1). Without ImageNet weights the whole network is
    initialised as the original's ``ResNet.__init__`` does.
    """
    resnet = build_resnet50(last_stride=2, pretrained=pretrained, weights_path=weights_path)
    for stage in (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4):
        for index, block in enumerate(stage):
            stage[index] = COABBottleneck(block)
    if pretrained or weights_path is not None:
        for stage in (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4):
            for block in stage:
                init_like_original(block.coab)
    else:  # PyTorch's default for every layer first, as the original builds them
        for layer in resnet.modules():
            if hasattr(layer, "reset_parameters"):
                layer.reset_parameters()
        init_like_original(resnet)
    return resnet


class ShallowCBAM(nn.Module):
    """The CBAM(256) on layer1's output (``--shallow-cam``, §3.2), under the original's attribute
    name ``_cam_module``; it keeps PyTorch's default initialisation, as in the original."""

    def __init__(self, channels=256):
        super().__init__()
        self._cam_module = COAB(channels)

    def forward(self, x):
        return self._cam_module(x)


class IABNet(TwoBranchNet):
    """IAB-Net (§3): the COAB ResNet-50 (last stride 2), the shallow CBAM, and ABD-Net's global
    and attentive ("CASA") branches. Eval forward: (B, 3, H, W) -> (B, 3,072).

    Args: ABD-Net's (the same ``--abd-*`` flags drive them), and ``casa_channel``: the channel
    module inside the CASA branch's ``cam_module`` head, ``"cam"`` (DANet's CAM, the released
    code) or ``"coab"`` (a COAB, as the paper's figure draws it, §3.4).
    """

    def __init__(self, num_classes, shallow_cam=True, abd_dan=("cam", "pam"), abd_np=2,
                 global_dim=1024, abd_dim=1024, dropout=0.5, cam_softmax="code",
                 casa_channel="cam", pretrained=True, weights_path=None):
        if casa_channel not in ("cam", "coab"):
            raise ValueError(f"casa_channel must be 'cam' or 'coab', got {casa_channel!r}")
        resnet = build_coab_resnet50(pretrained=pretrained, weights_path=weights_path)
        shallow = ShallowCBAM() if shallow_cam else nn.Identity()
        super().__init__(resnet, shallow, num_classes, dan=abd_dan, num_parts=abd_np,
                         global_dim=global_dim, part_dim=abd_dim, dropout=dropout,
                         cam_softmax=cam_softmax)
        if casa_channel == "coab":
            self.attentive_branch.cam_module.attention_module = COAB(abd_dim // 2)


def remap_original_keys(state_dict):
    """A released file's keys as this network names them: the global branch first
    (``remap_branch_order``, §3.3), and the bottleneck attention ``coab``, which a sibling file
    of the original, ``model_resnet.py``, names ``cbam`` (§3.6): both load."""
    return {key.replace(".cbam.", ".coab."): value
            for key, value in remap_branch_order(state_dict).items()}


def build_model(num_classes, **options):
    """An :class:`IABNet`; ``options`` are its keyword arguments (defaults = the README's)."""
    return IABNet(num_classes, **options)


def load_trained(path, **options):
    """The network of a file written by ``iabnet/main.py`` or the released code (``checkpoint_*``,
    a training state or a bare state_dict, either branch order): the class count is read from
    the weights; ``options`` are the architecture flags the run used."""
    released = read_torchreid_checkpoint(path, remap_original_keys)
    model = build_model(released.num_classes(CLASSIFIER_KEY) or 751, pretrained=False, **options)
    load_torchreid_checkpoint(model, released, hint=WEIGHTS_HINT)
    return model
