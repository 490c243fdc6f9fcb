"""bench.search: top-k lists from bench.extract files, ranked-list PNGs, clear errors."""

import json

import numpy as np
import pytest
from PIL import Image

from bench.search import main
from common.eval import re_ranking_features
from common.eval.visualize import CAPTION_HEIGHT, NEUTRAL_COLOR, QUERY_COLOR

SIZE = (16, 32)   # width, height of the generated crops


def crop(folder, name, value):
    path = folder / f"{name}.png"
    Image.new("RGB", SIZE, (value, 0, 255 - value)).save(path)
    return str(path)


def extract_file(path, features, paths, method="lagnet", distance="euclidean"):
    np.savez(path, features=np.asarray(features, np.float32), paths=np.array(paths),
             method=method, distance=distance)
    return str(path)


@pytest.fixture
def files(tmp_path):
    # 1-D features: the gallery order for each query is known by hand.
    gallery = [crop(tmp_path, f"g{i}", 40 * i) for i in range(5)]
    query = [crop(tmp_path, f"q{i}", 250 - 100 * i) for i in range(2)]
    g_file = extract_file(tmp_path / "gallery.npz", [[3.0], [1.0], [-1.0], [2.0], [1.0]], gallery)
    q_file = extract_file(tmp_path / "query.npz", [[0.0], [2.9]], query)
    return tmp_path, q_file, g_file, gallery


def test_prints_the_top_k_and_writes_ranked_lists(files, capsys):
    folder, q_file, g_file, gallery = files
    main(["--gallery", g_file, "--query", q_file, "--top-k", "3", "--out", str(folder / "out")])
    printed = capsys.readouterr().out
    # query 0 (feature 0): distance 1 to g1, g2, g4 (tie, gallery order); query 1 (2.9): g0, g3, g1
    lines = [line.split() for line in printed.splitlines() if line.startswith("    ")]
    assert [line[2].rsplit("/", 1)[1] for line in lines] == [
        "g1.png", "g2.png", "g4.png", "g0.png", "g3.png", "g1.png"]
    np.testing.assert_allclose([float(line[1]) for line in lines], [1, 1, 1, 0.1, 0.9, 1.9],
                               atol=1e-4)
    listed = json.loads((folder / "out" / "top_k.json").read_text())
    assert listed["distance"] == "euclidean" and listed["re_rank"] is None
    assert [hit["path"] for hit in listed["results"][1]["top_k"]] == [gallery[0], gallery[3],
                                                                     gallery[1]]
    strip = np.asarray(Image.open(folder / "out" / "00001_q1.png"))
    border, gap = 4, 12
    tile_w = 128 + 2 * border
    assert strip.shape == (256 + 2 * border + CAPTION_HEIGHT, tile_w * 4 + gap, 3)
    assert tuple(strip[0, 0]) == QUERY_COLOR
    assert tuple(strip[128, 64]) == (150, 0, 105)                  # the query crop itself
    for slot, g in enumerate([0, 3, 1], start=1):
        left = tile_w * slot + gap
        assert tuple(strip[0, left + 1]) == NEUTRAL_COLOR          # no identities: grey frame
        assert tuple(strip[128, left + 64]) == (40 * g, 0, 255 - 40 * g)
        assert (strip[-CAPTION_HEIGHT:, left:left + tile_w].max(axis=2) < 100).sum() > 5


def test_re_ranked_lists(files, capsys):
    folder, q_file, g_file, _ = files
    main(["--gallery", g_file, "--query", q_file, "--top-k", "5", "--re-rank", "2", "2", "0.3",
          "--out", str(folder / "out")])
    listed = json.loads((folder / "out" / "top_k.json").read_text())
    reranked = re_ranking_features(np.array([[0.0], [2.9]]),
                                   np.array([[3.0], [1.0], [-1.0], [2.0], [1.0]]), 2, 2, 0.3)
    for i, entry in enumerate(listed["results"]):
        order = np.argsort(reranked[i], kind="stable")
        assert [hit["path"].rsplit("/", 1)[1] for hit in entry["top_k"]] == [
            f"g{j}.png" for j in order]
    assert listed["re_rank"] == [2, 2, 0.3]


def test_errors_name_the_problem(files, capsys):
    folder, q_file, g_file, gallery = files
    other = extract_file(folder / "other.npz", [[1.0]], gallery[:1], method="apnet")
    with pytest.raises(SystemExit, match="same model"):
        main(["--gallery", g_file, "--query", other])
    with pytest.raises(SystemExit, match="does not exist"):
        main(["--gallery", str(folder / "missing.npz"), "--query", q_file])
    (folder / "text.npz").write_text("not a zip")
    with pytest.raises(SystemExit, match="cannot read"):
        main(["--gallery", str(folder / "text.npz"), "--query", q_file])
    np.savez(folder / "bare.npz", features=np.zeros((1, 1), np.float32))
    with pytest.raises(SystemExit, match="lacks distance, method, paths"):
        main(["--gallery", str(folder / "bare.npz"), "--query", q_file])
    with pytest.raises(SystemExit):
        main(["--gallery", g_file, "--query", q_file, "--re-rank", "20"])
    assert "three: K1 K2 LAMBDA" in capsys.readouterr().err
    moved = extract_file(folder / "moved.npz", [[0.0]], [str(folder / "gone.png")])
    with pytest.raises(SystemExit, match="gone.png does not exist.*leave --out out"):
        main(["--gallery", g_file, "--query", moved, "--out", str(folder / "out")])
