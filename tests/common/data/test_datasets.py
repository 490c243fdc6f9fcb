import csv
import shutil

import h5py
import numpy as np
import pytest
from PIL import Image

from common.data import (DatasetError, ImageDataset, build_dataset, load_cuhk01, load_cuhk03np,
                         load_dukemtmcreid, load_folder, load_market1501, load_msmt17,
                         load_prid450s)
from common.eval import evaluate_rank


def write_jpeg(path, colour=(128, 64, 32)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 16), colour).save(path)


def test_market_mini_matches_manifest(market_mini):
    dataset = load_market1501(market_mini)
    with open(market_mini / "manifest.csv") as handle:
        rows = list(csv.DictReader(handle))
    expected = {row["path"].split("/", 1)[1]: (int(row["pid"]), int(row["camid"]) - 1)
                for row in rows}
    for subset in (dataset.query, dataset.gallery):
        for sample in subset:
            key = "/".join(sample.path.split("/")[-2:])
            assert (sample.pid, sample.camid) == expected[key]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert len(dataset.train) == len(train_rows) == 32
    assert sorted({s.pid for s in dataset.train}) == list(range(16))
    assert (len(dataset.query), len(dataset.gallery)) == (32, 32)
    assert "train    |    16 |       32" in dataset.summary()


def test_market_parent_folder_and_junk_option(tmp_path, market_mini):
    root = tmp_path / "market1501" / "Market-1501-v15.09.15"
    shutil.copytree(market_mini, root)
    write_jpeg(root / "bounding_box_test" / "-1_c1s1_000001_00.jpg")
    write_jpeg(root / "bounding_box_test" / "0000_c2s1_000002_00.jpg")
    default = load_market1501(tmp_path)
    assert {s.pid for s in default.gallery} >= {0} and -1 not in {s.pid for s in default.gallery}
    assert -1 in {s.pid for s in load_market1501(tmp_path, keep_junk=True).gallery}


def test_wrong_root_lists_expected_and_found(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError, match="expected bounding_box_train, query, "
                                           "bounding_box_test.*holds: images"):
        load_market1501(tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        load_market1501(tmp_path / "missing")


def test_empty_split_and_unparsable_names(tmp_path):
    for split in ("bounding_box_train", "query", "bounding_box_test"):
        (tmp_path / split).mkdir()
    write_jpeg(tmp_path / "bounding_box_train" / "0001_c1s1_000001_00.jpg")
    with pytest.raises(DatasetError, match="no image .* in .*query"):
        load_market1501(tmp_path)
    write_jpeg(tmp_path / "query" / "person_one.jpg")
    with pytest.raises(DatasetError, match="do not follow .*person_one.jpg"):
        load_market1501(tmp_path)


def test_corrupt_image_is_a_clear_error(tmp_path):
    bad = tmp_path / "0001_c1s1_000001_00.jpg"
    bad.write_bytes(b"not a jpeg")
    dataset = ImageDataset([type("S", (), {"path": str(bad), "pid": 1, "camid": 0})()])
    with pytest.raises(DatasetError, match="corrupt or not an image"):
        dataset[0]


def test_duke_layout(tmp_path):
    root = tmp_path / "DukeMTMC-reID"
    write_jpeg(root / "bounding_box_train" / "0001_c2_f0046182.jpg")
    write_jpeg(root / "bounding_box_train" / "0003_c8_f0000001.jpg")
    write_jpeg(root / "query" / "0005_c1_f0000002.jpg")
    write_jpeg(root / "bounding_box_test" / "0005_c7_f0000003.jpg")
    dataset = load_dukemtmcreid(tmp_path)
    assert [(s.pid, s.camid) for s in dataset.train] == [(0, 1), (1, 7)]
    assert dataset.gallery[0].camid == 6


def test_cuhk03np_from_the_official_protocol_files(tmp_path, eval_reference):
    for variant, sizes in (("detected", (7365, 1400, 5332)), ("labeled", (7368, 1400, 5328))):
        config = eval_reference / "cuhk03_np_protocol" / f"cuhk03_new_protocol_config_{variant}.mat"
        shutil.copy(config, tmp_path)
        images = tmp_path / f"images_{variant}"
        images.mkdir()
        import scipy.io
        for entry in scipy.io.loadmat(config)["filelist"].ravel():
            (images / str(np.ravel(entry)[0])).touch()
        dataset = load_cuhk03np(tmp_path, variant=variant)
        assert (len(dataset.train), len(dataset.query), len(dataset.gallery)) == sizes
        assert dataset.num_train_pids == 767
        assert len({s.pid for s in dataset.query}) == 700
        assert {s.camid for s in dataset.query} == {0, 1}
    next(images.iterdir()).unlink()
    with pytest.raises(DatasetError, match="1 of .* images listed .* are missing"):
        load_cuhk03np(tmp_path, variant="labeled")


def test_cuhk03np_market_layout(tmp_path):
    root = tmp_path / "cuhk03-np" / "labeled"
    write_jpeg(root / "bounding_box_train" / "0001_c1_1.png")
    write_jpeg(root / "query" / "0002_c1_1.png")
    write_jpeg(root / "bounding_box_test" / "0002_c2_1.png")
    dataset = load_cuhk03np(tmp_path, variant="labeled")
    assert dataset.name == "cuhk03np-labeled" and dataset.gallery[0].camid == 1


def test_msmt17_lists_match_the_official_arrays(tmp_path, eval_reference):
    lists = eval_reference / "msmt17_lists"
    root = tmp_path / "MSMT17_V1"
    root.mkdir()
    for name in ("list_query.txt", "list_gallery.txt"):
        shutil.copy(lists / name, root)
    (root / "list_train.txt").write_text("0000/0000_000_01_0303morning_0015_0.jpg 0\n"
                                         "0001/0001_002_15_0303noon_0016_1.jpg 1\n")
    for list_name, folder in (("list_train.txt", "train"), ("list_query.txt", "test"),
                              ("list_gallery.txt", "test")):
        write_jpeg(root / folder / (root / list_name).read_text().split()[0])
    dataset = load_msmt17(tmp_path)
    assert (len(dataset.query), len(dataset.gallery)) == (11659, 82161)
    assert [(s.pid, s.camid) for s in dataset.train] == [(0, 0), (1, 14)]
    for subset, prefix in ((dataset.query, "query"), (dataset.gallery, "gallery")):
        ids = h5py.File(lists / f"{prefix}_ID.mat")[f"{prefix}_ID"][()].ravel()
        cams = h5py.File(lists / f"{prefix}_CAM.mat")[f"{prefix}_CAM"][()].ravel()
        np.testing.assert_array_equal([s.camid + 1 for s in subset], cams)
        ours = np.array([s.pid for s in subset])
        assert len(np.unique(ours)) == len(np.unique(ids)) == 3060
        np.testing.assert_array_equal(np.unique(ours, return_inverse=True)[1],
                                      np.unique(ids, return_inverse=True)[1])


def test_msmt17_market_layout_two_digit_cameras(tmp_path):
    for split, name in (("bounding_box_train", "0000_c14_0025.jpg"), ("query", "0002_c3_0001.jpg"),
                        ("bounding_box_test", "0002_c15_0009.jpg")):
        write_jpeg(tmp_path / "MSMT17" / split / name)
    dataset = load_msmt17(tmp_path)
    assert dataset.train[0].camid == 13 and dataset.gallery[0].camid == 14


def test_cuhk01_seeded_split(cuhk01_dev):
    with pytest.raises(DatasetError, match="485 identities cannot give 485 train"):
        load_cuhk01(cuhk01_dev)
    first = load_cuhk01(cuhk01_dev, split_id=0, num_train_ids=385)
    assert first.num_train_pids == 385 and len(first.train) == 385 * 4
    assert {s.camid for s in first.query} == {0} and {s.camid for s in first.gallery} == {1}
    assert len({s.pid for s in first.query}) == 100 and len(first.query) == 200
    assert [s.path for s in load_cuhk01(cuhk01_dev, 0, 385).train] == [s.path for s in first.train]
    other = load_cuhk01(cuhk01_dev, split_id=1, num_train_ids=385)
    assert {s.pid for s in other.query} != {s.pid for s in first.query}
    with pytest.raises(DatasetError, match="split_id must be in 0..9"):
        load_cuhk01(cuhk01_dev, split_id=10, num_train_ids=385)


def test_prid450s_protocol_from_real_images(tmp_path, cuhk01_dev):
    # Real CUHK01 pairs arranged as PRID-450s: camera A -> cam_a, camera B -> cam_b.
    for pid in range(1, 21):
        for cam, number in (("cam_a", "001"), ("cam_b", "003")):
            (tmp_path / cam).mkdir(exist_ok=True)
            shutil.copy(cuhk01_dev / "campus" / f"{pid:04d}{number}.png",
                        tmp_path / cam / f"img_{pid:04d}.png")
    dataset = load_prid450s(tmp_path, split_id=2)
    assert dataset.num_train_pids == 10 and len(dataset.train) == 20
    assert dataset.query == dataset.gallery and len(dataset.query) == 20
    rng = np.random.default_rng(0)
    dist = rng.random((20, 20))
    pids = [s.pid for s in dataset.query]
    cams = [s.camid for s in dataset.query]
    result = evaluate_rank(dist, pids, pids, cams, cams)
    assert result["num_valid_queries"] == 20
    reciprocal_ranks = []
    for q in range(20):  # the one valid match is the other-camera image
        kept = [g for g in range(20) if not (pids[g] == pids[q] and cams[g] == cams[q])]
        order = sorted(kept, key=lambda g: dist[q, g])
        reciprocal_ranks.append(1 / (1 + [pids[g] for g in order].index(pids[q])))
    assert result["mAP"] == pytest.approx(np.mean(reciprocal_ranks))


def test_prid450s_unpaired_identity(tmp_path):
    write_jpeg(tmp_path / "cam_a" / "img_0001.png")
    write_jpeg(tmp_path / "cam_b" / "img_0002.png")
    with pytest.raises(DatasetError, match="only one camera"):
        load_prid450s(tmp_path)


def test_folder_dataset_with_and_without_cameras(tmp_path):
    write_jpeg(tmp_path / "train" / "alice" / "a.jpg")
    write_jpeg(tmp_path / "train" / "bob" / "b.jpg")
    write_jpeg(tmp_path / "query" / "carol" / "q.jpg")
    write_jpeg(tmp_path / "gallery" / "carol" / "g.jpg")
    write_jpeg(tmp_path / "gallery" / "dave" / "g.jpg")
    dataset = load_folder(tmp_path)
    assert [s.pid for s in dataset.train] == [0, 1]
    assert dataset.query[0].camid == 0 and {s.camid for s in dataset.gallery} == {1}
    assert dataset.query[0].pid == dataset.gallery[0].pid != dataset.gallery[1].pid

    cams = tmp_path / "with_cams"
    write_jpeg(cams / "query" / "12" / "cam1" / "q.jpg")
    write_jpeg(cams / "gallery" / "12" / "cam2" / "g.jpg")
    write_jpeg(cams / "gallery" / "-1" / "cam1" / "junk.jpg")
    dataset = load_folder(cams)
    assert [(s.pid, s.camid) for s in dataset.query] == [(12, 0)]
    assert sorted((s.pid, s.camid) for s in dataset.gallery) == [(-1, 0), (12, 1)]
    assert dataset.train == []

    write_jpeg(cams / "gallery" / "12" / "loose.jpg")
    with pytest.raises(DatasetError, match="both images and subfolders"):
        load_folder(cams)


def test_build_dataset_unknown_name(tmp_path):
    with pytest.raises(DatasetError, match="unknown dataset 'market'.*market1501"):
        build_dataset("market", tmp_path)
