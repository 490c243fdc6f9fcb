import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from common.eval import extract_features


class LeftRight(nn.Module):
    """Feature = mean of the left half and mean of the right half of the image."""

    def forward(self, x):
        half = x.shape[3] // 2
        return torch.stack([x[..., :half].mean((1, 2, 3)), x[..., half:].mean((1, 2, 3))], 1)


def loader():
    images = torch.zeros(4, 3, 4, 4)
    images[..., :2] = 1.0  # bright left half
    return DataLoader(TensorDataset(images, torch.arange(4), torch.zeros(4, dtype=torch.long)),
                      batch_size=3)


def test_plain_flip_and_normalised_features():
    plain, pids, camids = extract_features(LeftRight(), loader(), progress=False)
    assert plain.shape == (4, 2) and plain[0].tolist() == [1.0, 0.0]
    assert pids.tolist() == [0, 1, 2, 3] and camids.tolist() == [0, 0, 0, 0]
    flipped, _, _ = extract_features(LeftRight(), loader(), flip=True, progress=False)
    assert flipped[0].tolist() == [0.5, 0.5]
    normed, _, _ = extract_features(LeftRight(), loader(), flip=True, normalize=True,
                                    progress=False)
    torch.testing.assert_close(normed.norm(dim=1), torch.ones(4))


def test_model_mode_is_restored():
    model = LeftRight().train()
    extract_features(model, loader(), progress=False)
    assert model.training


def test_the_global_generator_is_left_as_it_was():
    loader = DataLoader(TensorDataset(torch.randn(4, 3, 2, 2), torch.arange(4), torch.zeros(4)),
                        batch_size=2)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    extract_features(nn.Flatten(), loader, progress=False)  # iterating draws a base seed
    torch.testing.assert_close(torch.rand(3), expected)
