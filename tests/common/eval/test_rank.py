import numpy as np
import pytest
import scipy.io

from common.eval import evaluate_rank
from common.eval.reference import evaluate_rank_loop


def one_query(gallery_pids, gallery_cams, q_pid=1, q_cam=0, dist=None):
    """A single query against a gallery listed in ranking order (or with given distances)."""
    n = len(gallery_pids)
    dist = np.arange(n, dtype=np.float32)[None, :] if dist is None else np.asarray(dist)[None, :]
    return dict(distmat=dist, q_pids=[q_pid], g_pids=gallery_pids, q_camids=[q_cam],
                g_camids=gallery_cams)


def test_worked_example_ranks_2_and_5():
    # evaluation.md §2.2: good images at junk-free ranks 2 and 5.
    case = one_query([2, 1, 3, 4, 1], [1, 1, 1, 1, 2])
    assert evaluate_rank(**case)["mAP"] == pytest.approx(0.45)
    assert evaluate_rank(**case, protocol="market")["mAP"] == pytest.approx(0.2875)


def test_single_good_at_rank_2():
    case = one_query([5, 1, 6], [1, 1, 1])
    assert evaluate_rank(**case)["mAP"] == pytest.approx(0.5)
    assert evaluate_rank(**case, protocol="market")["mAP"] == pytest.approx(0.25)


def test_junk_is_removed_from_the_ranking():
    # Same id same camera and pid -1 are junk: inserting them changes nothing.
    clean = one_query([2, 1, 3, 4, 1], [1, 1, 1, 1, 2])
    with_junk = one_query([-1, 2, 1, 1, 3, -1, 4, 1], [1, 1, 0, 1, 1, 3, 1, 2])
    for protocol in ("standard", "market"):
        a = evaluate_rank(**clean, protocol=protocol)
        b = evaluate_rank(**with_junk, protocol=protocol)
        assert a["mAP"] == pytest.approx(b["mAP"])
        np.testing.assert_allclose(a["cmc"], b["cmc"])


def test_distractors_are_negatives():
    result = evaluate_rank(**one_query([0, 0, 1], [1, 2, 1]), max_rank=3)
    np.testing.assert_allclose(result["cmc"], [0, 0, 1])
    assert result["mAP"] == pytest.approx(1 / 3)


def test_minp_is_matches_over_rank_of_hardest_match():
    result = evaluate_rank(**one_query([1, 2, 1, 3, 4, 1], [1] * 6))
    assert result["mINP"] == pytest.approx(3 / 6)


def test_ties_are_broken_by_gallery_order():
    # All distances equal: the ranking is the gallery order, as a stable sort gives.
    case = one_query([2, 1, 3, 1], [1, 1, 1, 1], dist=np.zeros(4))
    result = evaluate_rank(**case, max_rank=4)
    np.testing.assert_allclose(result["cmc"], [0, 1, 1, 1])
    assert result["mAP"] == pytest.approx((1 / 2 + 2 / 4) / 2)


def test_query_without_valid_match_standard_skips_market_counts_zero():
    distmat = np.array([[0.1, 0.2], [0.1, 0.2]])
    args = dict(distmat=distmat, q_pids=[1, 7], g_pids=[1, 2], q_camids=[0, 0], g_camids=[1, 1])
    standard = evaluate_rank(**args, max_rank=2)
    market = evaluate_rank(**args, max_rank=2, protocol="market")
    assert standard["num_valid_queries"] == market["num_valid_queries"] == 1
    assert standard["mAP"] == pytest.approx(1.0)
    assert market["mAP"] == pytest.approx(0.5)
    np.testing.assert_allclose(market["cmc"], [0.5, 0.5])
    assert np.isnan(standard["per_query_ap"][1])


def test_small_gallery_one_identity_and_empty_inputs():
    result = evaluate_rank(**one_query([1, 1], [1, 2]), max_rank=50)
    assert len(result["cmc"]) == 50 and result["cmc"][-1] == 1.0 and result["mAP"] == 1.0
    empty = evaluate_rank(np.zeros((0, 0)), [], [], [], [], max_rank=5)
    assert empty["num_valid_queries"] == 0 and empty["mAP"] == 0.0
    np.testing.assert_array_equal(empty["cmc"], np.zeros(5))
    no_gallery = evaluate_rank(np.zeros((3, 0)), [1, 2, 3], [], [0, 0, 0], [])
    assert no_gallery["num_queries"] == 3 and no_gallery["num_valid_queries"] == 0


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="NaN"):
        evaluate_rank(np.array([[np.nan]]), [1], [1], [0], [1])
    with pytest.raises(ValueError, match="g_pids has 1 entries"):
        evaluate_rank(np.zeros((1, 2)), [1], [1], [0], [1, 2])
    with pytest.raises(ValueError, match="unknown protocol"):
        evaluate_rank(np.zeros((1, 1)), [1], [1], [0], [1], protocol="map")


@pytest.mark.parametrize("kind", ["float32", "float64", "integer-ties"])
@pytest.mark.parametrize("protocol", ["standard", "market"])
def test_matches_the_per_query_reference(kind, protocol):
    rng = np.random.default_rng(1)
    for _ in range(40):
        num_q, num_g = rng.integers(1, 25), rng.integers(1, 50)
        if kind == "integer-ties":
            dist = rng.integers(0, 4, (num_q, num_g)).astype(np.float32)
        else:
            dist = rng.random((num_q, num_g)).astype(kind)
        labels = (rng.integers(-1, 6, num_q), rng.integers(-1, 6, num_g),
                  rng.integers(0, 3, num_q), rng.integers(0, 3, num_g))
        ours = evaluate_rank(dist, *labels[:2], *labels[2:], max_rank=8, protocol=protocol)
        ref = evaluate_rank_loop(dist, *labels[:2], *labels[2:], max_rank=8, protocol=protocol)
        assert ours["num_valid_queries"] == ref["num_valid_queries"]
        np.testing.assert_allclose(ours["cmc"], ref["cmc"])
        assert ours["mAP"] == pytest.approx(ref["mAP"])
        assert ours["mINP"] == pytest.approx(ref["mINP"])


def test_float64_distances_closer_than_float32_resolution():
    # Two gallery images 1e-12 apart round to one float32 value; the order must stay exact.
    dist = np.array([[0.5 + 1e-12, 0.5]])
    result = evaluate_rank(dist, [1], [1, 2], [0], [1, 1], max_rank=2)
    np.testing.assert_allclose(result["cmc"], [0, 1])


def test_cuhk03_single_gallery_shot():
    # Gallery in rank order: id 2, id 1, id 2. One draw per id: the match is first exactly when
    # the far image of id 2 is drawn (probability 1/2).
    case = one_query([2, 1, 2], [1, 1, 1])
    result = evaluate_rank(**case, max_rank=2, protocol="cuhk03", num_repeats=2000, seed=3)
    assert 0.45 < result["cmc"][0] < 0.55 and result["cmc"][1] == 1.0
    again = evaluate_rank(**case, max_rank=2, protocol="cuhk03", num_repeats=2000, seed=3)
    assert again["cmc"][0] == result["cmc"][0]
    assert result["mAP"] == pytest.approx(0.5)  # AP on the whole gallery


def test_full_market_labels_junk_kept_equals_junk_dropped(eval_reference):
    labels = eval_reference / "market1501_labels"
    load = lambda name, key: scipy.io.loadmat(labels / f"{name}.mat")[key].ravel().astype(int)
    q_pids, q_cams = load("queryID", "queryID")[:400], load("queryCam", "queryCAM")[:400]
    g_pids, g_cams = load("testID", "testID"), load("testCam", "testCAM")
    assert len(g_pids) == 19732 and (g_pids == -1).sum() == 3819 and (g_pids == 0).sum() == 2798
    dist = np.random.default_rng(0).random((len(q_pids), len(g_pids)), dtype=np.float32)
    keep = g_pids != -1
    for protocol in ("standard", "market"):
        with_junk = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, protocol=protocol)
        dropped = evaluate_rank(dist[:, keep], q_pids, g_pids[keep], q_cams, g_cams[keep],
                                protocol=protocol)
        ref = evaluate_rank_loop(dist, q_pids, g_pids, q_cams, g_cams, protocol=protocol)
        assert with_junk["mAP"] == pytest.approx(dropped["mAP"]) == pytest.approx(ref["mAP"])
        np.testing.assert_allclose(with_junk["cmc"], ref["cmc"])


def test_real_features_with_few_valid_queries(eval_reference):
    data = scipy.io.loadmat(eval_reference / "real_features" /
                            "huangyin0514_market_subset_pytorch_result.mat")
    q, g = data["query_f"], data["gallery_f"]
    dist = ((q[:, None, :] - g[None, :, :]) ** 2).sum(-1)
    args = (dist, data["query_label"].ravel(), data["gallery_label"].ravel(),
            data["query_cam"].ravel(), data["gallery_cam"].ravel())
    standard, market = evaluate_rank(*args), evaluate_rank(*args, protocol="market")
    assert standard["num_valid_queries"] == market["num_valid_queries"] == 7
    # Market divides by all 100 queries and its trapezoid AP never exceeds the standard AP.
    assert market["mAP"] <= standard["mAP"] * 7 / 100 + 1e-12
    assert market["mAP"] == pytest.approx(evaluate_rank_loop(*args, protocol="market")["mAP"])


def assert_same_as_reference(dist, labels, protocol="standard", max_rank=10):
    ours = evaluate_rank(dist, *labels[:2], *labels[2:], max_rank=max_rank, protocol=protocol)
    ref = evaluate_rank_loop(dist, *labels[:2], *labels[2:], max_rank=max_rank, protocol=protocol)
    assert ours["num_valid_queries"] == ref["num_valid_queries"]
    np.testing.assert_allclose(ours["cmc"], ref["cmc"], rtol=0, atol=1e-12)
    assert ours["mAP"] == pytest.approx(ref["mAP"], rel=1e-12)
    assert ours["mINP"] == pytest.approx(ref["mINP"], rel=1e-12)


def random_labels(rng, num_q, num_g, num_ids=6):
    return (rng.integers(-1, num_ids, num_q), rng.integers(-1, num_ids, num_g),
            rng.integers(0, 3, num_q), rng.integers(0, 3, num_g))


@pytest.mark.parametrize("case", ["all-equal", "two-values", "outlier", "near-ties-float64",
                                  "huge-span", "negative", "float16"])
@pytest.mark.parametrize("protocol", ["standard", "market"])
def test_heavy_ties_and_extreme_rows_match_the_reference(case, protocol):
    # Rows where many gallery images share a bucket (or an exact distance) with a good match:
    # the exact comparison inside a bucket must give the stable-sort order of the reference.
    rng = np.random.default_rng(7)
    num_q, num_g = 30, 400
    if case == "all-equal":
        dist = np.full((num_q, num_g), 0.25, np.float32)
    elif case == "two-values":
        dist = rng.integers(0, 2, (num_q, num_g)).astype(np.float32)
    elif case == "outlier":
        # one far image per row squeezes every other distance into the lowest bucket
        dist = (1.0 + rng.integers(0, 5, (num_q, num_g)) * 1e-7).astype(np.float32)
        dist[:, 3] = 1e30
    elif case == "near-ties-float64":
        dist = 0.5 + rng.integers(0, 4, (num_q, num_g)) * 1e-13
        dist[:, 0] = 100.0
    elif case == "huge-span":
        dist = rng.choice(np.array([-3e38, -1.0, 0.0, 1.0, 3e38], np.float32), (num_q, num_g))
    elif case == "negative":
        dist = -rng.integers(0, 3, (num_q, num_g)).astype(np.float32) - 0.0
        dist[:, :5] = -0.0
    else:
        dist = rng.integers(0, 3, (num_q, num_g)).astype(np.float16)
    assert_same_as_reference(dist, random_labels(rng, num_q, num_g), protocol)


def test_many_blocks_and_threads_give_the_same_numbers(monkeypatch):
    import common.eval.rank as rank
    rng = np.random.default_rng(3)
    dist = rng.integers(0, 5, (70, 90)).astype(np.float32)
    labels = random_labels(rng, 70, 90)
    whole = evaluate_rank(dist, *labels[:2], *labels[2:])
    monkeypatch.setattr(rank, "_BLOCK_ENTRIES", 7 * 90)
    monkeypatch.setattr(rank, "_CHUNK_ENTRIES", 2 * 90)
    split = evaluate_rank(dist, *labels[:2], *labels[2:])
    np.testing.assert_array_equal(whole["per_query_ap"], split["per_query_ap"])
    np.testing.assert_array_equal(whole["cmc"], split["cmc"])
    assert whole["mINP"] == split["mINP"]
    assert_same_as_reference(dist, labels)


def test_accumulator_takes_uneven_blocks():
    from common.eval.rank import RankingAccumulator
    rng = np.random.default_rng(4)
    dist = rng.random((23, 40)).astype(np.float32)
    labels = random_labels(rng, 23, 40)
    for protocol in ("standard", "market", "cuhk03"):
        metrics = RankingAccumulator(*labels, protocol=protocol, max_rank=5)
        for a, b in [(0, 1), (1, 9), (9, 9), (9, 23)]:
            metrics.add(dist[a:b])
        blocked = metrics.results()
        whole = evaluate_rank(dist, *labels, protocol=protocol, max_rank=5)
        np.testing.assert_array_equal(blocked["cmc"], whole["cmc"])
        np.testing.assert_array_equal(blocked["per_query_ap"], whole["per_query_ap"])
    early = RankingAccumulator(*labels)
    early.add(dist[:5])
    with pytest.raises(ValueError, match="only 5 of 23 queries"):
        early.results()
    with pytest.raises(ValueError, match="does not fit"):
        early.add(dist[:3, :7])


def test_msmt17_labels_concentrated_distances(eval_reference):
    # Real MSMT17 identity/camera structure with the distances of an untrained network: between
    # random L2-normalised 2048-d features, d = sqrt(2 - 2 cos) with cos ~ N(0, 1/2048), so
    # float32 ties are common (the case the old per-row stable-sort fallback took).
    h5py = pytest.importorskip("h5py", reason="h5py reads the MATLAB v7.3 MSMT17 lists")
    lists = eval_reference / "msmt17_lists"
    read = lambda name: np.asarray(h5py.File(lists / f"{name}.mat", "r")[name]).ravel().astype(int)
    q_pids, q_cams = read("query_ID")[:40], read("query_CAM")[:40]
    g_pids, g_cams = read("gallery_ID"), read("gallery_CAM")
    assert len(g_pids) == 82161 and len(np.unique(g_pids)) == 3060
    cosine = np.random.default_rng(0).normal(0, 2048 ** -0.5, (40, len(g_pids)))
    dist = np.sqrt(2 - 2 * cosine).astype(np.float32)
    tied_rows = sum(len(np.unique(row)) < len(row) for row in dist)
    assert tied_rows > 30
    assert_same_as_reference(dist, (q_pids, g_pids, q_cams, g_cams))


def test_previous_sort_based_baseline_matches_the_reference():
    # bench/eval_speed.py measures against it, so it must compute the same numbers.
    from common.eval.reference import evaluate_rank_sorting
    rng = np.random.default_rng(11)
    for kind in ("ties", "float32"):
        dist = (rng.integers(0, 3, (40, 300)) if kind == "ties" else rng.random((40, 300)))
        dist = dist.astype(np.float32)
        labels = random_labels(rng, 40, 300)
        old = evaluate_rank_sorting(dist, *labels[:2], *labels[2:], max_rank=10)
        ref = evaluate_rank_loop(dist, *labels[:2], *labels[2:], max_rank=10)
        assert old["mAP"] == pytest.approx(ref["mAP"]) and old["mINP"] == pytest.approx(ref["mINP"])
        np.testing.assert_allclose(old["cmc"], ref["cmc"])
