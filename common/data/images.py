"""A torch Dataset over :class:`~common.data.dataset.Sample` lists."""

from __future__ import annotations

from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from common.data.dataset import DatasetError

__all__ = ["ImageDataset", "read_image"]


def read_image(path):
    """Opens ``path`` as RGB; a missing or unreadable file is a :class:`DatasetError`."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise DatasetError(f"image {path} does not exist; the dataset changed after it was "
                           f"parsed") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise DatasetError(f"cannot read image {path} ({err}); the file is corrupt or not an "
                           f"image: copy it again from the original dataset or delete it") from None


class ImageDataset(Dataset):
    """Yields ``(transform(image), pid, camid)`` for each sample."""

    def __init__(self, samples, transform=None):
        self.samples = list(samples)
        self.transform = transform

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        sample = self.samples[index]
        image = read_image(sample.path)
        if self.transform is not None:
            image = self.transform(image)
        return image, sample.pid, sample.camid
