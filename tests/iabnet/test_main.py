"""iabnet/main.py end to end: the guide's command (with its --iab-* names) on real Market-1501
files, and the PRID-450s protocol on a PRID-layout set of real CUHK01 images (iabnet.md §1, §5)."""

import json
import shutil

import numpy as np
import pytest
import torch

from common.torchreid_run.trainer import OptionError, check_options
from iabnet.main import IAB_NET, build_parser, main, model_options

GUIDE_FLAGS = ["--flip-eval", "--eval-freq", "1", "--label-smooth", "--criterion", "htri",
               "--lambda-htri", "0.1", "--data-augment", "crop", "random-erase", "--margin", "1.2",
               "--optim", "adam", "--lr", "0.0003", "--stepsize", "20", "40", "--arch", "resnet50",
               "--use-of", "--iab-dan", "cam", "pam", "--iab-np", "2", "--shallow-cam", "--use-ow"]
TINY = ["--height", "64", "--width", "32", "--train-batch-size", "8", "--test-batch-size", "32",
        "--fixbase-epoch", "1", "--max-epoch", "1", "--use-cpu", "--no-pretrained", "-j", "0",
        "--no-epoch-checkpoints"]


def test_defaults_aliases_and_the_figure_switch():
    args = build_parser().parse_args(["-s", "market1501", "-t", "market1501", "--iab-dim",
                                          "512", "--iab-dan-no-head"])
    assert (args.max_epoch, args.seed, args.train_batch_size, args.fixbase_epoch) == (20, 4, 32, 10)
    assert (args.abd_dim, args.abd_dan_no_head, args.casa_channel) == (512, True, "cam")
    assert (args.depth, args.att_type, args.ksize) == (50, None, None)


def test_the_casa_stripes_are_checked_at_last_stride_2():
    """IAB-Net's layer4 map is height / 32 rows: 352 passes ABD-Net's check (22 rows) but gives
    IAB-Net 11 rows, which do not split into 2 stripes."""
    base = ["-s", "market1501", "-t", "market1501"]
    with pytest.raises(OptionError, match=r"--height 352: .*\(height / 32 rows\).*multiple of 64"):
        check_options(build_parser().parse_args([*base, "--height", "352"]), IAB_NET)
    args = build_parser().parse_args([*base, "--height", "384", "--iab-np", "5", "--casa-channel",
                                      "coab"])
    with pytest.raises(OptionError, match="--abd-np 5 stripes; use a multiple of 160"):
        check_options(args, IAB_NET)
    args.abd_np = 2
    assert model_options(args)["casa_channel"] == "coab"


@pytest.mark.slow
def test_guide_command_trains_then_evaluates(market_mini, tmp_path, capsys):
    run = tmp_path / "run"
    main(["-s", "market1501", "-t", "market1501", "--root", str(market_mini), *GUIDE_FLAGS, *TINY,
          "--save-dir", str(run)])
    assert "IAB-Net (best, epoch 1" in capsys.readouterr().out
    history = json.loads((run / "history.json").read_text())
    assert [row["epoch"] for row in history["epochs"]] == [0, 1]
    best = torch.load(run / "checkpoint_best.pth.tar", weights_only=True)
    assert len(best["state_dict"]) == 649 and best["epoch"] == 0
    main(["-s", "market1501", "-t", "market1501", "--root", str(market_mini), *GUIDE_FLAGS, *TINY,
          "--save-dir", str(tmp_path / "test"), "--evaluate", "--load-weights",
          str(run / "checkpoint_best.pth.tar")])
    tested = json.loads((tmp_path / "test/results_evaluate.json").read_text())
    assert tested["method"] == "IAB-Net"
    assert tested["targets"]["market1501"]["rank1"] == pytest.approx(history["evaluations"][0]["rank1"])


@pytest.fixture
def prid_from_cuhk01(cuhk01_dev, tmp_path):
    """12 CUHK01 identities in PRID-450s's layout: camera A's first image as cam_a/img_XXXX.png,
    camera B's first as cam_b/img_XXXX.png."""
    root = tmp_path / "prid_450s"
    for camera, number in (("cam_a", "001"), ("cam_b", "003")):
        (root / camera).mkdir(parents=True)
        for pid in range(1, 13):
            shutil.copy(cuhk01_dev / "campus" / f"{pid:04d}{number}.png",
                        root / camera / f"img_{pid:04d}.png")
    return root


@pytest.mark.slow
def test_prid450s_protocol_one_true_match_per_query(prid_from_cuhk01, tmp_path):
    main(["-s", "prid450s", "-t", "prid450s", "--root", str(prid_from_cuhk01), "--split-id", "3",
          *GUIDE_FLAGS, *TINY, "--fixbase-epoch", "0", "--save-dir", str(tmp_path / "prid")])
    results = json.loads((tmp_path / "prid/results_best.json").read_text())["targets"]["prid450s"]
    # 6 test identities x 2 cameras; query = gallery; each query's one valid match is its
    # other-camera image, so AP = 1 / rank and mAP is the mean reciprocal rank
    assert results["num_queries"] == results["num_valid_queries"] == 12
    cmc = np.array(results["cmc"])
    first_match_share = np.diff(np.concatenate([[0.0], cmc]))
    mean_reciprocal_rank = float((first_match_share / np.arange(1, len(cmc) + 1)).sum())
    assert results["mAP"] == pytest.approx(mean_reciprocal_rank)
    assert cmc[10] == 1.0  # at most 11 other images can rank before the match
