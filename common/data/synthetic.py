"""A synthetic re-ID dataset in the Market-1501 layout, rendered deterministically from a seed.

Each identity is a combination of attributes drawn from small shared palettes, so no single
attribute (and no colour histogram) identifies it: top and bottom colours, top pattern (plain,
stripes, checks, two-tone), sleeve and trouser length, body height and build, skin and hair,
hat, and a backpack or shoulder bag. Each camera changes how people look: its colour cast and
brightness, background, how often people face it or walk away from it (the backpack shows from
behind, only its straps from the front), the person's scale, blur, noise, and how often something
stands in front of them.

The output is a Market-1501 tree (``bounding_box_train``, ``query``, ``bounding_box_test``) with
Market file names, so :func:`common.data.load_market1501` reads it like the real dataset. The
gallery also holds pid 0 distractors (people who are never queried) and pid -1 junk (clipped
boxes), as Market-1501 does. Generation is deterministic: the same arguments give the same files.

Command line::

    python -m common.data.synthetic data/synthetic --num-ids 200 --images-per-id 8
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from common.files import atomic_write

__all__ = ["SyntheticConfig", "generate"]

HEIGHT, WIDTH = 128, 64  # Market-1501's box size
SCALE = 2  # drawn at twice the size, then downsampled (anti-aliasing)

PALETTE = {
    "black": (30, 30, 35), "white": (230, 230, 225), "grey": (128, 128, 130),
    "red": (200, 40, 45), "blue": (40, 70, 190), "navy": (25, 35, 90), "green": (50, 140, 60),
    "yellow": (225, 200, 50), "orange": (230, 120, 35), "purple": (120, 60, 150),
    "brown": (110, 70, 40), "pink": (230, 140, 170), "beige": (200, 180, 140),
    "teal": (40, 140, 140),
}
COLOURS = list(PALETTE)
SKIN = [(240, 200, 170), (210, 160, 120), (160, 110, 75), (100, 65, 45)]
HAIR = [(20, 15, 10), (90, 60, 30), (200, 170, 90), (130, 130, 130)]
PATTERNS = ("plain", "stripes", "checks", "two-tone")
CARRY = ("none", "backpack", "shoulder-bag")
MANIFEST = "synthetic.json"


@dataclass(frozen=True)
class SyntheticConfig:
    num_ids: int = 200
    images_per_id: int = 8
    num_cameras: int = 6
    train_fraction: float = 0.5
    num_distractors: int = 20
    num_junk: int = 20
    seed: int = 0


def _identity(seed, pid):
    rng = np.random.default_rng([seed, 1, pid])
    top, bottom = rng.choice(len(COLOURS), size=2, replace=False)
    return {
        "top": PALETTE[COLOURS[top]],
        "top2": PALETTE[COLOURS[rng.integers(len(COLOURS))]],
        "bottom": PALETTE[COLOURS[bottom]],
        "shoes": PALETTE[("black", "white", "brown")[rng.integers(3)]],
        "pattern": PATTERNS[rng.integers(len(PATTERNS))],
        "long_sleeves": bool(rng.integers(2)),
        "shorts": bool(rng.random() < 0.3),
        "height": rng.uniform(0.80, 0.97),
        "build": rng.uniform(0.80, 1.20),
        "skin": SKIN[rng.integers(len(SKIN))],
        "hair": HAIR[rng.integers(len(HAIR))],
        "hat": PALETTE[COLOURS[rng.integers(len(COLOURS))]] if rng.random() < 0.25 else None,
        "carry": CARRY[rng.integers(len(CARRY))],
        "bag": PALETTE[COLOURS[rng.integers(len(COLOURS))]],
    }


def _camera(seed, camid):
    rng = np.random.default_rng([seed, 2, camid])
    return {
        "gain": rng.uniform(0.75, 1.25, size=3),
        "brightness": rng.uniform(-25, 25),
        "wall": rng.integers(60, 200, size=3),
        "floor": rng.integers(50, 180, size=3),
        "horizon": rng.uniform(0.55, 0.8),
        "texture": rng.uniform(5, 25),
        "p_back": rng.uniform(0.1, 0.9),
        "scale": rng.uniform(0.8, 1.0),
        "blur": rng.uniform(0.0, 1.2),
        "noise": rng.uniform(2, 10),
        "p_occlude": rng.uniform(0.0, 0.35),
    }


def _background(camera, rng):
    h, w = HEIGHT * SCALE, WIDTH * SCALE
    horizon = int(camera["horizon"] * h)
    image = np.empty((h, w, 3), np.float32)
    image[:horizon] = camera["wall"]
    image[horizon:] = camera["floor"]
    image += rng.normal(0, camera["texture"], size=(h // 8, w // 8, 3)).repeat(8, 0).repeat(8, 1)
    return image


def _draw_person(draw, person, view_back, stride, cx, top, height):
    s = height
    build = person["build"]
    head_r = 0.065 * s
    neck = top + 2 * head_r
    torso_w = 0.17 * s * build
    hip = top + 0.50 * s
    foot = top + s
    knee = top + 0.74 * s
    # Legs (trousers or shorts), then shoes.
    for side in (-1, 1):
        x = cx + side * torso_w * 0.28 + side * stride * 0.06 * s
        leg_w = 0.07 * s * build
        draw.rectangle([x - leg_w, hip, x + leg_w, foot - 0.03 * s], fill=person["bottom"])
        if person["shorts"]:
            draw.rectangle([x - leg_w * 0.8, knee - 0.06 * s, x + leg_w * 0.8, foot - 0.03 * s],
                           fill=person["skin"])
        draw.ellipse([x - leg_w * 1.2, foot - 0.05 * s, x + leg_w * 1.3, foot], fill=person["shoes"])
    # Torso with its pattern.
    box = [cx - torso_w, neck, cx + torso_w, hip]
    draw.rectangle(box, fill=person["top"])
    if person["pattern"] == "stripes":
        for y in np.arange(neck, hip, 0.05 * s)[::2]:
            draw.rectangle([box[0], y, box[2], y + 0.025 * s], fill=person["top2"])
    elif person["pattern"] == "checks":
        step = 0.045 * s
        for i, y in enumerate(np.arange(neck, hip - step / 2, step)):
            for j, x in enumerate(np.arange(box[0], box[2] - step / 2, step)):
                if (i + j) % 2:
                    draw.rectangle([x, y, x + step, y + step], fill=person["top2"])
    elif person["pattern"] == "two-tone":
        draw.rectangle([box[0], (neck + hip) / 2, box[2], hip], fill=person["top2"])
    # Arms.
    for side in (-1, 1):
        x0 = cx + side * torso_w
        x1 = x0 + side * 0.07 * s
        sleeve_end = hip - 0.02 * s if person["long_sleeves"] else neck + 0.12 * s
        draw.rectangle([min(x0, x1), neck + 0.01 * s, max(x0, x1), sleeve_end], fill=person["top"])
        draw.rectangle([min(x0, x1), sleeve_end, max(x0, x1), hip + 0.02 * s], fill=person["skin"])
    # Carried things: a backpack shows from behind, its straps from the front.
    if person["carry"] == "backpack":
        if view_back:
            draw.rectangle([cx - torso_w * 0.8, neck + 0.04 * s, cx + torso_w * 0.8, hip - 0.04 * s],
                           fill=person["bag"])
        else:
            for side in (-1, 1):
                x = cx + side * torso_w * 0.55
                draw.rectangle([x - 0.012 * s, neck, x + 0.012 * s, neck + 0.2 * s], fill=person["bag"])
    elif person["carry"] == "shoulder-bag":
        draw.line([cx - torso_w, neck + 0.01 * s, cx + torso_w, hip - 0.08 * s],
                  fill=person["bag"], width=max(1, int(0.02 * s)))
        draw.rectangle([cx + torso_w * 0.9, hip - 0.1 * s, cx + torso_w * 1.5, hip + 0.05 * s],
                       fill=person["bag"])
    # Head, hair, hat.
    draw.ellipse([cx - head_r, top, cx + head_r, top + 2 * head_r], fill=person["skin"])
    if view_back:
        draw.ellipse([cx - head_r, top, cx + head_r, top + 1.8 * head_r], fill=person["hair"])
    else:
        draw.chord([cx - head_r, top, cx + head_r, top + 2 * head_r], 180, 360, fill=person["hair"])
    if person["hat"] is not None:
        draw.rectangle([cx - head_r * 1.1, top - 0.2 * head_r, cx + head_r * 1.1, top + 0.6 * head_r],
                       fill=person["hat"])


def render(person, camera, rng, clipped=False):
    """One (HEIGHT, WIDTH) RGB image of ``person`` seen by ``camera``."""
    canvas = _background(camera, rng)
    image = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    height = HEIGHT * SCALE * person["height"] * camera["scale"] * rng.uniform(0.93, 1.05)
    top = (HEIGHT * SCALE - height) * rng.uniform(0.3, 0.7)
    cx = WIDTH * SCALE * rng.uniform(0.42, 0.58)
    if clipped:  # junk: a badly placed box that shows only part of the person
        top += height * rng.uniform(0.35, 0.6)
    _draw_person(draw, person, rng.random() < camera["p_back"], rng.uniform(-1, 1), cx, top, height)
    if rng.random() < camera["p_occlude"]:
        colour = tuple(int(c) for c in rng.integers(20, 230, size=3))
        if rng.random() < 0.5:
            y = HEIGHT * SCALE * rng.uniform(0.6, 0.8)
            draw.rectangle([0, y, WIDTH * SCALE, HEIGHT * SCALE], fill=colour)
        else:
            x = WIDTH * SCALE * rng.uniform(0.0, 0.3)
            draw.rectangle([x, 0, x + WIDTH * SCALE * 0.3, HEIGHT * SCALE], fill=colour)
    if rng.random() < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    image = image.resize((WIDTH, HEIGHT), Image.LANCZOS)
    blur = camera["blur"] * rng.uniform(0.5, 1.5)
    if blur > 0.3:
        image = image.filter(ImageFilter.GaussianBlur(blur))
    pixels = np.asarray(image, np.float32) * camera["gain"] + camera["brightness"]
    pixels += rng.normal(0, camera["noise"], size=pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def generate(root, config=SyntheticConfig()):
    """Writes the dataset under ``root`` (replacing an earlier one made with other settings) and
    returns ``root``. An existing dataset made with the same settings is kept as it is."""
    root = Path(root)
    manifest = root / MANIFEST
    wanted = asdict(config)
    if manifest.is_file() and json.loads(manifest.read_text()) == wanted:
        return root
    if config.num_cameras < 2 or config.images_per_id < 2 or config.num_ids < 4:
        raise ValueError("a re-ID dataset needs at least 2 cameras, 2 images per id and 4 ids")
    for split in ("bounding_box_train", "query", "bounding_box_test"):
        shutil.rmtree(root / split, ignore_errors=True)
        (root / split).mkdir(parents=True)
    manifest.unlink(missing_ok=True)

    cameras = [_camera(config.seed, c) for c in range(config.num_cameras)]
    num_train = max(2, int(round(config.num_ids * config.train_fraction)))
    frame = 0

    def save(split, pid, camid, image):
        nonlocal frame
        frame += 1
        image.save(root / split / f"{pid:04d}_c{camid + 1}s1_{frame:06d}_01.jpg"
                   if pid >= 0 else root / split / f"-1_c{camid + 1}s1_{frame:06d}_01.jpg",
                   quality=92)

    for pid in range(1, config.num_ids + 1):
        person = _identity(config.seed, pid)
        rng = np.random.default_rng([config.seed, 3, pid])
        # Every identity is seen by at least two cameras.
        views = rng.choice(config.num_cameras, size=config.images_per_id,
                           replace=config.images_per_id > config.num_cameras)
        views[:2] = rng.choice(config.num_cameras, size=2, replace=False)
        if pid <= num_train:
            for camid in views:
                save("bounding_box_train", pid, int(camid), render(person, cameras[camid], rng))
        else:
            # Market-style: one query per camera for two cameras, the rest in the gallery.
            for i, camid in enumerate(views):
                split = "query" if i < 2 else "bounding_box_test"
                save(split, pid, int(camid), render(person, cameras[camid], rng))
            for camid in views[:2]:
                save("bounding_box_test", pid, int(camid), render(person, cameras[camid], rng))
    for k in range(config.num_distractors):
        rng = np.random.default_rng([config.seed, 4, k])
        person = _identity(config.seed, 100_000 + k)
        camid = int(rng.integers(config.num_cameras))
        save("bounding_box_test", 0, camid, render(person, cameras[camid], rng))
    for k in range(config.num_junk):
        rng = np.random.default_rng([config.seed, 5, k])
        pid = int(rng.integers(num_train + 1, config.num_ids + 1))
        camid = int(rng.integers(config.num_cameras))
        save("bounding_box_test", -1, camid,
             render(_identity(config.seed, pid), cameras[camid], rng, clipped=True))
    with atomic_write(manifest, "w") as handle:
        json.dump(wanted, handle, indent=2)
    return root


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="output folder (Market-1501 layout)")
    defaults = SyntheticConfig()
    for name, value in asdict(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args(argv)
    options = {name: getattr(args, name) for name in asdict(defaults)}
    root = generate(args.root, SyntheticConfig(**options))
    print(f"synthetic dataset ready in {root}")


if __name__ == "__main__":
    main()
