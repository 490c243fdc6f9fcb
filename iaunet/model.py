"""IAUnet (Hou et al., IEEE TNNLS 2020) and its predecessor IANet (Hou et al., CVPR 2019).

The networks of the released code (``models/IAUnet.py``, ``models/IAU.py``, ``models/IA.py``),
restated in ``../shared/specs/iaunet.md`` §3; section numbers below refer to that spec. Both are
ResNet-50 with last stride 1, an interaction block after layer2 and after layer3, and a head of
average pooling, BatchNorm1d and a classifier; the test feature is the 2,048-d post-BN vector.

- IAUnet's IAU block: CIAU (channel interaction) then SIAU (a graph over 4 body-part nodes and a
  global node, whose part maps are supervised by part masks during training).
- IANet's IA block: SIA (position interaction with a fixed Gaussian location prior) then CIA.
- The video IAUnet: the same network on the frames of clips, with the released spatial-temporal
  block (``models/IAU3D.py``, ``models/STIAU.py``): CIAU over channels x frames, then STIAU, a
  graph over the 4 parts of every frame (parts of one frame and the same part across frames).

State_dict names follow the original (``IAU2.*``, ``IAU3.*``, ``bn``, ``classifier``; IANet's
``layer2.4.*``, ``layer3.6.*``), so checkpoints of the original load strictly.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.checkpoint import load_state_dict_checked, read_state_dict
from common.eval import Retrieval
from common.layers.resnet import build_resnet50

__all__ = ["CIAU", "IABlock", "IANet", "IAU", "IAU3D", "IAUnet", "INPUT_SIZE", "NUM_PARTS",
           "PARTS", "RETRIEVAL", "VideoIAUnet", "build_model", "load_trained", "load_weights",
           "stiau_blocked_edges"]

# What evaluation and deployment need (spec §6): the README's input size and the released test
# convention (--flip_cnt 1, --distance consine): bicubic resize, the post-BN feature as it is,
# cosine distance.
INPUT_SIZE = (256, 128)
RETRIEVAL = Retrieval(interpolation="bicubic", flip=False, normalize=False, distance="cosine")

PARTS = ("head", "upper", "lower", "shoes")
NUM_PARTS = len(PARTS)


def conv1x1(in_channels, out_channels):
    return nn.Conv2d(in_channels, out_channels, kernel_size=1)


RESNET_STAGES = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


def attach_resnet_stages(module, pretrained, weights_path):
    """Registers the stem and the four stages of a last-stride-1 ResNet-50 on ``module`` under
    the released names (:data:`RESNET_STAGES`, in that order), as all three networks have them."""
    resnet = build_resnet50(last_stride=1, pretrained=pretrained, weights_path=weights_path)
    for name in RESNET_STAGES:
        setattr(module, name, getattr(resnet, name))


def zero_bn(channels):
    """A BatchNorm2d whose weight and bias start at 0, so the branch it ends starts at 0."""
    bn = nn.BatchNorm2d(channels)
    nn.init.zeros_(bn.weight)
    nn.init.zeros_(bn.bias)
    return bn


def channel_interaction(x):
    """softmax(G Gᵀ) G over channels (no projection, no scaling; CIAU §3.2 steps 1-4)."""
    b, c, h, w = x.shape
    flat = x.reshape(b, c, h * w)
    affinity = F.softmax(flat @ flat.transpose(1, 2), dim=-1)
    return (affinity @ flat).reshape(b, c, h, w)


class ConvBN(nn.Module):
    """A 1x1 (x1) convolution with bias, then BatchNorm, over images (``dims=2``, as ``sa.conv``)
    or clips (``dims=3``, as ``SA.conv`` of IAU3D): keys ``conv.*`` and ``bn.*``."""

    def __init__(self, in_channels, out_channels, dims=2):
        super().__init__()
        conv, norm = (nn.Conv2d, nn.BatchNorm2d) if dims == 2 else (nn.Conv3d, nn.BatchNorm3d)
        self.conv = conv(in_channels, out_channels, kernel_size=1)
        self.bn = norm(out_channels)

    def forward(self, x):
        return self.bn(self.conv(x))


class PartAttention(nn.Module):
    """A = sigmoid(BN(Conv1x1(C -> 4)(Z))): independent head / upper / lower / shoes maps of an
    image (``dims=2``) or of every frame of a clip (``dims=3``)."""

    def __init__(self, channels, dims=2):
        super().__init__()
        self.conv = ConvBN(channels, NUM_PARTS, dims)

    def forward(self, x):
        return torch.sigmoid(self.conv(x))


class EdgeWeights(nn.Module):
    """``Wcompute``: W_ij = softmax_j(BN(Conv([|x_i - x_j| ; u'])) - 1e8 M_ij) (SIAU step 5),
    M the blocked edges: the self loops (SIAU), or the STIAU mask (§3.5)."""

    def __init__(self, node_channels):
        super().__init__()
        self.relation = nn.Sequential(conv1x1(2 * node_channels, 1), nn.BatchNorm2d(1))

    def forward(self, nodes, global_node, blocked=None):
        """nodes (B, C', K), global_node (B, C'), blocked (K, K) of 0/1 or None (the identity)
        -> (B, K, K) row-stochastic weights."""
        b, c, k = nodes.shape
        difference = (nodes[:, :, :, None] - nodes[:, :, None, :]).abs()
        context = global_node[:, :, None, None].expand(b, c, k, k)
        scores = self.relation(torch.cat([difference, context], dim=1))[:, 0]
        if blocked is None:
            blocked = torch.eye(k, device=scores.device)
        scores = scores - 1e8 * blocked.to(scores.dtype)
        return F.softmax(scores, dim=-1)


class NodeUpdate(nn.Module):
    """``Gconv``: s_i = ReLU(BN(Conv([x_i ; sum_j W_ij x_j]))) (SIAU step 6)."""

    def __init__(self, node_channels):
        super().__init__()
        self.fsm = nn.Sequential(conv1x1(2 * node_channels, node_channels),
                                 nn.BatchNorm2d(node_channels), nn.ReLU())

    def forward(self, nodes, weights):
        messages = nodes @ weights.transpose(1, 2)  # (B, C', K): column i = sum_j W_ij x_j
        return self.fsm(torch.cat([nodes, messages], dim=1)[:, :, :, None])[:, :, :, 0]


class SIAUGraph(nn.Module):
    """The part graph of SIAU and of STIAU (keys ``module_w.*``, ``module_l.*`` under ``SIAU``
    or ``STIAU``): nodes (B, C', K) -> updated nodes (B, C', K)."""

    def __init__(self, node_channels):
        super().__init__()
        self.module_w = EdgeWeights(node_channels)
        self.module_l = NodeUpdate(node_channels)

    def forward(self, nodes, global_node, blocked=None):
        return self.module_l(nodes, self.module_w(nodes, global_node, blocked))


class IAU(nn.Module):
    """The IAU block (§3.2): Z = X + W1(CIAU(X)); out = Z + W2([mean_k s_k ; u']) broadcast.

    Returns ``(out, A)``, A the (B, 4, H, W) part maps that the mask loss supervises. W1 and W2
    end in zero-initialised BatchNorms, so the block starts as the identity.
    """

    def __init__(self, channels):
        super().__init__()
        half = channels // 2
        self.sa = PartAttention(channels)
        self.g = conv1x1(channels, half)
        self.SIAU = SIAUGraph(half)
        self.W1 = nn.Sequential(conv1x1(channels, channels), zero_bn(channels))
        self.W2 = nn.Sequential(conv1x1(channels, channels), zero_bn(channels))
        for conv in self.modules():  # MSRA fan-out; the two final BatchNorms stay at zero
            if isinstance(conv, nn.Conv2d):
                nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / conv.out_channels))

    def forward(self, x):
        z = x + self.W1(channel_interaction(x))
        attention = self.sa(z)
        parts = attention.flatten(2) @ z.flatten(2).transpose(1, 2)  # (B, 4, C): weighted sums
        pooled = torch.cat([parts.transpose(1, 2), z.mean(dim=(2, 3))[:, :, None]], dim=2)
        reduced = self.g(pooled[:, :, :, None])[:, :, :, 0]  # (B, C', 4 + 1)
        nodes, global_node = reduced[:, :, :NUM_PARTS], reduced[:, :, NUM_PARTS]
        updated = self.SIAU(nodes, global_node)
        readout = torch.cat([updated.mean(dim=2), global_node], dim=1)[:, :, None, None]
        return z + self.W2(readout), attention


def stiau_blocked_edges(num_frames, num_parts=NUM_PARTS, device=None):
    """The STIAU graph mask (§3.5; ``W_init`` of the released ``STIAUModule``): (T P, T P) with
    1 where the edge is blocked, node t * P + p being part p of frame t.

    Open edges: the other parts of the same frame (spatial interaction) and the same part in the
    other frames (temporal interaction). Blocked: self loops, and a different part of a
    different frame.
    """
    node = torch.arange(num_frames * num_parts, device=device)
    same_frame = node[:, None] // num_parts == node[None, :] // num_parts
    same_part = node[:, None] % num_parts == node[None, :] % num_parts
    return (same_frame == same_part).float()


def zero_bn3d(channels):
    bn = nn.BatchNorm3d(channels)
    nn.init.zeros_(bn.weight)
    nn.init.zeros_(bn.bias)
    return bn


class IAU3D(nn.Module):
    """The spatial-temporal IAU block (§3.5; the released ``IAUBlock3D``) on a clip
    X (B, C, T, H, W):

    - CIAU over the C T rows of X viewed as (B, C T, H W) (channel-time affinity
      softmax(G Gᵀ) G), then W1 = Conv3d + BN3d: Z = X + W1(...);
    - STIAU: u = the mean of Z over T, H, W; the four sigmoid part maps of every frame;
      attention-weighted part sums per frame; ``g`` (C -> C/2) on the T x 4 part nodes and on u;
      the part graph over the T x 4 nodes with the mask :func:`stiau_blocked_edges`; per frame
      [mean over parts ; u'] -> W2 = Conv3d + BN3d, added to every position of that frame.

    Returns ``(out (B, C, T, H, W), A (B T, 4, H, W))``. W1 and W2 end in zero-initialised
    BatchNorms, so the block starts as the identity. ``seq_len`` is the released constructor's T;
    the mask is built for the T of each input, so any clip length works.
    """

    def __init__(self, channels, seq_len):
        super().__init__()
        half = channels // 2
        self.seq_len = seq_len
        self.SA = PartAttention(channels, dims=3)
        self.g = conv1x1(channels, half)
        self.STIAU = SIAUGraph(half)
        self.W1 = nn.Sequential(nn.Conv3d(channels, channels, kernel_size=1), zero_bn3d(channels))
        self.W2 = nn.Sequential(nn.Conv3d(channels, channels, kernel_size=1), zero_bn3d(channels))
        for conv in self.modules():  # MSRA fan-out; the two final BatchNorms stay at zero
            if isinstance(conv, (nn.Conv2d, nn.Conv3d)):
                nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / conv.out_channels))

    def forward(self, x):
        b, c, t, h, w = x.shape
        rows = x.reshape(b, c * t, h * w)
        affinity = F.softmax(rows @ rows.transpose(1, 2), dim=-1)
        z = x + self.W1((affinity @ rows).reshape(b, c, t, h, w))
        attention = self.SA(z).transpose(1, 2).reshape(b * t, NUM_PARTS, h, w)
        frames = z.transpose(1, 2).reshape(b * t, c, h * w)
        parts = attention.flatten(2) @ frames.transpose(1, 2)  # (B T, 4, C): weighted sums
        nodes = parts.reshape(b, t * NUM_PARTS, c).transpose(1, 2)  # node t * 4 + p
        pooled = torch.cat([nodes, z.mean(dim=(2, 3, 4))[:, :, None]], dim=2)
        reduced = self.g(pooled[:, :, :, None])[:, :, :, 0]  # (B, C/2, T 4 + 1)
        nodes, global_node = reduced[:, :, :-1], reduced[:, :, -1]
        updated = self.STIAU(nodes, global_node, stiau_blocked_edges(t, device=x.device))
        per_frame = updated.reshape(b, -1, t, NUM_PARTS).mean(dim=3)  # (B, C/2, T)
        readout = torch.cat([per_frame, global_node[:, :, None].expand_as(per_frame)], dim=1)
        return z + self.W2(readout[:, :, :, None, None]), attention


class CIAU(nn.Module):
    """IANet's CIA (§3.4): X + BN(channel interaction), the BN zero-initialised (key ``W2``)."""

    def __init__(self, channels):
        super().__init__()
        self.W2 = zero_bn(channels)

    def forward(self, x):
        return x + self.W2(channel_interaction(x))


class IABlock(nn.Module):
    """IANet's IA block (§3.4): SIA then CIA, appended to a ResNet stage (keys ``W1``, ``W2``).

    SIA: softmax(softmax(XᵀX / sqrt(C)) * P) applied over positions, then a zero-initialised BN
    (``W1``) and the residual. P is a fixed Gaussian location prior on the (height, width) map:
    row i is softmax_j(-(dx² / (2 alpha_x²) + dy² / (2 alpha_y²))), x along the width and y along
    the height [inferred: the released sizes pair alpha_y with the longer axis]. The second
    softmax is the released code's.
    """

    def __init__(self, channels, map_size, alpha_x, alpha_y):
        super().__init__()
        self.map_size = tuple(map_size)
        self.scale = 1.0 / math.sqrt(channels)
        self.W1 = zero_bn(channels)
        self.W2 = zero_bn(channels)
        self.register_buffer("location_prior", _location_prior(map_size, alpha_x, alpha_y),
                             persistent=False)

    def forward(self, x):
        b, c, h, w = x.shape
        if (h, w) != self.map_size:
            raise ValueError(f"IANet's location prior is built for a {self.map_size} map, got "
                             f"({h}, {w}); build the model with the input size it will see")
        flat = x.reshape(b, c, h * w)
        appearance = F.softmax(flat.transpose(1, 2) @ flat * self.scale, dim=-1)
        affinity = F.softmax(appearance * self.location_prior, dim=-1)
        x = x + self.W1((flat @ affinity.transpose(1, 2)).reshape(b, c, h, w))
        return x + self.W2(channel_interaction(x))


def _location_prior(map_size, alpha_x, alpha_y):
    h, w = map_size
    rows = torch.arange(h, dtype=torch.float32).repeat_interleave(w)
    cols = torch.arange(w, dtype=torch.float32).repeat(h)
    dy = rows[:, None] - rows[None, :]
    dx = cols[:, None] - cols[None, :]
    return F.softmax(-(dx ** 2 / (2 * alpha_x ** 2) + dy ** 2 / (2 * alpha_y ** 2)), dim=-1)


class IAUnet(nn.Module):
    """IAUnet (§3.1-§3.3). Train forward: ``(logits, f, [A2, A3])``; eval forward: f (B, 2048).

    Evaluation needs no mask.
    """

    def __init__(self, num_classes, pretrained=True, weights_path=None):
        super().__init__()
        attach_resnet_stages(self, pretrained, weights_path)
        self.IAU2 = IAU(512)
        self.IAU3 = IAU(1024)
        self.bn = nn.BatchNorm1d(2048)
        self.classifier = nn.Linear(2048, num_classes)

    def forward(self, x):
        x = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))
        x, attention2 = self.IAU2(self.layer2(x))
        x, attention3 = self.IAU3(self.layer3(x))
        f = self.bn(F.adaptive_avg_pool2d(self.layer4(x), 1).flatten(1))
        if not self.training:
            return f
        return self.classifier(f), f, [attention2, attention3]


class IANet(nn.Module):
    """IANet (§3.4): IA blocks appended to layer2 (as ``layer2.4``) and layer3 (``layer3.6``).
    Train forward: ``(logits, f)``; eval forward: f (B, 2048).

    Args:
        input_size: the (height, width) the location priors are built for; the released priors
            are for 256x128 (maps 32x16 with alpha 10/20 and 16x8 with alpha 5/10).
    """

    def __init__(self, num_classes, input_size=(256, 128), pretrained=True, weights_path=None):
        super().__init__()
        attach_resnet_stages(self, pretrained, weights_path)
        height, width = input_size
        self.layer2.append(IABlock(512, (math.ceil(height / 8), math.ceil(width / 8)), 10, 20))
        self.layer3.append(IABlock(1024, (math.ceil(height / 16), math.ceil(width / 16)), 5, 10))
        self.bn = nn.BatchNorm1d(2048)
        self.classifier = nn.Linear(2048, num_classes)

    def forward(self, x):
        x = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))
        x = self.layer4(self.layer3(self.layer2(x)))
        f = self.bn(F.adaptive_avg_pool2d(x, 1).flatten(1))
        if not self.training:
            return f
        return self.classifier(f), f


class VideoIAUnet(nn.Module):
    """IAUnet for video (§3.5): the IAUnet ResNet-50 (last stride 1) on the B T frames of B
    clips, with an :class:`IAU3D` block over each clip's T frames after layer2 and after layer3
    (the image network's places [inferred: the paper's video text was not available]), then
    per-frame average pooling, the mean over the T frames (temporal average pooling), and the
    image head (BatchNorm1d, classifier).

    Input clips (B, T, 3, H, W). Train forward: ``(logits, f, [A2, A3])``, A (B T, 4, h, w);
    eval forward: f (B, 2048). State_dict names are the image IAUnet's with the released 3-D
    block's inside ``IAU2`` / ``IAU3`` (``SA``, ``g``, ``STIAU``, ``W1``, ``W2``).
    """

    def __init__(self, num_classes, seq_len=4, pretrained=True, weights_path=None):
        super().__init__()
        attach_resnet_stages(self, pretrained, weights_path)
        self.IAU2 = IAU3D(512, seq_len)
        self.IAU3 = IAU3D(1024, seq_len)
        self.bn = nn.BatchNorm1d(2048)
        self.classifier = nn.Linear(2048, num_classes)

    def forward(self, clips):
        if clips.dim() != 5:
            raise ValueError(f"the video IAUnet takes clips (B, T, 3, H, W), got shape "
                             f"{tuple(clips.shape)}")
        b, t = clips.shape[:2]
        x = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(clips.flatten(0, 1))))))
        x, attention2 = _per_clip(self.IAU2, self.layer2(x), b, t)
        x, attention3 = _per_clip(self.IAU3, self.layer3(x), b, t)
        frames = F.adaptive_avg_pool2d(self.layer4(x), 1).flatten(1)
        f = self.bn(frames.reshape(b, t, -1).mean(dim=1))
        if not self.training:
            return f
        return self.classifier(f), f, [attention2, attention3]


def _per_clip(block, frames, b, t):
    """Applies a 3-D block to (B T, C, H, W) frame features viewed as B clips (B, C, T, H, W)."""
    _, c, h, w = frames.shape
    out, attention = block(frames.reshape(b, t, c, h, w).transpose(1, 2))
    return out.transpose(1, 2).reshape(b * t, c, h, w), attention


def build_model(num_classes, arch="iaunet", **options):
    """``arch="iaunet"`` (default), ``"ianet"`` or ``"iaunet_video"``; ``options`` are the
    class's keyword arguments."""
    if arch == "iaunet":
        return IAUnet(num_classes, **options)
    if arch == "ianet":
        return IANet(num_classes, **options)
    if arch == "iaunet_video":
        return VideoIAUnet(num_classes, **options)
    raise ValueError(f"--arch {arch!r}: choose iaunet or ianet (images), iaunet_video (clips)")


def load_weights(model, state, source="weights", new_classes_ok=False):
    """Loads a state_dict strictly (every key and shape named on a mismatch); with
    ``new_classes_ok`` a classifier of another class count is re-initialised and reported."""
    return load_state_dict_checked(model, state, source=source, new_classes_ok=new_classes_ok,
                                   hint=". Was it trained with the same -a/--arch?")


def load_trained(path, **options):
    """The network of a file written by ``iaunet/main.py`` or the original code (a
    ``checkpoint_ep*`` / ``best_model`` file, a training state or a bare state_dict): the class
    count and the architecture (IAUnet or IANet) are read from the weights."""
    state = read_state_dict(path)[0]
    arch = "ianet" if "layer2.4.W1.weight" in state else "iaunet"
    classifier = state.get("classifier.weight")
    model = build_model(751 if classifier is None else int(classifier.shape[0]), arch=arch,
                        pretrained=False, **options)
    load_weights(model, state, source=str(path))
    return model
