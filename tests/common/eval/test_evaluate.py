"""evaluate_features and search_gallery against the two-step path they replace."""

import numpy as np
import pytest

import common.eval.distance as distance
from common.eval import (METRICS, compute_distance_matrix, evaluate_features, evaluate_rank,
                         re_ranking, re_ranking_features, search_gallery)


def labelled_features(seed=0, num_q=30, num_g=120, dim=12, num_ids=10):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_ids, dim))
    q_pids, g_pids = rng.integers(0, num_ids, num_q), rng.integers(-1, num_ids, num_g)
    q = (centres[q_pids] + rng.normal(size=(num_q, dim))).astype(np.float32)
    g = (centres[np.maximum(g_pids, 0)] + rng.normal(size=(num_g, dim))).astype(np.float32)
    return q, g, (q_pids, g_pids, rng.integers(0, 3, num_q), rng.integers(0, 3, num_g))


def assert_same_results(a, b):
    for key in ("mAP", "mINP", "num_valid_queries", "num_queries", "protocol"):
        assert a[key] == b[key], key
    np.testing.assert_array_equal(a["cmc"], b["cmc"])
    np.testing.assert_array_equal(a["per_query_ap"], b["per_query_ap"])


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("protocol", ["standard", "market", "cuhk03"])
def test_equals_distance_matrix_then_evaluate_rank(metric, protocol, monkeypatch):
    q, g, labels = labelled_features()
    expected = evaluate_rank(compute_distance_matrix(q, g, metric), *labels, protocol=protocol)
    assert_same_results(evaluate_features(q, g, *labels, metric=metric, protocol=protocol),
                        expected)
    monkeypatch.setattr(distance, "_BLOCK_ENTRIES", 7 * len(g))   # 5 blocks of queries
    blocked = evaluate_features(q, g, *labels, metric=metric, protocol=protocol,
                                return_distmat=True)
    assert_same_results(blocked, expected)
    np.testing.assert_array_equal(blocked["distmat"], compute_distance_matrix(q, g, metric))


@pytest.mark.parametrize("metric", METRICS)
def test_re_ranked_equals_re_ranking_then_evaluate_rank(metric):
    q, g, labels = labelled_features(seed=1)
    result = evaluate_features(q, g, *labels, metric=metric, re_rank=(20, 6, 0.3),
                               return_distmat=True)
    reranked = re_ranking_features(q, g, 20, 6, 0.3, metric=metric)
    np.testing.assert_array_equal(result["distmat"], reranked)
    assert_same_results(result, evaluate_rank(reranked, *labels))
    # and the same numbers as today's dense call on the three distance matrices
    pairs = ((q, g), (q, q), (g, g))
    dense = re_ranking(*(compute_distance_matrix(a, b, metric) for a, b in pairs))
    assert result["mAP"] == pytest.approx(evaluate_rank(dense, *labels)["mAP"], abs=1e-6)


def test_bad_arguments():
    q, g, labels = labelled_features()
    with pytest.raises(ValueError, match=r"re_rank must be None or \(k1, k2, lambda_value\)"):
        evaluate_features(q, g, *labels, re_rank=20)
    with pytest.raises(ValueError, match="30 query and 120 gallery features but 29 query"):
        evaluate_features(q, g, labels[0][:29], labels[1], labels[2][:29], labels[3])
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate_features(q, g, *labels, metric="manhattan")


def test_search_gallery_known_answer_and_ties_by_gallery_order():
    gallery = np.array([[3.0], [1.0], [-1.0], [2.0], [1.0]], np.float32)
    query = np.array([[0.0], [2.9]], np.float32)
    index, dist = search_gallery(query, gallery, top_k=3)
    # query 0: |1| at gallery 1, 2, 4 (three-way tie, gallery order); query 1: 3, 2, then 1 & 4
    np.testing.assert_array_equal(index, [[1, 2, 4], [0, 3, 1]])
    np.testing.assert_allclose(dist, [[1, 1, 1], [0.1, 0.9, 1.9]], atol=1e-4)
    assert search_gallery(query, gallery, top_k=50)[0].shape == (2, 5)
    with pytest.raises(ValueError, match="top_k"):
        search_gallery(query, gallery, top_k=0)


def test_search_gallery_re_ranked_is_the_head_of_the_re_ranked_order():
    q, g, _ = labelled_features(seed=2)
    index, dist = search_gallery(q, g, top_k=5, re_rank=(20, 6, 0.3))
    reranked = re_ranking_features(q, g)
    np.testing.assert_array_equal(index, np.argsort(reranked, axis=1, kind="stable")[:, :5])
    np.testing.assert_array_equal(dist, np.take_along_axis(reranked, index, axis=1))
