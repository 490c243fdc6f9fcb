"""LAG-Net: three streams on a shared ResNet-50 trunk with a Local Attention System.

Gong et al., "LAG-Net: Multi-Granularity Network for Person Re-Identification via Local Attention
System", IEEE TMM 2021. Everything here follows the released code (``model/lag.py``), restated in
``../shared/specs/lagnet.md`` §3; section numbers below refer to that spec.

Two behaviours of the released code differ from the paper and produced the published numbers;
each has a switch whose default is the released behaviour:

- ``part_split="faithful"``: the three "parts" are pooled from the already pooled part-stream
  vector, so p0 = p1 = p2 = 2 * g_ps (§3.4). ``"fixed"`` pools three horizontal stripes of the
  part-stream map with max + average, as the paper describes.
- ``drop_pool="faithful"``: the drop branch is pooled with two max pools, g_d = 2 * GMP (§3.4).
  ``"fixed"`` uses GMP + GAP like the other branches.

Modules of the original whose outputs are never used are left out: the ``test`` copy of the whole
ResNet-50, the SE ``channel_attention`` and ``reduction_4..6`` (§3.1, §3.2, §3.5). Every other
state_dict name and shape is the original's (§7). A checkpoint of the original code still loads;
:func:`load_weights` reports those keys as ignored. Files written by earlier versions of this
project, which numbered each stream's layer3 blocks 1-5, are renamed by :func:`read_weights`.
"""

from __future__ import annotations

import copy
import logging
import re
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.checkpoint import load_state_dict_checked, read_state_dict
from common.eval import Retrieval
from common.layers.resnet import build_resnet50, remove_stage_stride

__all__ = ["FcWeight", "INPUT_SIZE", "LAG", "LAGOutputs", "ORIGINAL_UNUSED_PREFIXES", "RETRIEVAL",
           "build_model", "load_trained", "load_weights", "read_weights",
           "rename_legacy_stream_keys"]

log = logging.getLogger("lagnet")

# What evaluation and deployment need (spec §2, §6): the README's input size and the test
# convention: bicubic resize, features of the image and its mirror summed then L2-normalised
# (the same ranking as their mean), Euclidean distance.
INPUT_SIZE = (384, 128)
RETRIEVAL = Retrieval(interpolation="bicubic", flip=True, normalize=True, distance="euclidean")

NUM_STREAM_CHANNELS = 2048
NUM_PARTS = 3
SIGN_SQRT_EPS = 1e-12

# State-dict prefixes of the original model that belong to modules left out here (see above).
ORIGINAL_UNUSED_PREFIXES = ("test.", "channel_attention.", "reduction_4.", "reduction_5.",
                            "reduction_6.")


class LAGOutputs(NamedTuple):
    """The training-mode outputs, in the roles the losses give them (§3.6, §4).

    ``predict`` is the 3,584-d retrieval feature; ``feature_matrix`` the normalised LAS matrix
    for the ``L2`` (attention-centre) loss; ``embeddings`` the five features of the ``Triplet``
    loss (fg_gs, fg_ps, fg_la, fg_d, f_ps); ``logits`` the seven ``CrossEntropy`` heads
    (la, d, gs, ps, p0, p1, p2).
    """

    predict: torch.Tensor
    feature_matrix: torch.Tensor
    embeddings: tuple
    logits: tuple


class FcWeight(nn.Module):
    """Classifier head (§3.5): BN -> LeakyReLU(0.1) -> Linear to 512, BN, Linear to classes.

    Returns the BN-ed 512-d bottleneck (the retrieval feature) and the logits.
    """

    def __init__(self, in_features, num_classes, num_bottleneck=512):
        super().__init__()
        self.fc_block1 = nn.Sequential(nn.BatchNorm1d(in_features), nn.LeakyReLU(0.1),
                                       nn.Linear(in_features, num_bottleneck, bias=False))
        self.fc_block2 = nn.Sequential(nn.BatchNorm1d(num_bottleneck))
        self.classifier = nn.Sequential(nn.Linear(num_bottleneck, num_classes, bias=False))
        nn.init.kaiming_normal_(self.fc_block1[2].weight, mode="fan_out")
        nn.init.normal_(self.fc_block2[0].weight, 1.0, 0.02)
        nn.init.zeros_(self.fc_block2[0].bias)
        nn.init.normal_(self.classifier[0].weight, 0.0, 0.001)

    def forward(self, x):
        bottleneck = self.fc_block2(self.fc_block1(x))
        return bottleneck, self.classifier(bottleneck)


class AttentionMaps(nn.Module):
    """The LAS attention generator (§3.2 step 1): 1x1 conv + BN(eps 1e-3) + ReLU, 2048 maps."""

    def __init__(self, channels=NUM_STREAM_CHANNELS):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(channels, eps=1e-3)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_in")

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def select_top_maps(maps, num_maps):
    """Per sample, the ``num_maps`` maps with the largest spatial sums, largest first (§3.2)."""
    order = maps.sum(dim=(2, 3)).topk(num_maps, dim=1).indices
    index = order[:, :, None, None].expand(-1, -1, maps.shape[2], maps.shape[3])
    return maps.gather(1, index)


def local_attention(features, attention):
    """The LA module (§3.2 step 2): v_i = GAP(F + A_i) + GMP(F + A_i), map A_i added to every
    channel of F. Returns the vectors as (B, M, C), slot-major."""
    combined = (features.unsqueeze(1) + attention.unsqueeze(2)).flatten(3)
    return combined.max(dim=3).values + combined.mean(dim=3)


def normalize_feature_matrix(vectors):
    """sign(x) * sqrt(|x| + 1e-12), then L2 over the whole M * C matrix (§3.2 step 4)."""
    matrix = vectors.flatten(1)
    matrix = torch.sign(matrix) * torch.sqrt(matrix.abs() + SIGN_SQRT_EPS)
    return F.normalize(matrix, dim=1)


def ba_dropblock(features, attention):
    """BA-DropBlock (§3.3): per sample, draw one of the M maps with probability proportional to
    sqrt(its spatial sum) and zero the positions where it reaches half its maximum.

    The attention maps come from a 1x1 conv on ``features``, so they share its spatial size and
    the original's bilinear resize of the map is the identity; it is omitted.
    """
    weights = torch.sqrt(attention.detach().sum(dim=(2, 3)) + SIGN_SQRT_EPS)
    chosen = torch.multinomial(weights / weights.sum(dim=1, keepdim=True), 1).squeeze(1)
    selected = attention.detach()[torch.arange(len(attention), device=attention.device), chosen]
    threshold = 0.5 * selected.flatten(1).max(dim=1).values
    keep = (selected < threshold[:, None, None]).to(features.dtype)
    return features * keep.unsqueeze(1)


def max_avg_pool(x, output_size=1):
    """GMP + GAP to ``output_size``, the pooling of every LAG branch."""
    return F.adaptive_max_pool2d(x, output_size) + F.adaptive_avg_pool2d(x, output_size)


def _reduction(feats):
    """Conv1x1(2048 -> feats) + BN + ReLU (§3.5), MGN's initialisation."""
    reduction = nn.Sequential(nn.Conv2d(NUM_STREAM_CHANNELS, feats, 1, bias=False),
                              nn.BatchNorm2d(feats), nn.ReLU())
    nn.init.kaiming_normal_(reduction[0].weight, mode="fan_in")
    nn.init.normal_(reduction[1].weight, 1.0, 0.02)
    nn.init.zeros_(reduction[1].bias)
    return reduction


class LAG(nn.Module):
    """LAG-Net (§3). Eval mode returns the (B, 3584) retrieval feature; train mode
    :class:`LAGOutputs`.

    Args:
        num_classes: training identities (the seven classifiers' width).
        num_attentions: M, the attention maps kept per sample (``--num_attentions``).
        feats: width of the triplet reductions (``--feats``).
        part_split: ``"faithful"`` (p0 = p1 = p2 = 2 * g_ps) or ``"fixed"`` (three stripes).
        drop_pool: ``"faithful"`` (g_d = 2 * GMP) or ``"fixed"`` (GMP + GAP).
        pretrained / weights_path: ImageNet initialisation of the trunk and the three streams.
    """

    def __init__(self, num_classes, num_attentions=24, feats=256, part_split="faithful",
                 drop_pool="faithful", pretrained=True, weights_path=None):
        super().__init__()
        if part_split not in ("faithful", "fixed"):
            raise ValueError(f"part_split must be 'faithful' or 'fixed', got {part_split!r}")
        if drop_pool not in ("faithful", "fixed"):
            raise ValueError(f"drop_pool must be 'faithful' or 'fixed', got {drop_pool!r}")
        if not 1 <= num_attentions <= NUM_STREAM_CHANNELS:
            raise ValueError(f"num_attentions must be in 1..{NUM_STREAM_CHANNELS}, "
                             f"got {num_attentions}")
        self.num_attentions = num_attentions
        self.part_split, self.drop_pool = part_split, drop_pool

        resnet = build_resnet50(pretrained=pretrained, weights_path=weights_path)
        self.backbone = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool,
                                      resnet.layer1, resnet.layer2, resnet.layer3[0])
        # a new Sequential of the five blocks, numbered 0-4 as in the original (slicing
        # ``layer3[1:]`` would keep the numbers 1-5)
        conv4 = nn.Sequential(*list(resnet.layer3.children())[1:])
        conv5_stride1 = remove_stage_stride(copy.deepcopy(resnet.layer4))
        self.global_stream = nn.Sequential(copy.deepcopy(conv4), copy.deepcopy(resnet.layer4))
        self.part_stream = nn.Sequential(copy.deepcopy(conv4), copy.deepcopy(conv5_stride1))
        self.la_stream = nn.Sequential(copy.deepcopy(conv4), copy.deepcopy(conv5_stride1))
        self.attentions = AttentionMaps()

        reduction = _reduction(feats)  # one initialisation, copied: all start equal (§3.5)
        for k in range(4):
            setattr(self, f"reduction_{k}", copy.deepcopy(reduction))
        for name in ("gs", "ps", "la", "d", "p0_ps", "p1_ps", "p2_ps"):
            setattr(self, f"classifier_{name}", FcWeight(NUM_STREAM_CHANNELS, num_classes))

    def forward(self, x):
        shared = self.backbone(x)
        global_map = self.global_stream(shared)
        part_map = self.part_stream(shared)
        la_map = self.la_stream(shared)

        attention = select_top_maps(self.attentions(la_map), self.num_attentions)
        vectors = local_attention(la_map, attention)
        g_la = (vectors.max(dim=1).values + vectors.mean(dim=1))[:, :, None, None]

        g_gs = max_avg_pool(global_map)
        g_ps = max_avg_pool(part_map)
        drop_map = ba_dropblock(la_map, attention) if self.training else la_map
        if self.drop_pool == "faithful":
            g_d = 2 * F.adaptive_max_pool2d(drop_map, 1)
        else:
            g_d = max_avg_pool(drop_map)
        if self.part_split == "faithful":
            # the released code pools the 1x1 g_ps to (3, 1): max + mean of one value, i.e.
            # 2 * g_ps in each stripe, bit for bit; written so because ONNX export has no
            # adaptive pooling from a 1x1 map to 3x1
            stripes = (2 * g_ps).expand(-1, -1, NUM_PARTS, 1)
        else:
            stripes = max_avg_pool(part_map, (NUM_PARTS, 1))
        parts = [stripes[:, :, k] for k in range(NUM_PARTS)]

        f_gs, l_gs = self.classifier_gs(g_gs.flatten(1))
        f_ps, l_ps = self.classifier_ps(g_ps.flatten(1))
        f_la, l_la = self.classifier_la(g_la.flatten(1))
        f_d, l_d = self.classifier_d(g_d.flatten(1))
        f_p0, l_p0 = self.classifier_p0_ps(parts[0].flatten(1))
        f_p1, l_p1 = self.classifier_p1_ps(parts[1].flatten(1))
        f_p2, l_p2 = self.classifier_p2_ps(parts[2].flatten(1))
        predict = torch.cat([f_la, f_d, f_gs, f_ps, f_p0, f_p1, f_p2], dim=1)
        if not self.training:
            return predict

        embeddings = (self.reduction_0(g_gs).flatten(1), self.reduction_1(g_ps).flatten(1),
                      self.reduction_2(g_la).flatten(1), self.reduction_3(g_d).flatten(1), f_ps)
        return LAGOutputs(predict, normalize_feature_matrix(vectors), embeddings,
                          (l_la, l_d, l_gs, l_ps, l_p0, l_p1, l_p2))


def build_model(num_classes, **options):
    """A :class:`LAG` network; ``options`` are its keyword arguments."""
    return LAG(num_classes, **options)


STREAM_NAMES = ("global_stream", "part_stream", "la_stream")
# "<stream>.0.<k>.": a key of the k-th layer3 block of a stream
STREAM_BLOCK_KEY = re.compile(rf"^({'|'.join(STREAM_NAMES)})\.0\.(\d)\.")


def rename_legacy_stream_keys(state, source="weights"):
    """``state`` with the stream names of the original (§7), whichever numbering it uses.

    Earlier versions of this project named each stream's five layer3 blocks ``<stream>.0.1`` to
    ``.0.5`` (the numbers slicing ``layer3[1:]`` keeps); the original, and this version, use
    ``.0.0`` to ``.0.4``. A state_dict with a ``<stream>.0.5.`` key, which the original never
    has, is in the old numbering: it is renamed, and a one-line warning naming ``source`` says so.
    Any other state_dict is returned unchanged.
    """
    if not any(key.startswith(f"{stream}.0.5.") for stream in STREAM_NAMES for key in state):
        return state
    log.warning(f"{source} uses the layer3 block numbering of earlier versions of this project "
                f"(<stream>.0.1-5); renamed to the original's (<stream>.0.0-4)")
    return {STREAM_BLOCK_KEY.sub(lambda m: f"{m[1]}.0.{int(m[2]) - 1}.", key): value
            for key, value in state.items()}


def read_weights(path):
    """The model state_dict in ``path``: a plain state_dict (the original code's ``model_*.pt``)
    or a training checkpoint of ours (its ``"model"``), with any ``module.`` prefix removed and
    names of earlier versions of this project renamed (:func:`rename_legacy_stream_keys`)."""
    state = read_state_dict(path, entries=("model", "state_dict"))[0]
    return rename_legacy_stream_keys(state, source=str(path))


def load_weights(model, state, source="weights", new_classes_ok=False):
    """Loads a :func:`read_weights` state_dict; returns the :class:`LoadReport`.

    Keys of the original's unused modules (:data:`ORIGINAL_UNUSED_PREFIXES`) are ignored and
    listed in it; with ``new_classes_ok`` (fine-tuning) classifiers of another class count are
    re-initialised and listed; any other missing, unexpected or mis-shaped key is a
    CheckpointError that names it.
    """
    return load_state_dict_checked(
        model, state, ignore_unexpected=ORIGINAL_UNUSED_PREFIXES, source=source,
        new_classes_ok=new_classes_ok,
        hint=". Is it a LAG-Net checkpoint built with the same --feats?")


def load_trained(path, **options):
    """The network of a file written by ``lagnet/main.py`` or the original code: the class count
    is read from the weights; ``options`` are the architecture flags the run used."""
    state = read_weights(path)
    classifier = state.get("classifier_gs.classifier.0.weight")
    model = build_model(751 if classifier is None else int(classifier.shape[0]), pretrained=False,
                        **options)
    load_weights(model, state, source=str(path))
    return model
