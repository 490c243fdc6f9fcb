import numpy as np
import pytest

from common.eval import compute_distance_matrix, evaluate_rank, re_ranking, re_ranking_features
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


def split_distances_of(q, g, metric="sqeuclidean"):
    return [compute_distance_matrix(a, b, metric) for a, b in ((q, g), (q, q), (g, g))]


def dense_from_features(q, g, metric):
    return re_ranking(*split_distances_of(q, g, metric))


def assert_orders_agree_up_to_rounding(ours, dense, tolerance):
    # Same ranking of every row, except between entries whose distances differ by no more than
    # float32 rounding (far images with no k-reciprocal overlap are often that close).
    order = np.argsort(ours, axis=1, kind="stable")
    along = np.take_along_axis(dense, order, axis=1)
    assert np.diff(along, axis=1).min() >= -tolerance


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine"])
@pytest.mark.parametrize("k1,k2,lam", [(20, 6, 0.3), (6, 1, 0.5), (3, 3, 0.0)])
def test_features_version_equals_the_dense_call(metric, k1, k2, lam):
    rng = np.random.default_rng(k1)
    centres = rng.normal(size=(30, 16))
    features = (centres[rng.integers(0, 30, 260)] + rng.normal(size=(260, 16))).astype(np.float32)
    q, g = features[:60], features[60:]
    ours = re_ranking_features(q, g, k1, k2, lam, metric=metric)
    dense = re_ranking(*split_distances_of(q, g, metric), k1, k2, lam)
    assert ours.dtype == np.float32 and ours.shape == (60, 200)
    np.testing.assert_allclose(ours, dense, rtol=0, atol=5e-7)
    assert_orders_agree_up_to_rounding(ours, dense, 5e-7)


def test_features_version_with_exact_ties_and_small_tiles(monkeypatch):
    # Integer features: many samples at exactly equal distances, so the neighbour lists depend
    # on the ties being broken by index; tiles of 16 samples exercise the tile merging.
    import common.eval.rerank as rerank
    rng = np.random.default_rng(5)
    features = rng.integers(-1, 2, (90, 4)).astype(np.float32)
    q, g = features[:20], features[20:]
    dense = dense_from_features(q, g, "sqeuclidean")
    whole = re_ranking_features(q, g, metric="sqeuclidean")
    monkeypatch.setattr(rerank, "_TILE", 16)
    tiled = re_ranking_features(q, g, metric="sqeuclidean")
    np.testing.assert_array_equal(whole, dense)     # integer distances: no rounding at all
    np.testing.assert_array_equal(tiled, dense)
    np.testing.assert_allclose(tiled, re_ranking_loop(*split_distances_of(q, g)), atol=2e-6)


def test_re_ranked_blocks_are_the_rows_in_order(monkeypatch):
    import common.eval.rerank as rerank
    rng = np.random.default_rng(6)
    q, g = rng.normal(size=(25, 8)), rng.normal(size=(40, 8))
    monkeypatch.setattr(rerank, "_QUERY_BLOCK_ENTRIES", 6 * 40)
    blocks = list(rerank.re_ranked_blocks(q, g))
    assert [start for start, _ in blocks] == [0, 6, 12, 18, 24]
    np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), re_ranking_features(q, g))


def test_features_version_bad_inputs_and_empty_sets():
    with pytest.raises(ValueError, match="same D"):
        re_ranking_features(np.zeros((2, 3)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="k1 and k2"):
        re_ranking_features(np.zeros((2, 3)), np.zeros((4, 3)), k2=0)
    with pytest.raises(ValueError, match="unknown metric"):
        re_ranking_features(np.zeros((2, 3)), np.zeros((4, 3)), metric="l1")
    assert re_ranking_features(np.zeros((0, 3)), np.ones((4, 3))).shape == (0, 4)
    assert re_ranking_features(np.ones((2, 3)), np.zeros((0, 3))).shape == (2, 0)


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine"])
def test_features_version_finds_the_dense_neighbour_lists(metric, monkeypatch):
    # The exact k-NN from tiles (several, with candidates merged across them) equals the dense
    # version's lists, here on features with exact ties (rounded) and without.
    import common.eval.rerank as rerank
    from common.eval.distance import prepare_features
    monkeypatch.setattr(rerank, "_TILE", 64)
    rng = np.random.default_rng(2)
    for features in (rng.normal(size=(300, 8)), np.round(rng.normal(size=(300, 8)))):
        q, g = features[:50].astype(np.float32), features[50:].astype(np.float32)
        dense_lists, _ = rerank._MatrixBase(*split_distances_of(q, g, metric)).neighbours(21)
        base = rerank._FeatureBase(*prepare_features(q, g, metric), metric)
        np.testing.assert_array_equal(base.neighbours(21)[0], dense_lists)
