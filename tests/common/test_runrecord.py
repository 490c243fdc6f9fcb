"""common/runrecord.py: a run's record of what its weights need, found and used by consumers."""

import argparse

import pytest

from common.runrecord import (adopt_recorded_flags, explicit_flags, find_run_record,
                              parse_command_line, write_run_record)


def parser():
    parser = argparse.ArgumentParser()
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--part_split", default="faithful")
    return parser


def test_explicit_flags_are_those_on_the_command_line_even_at_their_default():
    assert explicit_flags(parser(), ["--height", "384"]) == {"height"}
    args = parse_command_line(parser(), ["--width", "32"])
    assert args.width == 32 and args.explicit == {"width"}


def test_recorded_values_fill_what_the_user_did_not_give_and_conflicts_are_refused(tmp_path):
    run = tmp_path / "run"
    write_run_record(run, "toy", (64, 32), "bicubic", model_options={"part_split": "fixed"},
                     flags={"height": 64, "width": 32, "part_split": "fixed"})
    weights = run / "model" / "model_best.pt"  # one folder below the record, as LAG-Net's
    assert find_run_record(weights)[1]["input_size"] == [64, 32]
    args = parse_command_line(parser(), ["--width", "32"])
    adopted = adopt_recorded_flags(args, weights, args.explicit, ("height", "width", "part_split"),
                                   lambda name: f"--{name}", ValueError)
    assert adopted == {"height": 64, "part_split": "fixed"}
    assert (args.height, args.width, args.part_split) == (64, 32, "fixed")
    args = parse_command_line(parser(), ["--height", "128"])
    with pytest.raises(ValueError, match=r"--height 128 but .*model_best.pt was trained with 64"):
        adopt_recorded_flags(args, weights, args.explicit, ("height",), lambda name: f"--{name}",
                             ValueError)
    elsewhere = parse_command_line(parser(), [])
    assert adopt_recorded_flags(elsewhere, tmp_path / "other.pt", elsewhere.explicit, ("height",),
                                lambda name: f"--{name}", ValueError) == {}
    assert elsewhere.height == 384
