"""Ranked-list images: layout, frame colours and the junk rule (common/eval/visualize.py)."""

import numpy as np
import pytest
from PIL import Image

from common.data import Sample
from common.eval.visualize import MATCH_COLOR, MISMATCH_COLOR, visualize_ranked_results


def write_image(path, value):
    Image.new("RGB", (20, 40), (value, value, value)).save(path)
    return str(path)


def test_strip_shows_the_ranked_gallery_with_green_and_red_frames(tmp_path):
    query = [Sample(write_image(tmp_path / "q0.png", 10), pid=1, camid=0)]
    gallery = [Sample(write_image(tmp_path / f"g{i}.png", 50 * i), pid, camid)
               for i, (pid, camid) in enumerate([(1, 0), (2, 1), (1, 1), (-1, 1), (3, 1)])]
    # closest first: g0 (same id and camera: junk), g3 (id -1: junk), g2 (match), g4, g1
    distmat = np.array([[0.0, 4.0, 2.0, 1.0, 3.0]])
    paths = visualize_ranked_results(distmat, query, gallery, tmp_path / "ranks", topk=3,
                                     height=40, width=20, border=2, gap=6)
    assert [p.name for p in paths] == ["00000_q0.png"]
    strip = np.asarray(Image.open(paths[0]))
    tile = 20 + 2 * 2
    assert strip.shape == (40 + 4, tile * 4 + 6, 3)
    frames = [tuple(strip[0, 6 + tile * k + 1]) for k in (1, 2, 3)]
    assert frames == [MATCH_COLOR, MISMATCH_COLOR, MISMATCH_COLOR]
    # inside each frame: g2, g4, g1 in that order
    assert [strip[20, 6 + tile * k + 10, 0] for k in (1, 2, 3)] == [100, 200, 50]
    assert tuple(strip[20, 10]) == (10, 10, 10)  # the query first


def test_shape_mismatch_is_an_error(tmp_path):
    query = [Sample(write_image(tmp_path / "q.png", 0), 1, 0)]
    with pytest.raises(ValueError, match="1 queries and 0 gallery"):
        visualize_ranked_results(np.zeros((1, 2)), query, [], tmp_path)
