"""The torchreid-style run's pieces: the open-layer rule, the training-set union, the option
checks, --all-splits (abdnet.md §1, §4), with a tiny stand-in method."""

import json

import numpy as np
import pytest
import torch.nn as nn
from PIL import Image

from common.data import ReidDataset, Sample
from common.torchreid_run.args import build_parser as build_torchreid_parser
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
