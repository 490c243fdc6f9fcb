"""What a network attends to, read from the network itself: its attention outputs through
forward hooks (a method declares them as :class:`AttentionTap` s in its ``attention.py``),
torchreid's activation maps (``tools/visualize_actmap.py``) and Grad-CAM (Selvaraju et al., ICCV
2017) on the retrieval feature.

Nothing here edits a forward pass: a hook records a module's output while the network runs as
it does in evaluation. Maps are (N, K, h, w) float tensors on the network's grid (h, w the
module's output size); :mod:`common.eval.visualize` draws them over the images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

__all__ = ["AttentionTap", "AttentionTapError", "activation_map", "grad_cam", "read_attention",
           "stripes_stacked"]


class AttentionTapError(ValueError):
    """A tap or layer that does not fit the network; the message names it and the fix."""


@dataclass(frozen=True)
class AttentionTap:
    """One attention output of a network, read with forward hooks on ``modules``.

    Attributes:
        name: the figure's label for it (e.g. ``"cam"``).
        modules: the modules' paths in the network (``network.get_submodule(path)``); most
            taps read one module, a map made per horizontal stripe by one module per stripe
            reads them all, top stripe first.
        to_maps: the modules' outputs, in the order of ``modules`` and, for each, of its calls
            (a module applied to each stripe runs once per stripe), -> (N, K, h, w) maps.
        labels: the names of the K maps (e.g. body parts), or ``()`` for numbered maps.
        value_range: the maps' fixed range (e.g. ``(0, 1)`` for sigmoid gates), drawn as the
            colour bar's; ``None`` scales the colour bar to the values of each figure.
        unit: what the values are, the colour bar's label.
        description: what the maps are, with the source (``bench.visualize`` prints it for
            each tap it draws).
    """

    name: str
    modules: tuple
    to_maps: Callable[[list], torch.Tensor]
    labels: tuple = ()
    value_range: Optional[tuple] = None
    unit: str = "activation (unit L2 norm)"
    description: str = ""


def activation_map(features):
    """torchreid's activation map (``tools/visualize_actmap.py``): the mean over channels of the
    squared activations, L2-normalised over the h w positions of each image.

    (N, C, h, w) -> (N, 1, h, w), unitless, >= 0, each image's map of unit L2 norm.
    """
    n, _, h, w = features.shape
    energy = features.float().pow(2).mean(dim=1).reshape(n, h * w)
    return F.normalize(energy, p=2, dim=1).reshape(n, 1, h, w)


def stripes_stacked(outputs):
    """The outputs of a module run once per horizontal stripe, top stripe first, put back
    together along the height: list of (N, C, h_i, w) -> (N, C, sum h_i, w)."""
    return torch.cat(list(outputs), dim=2)


def _hooked_outputs(network, paths):
    """Registers a hook on each module path; returns ``(outputs per path, handles)``."""
    outputs, handles = {path: [] for path in paths}, []
    for path in paths:
        try:
            module = network.get_submodule(path)
        except AttributeError:
            for handle in handles:
                handle.remove()
            raise AttributeError(path) from None
        handles.append(module.register_forward_hook(
            lambda module, inputs, output, path=path: outputs[path].append(output)))
    return outputs, handles


def read_attention(network, taps, images):
    """Runs ``network`` once on ``images`` (N, 3, H, W) without gradients and returns
    ``{tap.name: (N, K, h, w) float tensor}`` for each of ``taps``, in their order.

    The network runs in the mode it is in (evaluation mode for the maps the retrieval
    feature sees). A tap whose module the network lacks, or that does not run, is an
    :class:`AttentionTapError` naming it.
    """
    paths = list(dict.fromkeys(path for tap in taps for path in tap.modules))
    try:
        outputs, handles = _hooked_outputs(network, paths)
    except AttributeError as err:
        tap = next(t for t in taps if err.args[0] in t.modules)
        raise AttentionTapError(f"attention tap {tap.name!r}: the network has no module "
                                f"{err.args[0]!r} (built with other options than the tap list "
                                f"assumes?)") from None
    try:
        with torch.no_grad():
            network(images)
    finally:
        for handle in handles:
            handle.remove()
    maps = {}
    for tap in taps:
        silent = [path for path in tap.modules if not outputs[path]]
        if silent:
            raise AttentionTapError(f"attention tap {tap.name!r}: module {silent[0]!r} did not "
                                    f"run in the forward pass")
        maps[tap.name] = tap.to_maps([out for path in tap.modules for out in outputs[path]])
        maps[tap.name] = maps[tap.name].float()
        if maps[tap.name].dim() != 4 or len(maps[tap.name]) != len(images):
            raise AttentionTapError(f"attention tap {tap.name!r} gave maps of shape "
                                    f"{tuple(maps[tap.name].shape)}, not (N={len(images)}, K, "
                                    f"h, w)")
    return maps


def grad_cam(network, layer, images):
    """Grad-CAM (Selvaraju et al., ICCV 2017) of ``network``'s retrieval feature at module
    ``layer``: ReLU(sum_k alpha_k A_k), alpha_k the mean over positions of dS/dA_k.

    The network is one without classes at test time, so the score S of image n is its own
    retrieval feature's projection on itself, S_n = f_n . stop_gradient(f_n) (half the gradient
    of ||f_n||^2; Grad-CAM is unchanged by that positive factor): the map shows the positions
    that make the feature large. ``layer``'s output is a (N, C, h, w) tensor, or a tuple whose
    first entry is one (the feature map of a block that also returns its attention).

    Returns (N, 1, h, w) float maps, >= 0, in units of the feature's squared norm per
    activation. A layer the network lacks, or one that runs more or less than once per
    forward pass, is an :class:`AttentionTapError`.
    """
    try:
        outputs, handles = _hooked_outputs(network, [layer])
    except AttributeError:
        raise AttentionTapError(f"Grad-CAM layer {layer!r}: the network has no such module "
                                f"(name one of network.named_modules())") from None
    try:
        with torch.enable_grad():
            # an input with a gradient, so that frozen weights still give one
            feature = network(images.detach().requires_grad_(True))
            if len(outputs[layer]) != 1:
                raise AttentionTapError(f"Grad-CAM layer {layer!r} ran {len(outputs[layer])} "
                                        f"times in one forward pass; choose a layer that runs "
                                        f"once")
            activations = outputs[layer][0]
            if isinstance(activations, (tuple, list)):
                activations = activations[0]
            score = (feature * feature.detach()).sum()
            gradient, = torch.autograd.grad(score, activations, allow_unused=True)
            if gradient is None:
                raise AttentionTapError(f"Grad-CAM layer {layer!r} does not lead to the "
                                        f"retrieval feature; choose one before it")
    finally:
        for handle in handles:
            handle.remove()
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    return F.relu((weights * activations.detach()).sum(dim=1, keepdim=True)).float()
