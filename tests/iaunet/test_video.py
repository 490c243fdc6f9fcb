"""The video run of iaunet/main.py on real MARS frames (mars_mini) at a tiny size, and the
tracklet evaluation against a direct computation, exact resume and a 2-process torchrun
(iaunet.md §3.5; iaunet/video.py)."""

import json
from argparse import Namespace

import numpy as np
import pytest
import torch
import torch.nn as nn

from common.data import VideoReidDataset, load_mars, read_image
from common.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from common.data.video import chunk_indices
from common.eval import evaluate_rank
from iaunet.main import main
from iaunet.video import build_video_loaders, evaluate_tracklets

TINY = ["-d", "mars", "--height", "32", "--width", "16", "--seq-len", "2", "--train-batch", "16",
        "--test-batch", "64", "--test-sample", "evenly", "--no-pretrained", "--use-cpu", "-j", "0"]


class MeanColour(nn.Module):
    """A clip's feature: its mean normalised colour (3-d)."""

    def forward(self, clips):
        return clips.mean(dim=(1, 3, 4))


def test_tracklet_evaluation_against_a_direct_computation(mars_mini):
    full = load_mars(mars_mini)
    gallery = [t for t in full.gallery if t.pid in (4, 8, 16)]
    query = [t for t in full.query if t.pid in (4, 8, 16)][:4]
    dataset = VideoReidDataset("mars", mars_mini, full.train, query, gallery)
    args = Namespace(height=8, width=4, seq_len=3, test_sample="all", test_batch=16, workers=0,
                     evaluate=True, flip_cnt=1, amp=False, distance="consine")
    _, query_loader, gallery_clips = build_video_loaders(args, dataset, None, pin_memory=False)
    assert gallery_clips.query_rows.tolist() == [0, 1, 2, 3]  # every query is in the gallery
    assert len(gallery_clips.loader.dataset.tracklets) == len(gallery) - 4
    results = evaluate_tracklets(MeanColour(), query_loader, gallery_clips, args, "cpu",
                                 progress=False)

    def feature(tracklet):  # every frame of every chunk, the last one looped
        frames = [i for chunk in chunk_indices(len(tracklet.paths), 3) for i in chunk]
        colours = [np.asarray(read_image(tracklet.paths[i]).resize((4, 8), 3), np.float64)
                   .reshape(-1, 3).mean(0) / 255 for i in frames]
        return (np.mean(colours, 0) - IMAGENET_MEAN) / IMAGENET_STD

    gallery_order = query + [t for t in gallery if t not in query]
    qf = np.stack([feature(t) for t in query])
    gf = np.stack([feature(t) for t in gallery_order])
    qf, gf = (f / np.linalg.norm(f, axis=1, keepdims=True) for f in (qf, gf))
    expected = evaluate_rank(-qf @ gf.T, [t.pid for t in query], [t.pid for t in gallery_order],
                             [t.camid for t in query], [t.camid for t in gallery_order])
    assert results["num_queries"] == 4 and results["num_valid_queries"] == 4
    assert results["mAP"] == pytest.approx(expected["mAP"], abs=1e-6)
    np.testing.assert_allclose(results["cmc"], expected["cmc"])


def test_video_user_errors(mars_mini, tmp_path):
    def message(*extra):
        with pytest.raises(SystemExit) as exc:
            main(["--root", str(mars_mini), *TINY, "--save-dir", str(tmp_path), *extra])
        return str(exc.value.code)

    assert "only IAUnet has a video network" in message("-a", "IANet")
    assert "--seq-len (0)" in message("--seq-len", "0")
    assert "choose one of market1501_seg" in message("-d", "mars2")


@pytest.mark.slow
def test_train_then_evaluate_on_mars_mini(mars_mini, tmp_path, capsys):
    run = tmp_path / "run"
    main(["--root", str(mars_mini), *TINY, "--max-epoch", "1", "--save-dir", str(run)])
    assert "IAUnet (best, epoch 1" in capsys.readouterr().out
    log = (run / "log_train.txt").read_text()
    assert "tracklets from the file names" in log and "WITHOUT the mask loss" in log
    assert "36 query x 64 gallery tracklets" in log
    history = json.loads((run / "history.json").read_text())
    assert set(history["epochs"][0]["losses"]) == {"xent", "htri", "total"}
    best = torch.load(run / "best_model.pth.tar", weights_only=True)
    assert set(best) == {"state_dict", "rank1", "epoch"} and len(best["state_dict"]) == 399
    assert best["state_dict"]["IAU2.SA.conv.conv.weight"].shape == (4, 512, 1, 1, 1)
    trained = json.loads((run / "results_best.json").read_text())["targets"]["mars"]
    assert trained["num_queries"] == trained["num_valid_queries"] == 36
    main(["--root", str(mars_mini), *TINY, "--save-dir", str(tmp_path / "test"), "--evaluate",
          "--resume", str(run / "best_model.pth.tar")])
    tested = json.loads((tmp_path / "test/results_evaluate.json").read_text())["targets"]["mars"]
    assert tested["rank1"] == pytest.approx(trained["rank1"])
    assert tested["mAP"] == pytest.approx(trained["mAP"])


@pytest.mark.slow
def test_a_resumed_video_run_equals_a_straight_one(mars_mini, tmp_path):
    def train(folder, epochs, *extra):
        main(["--root", str(mars_mini), *TINY, "--max-epoch", str(epochs), "--eval-step", "5",
              "--no-epoch-checkpoints", "--save-dir", str(folder), *extra])

    train(tmp_path / "straight", 2)
    train(tmp_path / "split", 1)
    train(tmp_path / "split", 2, "--resume", str(tmp_path / "split/training_state.pth.tar"))
    straight, split = (torch.load(tmp_path / name / "training_state.pth.tar", weights_only=True)
                       for name in ("straight", "split"))
    assert straight["epoch"] == split["epoch"] == 2
    assert all(torch.equal(straight["model"][key], split["model"][key])
               for key in straight["model"])
    assert (json.loads((tmp_path / "straight/history.json").read_text())
            == json.loads((tmp_path / "split/history.json").read_text()))


@pytest.mark.slow
def test_two_process_torchrun_video_run_on_cpu(mars_mini, tmp_path, torchrun):
    torchrun("iaunet", "--root", mars_mini, *TINY, "--train-batch", "8", "--max-epoch", "1",
             "--save-dir", "ddp", port=29577, timeout=600)
    history = json.loads((tmp_path / "ddp/history.json").read_text())
    assert [row["epoch"] for row in history["evaluations"]] == [1]
    results = json.loads((tmp_path / "ddp/results_best.json").read_text())["targets"]["mars"]
    assert results["num_queries"] == results["num_valid_queries"] == 36
