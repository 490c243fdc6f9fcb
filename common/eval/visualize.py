"""Ranked-list images: each query beside its top-k gallery images, framed green for a true match
and red for a false one (torchreid's ``visrank``, ``../shared/specs/ecosystem.md`` §2.5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from common.data.images import read_image
from common.files import atomic_write

__all__ = ["MATCH_COLOR", "MISMATCH_COLOR", "visualize_ranked_results"]

MATCH_COLOR = (0, 200, 0)
MISMATCH_COLOR = (220, 0, 0)
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
    tile = (width + 2 * border, height + 2 * border)
    written = []
    for index, sample in enumerate(query):
        order = np.argsort(distmat[index], kind="stable")
        junk = ((g_pids[order] == sample.pid) & (g_camids[order] == sample.camid)) | (
            g_pids[order] == -1)
        ranked = order[~junk][:topk]
        canvas = Image.new("RGB", (tile[0] * (1 + topk) + gap, tile[1]), (255, 255, 255))
        canvas.paste(_framed(sample.path, width, height, border, QUERY_COLOR), (0, 0))
        for position, g in enumerate(ranked):
            color = MATCH_COLOR if g_pids[g] == sample.pid else MISMATCH_COLOR
            canvas.paste(_framed(gallery[g].path, width, height, border, color),
                         (tile[0] * (1 + position) + gap, 0))
        path = save_dir / f"{index:05d}_{Path(sample.path).stem}.png"
        with atomic_write(path) as handle:
            canvas.save(handle, format="PNG")
        written.append(path)
    return written


def _framed(path, width, height, border, color):
    image = read_image(path).resize((width, height), Image.BILINEAR)
    return ImageOps.expand(image, border=border, fill=color)
