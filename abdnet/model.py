"""ABD-Net: Attentive but Diverse person re-ID (Chen et al., ICCV 2019).

The network of the released code (``torchreid/models/resnet.py``, arch ``resnet50``) with the
README's architecture flags (``--shallow-cam --abd-dan cam pam --abd-np 2``), restated in
``../shared/specs/abdnet.md`` §2; section numbers below refer to that spec.

The released code orders its two branches by iterating a ``frozenset``, so the order (and with it
the state_dict prefixes and the layout of the 3,072-d feature) changes with ``PYTHONHASHSEED``
(§2.7). Here the order is fixed: ``branches.0`` is the global branch, ``branches.1`` the attentive
branch; :func:`load_trained` moves an original checkpoint's keys to this order by looking at what
each branch holds (``common.layers.two_branch.remap_branch_order``).

The two-branch frame, the DANet modules and the O.F./O.W. regularisers are shared with IAB-Net,
whose code is ABD-Net's repository, and live in ``common/layers/`` (``two_branch.py``,
``danet.py``, ``orthogonality.py``); the run (flags, loss, two-phase training, checkpoint format)
in ``common/torchreid_run/``. One paper-vs-code divergence lives in the model and has a switch
(default = the code): ``cam_softmax="code"`` weights channels with softmax(-E), as DANet's
reference CAM does; ``"paper"`` uses softmax(+E) (§2.4).
"""

from __future__ import annotations

import torch.nn as nn

from common.eval import Retrieval
from common.layers.danet import CAM
from common.layers.resnet import build_resnet50
from common.layers.two_branch import CLASSIFIER_KEY, TwoBranchNet, remap_branch_order
from common.torchreid_run.checkpoint import load_torchreid_checkpoint, read_torchreid_checkpoint

__all__ = ["INPUT_SIZE", "RETRIEVAL", "WEIGHTS_HINT", "ABDNet", "ShallowCAM", "build_model",
           "load_trained"]

# What evaluation and deployment need (README command): the input size and the test convention
# with --flip-eval: bilinear resize, the mean of the image's and its mirror's 3,072-d feature, not
# normalised, squared Euclidean distance.
INPUT_SIZE = (384, 128)
RETRIEVAL = Retrieval(interpolation="bilinear", flip=True, normalize=False, distance="sqeuclidean")
# Ends the message when a weights file does not fit the network.
WEIGHTS_HINT = ". Was it trained with the same architecture flags (--abd-dan, --abd-np, --shallow-cam)?"


class ShallowCAM(nn.Module):
    """The CAM on layer1's output, without a head (``--shallow-cam``, §2.1)."""

    def __init__(self, cam_softmax="code"):
        super().__init__()
        self._cam_module = CAM(cam_softmax)

    def forward(self, x):
        return self._cam_module(x)


class ABDNet(TwoBranchNet):
    """ABD-Net (§2): ResNet-50 with last stride 1 and the shallow CAM in the two-branch frame.
    Forward returns ``(predict, logits, triplet_features, feature_maps)`` in training mode (§2.7)
    and the 3,072-d ``predict`` (global, then the parts) in eval mode.

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
        resnet = build_resnet50(last_stride=1, pretrained=pretrained, weights_path=weights_path)
        shallow = ShallowCAM(cam_softmax) if shallow_cam else nn.Identity()
        super().__init__(resnet, shallow, num_classes, dan=abd_dan, num_parts=abd_np,
                         global_dim=global_dim, part_dim=abd_dim, dropout=dropout,
                         cam_softmax=cam_softmax)


def build_model(num_classes, **options):
    """An :class:`ABDNet`; ``options`` are its keyword arguments (defaults = the README's)."""
    return ABDNet(num_classes, **options)


def load_trained(path, **options):
    """The network of a file written by ``abdnet/main.py`` or the released code (``checkpoint_*``,
    a training state or a bare state_dict, either branch order): the class count is read from
    the weights; ``options`` are the architecture flags the run used."""
    released = read_torchreid_checkpoint(path, remap_branch_order)
    model = build_model(released.num_classes(CLASSIFIER_KEY) or 751, pretrained=False, **options)
    load_torchreid_checkpoint(model, released, hint=WEIGHTS_HINT)
    return model
