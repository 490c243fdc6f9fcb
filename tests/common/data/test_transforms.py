import random

import torch
from PIL import Image

from common.data.transforms import (IMAGENET_MEAN, Random2DTranslation, RandomErasing,
                                    build_test_transform, build_train_transform)


def test_random_2d_translation_size_and_crop():
    image = Image.new("RGB", (64, 128))
    random.seed(0)
    for p in (0.0, 1.0):
        assert Random2DTranslation(384, 128, p=p)(image).size == (128, 384)


def test_random_erasing_fills_a_rectangle_with_the_mean():
    random.seed(1)
    image = torch.full((3, 32, 16), 7.0)
    erased = RandomErasing(probability=1.0, mean=IMAGENET_MEAN)(image)
    changed = (erased != 7.0).all(0)
    assert changed.any() and (image == 7.0).all()  # the input is not modified
    rows, cols = torch.nonzero(changed, as_tuple=True)
    block = erased[:, rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    torch.testing.assert_close(block, torch.tensor(IMAGENET_MEAN)[:, None, None].expand_as(block))
    zero = RandomErasing(probability=1.0, mean=(0.0, 0.0, 0.0))(image)
    assert (zero == 0).any()
    assert torch.equal(RandomErasing(probability=0.0)(image), image)


def test_pipelines_give_normalised_tensors():
    image = Image.new("RGB", (64, 128), (124, 116, 104))
    train = build_train_transform(256, 128, translation=True, pad=10, erasing=0.5)
    assert train(image).shape == (3, 256, 128)
    test = build_test_transform(384, 128, interpolation="bicubic")(image)
    assert test.shape == (3, 384, 128) and test.abs().max() < 0.1  # ImageNet-mean grey -> ~0
