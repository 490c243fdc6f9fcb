"""iaunet/main.py end to end on real Market-1501 files at a tiny size, with and without a mask
folder; --evaluate --resume on the best weights (iaunet.md §1, §5-§7)."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from iaunet.main import main
from iaunet.masks import LIP_CLASSES


TINY = ["--height", "64", "--width", "32", "--train-batch", "16", "--test-batch", "32",
        "--max-epoch", "2", "--eval-step", "2", "--no-pretrained", "--use-cpu", "-j", "0"]


@pytest.fixture
def market_with_masks(market_mini, tmp_path):
    """market1501_mini copied with a LIP label map per training image: hair, upper clothes,
    pants and shoes in four horizontal bands."""
    root = tmp_path / "market"
    shutil.copytree(market_mini, root)
    (root / "bounding_box_train_seg").mkdir()
    bands = np.repeat([LIP_CLASSES.index(c) for c in ("hair", "upper-clothes", "pants",
                                                      "left-shoe")], 32).reshape(128, 1)
    labels = np.repeat(bands, 64, axis=1).astype(np.uint8)
    for image in (root / "bounding_box_train").glob("*.jpg"):
        Image.fromarray(labels).save(root / "bounding_box_train_seg" / f"{image.stem}.png")
    return root


@pytest.mark.slow
def test_train_with_masks_then_evaluate(market_with_masks, tmp_path, capsys):
    run = tmp_path / "run"
    main(["--root", str(market_with_masks), *TINY, "--save-dir", str(run)])
    assert "IAUnet (best, epoch" in capsys.readouterr().out
    history = json.loads((run / "history.json").read_text())
    assert set(history["epochs"][0]["losses"]) == {"xent", "htri", "mask", "total"}
    assert [row["epoch"] for row in history["evaluations"]] == [1, 2]  # the first, then every 2
    assert "mask loss on" in (run / "log_train.txt").read_text()
    best = torch.load(run / "best_model.pth.tar", weights_only=True)
    assert set(best) == {"state_dict", "rank1", "epoch"} and len(best["state_dict"]) == 399
    best_row = max(history["evaluations"], key=lambda row: row["rank1"])
    main(["--root", str(market_with_masks), *TINY, "--save-dir", str(tmp_path / "test"),
          "--evaluate", "--resume", str(run / "best_model.pth.tar")])
    tested = json.loads((tmp_path / "test/results_evaluate.json").read_text())
    tested = tested["targets"]["market1501"]
    assert tested["rank1"] == pytest.approx(best_row["rank1"])
    assert tested["mAP"] == pytest.approx(best_row["mAP"])


@pytest.mark.slow
def test_without_masks_the_mask_loss_is_off_and_said_and_no_epoch_checkpoints(market_mini, tmp_path):
    run = tmp_path / "run"
    main(["--root", str(market_mini), *TINY, "--max-epoch", "1", "--save-dir", str(run),
          "--no-epoch-checkpoints"])
    history = json.loads((run / "history.json").read_text())
    assert set(history["epochs"][0]["losses"]) == {"xent", "htri", "total"}
    assert "training WITHOUT the mask loss" in (run / "log_train.txt").read_text()
    assert not list(run.glob("checkpoint_ep*")) and (run / "best_model.pth.tar").is_file()

    # resumed without the size flags: it continues at the recorded 64x32, not the default
    record = (run / "run.json").read_text()
    size_free = list(TINY)
    for flag in ("--height", "--width"):
        del size_free[size_free.index(flag):size_free.index(flag) + 2]
    main(["--root", str(market_mini), *size_free, "--save-dir", str(run),
          "--no-epoch-checkpoints", "--resume", str(run / "training_state.pth.tar")])
    assert "run.json: --height 64, --width 32" in (run / "log_train.txt").read_text()
    assert (run / "run.json").read_text() == record
    assert [row["epoch"] for row in json.loads((run / "history.json").read_text())["epochs"]] == [1, 2]


def test_user_errors(market_mini, tmp_path):
    def message(*extra):
        with pytest.raises(SystemExit) as exc:
            main(["--root", str(market_mini), *TINY, "--save-dir", str(tmp_path / "x"), *extra])
        return str(exc.value.code)

    assert "--evaluate needs --resume" in message("--evaluate")
    assert "--resume nothing.tar does not exist" in message("--resume", "nothing.tar")
    assert "multiple of --num-instances" in message("--train-batch", "30")
    assert message("--num-instances", "0").endswith("--num-instances 0 must be >= 1")


@pytest.mark.slow
def test_two_process_torchrun_on_cpu(market_mini, tmp_path, torchrun):
    torchrun("iaunet", "--root", market_mini, *TINY, "--train-batch", "8", "--max-epoch", "1",
             "--save-dir", "ddp", port=29573)
    history = json.loads((tmp_path / "ddp/history.json").read_text())
    assert [row["epoch"] for row in history["evaluations"]] == [1]
