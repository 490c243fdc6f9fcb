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


def test_distance_blocks_are_the_matrix_bit_for_bit():
    from common.eval import distance_blocks
    q, g = torch.randn(23, 8), torch.randn(31, 8)
    for metric in ("euclidean", "sqeuclidean", "cosine"):
        whole = compute_distance_matrix(q, g, metric, block_size=5)
        starts = []
        for start, block in distance_blocks(q, g, metric, block_size=5):
            starts.append(start)
            np.testing.assert_array_equal(block, whole[start:start + 5])
        assert starts == [0, 5, 10, 15, 20]


def test_smallest_per_row_breaks_ties_by_index():
    from common.eval.distance import smallest_per_row
    rows = np.array([[1, 0, 1, 1, 2, 1], [5, 4, 3, 2, 1, 0]], np.float32)
    values, index = smallest_per_row(rows, 3)
    np.testing.assert_array_equal(index, [[1, 0, 2], [5, 4, 3]])
    np.testing.assert_array_equal(values, [[0, 1, 1], [0, 1, 2]])
    # a whole row of one value: the first k columns
    values, index = smallest_per_row(np.zeros((3, 50), np.float32), 4)
    np.testing.assert_array_equal(index, np.tile(np.arange(4), (3, 1)))
    assert smallest_per_row(rows, 10)[1].shape == (2, 6)
