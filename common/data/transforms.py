"""The image transforms the five specs use, on top of torchvision.

Train pipelines all follow one order (abdnet.md §4.1, lagnet.md §2, apnet.md, iaunet.md §2):
resize or Random2DTranslation -> horizontal flip -> pad + random crop -> ToTensor -> Normalize ->
random erasing. :func:`build_train_transform` builds any of them from its switches.
"""

from __future__ import annotations

import math
import random

import torch
from PIL import Image
from torchvision import transforms as T

__all__ = ["CIFAR_MEAN", "IMAGENET_MEAN", "IMAGENET_STD", "INTERPOLATION", "Random2DTranslation",
           "RandomErasing", "build_test_transform", "build_train_transform"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)  # random-erasing fill of torchreid, ABD-Net and IAUnet

INTERPOLATION = {"bilinear": T.InterpolationMode.BILINEAR,
                 "bicubic": T.InterpolationMode.BICUBIC}


class Random2DTranslation:
    """With probability ``p``, resize to 1.125 x (height, width) and crop a random
    (height, width) window; otherwise resize to (height, width). Works on PIL images."""

    def __init__(self, height, width, p=0.5, interpolation=Image.BILINEAR):
        self.height, self.width, self.p, self.interpolation = height, width, p, interpolation

    def __call__(self, image):
        if random.uniform(0, 1) > self.p:
            return image.resize((self.width, self.height), self.interpolation)
        new_width, new_height = round(self.width * 1.125), round(self.height * 1.125)
        resized = image.resize((new_width, new_height), self.interpolation)
        left = int(round(random.uniform(0, new_width - self.width)))
        top = int(round(random.uniform(0, new_height - self.height)))
        return resized.crop((left, top, left + self.width, top + self.height))

    def __repr__(self):
        return f"Random2DTranslation(height={self.height}, width={self.width}, p={self.p})"


class RandomErasing:
    """Random erasing of Zhong et al. (AAAI'20) on a normalised (C, H, W) image, or on a
    (T, C, H, W) clip with one rectangle for every frame (the video code of IAUnet's authors
    draws the parameters once per clip).

    With probability ``probability``, up to 100 attempts draw an area fraction in [sl, sh] and an
    aspect ratio in [r1, 1/r1] (both uniform) until the rectangle fits; it is filled with the
    constants ``mean``, written into the already-normalised tensor (the originals' behaviour:
    ``CIFAR_MEAN`` for ABD-Net/IAUnet, ``IMAGENET_MEAN`` for BoT/APNet, zeros for LAG-Net).
    """

    def __init__(self, probability=0.5, sl=0.02, sh=0.4, r1=0.3, mean=CIFAR_MEAN):
        self.probability, self.sl, self.sh, self.r1 = probability, sl, sh, r1
        self.mean = tuple(mean)

    def rectangle(self, height, width):
        """``(top, left, h, w)`` of the region to erase, or None (not this time, or no fit)."""
        if random.uniform(0, 1) >= self.probability:
            return None
        for _ in range(100):
            area = random.uniform(self.sl, self.sh) * height * width
            aspect = random.uniform(self.r1, 1 / self.r1)
            h = int(round(math.sqrt(area * aspect)))
            w = int(round(math.sqrt(area / aspect)))
            if w < width and h < height:
                return random.randint(0, height - h), random.randint(0, width - w), h, w
        return None

    def __call__(self, image):
        region = self.rectangle(*image.shape[-2:])
        if region is None:
            return image
        top, left, h, w = region
        fill = torch.tensor(self.mean[:image.shape[-3]], dtype=image.dtype)
        image = image.clone()
        image[..., top:top + h, left:left + w] = fill[:, None, None]
        return image

    def __repr__(self):
        return f"RandomErasing(probability={self.probability}, mean={self.mean})"


def build_train_transform(height, width, *, translation=False, flip=0.5, pad=0,
                          erasing=0.0, erasing_mean=CIFAR_MEAN, interpolation="bilinear"):
    """A train pipeline in the order of the module docstring.

    Args:
        translation: Random2DTranslation (p 0.5) instead of a plain resize.
        flip: horizontal-flip probability (0 turns it off).
        pad: zero padding before a random (height, width) crop (0 = no crop).
        erasing: random-erasing probability (0 turns it off); ``erasing_mean`` is its fill.
        interpolation: ``"bilinear"`` or ``"bicubic"`` for the resize.
    """
    mode = INTERPOLATION[interpolation]
    steps = [Random2DTranslation(height, width, interpolation=_pil_mode(interpolation))
             if translation else T.Resize((height, width), interpolation=mode)]
    if flip:
        steps.append(T.RandomHorizontalFlip(p=flip))
    if pad:
        steps += [T.Pad(pad), T.RandomCrop((height, width))]
    steps += [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if erasing:
        steps.append(RandomErasing(probability=erasing, mean=erasing_mean))
    return T.Compose(steps)


def build_test_transform(height, width, interpolation="bilinear"):
    """Resize, ToTensor, ImageNet normalisation."""
    return T.Compose([T.Resize((height, width), interpolation=INTERPOLATION[interpolation]),
                      T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def _pil_mode(interpolation):
    return {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[interpolation]
