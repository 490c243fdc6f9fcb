"""abdnet/main.py end to end on real Market-1501 files: the README flags at a tiny input size,
then --evaluate --load-weights, exact resume, and a 2-process torchrun (abdnet.md §1, §4, §5)."""

import json

import pytest
import torch

from abdnet.main import main
from abdnet.model import build_model
from common.runrecord import write_run_record


# The README command, with the size, batch, epochs and output changed for a 2-core CPU.
README_FLAGS = ["-s", "market1501", "-t", "market1501", "--flip-eval", "--eval-freq", "1",
                "--label-smooth", "--criterion", "htri", "--lambda-htri", "0.1", "--data-augment",
                "crop", "random-erase", "--margin", "1.2", "--optim", "adam", "--lr", "0.0003",
                "--arch", "resnet50", "--use-of", "--abd-dan", "cam", "pam", "--abd-np", "2",
                "--shallow-cam", "--use-ow"]
TINY = ["--height", "32", "--width", "16", "--train-batch-size", "16", "--test-batch-size", "32",
        "--fixbase-epoch", "1", "--of-start-epoch", "1", "--stepsize", "1", "--use-cpu",
        "--no-pretrained", "-j", "0"]


def run_main(root, save_dir, *extra):
    main([*README_FLAGS, *TINY, "--root", str(root), "--save-dir", str(save_dir), *extra])


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def exit_message(argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return str(exc.value.code)


@pytest.mark.slow
def test_train_evaluate_and_resume(market_mini, tmp_path, capsys):
    straight = tmp_path / "straight"
    run_main(market_mini, straight, "--max-epoch", "2")
    out = capsys.readouterr().out
    assert "ABD-Net (best, epoch" in out and "R20" in out
    for name in ("log_train.txt", "history.json", "training_state.pth.tar", "results_best.json",
                 "checkpoint_ep1.pth.tar", "checkpoint_ep2.pth.tar", "checkpoint_best.pth.tar"):
        assert (straight / name).is_file(), name
    for plot in ("loss.png", "metrics.png"):
        assert (straight / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    history = json.loads((straight / "history.json").read_text())
    # the warm-up epoch (0) has no regulariser, O.W. from main epoch 1, O.F. from index 1 on;
    # the schedule is stepped after each main epoch only (--stepsize 1)
    assert [(row["epoch"], sorted(row["losses"]), row["lr"]) for row in history["epochs"]] == [
        (0, ["htri", "total", "xent"], pytest.approx(3e-4)),
        (1, ["htri", "ow", "total", "xent"], pytest.approx(3e-4)),
        (2, ["htri", "of", "ow", "total", "xent"], pytest.approx(3e-5))]
    assert [row["epoch"] for row in history["evaluations"]] == [1, 2]

    # the original's file format: {state_dict, rank1, epoch (0-based)}, the best by rank-1
    best_row = max(history["evaluations"], key=lambda row: row["rank1"])
    best = load(straight / "checkpoint_best.pth.tar")
    assert set(best) == {"state_dict", "rank1", "epoch"}
    assert best["epoch"] == best_row["epoch"] - 1
    assert best["rank1"] == pytest.approx(best_row["rank1"])
    assert load(straight / "checkpoint_ep2.pth.tar")["rank1"] == 0
    assert len(best["state_dict"]) == 450

    # --evaluate --load-weights reproduces the best evaluation, and draws the ranked lists
    capsys.readouterr()
    evaluated = tmp_path / "evaluated"
    run_main(market_mini, evaluated, "--evaluate", "--load-weights",
             str(straight / "checkpoint_best.pth.tar"), "--visualize-ranks")
    assert "ABD-Net (evaluate" in capsys.readouterr().out
    results = json.loads((evaluated / "results_evaluate.json").read_text())
    assert results["targets"]["market1501"]["rank1"] == pytest.approx(best_row["rank1"])
    assert results["targets"]["market1501"]["mAP"] == pytest.approx(best_row["mAP"])
    assert len(list((evaluated / "ranked_results" / "market1501").glob("*.png"))) == 32
    assert (evaluated / "log_test.txt").is_file()

    # the same run stopped after main epoch 1, resumed from its training state: identical
    split = tmp_path / "split"
    run_main(market_mini, split, "--max-epoch", "1", "--no-epoch-checkpoints")
    run_main(market_mini, split, "--max-epoch", "2", "--no-epoch-checkpoints", "--resume",
             str(split / "training_state.pth.tar"))
    expected = load(straight / "checkpoint_ep2.pth.tar")["state_dict"]
    resumed = load(split / "training_state.pth.tar")["model"]
    assert all(torch.equal(expected[k], resumed[k]) for k in expected)
    assert json.loads((split / "history.json").read_text()) == history

    # --resume on a weights-only file goes on after its epoch, without the warm-up
    weights_only = tmp_path / "weights_only"
    run_main(market_mini, weights_only, "--max-epoch", "2", "--no-epoch-checkpoints",
             "--of-start-epoch", "5", "--resume", str(straight / "checkpoint_ep1.pth.tar"))
    history = json.loads((weights_only / "history.json").read_text())
    assert [row["epoch"] for row in history["epochs"]] == [2]
    assert history["epochs"][0]["lr"] == pytest.approx(3e-5)
    assert "holds no optimizer state" in (weights_only / "log_train.txt").read_text()
    assert not list(weights_only.glob("checkpoint_ep*"))


def test_user_errors_are_clear(market_mini, tmp_path):
    base = [*README_FLAGS, *TINY, "--root", str(market_mini)]
    message = exit_message([*base, "--save-dir", str(tmp_path / "a"), "-t", "viper"])
    assert "dataset 'viper' is not supported here" in message
    message = exit_message([*base, "--save-dir", str(tmp_path / "b"), "--root", str(tmp_path)])
    assert "market1501" in message and "expected" in message
    message = exit_message([*base, "--save-dir", str(tmp_path / "c"), "--resume", "nothing.tar"])
    assert "--resume nothing.tar does not exist" in message
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "training_state.pth.tar").write_bytes(b"")
    message = exit_message([*base, "--save-dir", str(tmp_path / "d")])
    assert "already holds a run" in message and "--resume" in message
    message = exit_message([*base, "--save-dir", str(tmp_path / "e"), "--train-batch-size", "800"])
    assert "--train-batch-size 800 with --num-instances 4: a batch needs 200 identities" in message
    iab_run = tmp_path / "iab"
    iab_run.mkdir()
    torch.save({"state_dict": {}, "rank1": 0.5, "epoch": 3}, iab_run / "checkpoint_best.pth.tar")
    write_run_record(iab_run, "iabnet", (64, 32), "bilinear")
    message = exit_message([*base, "--save-dir", str(tmp_path / "f"), "--evaluate",
                            "--load-weights", str(iab_run / "checkpoint_best.pth.tar")])
    assert message.endswith(f"checkpoint_best.pth.tar was written by a iabnet run "
                            f"({iab_run / 'run.json'}), not abdnet; use iabnet/main.py")
    abd_run = tmp_path / "abd"
    abd_run.mkdir()
    torch.save({"state_dict": {}, "rank1": 0.5, "epoch": 3}, abd_run / "checkpoint_best.pth.tar")
    write_run_record(abd_run, "abdnet", (32, 16), "bilinear",
                     flags={"height": 32, "width": 16, "shallow_cam": False, "abd_dan": []})
    message = exit_message([*base, "--save-dir", str(tmp_path / "h"), "--evaluate",
                            "--load-weights", str(abd_run / "checkpoint_best.pth.tar")])
    assert "error: --shallow-cam but " in message and "trained without it" in message
    write_run_record(abd_run, "abdnet", (32, 16), "bilinear",
                     flags={"height": 32, "width": 16, "shallow_cam": True, "abd_dan": []})
    message = exit_message([*base, "--save-dir", str(tmp_path / "h"), "--evaluate",
                            "--load-weights", str(abd_run / "checkpoint_best.pth.tar")])
    assert "error: --abd-dan ['cam', 'pam'] but " in message and "trained with []" in message
    message = exit_message([*base, "--save-dir", str(tmp_path / "g"), "--dropout", "2"])
    assert message.endswith("--dropout 2.0: a probability in [0, 1)")


def test_evaluate_refuses_weights_of_another_architecture(market_mini, tmp_path):
    other = build_model(751, pretrained=False, shallow_cam=False)
    torch.save({"state_dict": other.state_dict(), "rank1": 0.5, "epoch": 3}, tmp_path / "no_cam.tar")
    message = exit_message([*README_FLAGS, *TINY, "--root", str(market_mini), "--save-dir",
                            str(tmp_path / "e"), "--evaluate", "--load-weights",
                            str(tmp_path / "no_cam.tar")])
    assert "1 missing key" in message and "shallow_cam._cam_module.gamma" in message
    assert "--shallow-cam" in message


@pytest.mark.slow
def test_two_process_torchrun_on_cpu(market_mini, tmp_path, torchrun):
    torchrun("abdnet", *README_FLAGS, *TINY, "--root", market_mini, "--save-dir", "ddp",
             "--max-epoch", "1", "--train-batch-size", "8", "--no-epoch-checkpoints",
             port=29547, timeout=400)
    assert "x 2 processes" in (tmp_path / "ddp/log_train.txt").read_text()
    history = json.loads((tmp_path / "ddp/history.json").read_text())
    assert [row["epoch"] for row in history["epochs"]] == [0, 1]
    assert [row["epoch"] for row in history["evaluations"]] == [1]
