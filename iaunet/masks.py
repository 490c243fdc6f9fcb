"""Part masks for IAUnet's training: human-parsing label maps in the LIP 20-class format, grouped
into the four parts the IAU blocks attend to (``../shared/specs/iaunet.md`` §2, §4).

The original reads masks made by the LIP_JPPNet parser and ships neither the script nor the label
grouping. Here a label map is one PNG of class indices 0-19 per training image, in a
``<split>_seg`` folder beside the image folder, with the image's file stem:

    bounding_box_train/0002_c1s1_000451_03.jpg
    bounding_box_train_seg/0002_c1s1_000451_03.png

and the classes are grouped by :data:`LIP_PART_OF` (the table is also in ``iaunet/README.md``).
Masks are needed for training only; evaluation never reads them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from common.data.dataset import DatasetError
from common.data.images import read_image
from common.data.transforms import IMAGENET_MEAN, IMAGENET_STD, RandomErasing
from torchvision.transforms import functional as TF

__all__ = ["LIP_CLASSES", "LIP_PART_OF", "MaskedImageDataset", "find_mask_folder",
           "label_map_to_parts", "mask_folder", "mask_path"]

LIP_CLASSES = ("background", "hat", "hair", "glove", "sunglasses", "upper-clothes", "dress",
               "coat", "socks", "pants", "jumpsuits", "scarf", "skirt", "face", "left-arm",
               "right-arm", "left-leg", "right-leg", "left-shoe", "right-shoe")

# part index (0 head, 1 upper body, 2 lower body, 3 shoes) of each LIP class; background: none.
# Dresses and jumpsuits, which cover both halves, count as upper body.
LIP_PART_OF = {"hat": 0, "hair": 0, "sunglasses": 0, "face": 0,
               "upper-clothes": 1, "dress": 1, "coat": 1, "jumpsuits": 1, "scarf": 1,
               "glove": 1, "left-arm": 1, "right-arm": 1,
               "pants": 2, "skirt": 2, "socks": 2, "left-leg": 2, "right-leg": 2,
               "left-shoe": 3, "right-shoe": 3}

_PART_LOOKUP = np.full(256, -1, dtype=np.int64)
for _name, _part in LIP_PART_OF.items():
    _PART_LOOKUP[LIP_CLASSES.index(_name)] = _part


def label_map_to_parts(labels):
    """(H, W) LIP class indices -> (4, H, W) uint8 masks of 0 / 255 (head, upper, lower, shoes).

    Raises ValueError for a value outside 0-19 (the file is not a LIP label map)."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"a LIP label map is one channel of class indices, got shape "
                         f"{labels.shape}")
    if labels.size and labels.max() >= len(LIP_CLASSES):
        raise ValueError(f"label {int(labels.max())} is not a LIP class (0-19)")
    parts = _PART_LOOKUP[labels]
    return np.stack([(parts == p) for p in range(4)]).astype(np.uint8) * 255


def mask_folder(image_folder):
    """``<image_folder>_seg``, where the label maps of ``image_folder``'s images live."""
    folder = Path(image_folder)
    return folder.with_name(folder.name + "_seg")


def find_mask_folder(image_folder):
    """:func:`mask_folder` if it exists, else None."""
    folder = mask_folder(image_folder)
    return folder if folder.is_dir() else None


def mask_path(image_path):
    image_path = Path(image_path)
    return mask_folder(image_path.parent) / (image_path.stem + ".png")


class MaskedImageDataset(torch.utils.data.Dataset):
    """Yields ``(image, pid, camid, masks)`` with the training transform of §2 applied to the
    image and its four part masks together: bicubic resize of both, one shared horizontal flip,
    ToTensor (masks to [0, 1]), ImageNet normalisation and random erasing (CIFAR-mean fill) of
    the image only."""

    def __init__(self, samples, height, width, flip=0.5, erasing=0.5):
        self.samples = list(samples)
        self.size, self.flip = (height, width), flip
        self.erasing = RandomErasing(probability=erasing) if erasing else None
        missing = [s.path for s in self.samples if not mask_path(s.path).is_file()]
        if missing:
            raise DatasetError(f"{len(missing)} of {len(self.samples)} training images have no "
                               f"part mask, e.g. {mask_path(missing[0])}; put a LIP label map "
                               f"(PNG of class indices 0-19) for each image in the "
                               f"'<split>_seg' folder beside it, or train without masks")

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        sample = self.samples[index]
        image = read_image(sample.path)
        with Image.open(mask_path(sample.path)) as label_image:
            labels = np.asarray(label_image)
        try:
            parts = label_map_to_parts(labels)
        except ValueError as err:
            raise DatasetError(f"{mask_path(sample.path)}: {err}") from None
        size = self.size
        image = TF.resize(image, list(size), TF.InterpolationMode.BICUBIC)
        masks = [TF.resize(Image.fromarray(m), list(size), TF.InterpolationMode.BICUBIC)
                 for m in parts]
        if torch.rand(1).item() < self.flip:
            image, masks = TF.hflip(image), [TF.hflip(m) for m in masks]
        image = TF.normalize(TF.to_tensor(image), IMAGENET_MEAN, IMAGENET_STD)
        if self.erasing is not None:
            image = self.erasing(image)
        return image, sample.pid, sample.camid, torch.cat([TF.to_tensor(m) for m in masks])
