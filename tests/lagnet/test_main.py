"""lagnet/main.py end to end on real Market-1501 files, at a tiny input size (lagnet.md §1, §7)."""

import json
import re

import pytest
import torch

from lagnet.main import main



def tiny_argv(datadir, save, *extra):
    return ["--datadir", str(datadir), "--batchid", "4", "--batchimage", "2", "--batchtest", "16",
            "--height", "64", "--width", "32", "--num_attentions", "4", "--cpu", "--no_pretrained",
            "--nThread", "0", "--loss", "1*CrossEntropy+2*Triplet+1*L2", "--optimizer", "ADAM",
            "--amsgrad", "--random_erasing", "--save", save, *extra]


def exit_message(argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return str(exc.value.code)


def load_state(path):
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.slow
def test_train_evaluate_resume_and_test_only(market_mini, in_tmp, capsys):
    main(tiny_argv(market_mini, "straight", "--epochs", "3", "--test_every", "1"))
    out = capsys.readouterr().out
    assert "LAG-Net (best, epoch" in out and "R10" in out
    folder = in_tmp / "experiment" / "straight"
    for name in ("config.txt", "log.txt", "history.json", "training_state.pt",
                 "model/model_latest.pt", "model/model_best.pt", "results_best.json"):
        assert (folder / name).is_file(), name
    for plot in ("loss.png", "metrics.png"):
        assert (folder / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    history = json.loads((folder / "history.json").read_text())
    assert [row["epoch"] for row in history["epochs"]] == [1, 2]  # --epochs 3 trains 2 (§5)
    assert [row["epoch"] for row in history["evaluations"]] == [1, 2]
    assert set(history["epochs"][0]["losses"]) == {"CrossEntropy", "Triplet", "L2", "total"}
    assert history["epochs"][0]["losses"]["L2"] == pytest.approx(1.0, abs=0.05)  # first visits
    best = json.loads((folder / "results_best.json").read_text())
    assert {"mAP", "mINP", "rank1", "rank3", "rank5", "rank10", "rank20", "cmc"} <= set(
        best["targets"]["market1501"])
    # the model file is a plain state_dict, as the original writes it
    assert "classifier_gs.classifier.0.weight" in load_state(folder / "model/model_latest.pt")

    # the same two epochs, interrupted after the first and resumed with --resume -1, from a
    # training state written with the layer3 block names of earlier versions (.0.1-.0.5)
    main(tiny_argv(market_mini, "split", "--epochs", "2", "--test_every", "1"))
    state_path = in_tmp / "experiment/split/training_state.pt"
    training_state = load_state(state_path)
    block = re.compile(r"^(global_stream|part_stream|la_stream)\.0\.(\d)\.")
    training_state["model"] = {block.sub(lambda m: f"{m[1]}.0.{int(m[2]) + 1}.", key): value
                               for key, value in training_state["model"].items()}
    assert "la_stream.0.5.conv1.weight" in training_state["model"]
    torch.save(training_state, state_path)
    size_free = tiny_argv(market_mini, "split", "--epochs", "3", "--test_every", "1",
                          "--resume", "-1")
    for flag in ("--height", "--width"):  # resumed at the recorded 64x32, not the default
        del size_free[size_free.index(flag):size_free.index(flag) + 2]
    main(size_free)
    log = (in_tmp / "experiment/split/log.txt").read_text()
    assert "run.json: --height 64, --width 32" in log
    assert "training_state.pt uses the layer3 block numbering of earlier versions" in log
    straight = load_state(folder / "model/model_latest.pt")
    resumed = load_state(in_tmp / "experiment/split/model/model_latest.pt")
    assert all(torch.equal(straight[key], resumed[key]) for key in straight)
    split_history = json.loads((in_tmp / "experiment/split/history.json").read_text())
    assert split_history == history

    # --test_only on the best weights reproduces the best evaluation
    capsys.readouterr()
    main(tiny_argv(market_mini, "check", "--test_only", "--pre_train",
                       str(folder / "model/model_best.pt")))
    assert "LAG-Net (evaluate" in capsys.readouterr().out
    tested = json.loads((in_tmp / "experiment/check/results_evaluate.json").read_text())
    best_row = max(history["evaluations"], key=lambda row: row["mAP"])
    assert tested["targets"]["market1501"]["mAP"] == pytest.approx(best_row["mAP"], abs=1e-6)


@pytest.mark.slow
def test_user_errors_are_named(market_mini, in_tmp, monkeypatch):
    assert "16 training identities" in exit_message(
        tiny_argv(market_mini, "a", "--epochs", "2", "--num_classes", "751"))
    assert "does not exist" in exit_message(tiny_argv(market_mini, "nothing", "--resume", "-1"))
    assert "does not exist" in exit_message(tiny_argv(market_mini, "b", "--pre_train", "nope.pt"))
    assert "bounding_box_train" in exit_message(tiny_argv(in_tmp, "c", "--epochs", "2"))
    monkeypatch.setenv("TORCH_HOME", str(in_tmp / "empty_hub"))
    argv = [arg for arg in tiny_argv(market_mini, "d", "--epochs", "2") if arg != "--no_pretrained"]
    assert "Nothing is downloaded" in exit_message(argv)


@pytest.mark.slow
def test_an_existing_run_is_never_overwritten_and_reset_stays_inside(market_mini, in_tmp):
    main(tiny_argv(market_mini, "run", "--epochs", "2", "--test_every", "0"))
    assert "already holds a run" in exit_message(tiny_argv(market_mini, "run", "--epochs", "2"))
    (in_tmp / "experiment" / "keep.txt").write_text("not part of the run")
    (in_tmp / "precious.txt").write_text("not part of the run")
    main(tiny_argv(market_mini, "run", "--epochs", "2", "--test_every", "0", "--reset"))
    assert (in_tmp / "experiment" / "keep.txt").is_file() and (in_tmp / "precious.txt").is_file()
    assert "removed the previous contents" in (in_tmp / "experiment/run/log.txt").read_text()


@pytest.mark.slow
def test_two_process_torchrun_on_cpu(market_mini, tmp_path, torchrun):
    torchrun("lagnet", *tiny_argv(market_mini, "ddp", "--epochs", "3", "--test_every", "2"),
             port=29533)
    log = (tmp_path / "experiment/ddp/log.txt").read_text()
    assert "x 2 processes" in log
    history = json.loads((tmp_path / "experiment/ddp/history.json").read_text())
    assert [row["epoch"] for row in history["epochs"]] == [1, 2]
    assert [row["epoch"] for row in history["evaluations"]] == [2]  # (200 + 2) % 2 == 0, and last


@pytest.mark.slow
def test_switches_and_re_ranking_reach_the_run(market_mini, in_tmp):
    main(tiny_argv(market_mini, "paper", "--epochs", "1", "--train_all_epochs", "--test_every",
                       "1", "--part_split", "fixed", "--drop_pool", "fixed", "--re_rank"))
    folder = in_tmp / "experiment" / "paper"
    history = json.loads((folder / "history.json").read_text())
    assert [row["epoch"] for row in history["epochs"]] == [1]  # --train_all_epochs: 1 of 1
    assert json.loads((folder / "results_best.json").read_text())["re_rank"] is True
    config = (folder / "config.txt").read_text()
    assert "part_split: fixed" in config and "drop_pool: fixed" in config


@pytest.mark.slow
def test_evaluation_uses_the_input_size_the_run_recorded(market_mini, in_tmp):
    """Trained at 64x32, evaluated with the README's test command (no size flags): the run's own
    size is used, so the numbers are the training run's; a conflicting size is refused."""
    main(tiny_argv(market_mini, "small", "--epochs", "2", "--test_every", "1"))
    best = in_tmp / "experiment/small/model/model_best.pt"
    trained = json.loads((in_tmp / "experiment/small/results_best.json").read_text())
    readme_test = ["--datadir", str(market_mini), "--cpu", "--nThread", "0", "--test_only",
                   "--pre_train", str(best), "--save", "check"]
    main(readme_test)
    tested = json.loads((in_tmp / "experiment/check/results_evaluate.json").read_text())
    assert tested["targets"]["market1501"]["mAP"] == pytest.approx(
        trained["targets"]["market1501"]["mAP"], abs=1e-6)
    assert "--height 64, --width 32, --num_attentions 4" in (
        in_tmp / "experiment/check/log.txt").read_text()
    message = exit_message([*readme_test, "--height", "128", "--save", "conflict"])
    assert "--height 128 but" in message and "was trained with 64" in message


def test_output_and_weights_file_errors_are_one_line(market_mini, in_tmp):
    (in_tmp / "experiment").write_text("a file where the experiment folder should be")
    message = exit_message(tiny_argv(market_mini, "run", "--epochs", "2"))
    assert "cannot write to experiment/run" in message and "is a file, not a folder" in message
    (in_tmp / "experiment").unlink()
    (in_tmp / "random.pt").write_bytes(bytes(range(256)) * 64)
    message = exit_message(tiny_argv(market_mini, "a", "--test_only", "--pre_train", "random.pt"))
    assert "random.pt is not a torch checkpoint" in message and "weights_only" not in message
    message = exit_message(tiny_argv(market_mini, "b", "--epochs", "2", "--load", "missing"))
    assert "--load missing: experiment/missing does not exist" in message


@pytest.mark.slow
def test_pre_train_weights_of_another_class_count_fine_tune(market_mini, in_tmp):
    """A file trained on 751 identities, fine-tuned on market1501_mini's 16: the classifiers
    start afresh and are listed with both counts; everything else loads."""
    from lagnet.model import build_model
    torch.save(build_model(751, num_attentions=4, pretrained=False).state_dict(), "market.pt")
    main(tiny_argv(market_mini, "fine", "--epochs", "2", "--test_every", "0", "--pre_train",
                   "market.pt"))
    log = (in_tmp / "experiment/fine/log.txt").read_text()
    assert "fine-tuning: market.pt was trained with 751 classes and the training data has 16" in log
    assert "classifier_gs.classifier.0.weight" in log
    state = load_state(in_tmp / "experiment/fine/model/model_latest.pt")
    assert state["classifier_gs.classifier.0.weight"].shape[0] == 16
