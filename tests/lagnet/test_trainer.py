"""Schedule, options and experiment-folder rules of lagnet/trainer.py (lagnet.md §1, §5)."""

import argparse

import pytest
import torch

from lagnet.main import parse_args
from lagnet.trainer import (OptionError, build_scheduler, check_options, experiment_dir,
                            parse_decay_type)


def test_decay_type_grammar():
    assert parse_decay_type("step", 60) == ("step", [60])
    assert parse_decay_type("step_320_380_420", 60) == ("multistep", [320, 380, 420])
    for bad, message in (("cosine", "is not 'step'"), ("step_a_b", "whole epochs"),
                         ("step_400_300", "increasing"), ("step_", "whole epochs")):
        with pytest.raises(ValueError, match=message):
            parse_decay_type(bad, 60)


def lr_by_epoch(decay_type, epochs, lr_decay=60):
    args = argparse.Namespace(decay_type=decay_type, lr_decay=lr_decay, gamma=0.1)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=2e-4)
    scheduler = build_scheduler(args, optimizer)
    lrs = {}
    for epoch in range(1, epochs + 1):  # stepped at the start of each epoch, as the trainer does
        optimizer.step()
        scheduler.step()
        lrs[epoch] = optimizer.param_groups[0]["lr"]
    return lrs


def test_readme_schedule_steps_at_epoch_start():
    lrs = lr_by_epoch("step_320_380_420", 599)
    assert lrs[1] == pytest.approx(2e-4) and lrs[319] == pytest.approx(2e-4)
    assert lrs[320] == pytest.approx(2e-5) and lrs[379] == pytest.approx(2e-5)
    assert lrs[380] == pytest.approx(2e-6) and lrs[420] == pytest.approx(2e-7)
    assert lrs[599] == pytest.approx(2e-7)
    step = lr_by_epoch("step", 130)
    assert step[59] == pytest.approx(2e-4) and step[60] == pytest.approx(2e-5)
    assert step[120] == pytest.approx(2e-6)


def test_readme_command_parses_with_the_original_defaults():
    args = parse_args("--datadir ../market1501/ --batchid 8 --batchtest 4 --test_every 50 "
                      "--epochs 600 --decay_type step_320_380_420 --loss "
                      "1*CrossEntropy+2*Triplet+1*L2 --margin 1.2 --nGPU 1 --lr 2e-4 "
                      "--optimizer ADAM --random_erasing --amsgrad --save lagnet".split())
    check_options(args)
    assert (args.batchimage, args.height, args.width, args.num_attentions) == (4, 384, 128, 24)
    assert (args.weight_decay, args.L2_beta, args.probability, args.feats) == (5e-4, 0.05, 0.5, 256)
    assert (args.resume, args.part_split, args.drop_pool, args.train_all_epochs) == \
        (0, "faithful", "faithful", False)
    assert parse_args(["--pre_train", "True"]).pre_train is True  # the original's str -> bool


@pytest.mark.parametrize("argv, message", [
    (["--loss", "1*Softmax"], "unknown loss 'Softmax'"),
    (["--decay_type", "cosine"], "decay_type"),
    (["--model", "MGN"], "LAG only"),
    (["--apex", "yes"], "--amp"),
    (["--epochs", "1"], "trains nothing"),
    (["--resume", "-2"], "--resume -2"),
])
def test_bad_options_are_named(argv, message):
    with pytest.raises(OptionError, match=message):
        check_options(parse_args(argv))


def test_experiment_names_cannot_escape_the_experiment_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert experiment_dir(parse_args(["--save", "lagnet"])).as_posix() == "experiment/lagnet"
    assert experiment_dir(parse_args(["--save", "a", "--load", "b"])).as_posix() == "experiment/b"
    for name in ("..", "../elsewhere", "a/b", "", "/tmp"):
        with pytest.raises(OptionError, match="plain folder name"):
            experiment_dir(parse_args(["--save", name]))
