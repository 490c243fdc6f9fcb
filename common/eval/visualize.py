"""Figures of retrieval results and of attention.

- Ranked-list images: each query beside its top-k gallery images, framed green for a true match
  and red for a false one, with each image's distance under it (torchreid's ``visrank``,
  ``../shared/specs/ecosystem.md`` §2.5), or all in one neutral grey when there are no labels (a
  search in a folder of crops). Junk gallery images (the query's identity seen by the query's
  camera, or identity -1) are left out as the evaluation leaves them out, or kept in place and
  framed :data:`JUNK_COLOR`.
- Attention overlays: maps of a network (:mod:`common.eval.attention`) over the image at its own
  aspect ratio, with a colour bar (matplotlib).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the file-only backend)
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image, ImageDraw, ImageOps  # noqa: E402

from common.data.images import read_image  # noqa: E402
from common.files import atomic_write  # noqa: E402

__all__ = ["CAPTION_HEIGHT", "JUNK_COLOR", "MATCH_COLOR", "MISMATCH_COLOR", "NEUTRAL_COLOR",
           "QUERY_COLOR", "save_attention_figure", "save_ranked_list", "upsample_map",
           "visualize_ranked_results"]

MATCH_COLOR = (0, 200, 0)
MISMATCH_COLOR = (220, 0, 0)
NEUTRAL_COLOR = (150, 150, 150)
QUERY_COLOR = (0, 0, 0)
JUNK_COLOR = (240, 170, 0)
CAPTION_HEIGHT = 14  # pixels of the text line under each image when captions are drawn
JUNK_RULES = ("skip", "mark")


def visualize_ranked_results(distmat, query, gallery, save_dir, topk=10, height=256, width=128,
                             border=4, gap=12, junk="skip"):
    """Writes ``<save_dir>/<query index>_<query file name>.png`` for every query and returns
    the paths written.

    Each image is the query (black frame), a gap, then its ``topk`` nearest gallery images in
    order, each with its distance written under it. With ``junk="skip"`` (the evaluation's rule)
    gallery images with the query's identity and camera, and those of identity -1, are left out
    of the list; with ``junk="mark"`` they keep their rank, framed :data:`JUNK_COLOR` and
    captioned "junk".

    Args:
        distmat: (Q, G) distances, smaller = closer, in the method's metric.
        query, gallery: the :class:`common.data.Sample` lists the rows and columns refer to.
    Raises:
        ValueError: ``distmat`` does not match the lists, or ``junk`` is not a rule.
    """
    distmat = np.asarray(distmat)
    if distmat.shape != (len(query), len(gallery)):
        raise ValueError(f"distmat is {distmat.shape} but there are {len(query)} queries and "
                         f"{len(gallery)} gallery images")
    if junk not in JUNK_RULES:
        raise ValueError(f"junk must be one of {JUNK_RULES}, got {junk!r}")
    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    g_pids = np.asarray([s.pid for s in gallery])
    g_camids = np.asarray([s.camid for s in gallery])
    written = []
    for index, sample in enumerate(query):
        order = np.argsort(distmat[index], kind="stable")
        is_junk = ((g_pids[order] == sample.pid) & (g_camids[order] == sample.camid)) | (
            g_pids[order] == -1)
        ranked = (order[~is_junk] if junk == "skip" else order)[:topk]
        ranked_junk = (np.zeros(len(ranked), bool) if junk == "skip" else is_junk[:topk])
        colors = [JUNK_COLOR if bad else MATCH_COLOR if g_pids[g] == sample.pid
                  else MISMATCH_COLOR for g, bad in zip(ranked, ranked_junk)]
        captions = [f"{distmat[index, g]:.4g}" + (" junk" if bad else "")
                    for g, bad in zip(ranked, ranked_junk)]
        path = save_dir / f"{index:05d}_{Path(sample.path).stem}.png"
        save_ranked_list(sample.path, [gallery[g].path for g in ranked], path, colors,
                         slots=topk, height=height, width=width, border=border, gap=gap,
                         captions=captions)
        written.append(path)
    return written


def save_ranked_list(query_path, gallery_paths, path, frame_colors=None, slots=None, height=256,
                     width=128, border=4, gap=12, captions=None):
    """Writes one ranked-list PNG to ``path``: the query image (black frame), a gap of ``gap``
    pixels, then the gallery images in rank order, each resized to ``height`` x ``width`` and
    framed with its entry of ``frame_colors`` (default: all :data:`NEUTRAL_COLOR`).

    ``captions`` (e.g. the distances), one per gallery image, are written in black on a white
    line of :data:`CAPTION_HEIGHT` pixels under the images (the query's reads "query"); without
    them the PNG is the images alone. ``slots`` (default ``len(gallery_paths)``) fixes the
    strip's length, so lists cut short still line up. A missing or unreadable image is a
    ``DatasetError`` naming it.
    """
    colors = frame_colors if frame_colors is not None else [NEUTRAL_COLOR] * len(gallery_paths)
    if len(colors) != len(gallery_paths):
        raise ValueError(f"{len(gallery_paths)} gallery images but {len(colors)} frame colours")
    if captions is not None and len(captions) != len(gallery_paths):
        raise ValueError(f"{len(gallery_paths)} gallery images but {len(captions)} captions")
    slots = len(gallery_paths) if slots is None else slots
    tile = (width + 2 * border, height + 2 * border)
    caption_height = CAPTION_HEIGHT if captions is not None else 0
    canvas = Image.new("RGB", (tile[0] * (1 + slots) + gap, tile[1] + caption_height),
                       (255, 255, 255))
    canvas.paste(_framed(query_path, width, height, border, QUERY_COLOR), (0, 0))
    lefts = [0] + [tile[0] * (1 + position) + gap for position in range(slots)]
    for left, gallery_path, color in zip(lefts[1:], gallery_paths[:slots], colors):
        canvas.paste(_framed(gallery_path, width, height, border, color), (left, 0))
    if captions is not None:
        draw = ImageDraw.Draw(canvas)
        for left, text in zip(lefts, ["query", *captions[:slots]]):
            draw.text((left + border, tile[1] + 1), text, fill=(0, 0, 0))
    with atomic_write(path) as handle:
        canvas.save(handle, format="PNG")


def _framed(path, width, height, border, color):
    image = read_image(path).resize((width, height), Image.BILINEAR)
    return ImageOps.expand(image, border=border, fill=color)


def upsample_map(values, height, width):
    """A (h, w) map bilinearly resized to the image's (height, width) pixels, corners aligned
    with the image's corners as a stride-s feature map's cells tile the input."""
    values = torch.as_tensor(np.asarray(values, dtype=np.float32))[None, None]
    return F.interpolate(values, size=(height, width), mode="bilinear",
                         align_corners=False)[0, 0].numpy()


def save_attention_figure(image, rows, path, title, labels=(), value_range=None, alpha=0.5,
                          cmap="jet", panel_height=2.4, colorbar_label="attention"):
    """Writes a PNG of attention maps over one image and returns the pixel boxes of its panels.

    Each row is the image, then its maps overlaid (``alpha`` blend of the ``cmap`` colours), every
    panel at the image's own aspect ratio (a map is resized to the image's pixels, not the
    image to the network's input). One colour bar serves the figure: ``value_range`` if given
    (a gate's fixed (0, 1)), else the smallest to the largest value drawn.

    Args:
        image: the person crop as a PIL image, at its real size.
        rows: ``[(row title, maps), ...]``, maps (K, h, w) array-like, the same K for each row
            (e.g. one row per checkpoint).
        path: the PNG to write.
        title: the figure's title (method, checkpoint, layer), lines split by "\\n"; the
            figure is widened to fit its longest line.
        labels: the K maps' names (default "map 1" ...).
    Returns:
        per row, the (left, top, right, bottom) pixel box of each panel in the PNG, the plain
        image first.
    Raises:
        ValueError: rows of different K, or ``labels`` of another length than K.
    """
    rows = [(name, np.asarray(maps, dtype=np.float32)) for name, maps in rows]
    counts = {maps.shape[0] for _, maps in rows}
    if len(counts) != 1:
        raise ValueError(f"every row needs the same number of maps, got {sorted(counts)}")
    count = counts.pop()
    labels = tuple(labels) or tuple(f"map {k + 1}" for k in range(count))
    if len(labels) != count:
        raise ValueError(f"{count} maps but {len(labels)} labels")
    pixels = np.asarray(image.convert("RGB"))
    height, width = pixels.shape[:2]
    low, high = value_range or (min(float(m.min()) for _, m in rows),
                                max(float(m.max()) for _, m in rows))
    high = high if high > low else low + 1e-6
    panel_width = panel_height * width / height
    lines = title.count("\n") + 1
    figure, axes = plt.subplots(len(rows), count + 1, squeeze=False,
                                figsize=(max((count + 1) * (panel_width + 0.15) + 1.1,
                                             0.07 * max(map(len, title.splitlines())) + 0.6),
                                         len(rows) * (panel_height + 0.35) + 0.5 + 0.2 * lines))
    shown = None
    for row, (row_title, maps) in enumerate(rows):
        axes[row, 0].imshow(pixels)
        axes[row, 0].set_title("image", fontsize=8)
        axes[row, 0].set_ylabel(row_title, fontsize=8)
        for k in range(count):
            panel = axes[row, k + 1]
            panel.imshow(pixels)
            shown = panel.imshow(upsample_map(maps[k], height, width), cmap=cmap, alpha=alpha,
                                 vmin=low, vmax=high)
            panel.set_title(labels[k], fontsize=8)
        for panel in axes[row]:
            panel.set_xticks([])
            panel.set_yticks([])
    figure.suptitle(title, fontsize=9)
    figure.tight_layout(rect=(0, 0, 1 - 0.9 / figure.get_figwidth(), 1))
    bar = figure.add_axes((1 - 0.75 / figure.get_figwidth(), 0.1,
                           0.15 / figure.get_figwidth(), 0.75))
    figure.colorbar(shown, cax=bar).set_label(colorbar_label, fontsize=8)
    figure.canvas.draw()
    figure_height = figure.canvas.get_width_height()[1]
    boxes = [[_pixel_box(panel.get_window_extent(), figure_height) for panel in axes[row]]
             for row in range(len(rows))]
    with atomic_write(path) as handle:
        figure.savefig(handle, format="png", dpi=figure.dpi)
    plt.close(figure)
    return boxes


def _pixel_box(extent, figure_height):
    """A matplotlib display box (origin bottom left) as PNG pixels (origin top left)."""
    return (int(round(extent.x0)), int(round(figure_height - extent.y1)),
            int(round(extent.x1)), int(round(figure_height - extent.y0)))
