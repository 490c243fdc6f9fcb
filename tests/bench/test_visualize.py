"""bench.visualize: attention, Grad-CAM and ranked-list figures of a method's network, from a
dataset or a folder of crops, and one-line errors for bad inputs."""

import numpy as np
import pytest
import torch
from PIL import Image

from bench.visualize import choose_images, main
from common.data import Sample
from common.eval.visualize import (CAPTION_HEIGHT, JUNK_COLOR, MATCH_COLOR, MISMATCH_COLOR,
                                   QUERY_COLOR)
from iaunet.model import build_model

# (split, pid, camera): every image a uniform colour of its own, so a tile tells which it is
IMAGES = [("query", 1, 1), ("query", 2, 2),
          ("bounding_box_test", 1, 1), ("bounding_box_test", 1, 2), ("bounding_box_test", 1, 3),
          ("bounding_box_test", 2, 1), ("bounding_box_test", 3, 2), ("bounding_box_test", 0, 3),
          ("bounding_box_test", 2, 2), ("bounding_box_train", 5, 1)]


@pytest.fixture
def market(tmp_path):
    """A Market-1501 tree of uniform 64x128 crops; returns (root, colour -> (pid, camera as in
    the file name, 1-based))."""
    root, identity_of = tmp_path / "market", {}
    for index, (split, pid, cam) in enumerate(IMAGES):
        colour = (20 * index + 10, 255 - 20 * index, (97 * index) % 256)
        (root / split).mkdir(parents=True, exist_ok=True)
        name = f"{pid:04d}_c{cam}s1_{index:06d}_00.png"
        Image.new("RGB", (64, 128), colour).save(root / split / name)
        identity_of[colour] = (pid, cam)
    return root, identity_of


def test_ranked_list_frames_follow_the_identities_and_junk_is_marked(market, tmp_path):
    root, identity_of = market
    main(["iaunet", "--data", str(root), "--dataset", "market1501", "--out", str(tmp_path / "o"),
          "--kind", "ranks", "--size", "64", "32", "--top-k", "6", "--junk", "mark",
          "--pick", "0001_c1s1_000000_00"])
    strip = np.asarray(Image.open(tmp_path / "o" / "ranks" / "00000_0001_c1s1_000000_00.png"))
    tile, gap = 128 + 8, 12
    assert strip.shape == (256 + 8 + CAPTION_HEIGHT, tile * 7 + gap, 3)
    assert tuple(strip[0, 0]) == QUERY_COLOR
    for slot in range(1, 7):
        left = tile * slot + gap
        pid, cam = identity_of[tuple(int(v) for v in strip[128, left + 64])]
        expected = (JUNK_COLOR if (pid, cam) == (1, 1) else MATCH_COLOR if pid == 1
                    else MISMATCH_COLOR)
        assert tuple(strip[0, left + 1]) == expected, (slot, pid, cam)
        assert (strip[-CAPTION_HEIGHT:, left:left + tile].max(axis=2) < 100).sum() > 5


def test_attention_and_gradcam_figures_of_a_folder_of_crops(market, tmp_path, capsys):
    root, _ = market
    crops = root / "bounding_box_test"
    for kind, count in (("attention", 2 * 2), ("gradcam", 2)):  # IAUnet: two part-map taps
        main(["iaunet", "--data", str(crops), "--out", str(tmp_path / "o"), "--kind", kind,
              "--size", "64", "32", "--images", "2", "--seed", "3"])
        written = sorted((tmp_path / "o" / kind).glob("*.png"))
        assert len(written) == count
        figure = np.asarray(Image.open(written[0]))
        assert figure.shape[0] > 200 and figure.shape[1] > figure.shape[0] / 2
    out = capsys.readouterr()
    assert "wrote 2 gradcam figures of iaunet" in out.out and "untrained" in out.err


@pytest.mark.slow
def test_two_checkpoints_give_two_rows(market, tmp_path):
    root, _ = market
    for seed in (0, 1):
        torch.manual_seed(seed)
        torch.save(build_model(5, pretrained=False).state_dict(), tmp_path / f"w{seed}.pth")
    out = tmp_path / "o"
    main(["iaunet", "--checkpoint", str(tmp_path / "w0.pth"), "--data", str(root / "query"),
          "--out", str(out), "--kind", "actmap", "--layer", "layer3", "--size", "64", "32",
          "--images", "1"])
    one_row = np.asarray(Image.open(next((out / "actmap").glob("*.png")))).shape[0]
    main(["iaunet", "--checkpoint", str(tmp_path / "w0.pth"), "--checkpoint",
          str(tmp_path / "w1.pth"), "--data", str(root / "query"), "--out", str(out),
          "--kind", "actmap", "--layer", "layer3", "--size", "64", "32", "--images", "1"])
    two_rows = np.asarray(Image.open(next((out / "actmap").glob("*.png")))).shape[0]
    assert two_rows > 1.6 * one_row - 100


@pytest.mark.parametrize("args, message", [
    (["--data", "{tmp}/none"], "none does not exist; pass a folder of crops"),
    (["--data", "{root}/query", "--pick", "nobody.png"],
     "--pick nobody.png: no such image among the 2 inputs"),
    (["--data", "{root}/query", "--dataset", "market1501"], "market1501"),
    (["--data", "{root}/query", "--kind", "gradcam", "--layer", "nowhere", "--size", "64", "32"],
     "Grad-CAM layer 'nowhere': the network has no such module"),
])
def test_bad_inputs_are_one_line_errors(market, tmp_path, args, message):
    root, _ = market
    args = [a.format(tmp=tmp_path, root=root) for a in args]
    with pytest.raises(SystemExit) as exit_info:
        main(["iaunet", *args, "--out", str(tmp_path / "o")])
    text = str(exit_info.value)
    assert text.startswith("bench.visualize: error: ") and "\n" not in text
    assert message in text


def test_random_choice_is_seeded_and_picks_keep_their_order():
    samples = [Sample(f"/x/{i}.png", 0, 0) for i in range(10)]
    assert choose_images(samples, 3, seed=5) == choose_images(samples, 3, seed=5)
    assert choose_images(samples, 30) == list(range(10))
    assert choose_images(samples, picks=["7", "2.png"]) == [7, 2]
