"""Ranked-list images (layout, frame colours, distances, the junk rule) and attention overlays
(the map over the right part of the image, the image's own aspect ratio), from their pixels
(common/eval/visualize.py)."""

import numpy as np
import pytest
from PIL import Image

from common.data import Sample
from common.eval.visualize import (CAPTION_HEIGHT, JUNK_COLOR, MATCH_COLOR, MISMATCH_COLOR,
                                   save_attention_figure, save_ranked_list,
                                   visualize_ranked_results)


def write_image(path, value):
    Image.new("RGB", (20, 40), (value, value, value)).save(path)
    return str(path)


@pytest.fixture
def ranking(tmp_path):
    query = [Sample(write_image(tmp_path / "q0.png", 10), pid=1, camid=0)]
    gallery = [Sample(write_image(tmp_path / f"g{i}.png", 50 * i), pid, camid)
               for i, (pid, camid) in enumerate([(1, 0), (2, 1), (1, 1), (-1, 1), (3, 1)])]
    # closest first: g0 (same id and camera: junk), g3 (id -1: junk), g2 (match), g4, g1
    distmat = np.array([[0.0, 4.0, 2.0, 1.0, 3.0]])
    return query, gallery, distmat


def caption_ink(strip, left, width):
    """Dark pixels in the caption line under the tile starting at column ``left``."""
    band = strip[-CAPTION_HEIGHT:, left:left + width, :3]
    return int((band.max(axis=2) < 100).sum())


def test_strip_shows_the_ranked_gallery_with_green_and_red_frames(ranking, tmp_path):
    query, gallery, distmat = ranking
    paths = visualize_ranked_results(distmat, query, gallery, tmp_path / "ranks", topk=3,
                                     height=40, width=20, border=2, gap=6)
    assert [p.name for p in paths] == ["00000_q0.png"]
    strip = np.asarray(Image.open(paths[0]))
    tile = 20 + 2 * 2
    assert strip.shape == (40 + 4 + CAPTION_HEIGHT, tile * 4 + 6, 3)
    frames = [tuple(strip[0, 6 + tile * k + 1]) for k in (1, 2, 3)]
    assert frames == [MATCH_COLOR, MISMATCH_COLOR, MISMATCH_COLOR]
    # inside each frame: g2, g4, g1 in that order
    assert [strip[20, 6 + tile * k + 10, 0] for k in (1, 2, 3)] == [100, 200, 50]
    assert tuple(strip[20, 10]) == (10, 10, 10)  # the query first
    # a distance under every gallery image and "query" under the query
    assert all(caption_ink(strip, 6 + tile * k, tile) > 5 for k in (1, 2, 3))
    assert caption_ink(strip, 0, tile) > 5


def test_marked_junk_keeps_its_rank_in_its_own_frame_colour(ranking, tmp_path):
    query, gallery, distmat = ranking
    path, = visualize_ranked_results(distmat, query, gallery, tmp_path / "ranks", topk=4,
                                     height=40, width=20, border=2, gap=6, junk="mark")
    strip = np.asarray(Image.open(path))
    tile = 24
    frames = [tuple(strip[0, 6 + tile * k + 1]) for k in (1, 2, 3, 4)]
    assert frames == [JUNK_COLOR, JUNK_COLOR, MATCH_COLOR, MISMATCH_COLOR]
    assert [strip[20, 6 + tile * k + 10, 0] for k in (1, 2, 3, 4)] == [0, 150, 100, 200]


def test_captions_are_optional_and_counted(tmp_path):
    images = [write_image(tmp_path / f"{i}.png", 40 * i) for i in range(3)]
    save_ranked_list(images[0], images[1:], tmp_path / "plain.png", height=40, width=20)
    assert np.asarray(Image.open(tmp_path / "plain.png")).shape[0] == 40 + 8
    with pytest.raises(ValueError, match="2 gallery images but 1 captions"):
        save_ranked_list(images[0], images[1:], tmp_path / "x.png", captions=["0.1"])


def test_shape_mismatch_is_an_error(tmp_path):
    query = [Sample(write_image(tmp_path / "q.png", 0), 1, 0)]
    with pytest.raises(ValueError, match="1 queries and 0 gallery"):
        visualize_ranked_results(np.zeros((1, 2)), query, [], tmp_path)


def panel(figure, box):
    left, top, right, bottom = box
    return figure[top + 3:bottom - 3, left + 3:right - 3, :3].astype(int)


@pytest.mark.parametrize("stripe", [0, 2])
def test_a_hot_stripe_of_the_map_lands_on_that_stripe_of_the_image(tmp_path, stripe):
    image = Image.new("RGB", (64, 128), (128, 128, 128))  # a Market crop's 1:2 shape
    maps = np.zeros((1, 4, 2), np.float32)  # the network's grid: 4 stripes of 2 columns
    maps[0, stripe] = 1.0
    boxes = save_attention_figure(image, [("fresh", maps)], tmp_path / "a.png", "t",
                                  labels=("map",), value_range=(0.0, 1.0))
    figure = np.asarray(Image.open(tmp_path / "a.png"))
    (image_box, overlay_box), = boxes
    for left, top, right, bottom in (image_box, overlay_box):  # the image's aspect ratio
        assert (right - left) / (bottom - top) == pytest.approx(64 / 128, abs=0.03)
    plain, overlay = panel(figure, image_box), panel(figure, overlay_box)
    assert np.abs(plain - 128).max() <= 2  # the image panel is the image, no map
    height = overlay.shape[0]
    red_minus_blue = overlay[:, :, 0] - overlay[:, :, 2]
    # the hot stripe's core is red (jet's top), the stripes away from it blue (jet's bottom)
    for k in range(4):
        core = red_minus_blue[int((k + 0.35) * height / 4):int((k + 0.65) * height / 4)]
        if k == stripe:
            assert core.min() > 40, k
        elif abs(k - stripe) > 1:
            assert core.max() < -40, k


def test_rows_of_several_maps_share_one_layout(tmp_path):
    image = Image.new("RGB", (30, 90), (200, 200, 200))
    maps = np.stack([np.eye(3)[:, :1]] * 2).astype(np.float32)  # two 3x1 maps
    boxes = save_attention_figure(image, [("a", maps), ("b", maps[::-1])], tmp_path / "r.png",
                                  "title\nsecond line", labels=("x", "y"))
    assert [len(row) for row in boxes] == [3, 3]
    assert boxes[0][1][0] == boxes[1][1][0] and boxes[0][1][1] < boxes[1][1][1]
    with pytest.raises(ValueError, match="same number of maps"):
        save_attention_figure(image, [("a", maps), ("b", maps[:1])], tmp_path / "x.png", "t")
    with pytest.raises(ValueError, match="2 maps but 1 labels"):
        save_attention_figure(image, [("a", maps)], tmp_path / "x.png", "t", labels=("x",))
