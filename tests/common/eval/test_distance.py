import numpy as np
import pytest
import torch

from common.eval import compute_distance_matrix


def test_metrics_against_direct_formulas():
    rng = np.random.default_rng(0)
    q, g = rng.normal(size=(5, 7)), rng.normal(size=(9, 7))
    direct = np.sqrt(((q[:, None] - g[None]) ** 2).sum(-1))
    np.testing.assert_allclose(compute_distance_matrix(q, g, "euclidean"), direct, rtol=1e-5)
    np.testing.assert_allclose(compute_distance_matrix(q, g, "sqeuclidean"), direct ** 2,
                               rtol=1e-4)
    cos = (q @ g.T) / np.linalg.norm(q, axis=1)[:, None] / np.linalg.norm(g, axis=1)[None]
    np.testing.assert_allclose(compute_distance_matrix(q, g, "cosine"), 1 - cos, atol=1e-6)


def test_blocks_give_the_same_matrix():
    q, g = torch.randn(50, 8), torch.randn(30, 8)
    np.testing.assert_allclose(compute_distance_matrix(q, g, block_size=7),
                               compute_distance_matrix(q, g, block_size=4096), rtol=1e-6)


def test_self_distance_is_zero_not_negative():
    x = torch.randn(20, 64) * 100
    d = compute_distance_matrix(x, x, "sqeuclidean")
    assert (d >= 0).all()


def test_bad_inputs():
    with pytest.raises(ValueError, match="unknown metric"):
        compute_distance_matrix(np.zeros((1, 2)), np.zeros((1, 2)), "manhattan")
    with pytest.raises(ValueError, match="same D"):
        compute_distance_matrix(np.zeros((1, 2)), np.zeros((1, 3)))
