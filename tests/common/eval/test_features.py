import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

import pytest

from common.eval import extract_features, tracklet_features


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


def test_flip_mirrors_the_width_of_clips_too():
    clips = torch.zeros(2, 3, 3, 4, 4)  # (B, T, 3, H, W)
    clips[..., :2] = 1.0
    clips_loader = DataLoader(TensorDataset(clips, torch.arange(2), torch.zeros(2)), batch_size=2)
    plain, _, _ = extract_features(lambda x: LeftRight()(x.mean(1)), clips_loader, progress=False)
    flipped, _, _ = extract_features(lambda x: LeftRight()(x.mean(1)), clips_loader, flip=True,
                                     progress=False)
    assert plain[0].tolist() == [1.0, 0.0] and flipped[0].tolist() == [0.5, 0.5]


def test_tracklet_feature_is_the_mean_of_its_clips():
    clips = torch.tensor([[1.0, 2.0], [3.0, 4.0], [10.0, 0.0], [5.0, 5.0], [7.0, 1.0]])
    means = tracklet_features(clips, [0, 0, 2, 1, 1])
    assert means.tolist() == [[2.0, 3.0], [6.0, 3.0], [10.0, 0.0]]
    assert tracklet_features(clips, [0, 1, 2, 3, 4], 5).tolist() == clips.tolist()
    with pytest.raises(ValueError, match=r"tracklets \[1\] have no clip"):
        tracklet_features(clips, [0, 0, 2, 2, 2])
    with pytest.raises(ValueError, match="5 clip features but 4 tracklet indices"):
        tracklet_features(clips, [0, 0, 1, 1])
