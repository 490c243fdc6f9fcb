"""The torchreid-style run's pieces: the open-layer rule, the training-set union, the option
checks, --all-splits, resume (abdnet.md §1, §4), with a tiny stand-in method."""

import json

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from common.data import ReidDataset, Sample
from common.data.synthetic import SyntheticConfig, generate
from common.runrecord import parse_command_line
from common.torchreid_run.args import build_parser as build_torchreid_parser
from common.runtime import RunInterrupted
from common.torchreid_run.trainer import (Method, OptionError, check_options, combine_train_sets,
                                          open_specified_layers, run)


def build_parser(description):
    return build_torchreid_parser(description, lambda parser: None)


def test_open_layers_names_more_modules():
    model = nn.Sequential()
    model.add_module("backbone", nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)))
    model.add_module("head", nn.Linear(2, 2))
    model.add_module("fc_out", nn.Linear(2, 1))
    open_specified_layers(model, ["head"], head_modules=("fc",))
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [
        "head.weight", "head.bias", "fc_out.weight", "fc_out.bias"]
    assert not model.backbone[1].training


def test_sources_are_concatenated_with_identity_and_camera_offsets():
    first = ReidDataset("a", ".", train=[Sample("x", 0, 0), Sample("y", 1, 1)])
    second = ReidDataset("b", ".", train=[Sample("z", 0, 0), Sample("w", 2, 2), Sample("v", 1, 0)])
    samples, num_pids = combine_train_sets([first, second])
    assert num_pids == 5
    assert [(s.pid, s.camid) for s in samples] == [(0, 0), (1, 1), (2, 2), (4, 4), (3, 2)]


def refuse_width_8(args):
    """A stand-in method's ``model_options``: refuses one value, with its message."""
    if args.width == 8:
        raise ValueError("--width 8: too narrow for this network")
    return {}


@pytest.mark.parametrize("extra, message", [
    (["--criterion", "htri", "--train-batch-size", "30"], "multiple of --num-instances 4"),
    (["--max-epoch", "0"], "at least one main epoch"),
    (["--fixbase-epoch", "-1"], "--fixbase-epoch -1"),
    (["--train-batch-size", "1"], "--train-batch-size 1"),
    (["--width", "8"], "--width 8: too narrow"),  # the method's own check, as an OptionError
    (["--evaluate", "--resume", "a", "--load-weights", "b"], "not both"),
    (["--resume", "a", "--load-weights", "b"], "give one of them"),
    (["--num-instances", "0"], "--num-instances 0 must be >= 1"),
    (["--test-batch-size", "0"], "--test-batch-size 0 must be >= 1"),
    (["--height", "0"], "--height 0 must be >= 1"),
    (["-j", "-1"], "-j -1 must be >= 0"),
])
def test_options_that_cannot_run_are_refused(extra, message):
    args = build_parser("test").parse_args(["-s", "market1501", "-t", "market1501", *extra])
    with pytest.raises(OptionError, match=message):
        check_options(args, tiny_method(model_options=refuse_width_8))


class TinyTwoBranchOutputs(nn.Module):
    """A small stand-in with the train/eval outputs the run expects."""

    def __init__(self, num_classes, **options):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(8, num_classes)

    def forward(self, x):
        feature = self.features(x)
        if not self.training:
            return feature
        return feature, (self.classifier(feature),), (feature,), {}


def tiny_method(model_options=lambda args: {}):
    return Method("Tiny", TinyTwoBranchOutputs, model_options, head_modules=("classifier",),
                  classifier_key="classifier.weight")


def test_all_splits_trains_each_split_and_reports_mean_and_spread(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for camera in ("cam_a", "cam_b"):
        (tmp_path / "prid" / camera).mkdir(parents=True)
        for pid in range(1, 9):
            pixels = rng.integers(0, 255, (32, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "prid" / camera / f"img_{pid:04d}.png")
    args = build_parser("test").parse_args([
        "-s", "prid450s", "-t", "prid450s", "--root", str(tmp_path / "prid"), "--height", "32",
        "--width", "16", "--train-batch-size", "4", "--fixbase-epoch", "0", "--max-epoch", "1",
        "--use-cpu", "-j", "0", "--no-pretrained", "--save-dir", str(tmp_path / "runs"),
        "--all-splits"])
    run(args, tiny_method())
    summary = json.loads((tmp_path / "runs/results_splits.json").read_text())
    per_split = [json.loads((tmp_path / f"runs/split{k}/results_best.json").read_text())
                 for k in range(10)]
    rank1 = np.array([run["targets"]["prid450s"]["rank1"] for run in per_split])
    row = summary["targets"]["prid450s"]
    assert summary["num_splits"] == 10 and row["per_split"]["rank1"] == rank1.tolist()
    assert row["mean"]["rank1"] == pytest.approx(rank1.mean())
    assert row["std"]["rank1"] == pytest.approx(rank1.std())
    assert "Tiny, best rank-1 of each of 10 splits" in capsys.readouterr().out
    assert len(set(rank1.tolist())) > 1  # different test identities in different splits


def test_all_splits_needs_a_split_dataset():
    args = build_parser("test").parse_args(["-s", "market1501", "-t", "market1501",
                                            "--all-splits"])
    with pytest.raises(OptionError, match="random splits"):
        check_options(args, tiny_method())


def test_a_resume_continues_at_the_recorded_size_on_the_same_data_only(tmp_path):
    data = generate(tmp_path / "market1501", SyntheticConfig(num_ids=12, images_per_id=4,
                                                             num_distractors=0, num_junk=0))
    common = ["-s", "market1501", "-t", "market1501", "--root", str(data), "--train-batch-size",
              "8", "--fixbase-epoch", "0", "--use-cpu", "-j", "0", "--no-pretrained",
              "--eval-freq", "1", "--save-dir", str(tmp_path / "run")]
    run(build_parser("test").parse_args([*common, "--height", "32", "--width", "16",
                                         "--max-epoch", "1"]), tiny_method())
    state = tmp_path / "run" / "training_state.pth.tar"
    record = json.loads((tmp_path / "run" / "run.json").read_text())

    with pytest.raises(OptionError, match=r"--height 64 but .*training_state.pth.tar was trained "
                                          r"with 32"):
        run(parse_command_line(build_parser("test"), [*common, "--height", "64", "--max-epoch",
                                                      "2", "--resume", str(state)]),
            tiny_method())
    run(parse_command_line(build_parser("test"), [*common, "--max-epoch", "2", "--resume",
                                                  str(state)]), tiny_method())
    log = (tmp_path / "run" / "log_train.txt").read_text()
    assert "run.json: --height 32, --width 16" in log  # adopted, not the default 256x128
    assert json.loads((tmp_path / "run" / "run.json").read_text()) == record
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [epoch["epoch"] for epoch in history["epochs"]] == [1, 2]
    run(parse_command_line(build_parser("test"), [*common[:-1], str(tmp_path / "eval"),
                                                  "--evaluate", "--resume", str(state)]),
        tiny_method())
    evaluated = json.loads((tmp_path / "eval" / "results_evaluate.json").read_text())
    assert evaluated["epoch"] == 2  # the epochs the state had trained, not one more
    assert "(after main epoch 2)" in (tmp_path / "eval" / "log_test.txt").read_text()

    earlier = tmp_path / "run" / "checkpoint_ep1.pth.tar"
    with pytest.raises(OptionError, match="already holds a run .* would overwrite it"):
        run(parse_command_line(build_parser("test"), [*common, "--max-epoch", "3", "--resume",
                                                      str(earlier)]), tiny_method())
    other = dict(torch.load(earlier, weights_only=False))
    other["state_dict"] = {**other["state_dict"], "classifier.weight": torch.zeros(20, 8),
                           "classifier.bias": torch.zeros(20)}
    torch.save(other, tmp_path / "other_data.pth.tar")
    fresh = [*common[:-1], str(tmp_path / "fresh")]
    with pytest.raises(OptionError, match="its classifier has 20 classes and the training data 6"):
        run(parse_command_line(build_parser("test"), [*fresh, "--height", "32", "--width", "16",
                                                      "--max-epoch", "3", "--resume",
                                                      str(tmp_path / "other_data.pth.tar")]),
            tiny_method())


class InterruptedInTraining(TinyTwoBranchOutputs):
    def forward(self, x):
        if self.training:
            raise KeyboardInterrupt
        return super().forward(x)


def test_an_interruption_in_the_warm_up_says_so(tmp_path):
    data = generate(tmp_path / "market1501", SyntheticConfig(num_ids=12, images_per_id=4,
                                                             num_distractors=0, num_junk=0))
    args = build_parser("test").parse_args([
        "-s", "market1501", "-t", "market1501", "--root", str(data), "--height", "32", "--width",
        "16", "--train-batch-size", "8", "--fixbase-epoch", "2", "--max-epoch", "1", "--use-cpu",
        "-j", "0", "--no-pretrained", "--save-dir", str(tmp_path / "run")])
    method = Method("Tiny", InterruptedInTraining, lambda args: {}, head_modules=("classifier",),
                    classifier_key="classifier.weight")
    with pytest.raises(RunInterrupted, match="^interrupted in warm-up epoch 1/2; nothing was "
                                             "saved yet"):
        run(args, method)
