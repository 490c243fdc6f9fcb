"""Feature extraction for evaluation: flip averaging and optional L2 normalisation; a tracklet's
feature as the mean of its clip features (video re-ID)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

__all__ = ["NonFiniteFeaturesError", "Retrieval", "extract_features", "tracklet_features"]


class NonFiniteFeaturesError(ValueError):
    """The network produced NaN or infinite features (diverged or corrupt weights)."""


@dataclass(frozen=True)
class Retrieval:
    """How a method's evaluation makes and compares features (each method's ``model.py``
    states its README convention; its ``main.py`` flags may change it).

    Attributes:
        interpolation: of the test-time resize to the input size, "bilinear" or "bicubic".
        flip: average the features of the image and of its mirror.
        normalize: L2-normalise the (averaged) feature.
        distance: a :func:`common.eval.compute_distance_matrix` metric.
        protocol: a :func:`common.eval.evaluate_rank` protocol.
    """

    interpolation: str
    flip: bool
    normalize: bool
    distance: str
    protocol: str = "standard"


@torch.no_grad()
def extract_features(model, loader, device="cpu", flip=False, normalize=False, amp=False,
                     progress=True, desc="features"):
    """Runs ``model`` in eval mode over ``loader`` and returns ``(features, pids, camids)``.

    Args:
        model: maps a (B, 3, H, W) batch (or a (B, T, 3, H, W) batch of clips) to (B, D)
            features: an ``nn.Module`` (put in eval mode for the call, then restored) or any
            callable, such as a loaded TorchScript or ``torch.export`` file, used as it is.
        loader: yields ``(images, pids, camids)`` batches (``common.data.ImageDataset``, or
            ``common.data.ClipDataset`` for clips).
        flip: average the features of each image and of its horizontal mirror (the last axis).
        normalize: L2-normalise each (flip-averaged) feature.
        amp: run the model under float16 autocast (CUDA only; ignored on the CPU).
        progress: show a tqdm bar.

    Returns:
        features as a float32 CPU tensor (N, D), pids and camids as int64 numpy arrays.

    Raises:
        NonFiniteFeaturesError: a feature holds NaN or an infinity.

    The global torch generator is left as it was (iterating a DataLoader draws from it), so a
    training run does not depend on when it is evaluated: an interrupted run resumed from a
    checkpoint matches an uninterrupted one whatever the evaluation schedules.
    """
    with torch.random.fork_rng(devices=[]):
        return _extract(model, loader, device, flip, normalize, amp, progress, desc)


def _extract(model, loader, device, flip, normalize, amp, progress, desc):
    switch_mode = isinstance(model, torch.nn.Module)
    if switch_mode:
        was_training = model.training
        model.eval()
    device = torch.device(device)
    use_amp = amp and device.type == "cuda"
    features, pids, camids = [], [], []
    for images, batch_pids, batch_camids in tqdm(loader, desc=desc, disable=not progress,
                                                 leave=False):
        images = images.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            out = model(images).float()
            if flip:
                out = (out + model(torch.flip(images, dims=[-1])).float()) / 2
        if normalize:
            out = F.normalize(out, dim=1)
        features.append(out.cpu())
        pids.append(np.asarray(batch_pids))
        camids.append(np.asarray(batch_camids))
    if switch_mode:
        model.train(was_training)
    if not features:
        return torch.zeros(0, 0), np.zeros(0, np.int64), np.zeros(0, np.int64)
    features = torch.cat(features)
    bad = int((~torch.isfinite(features).all(dim=1)).sum())
    if bad:
        raise NonFiniteFeaturesError(f"the network produced non-finite (NaN or infinite) features "
                                     f"for {bad} of {len(features)} {desc} images")
    return features, np.concatenate(pids).astype(np.int64), np.concatenate(camids).astype(np.int64)


def tracklet_features(clip_features, tracklet_of_clip, num_tracklets=None):
    """The feature of each tracklet: the mean of its clips' features.

    Args:
        clip_features: (N, D) tensor, one row per clip.
        tracklet_of_clip: (N,) integers, the tracklet of each clip
            (``common.data.ClipDataset.tracklet_of_clip``).
        num_tracklets: number of tracklets (default: the largest index + 1).

    Returns:
        (num_tracklets, D) float32 tensor. Raises ValueError when a tracklet has no clip.
    """
    index = torch.as_tensor(np.asarray(tracklet_of_clip), dtype=torch.int64)
    if index.numel() != len(clip_features):
        raise ValueError(f"{len(clip_features)} clip features but {index.numel()} tracklet "
                         f"indices")
    if num_tracklets is None:
        num_tracklets = int(index.max()) + 1 if index.numel() else 0
    if index.numel() and (index.min() < 0 or index.max() >= num_tracklets):
        raise ValueError(f"tracklet indices must lie in 0..{num_tracklets - 1}")
    counts = torch.bincount(index, minlength=num_tracklets)
    if (counts == 0).any():
        empty = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"tracklets {empty[:10]} have no clip; every tracklet needs one")
    sums = torch.zeros(num_tracklets, clip_features.shape[1], dtype=torch.float32)
    sums.index_add_(0, index, clip_features.float().cpu())
    return sums / counts[:, None]
