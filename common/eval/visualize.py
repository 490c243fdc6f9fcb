"""Ranked-list images: each query beside its top-k gallery images, framed green for a true match
and red for a false one (torchreid's ``visrank``, ``../shared/specs/ecosystem.md`` §2.5), or all
in one neutral grey when there are no labels (a search in a folder of crops)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from common.data.images import read_image
from common.files import atomic_write

__all__ = ["MATCH_COLOR", "MISMATCH_COLOR", "NEUTRAL_COLOR", "save_ranked_list",
           "visualize_ranked_results"]

MATCH_COLOR = (0, 200, 0)
MISMATCH_COLOR = (220, 0, 0)
NEUTRAL_COLOR = (150, 150, 150)
QUERY_COLOR = (0, 0, 0)


def visualize_ranked_results(distmat, query, gallery, save_dir, topk=10, height=256, width=128,
                             border=4, gap=12):
    """Writes ``<save_dir>/<query index>_<query file name>.png`` for every query and returns the
    paths written.

    Each image is the query (black frame), a gap, then its ``topk`` nearest gallery images in
    order. As in the evaluation, gallery images with the query's identity and camera, and those
    of identity -1, are left out of the list.

    Args:
        distmat: (Q, G) distances, smaller = closer.
        query, gallery: the :class:`common.data.Sample` lists the rows and columns refer to.
    """
    distmat = np.asarray(distmat)
    if distmat.shape != (len(query), len(gallery)):
        raise ValueError(f"distmat is {distmat.shape} but there are {len(query)} queries and "
                         f"{len(gallery)} gallery images")
    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    g_pids = np.asarray([s.pid for s in gallery])
    g_camids = np.asarray([s.camid for s in gallery])
    written = []
    for index, sample in enumerate(query):
        order = np.argsort(distmat[index], kind="stable")
        junk = ((g_pids[order] == sample.pid) & (g_camids[order] == sample.camid)) | (
            g_pids[order] == -1)
        ranked = order[~junk][:topk]
        colors = [MATCH_COLOR if g_pids[g] == sample.pid else MISMATCH_COLOR for g in ranked]
        path = save_dir / f"{index:05d}_{Path(sample.path).stem}.png"
        save_ranked_list(sample.path, [gallery[g].path for g in ranked], path, colors,
                         slots=topk, height=height, width=width, border=border, gap=gap)
        written.append(path)
    return written


def save_ranked_list(query_path, gallery_paths, path, frame_colors=None, slots=None, height=256,
                     width=128, border=4, gap=12):
    """Writes one ranked-list PNG to ``path``: the query image (black frame), a gap of ``gap``
    pixels, then the gallery images in rank order, each resized to ``height`` x ``width`` and
    framed with its entry of ``frame_colors`` (default: all :data:`NEUTRAL_COLOR`).

    ``slots`` (default ``len(gallery_paths)``) fixes the strip's length, so lists cut short
    still line up. A missing or unreadable image is a ``DatasetError`` naming it.
    """
    colors = frame_colors if frame_colors is not None else [NEUTRAL_COLOR] * len(gallery_paths)
    if len(colors) != len(gallery_paths):
        raise ValueError(f"{len(gallery_paths)} gallery images but {len(colors)} frame colours")
    slots = len(gallery_paths) if slots is None else slots
    tile = (width + 2 * border, height + 2 * border)
    canvas = Image.new("RGB", (tile[0] * (1 + slots) + gap, tile[1]), (255, 255, 255))
    canvas.paste(_framed(query_path, width, height, border, QUERY_COLOR), (0, 0))
    for position, (gallery_path, color) in enumerate(zip(gallery_paths[:slots], colors)):
        canvas.paste(_framed(gallery_path, width, height, border, color),
                     (tile[0] * (1 + position) + gap, 0))
    with atomic_write(path) as handle:
        canvas.save(handle, format="PNG")


def _framed(path, width, height, border, color):
    image = read_image(path).resize((width, height), Image.BILINEAR)
    return ImageOps.expand(image, border=border, fill=color)
