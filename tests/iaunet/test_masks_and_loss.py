"""Part masks from LIP label maps, the joint transform, and IAUnet's loss (iaunet.md §2, §4)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from common.data import DatasetError, Sample
from iaunet.loss import IAUnetLoss, mask_loss
from iaunet.masks import LIP_CLASSES, MaskedImageDataset, find_mask_folder, label_map_to_parts


def test_lip_classes_map_to_the_four_parts():
    labels = np.array([[LIP_CLASSES.index(name) for name in row] for row in (
        ("background", "hat", "hair", "face"),
        ("upper-clothes", "coat", "left-arm", "glove"),
        ("pants", "skirt", "right-leg", "socks"),
        ("left-shoe", "right-shoe", "background", "dress"))])
    parts = label_map_to_parts(labels) // 255
    assert parts.shape == (4, 4, 4) and parts.dtype == np.uint8
    assert parts[0].tolist() == [[0, 1, 1, 1], [0] * 4, [0] * 4, [0] * 4]
    assert parts[1].tolist() == [[0] * 4, [1] * 4, [0] * 4, [0, 0, 0, 1]]
    assert parts[2].tolist() == [[0] * 4, [0] * 4, [1] * 4, [0] * 4]
    assert parts[3].tolist() == [[0] * 4, [0] * 4, [0] * 4, [1, 1, 0, 0]]
    with pytest.raises(ValueError, match="not a LIP class"):
        label_map_to_parts(np.full((2, 2), 20))


def make_split(root, with_masks=True):
    """Two 8x4 images: left half red, right half blue; the label map marks the left half hair."""
    images, masks = root / "bounding_box_train", root / "bounding_box_train_seg"
    images.mkdir(parents=True)
    pixels = np.zeros((8, 4, 3), np.uint8)
    pixels[:, :2, 0] = 255
    pixels[:, 2:, 2] = 255
    samples = []
    for name in ("0001_c1s1_000001_01", "0002_c2s1_000002_01"):
        Image.fromarray(pixels).save(images / f"{name}.jpg", quality=100)
        samples.append(Sample(str(images / f"{name}.jpg"), len(samples), 0))
    if with_masks:
        masks.mkdir()
        labels = np.zeros((8, 4), np.uint8)
        labels[:, :2] = LIP_CLASSES.index("hair")
        for sample in samples:
            Image.fromarray(labels).save(masks / f"{sample.path.rsplit('/', 1)[1][:-4]}.png")
    return images, samples


@pytest.mark.parametrize("flip", [0.0, 1.0])
def test_image_and_masks_are_flipped_together(tmp_path, flip):
    images, samples = make_split(tmp_path)
    assert find_mask_folder(images) == tmp_path / "bounding_box_train_seg"
    image, pid, camid, masks = MaskedImageDataset(samples, 8, 4, flip=flip, erasing=0)[0]
    assert image.shape == (3, 8, 4) and masks.shape == (4, 8, 4) and (pid, camid) == (0, 0)
    red_left = image[0, :, 0].mean() > image[0, :, 3].mean()
    head_left = masks[0, :, 0].mean() > masks[0, :, 3].mean()
    assert red_left == head_left == (flip == 0.0)
    assert masks[1:].abs().sum() == 0 and 0 <= masks.min() and masks.max() <= 1


def test_missing_masks_are_a_clear_error(tmp_path):
    images, samples = make_split(tmp_path, with_masks=False)
    assert find_mask_folder(images) is None
    with pytest.raises(DatasetError, match="2 of 2 training images have no part mask"):
        MaskedImageDataset(samples, 8, 4)


def test_mask_loss_is_the_bce_against_resized_masks_averaged_over_blocks():
    torch.manual_seed(0)
    masks = (torch.rand(2, 4, 16, 8) > 0.5).float()
    maps = [torch.rand(2, 4, 8, 4), torch.rand(2, 4, 4, 2)]
    expected = sum(F.binary_cross_entropy(m, F.interpolate(masks, size=m.shape[-2:],
                                                            mode="bilinear", align_corners=True))
                   for m in maps) / 2
    torch.testing.assert_close(mask_loss(maps, masks), expected)


def test_total_loss_terms_and_the_cosine_triplet():
    torch.manual_seed(0)
    labels = torch.tensor([0, 0, 1, 1])
    feature = torch.randn(4, 16)
    outputs = (torch.randn(4, 3), feature, [torch.rand(4, 4, 4, 2)])
    masks = torch.rand(4, 4, 8, 4)
    criterion = IAUnetLoss(3, alpha=0.5)
    total, terms = criterion(outputs, labels, masks)
    assert set(terms) == {"xent", "htri", "mask"}
    torch.testing.assert_close(terms["mask"], 0.5 * mask_loss(outputs[2], masks))
    torch.testing.assert_close(total, sum(terms.values()))
    # the released "consine" distance is -cos: same hardest pairs and gaps as 1 - cos
    cos = F.normalize(feature) @ F.normalize(feature).T
    same = labels[:, None] == labels[None, :]
    d = -cos
    ap = d.masked_fill(~same, -9).max(1).values
    an = d.masked_fill(same, 9).min(1).values
    torch.testing.assert_close(terms["htri"], F.relu(ap - an + 0.3).mean())
    _, no_masks = criterion(outputs, labels, None)
    assert set(no_masks) == {"xent", "htri"}
    with pytest.raises(ValueError, match="--distance"):
        IAUnetLoss(3, distance="manhattan")
