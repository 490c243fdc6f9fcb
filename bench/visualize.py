"""Figures of what a method's network attends to and of what it retrieves, as PNGs.

    python -m bench.visualize METHOD [--checkpoint PATH [--checkpoint PATH2]] --data DIR
        [--dataset NAME] --out DIR [--kind attention|gradcam|actmap|ranks]
        [--images N [--seed S] | --pick FILE ...] [--layer MODULE] [--max-maps K]
        [--top-k K] [--junk skip|mark] [--size H W] [--model-option NAME=VALUE ...]

``METHOD`` is one of lagnet, abdnet, iabnet, iaunet, apnet; the network is loaded as
``bench.extract`` loads it (``bench.models``: the checkpoint's class count, its run's input size
and architecture flags), with fresh weights when no ``--checkpoint`` is given (the figures then
say "untrained weights"). A second ``--checkpoint`` (e.g. ABD-Net trained without and with
O.F./O.W.) adds a second row to every attention, Grad-CAM or activation-map figure.

``--data`` is a folder of person crops (searched recursively), or with ``--dataset NAME`` the
root of a dataset that ``common.data.build_dataset`` parses (its query images are drawn, and
ranked against its gallery). Images are ``--pick`` ed by file name, else ``--images`` N drawn
at random (``--seed``). Each image is preprocessed as the method's evaluation does (input size,
interpolation, ImageNet normalisation); maps are drawn over the image at its own size.

Kinds, each in its own folder under ``--out``:

- ``attention``: the method's own attention maps, read with forward hooks at the taps its
  ``<method>/attention.py`` declares; one PNG per image and tap;
- ``gradcam``: Grad-CAM of the retrieval feature at ``--layer`` (default: the method's
  ``GRADCAM_LAYER``), each row scaled by its maximum;
- ``actmap``: torchreid's activation map (mean of squared activations, L2-normalised) at
  ``--layer``;
- ``ranks``: each chosen query with its ``--top-k`` nearest gallery images and their distances
  (in the method's metric), framed green / red by identity with ``--dataset``, grey for a folder
  of crops (ranked against the other crops); junk is left out, or with ``--junk mark`` kept in
  place and framed orange.
"""

from __future__ import annotations

import argparse
import importlib
import random
import sys
from pathlib import Path

import numpy as np
import torch

from bench.extract import ExtractError, extract_samples, image_paths, load_eager
from bench.models import BENCH_METHODS, BenchModelError, parse_model_options
from common.data.dataset import DatasetError, Sample
from common.data.datasets import DATASETS, build_dataset
from common.data.images import read_image
from common.data.transforms import build_test_transform
from common.eval import compute_distance_matrix
from common.eval.attention import (AttentionTap, AttentionTapError, activation_map, grad_cam,
                                   read_attention)
from common.eval.visualize import (NEUTRAL_COLOR, save_attention_figure, save_ranked_list,
                                   visualize_ranked_results)
from common.files import FileWriteError

__all__ = ["KINDS", "VisualizeError", "Weights", "choose_images", "draw_attention", "draw_maps",
           "draw_ranks", "load_networks", "read_inputs"]

KINDS = ("attention", "gradcam", "actmap", "ranks")
UNTRAINED = "untrained weights"


class VisualizeError(ValueError):
    """Inputs that cannot be drawn; the message names the problem and the fix."""


class Weights:
    """One network to draw: its :class:`bench.extract.Extractor` and the label that names its
    weights on the figures (the checkpoint's folder and file, or "untrained weights")."""

    def __init__(self, extractor, label):
        self.extractor, self.label = extractor, label

    def batch(self, samples):
        """The samples' images as the method's evaluation feeds them: (N, 3, H, W)."""
        ext = self.extractor
        transform = build_test_transform(ext.height, ext.width, ext.retrieval.interpolation)
        return torch.stack([transform(read_image(s.path)) for s in samples])


def load_networks(method, checkpoints, size=None, options=None):
    """One :class:`Weights` per checkpoint (fresh weights for none), eval mode, on the CPU."""
    weights = []
    for checkpoint in checkpoints or [None]:
        label = UNTRAINED if checkpoint is None else f"{Path(checkpoint).parent.name}/" \
                                                     f"{Path(checkpoint).name}"
        weights.append(Weights(load_eager(method, checkpoint, size, "cpu", options), label))
    return weights


def read_inputs(data, dataset=None):
    """``(query, gallery, labelled)``: a dataset's query and gallery :class:`Sample` lists, or
    every crop of the folder ``data`` as both (identity -1, not labelled)."""
    if dataset is not None:
        parsed = build_dataset(dataset, data)
        return parsed.query, parsed.gallery, True
    samples = [Sample(str(path), -1, -1) for path in image_paths(data)]
    return samples, samples, False


def choose_images(samples, count=4, picks=None, seed=0):
    """Indices into ``samples``: those whose file name (or name without extension) is in
    ``picks``, in that order, else ``count`` drawn at random with ``seed``, in list order."""
    if picks:
        by_name = {}
        for index, sample in enumerate(samples):
            by_name.setdefault(Path(sample.path).name, index)
            by_name.setdefault(Path(sample.path).stem, index)
        missing = [name for name in picks if name not in by_name]
        if missing:
            raise VisualizeError(f"--pick {missing[0]}: no such image among the {len(samples)} "
                                 f"inputs; give a file name from --data (e.g. "
                                 f"{Path(samples[0].path).name})")
        return [by_name[name] for name in picks]
    if count < 1:
        raise VisualizeError(f"--images must be >= 1, got {count}")
    return sorted(random.Random(seed).sample(range(len(samples)), min(count, len(samples))))


def _method_attention(method):
    return importlib.import_module(f"{method}.attention")


def _title(method, weights, what, sample):
    names = weights[0].label if len(weights) == 1 else " (top) vs ".join(w.label for w in weights)
    return f"{method} | {names}\n{what} | {Path(sample.path).name}"


def _figure_path(folder, index, sample, name):
    return folder / f"{index:05d}_{Path(sample.path).stem}_{name.replace('.', '-')}.png"


def draw_attention(method, weights, samples, folder, max_maps=8):
    """One PNG per image and attention tap of ``method`` (``<method>/attention.py``), a row
    per entry of ``weights``, at most ``max_maps`` maps a row; returns the paths written."""
    taps_of = _method_attention(method).attention_taps
    taps = [taps_of(w.extractor.network) for w in weights]
    names = [[tap.name for tap in row] for row in taps]
    if any(row != names[0] for row in names):
        raise VisualizeError(f"the two checkpoints have different attention taps ({names[0]} "
                             f"vs {names[1]}): give checkpoints of one architecture")
    maps = [read_attention(w.extractor.network, row, w.batch(samples))
            for w, row in zip(weights, taps)]
    written = []
    for tap in taps[0]:
        modules = tap.modules[0] + (f" (+{len(tap.modules) - 1})" if len(tap.modules) > 1 else "")
        for i, sample in enumerate(samples):
            rows = [(w.label, m[tap.name][i, :max_maps].numpy()) for w, m in zip(weights, maps)]
            path = _figure_path(folder, i, sample, tap.name)
            save_attention_figure(read_image(sample.path), rows, path,
                                  _title(method, weights, f"{tap.name}: {modules}", sample),
                                  labels=tap.labels[:max_maps] if tap.labels else (),
                                  value_range=tap.value_range, colorbar_label=tap.unit)
            written.append(path)
    return written


def _first_tensor(output):
    return output[0] if isinstance(output, (tuple, list)) else output


def draw_maps(method, weights, samples, folder, kind="gradcam", layer=None):
    """One PNG per image of Grad-CAM (``kind="gradcam"``, each row divided by its maximum) or
    torchreid's activation map (``"actmap"``) at module ``layer`` (default: the method's
    ``GRADCAM_LAYER``), a row per entry of ``weights``; returns the paths written."""
    layer = layer or _method_attention(method).GRADCAM_LAYER
    rows_of = []
    for w in weights:
        images = w.batch(samples)
        if kind == "gradcam":
            maps = grad_cam(w.extractor.network, layer, images)
            maps = maps / maps.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
        else:
            tap = AttentionTap(layer, (layer,),
                               lambda outputs: activation_map(_first_tensor(outputs[0])))
            maps = read_attention(w.extractor.network, [tap], images)[layer]
        rows_of.append(maps)
    label = "Grad-CAM / its maximum" if kind == "gradcam" else "activation (unit L2 norm)"
    written = []
    for i, sample in enumerate(samples):
        path = _figure_path(folder, i, sample, f"{kind}_{layer}")
        save_attention_figure(read_image(sample.path),
                              [(w.label, m[i].numpy()) for w, m in zip(weights, rows_of)], path,
                              _title(method, weights, f"{kind} at {layer}", sample),
                              labels=(kind,), value_range=(0.0, 1.0) if kind == "gradcam"
                              else None, colorbar_label=label)
        written.append(path)
    return written


def draw_ranks(weights, query, gallery, indices, labelled, folder, top_k=10, junk="skip"):
    """Ranked lists of the queries ``query[indices]`` (``common.eval.visualize``), distances in
    the method's metric, numbered in the order of ``indices``; returns the paths written.
    Without labels each query is ranked against the other crops, in grey frames."""
    extractor = weights.extractor
    metric = extractor.retrieval.distance
    chosen = [query[i] for i in indices]
    g = extract_samples(extractor, gallery, progress=False)
    q = extract_samples(extractor, chosen, progress=False) if labelled else g[indices]
    distmat = compute_distance_matrix(q, g, metric=metric)
    if labelled:
        return visualize_ranked_results(distmat, chosen, gallery, folder, topk=top_k, junk=junk)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for row, (index, sample) in enumerate(zip(indices, chosen)):
        order = [j for j in np.argsort(distmat[row], kind="stable") if j != index][:top_k]
        path = folder / f"{row:05d}_{Path(sample.path).stem}.png"
        save_ranked_list(sample.path, [gallery[j].path for j in order], path,
                         [NEUTRAL_COLOR] * len(order), slots=top_k,
                         captions=[f"{distmat[row, j]:.4g}" for j in order])
        written.append(path)
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.visualize",
                                     description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("method", choices=list(BENCH_METHODS))
    parser.add_argument("--checkpoint", action="append", default=[],
                        help="weights written by the method's main.py; twice for two rows "
                             "(default: fresh, untrained weights)")
    parser.add_argument("--data", type=Path, required=True,
                        help="a folder of crops, or with --dataset a dataset root")
    parser.add_argument("--dataset", choices=list(DATASETS), default=None,
                        help="parse --data as this dataset (query drawn, gallery ranked)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the PNGs")
    parser.add_argument("--kind", choices=KINDS, default="attention")
    parser.add_argument("--images", type=int, default=4, help="random images to draw")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random choice")
    parser.add_argument("--pick", nargs="+", default=None, metavar="FILE",
                        help="draw these images (file names) instead of random ones")
    parser.add_argument("--layer", default=None,
                        help="gradcam/actmap: the module (default: the method's GRADCAM_LAYER)")
    parser.add_argument("--max-maps", type=int, default=8, help="attention maps per row")
    parser.add_argument("--top-k", type=int, default=10, help="ranks: gallery images per list")
    parser.add_argument("--junk", choices=("skip", "mark"), default="skip",
                        help="ranks: leave junk out (as the evaluation does) or mark it")
    parser.add_argument("--size", nargs=2, type=int, default=None, metavar=("H", "W"),
                        help="input size (default: the checkpoint run's, else the README's)")
    parser.add_argument("--model-option", nargs="*", default=[], metavar="NAME=VALUE",
                        help="build_model arguments of a run with non-README architecture flags")
    args = parser.parse_args(argv)
    if len(args.checkpoint) > 2:
        parser.error("--checkpoint is given once or twice (two rows per figure)")
    if args.kind == "ranks" and len(args.checkpoint) > 1:
        parser.error("--kind ranks draws one network's lists: give one --checkpoint")
    if args.top_k < 1 or args.max_maps < 1:
        parser.error("--top-k and --max-maps must be >= 1")
    if not args.checkpoint:
        print(f"bench.visualize: warning: no --checkpoint, so the figures show a fresh "
              f"(untrained) {args.method} network", file=sys.stderr)
    folder = args.out / args.kind
    try:
        query, gallery, labelled = read_inputs(args.data, args.dataset)
        indices = choose_images(query, args.images, args.pick, args.seed)
        weights = load_networks(args.method, args.checkpoint, args.size,
                               parse_model_options(args.model_option))
        chosen = [query[i] for i in indices]
        folder.mkdir(parents=True, exist_ok=True)
        if args.kind == "attention":
            written = draw_attention(args.method, weights, chosen, folder, args.max_maps)
        elif args.kind == "ranks":
            written = draw_ranks(weights[0], query, gallery, indices, labelled, folder,
                                 args.top_k, args.junk)
        else:
            written = draw_maps(args.method, weights, chosen, folder, args.kind, args.layer)
    except (AttentionTapError, BenchModelError, DatasetError, ExtractError, FileWriteError,
            VisualizeError) as err:
        sys.exit(f"bench.visualize: error: {err}")
    print(f"wrote {len(written)} {args.kind} figures of {args.method} to {folder}")
    if args.kind == "attention":
        for tap in _method_attention(args.method).attention_taps(weights[0].extractor.network):
            print(f"  {tap.name}: {tap.description}")


if __name__ == "__main__":
    main()
