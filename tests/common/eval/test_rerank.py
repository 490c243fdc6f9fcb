import numpy as np
import pytest

from common.eval import compute_distance_matrix, evaluate_rank, re_ranking
from common.eval.reference import re_ranking_loop


def split_distances(features, num_q):
    dist = compute_distance_matrix(features, features, metric="euclidean")
    return dist[:num_q, num_q:], dist[:num_q, :num_q], dist[num_q:, num_q:]


@pytest.mark.parametrize("k1,k2,lam", [(20, 6, 0.3), (6, 1, 0.5), (3, 3, 0.0), (50, 6, 0.3)])
def test_matches_the_reference(k1, k2, lam):
    rng = np.random.default_rng(k1 + k2)
    for num_q, num_g in [(7, 30), (25, 60), (1, 1)]:
        features = rng.normal(size=(num_q + num_g, 16)).astype(np.float32)
        blocks = split_distances(features, num_q)
        np.testing.assert_allclose(re_ranking(*blocks, k1, k2, lam),
                                   re_ranking_loop(*blocks, k1, k2, lam), atol=2e-6)


def test_lambda_one_gives_the_normalised_squared_base_distance():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(30, 8)).astype(np.float32)
    q_g, q_q, g_g = split_distances(features, 10)
    full = np.block([[q_q, q_g], [q_g.T, g_g]]) ** 2
    expected = (full / full.max(axis=0)).T[:10, 10:]
    np.testing.assert_allclose(re_ranking(q_g, q_q, g_g, lambda_value=1.0), expected, rtol=1e-6)


def test_improves_retrieval_on_clustered_features():
    # Identities as clusters with a shared nuisance direction per camera: re-ranking should help.
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(40, 32))
    pids = np.repeat(np.arange(40), 6)
    cams = np.tile(np.arange(6), 40)
    features = centres[pids] + 1.2 * rng.normal(size=(240, 32))
    query = cams == 0
    q, g = features[query], features[~query]
    args = (pids[query], pids[~query], cams[query], cams[~query])
    base = evaluate_rank(compute_distance_matrix(q, g), *args[:2], *args[2:])
    blocks = (compute_distance_matrix(q, g), compute_distance_matrix(q, q),
              compute_distance_matrix(g, g))
    reranked = evaluate_rank(re_ranking(*blocks), *args[:2], *args[2:])
    assert reranked["mAP"] > base["mAP"]


def test_bad_shapes_and_parameters():
    with pytest.raises(ValueError, match="q_q_dist 2x2"):
        re_ranking(np.zeros((2, 3)), np.zeros((3, 3)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="k1 and k2"):
        re_ranking(np.zeros((1, 1)), np.zeros((1, 1)), np.zeros((1, 1)), k1=0)
    assert re_ranking(np.zeros((0, 4)), np.zeros((0, 0)), np.zeros((4, 4))).shape == (0, 4)
