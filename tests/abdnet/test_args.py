"""ABD-Net's flags (abdnet.md §1): the README command, the defaults and the --data-augment quirk."""

import pytest

from abdnet.main import ABD_NET, build_parser, model_options
from abdnet.model import build_model
from common.torchreid_run.args import data_augment_steps
from common.torchreid_run.trainer import OptionError, check_options


def abd_parser():
    return build_parser()


README = ("-s market1501 -t market1501 --flip-eval --eval-freq 1 --label-smooth --criterion htri "
          "--lambda-htri 0.1 --data-augment crop random-erase --margin 1.2 --train-batch-size 64 "
          "--height 384 --width 128 --optim adam --lr 0.0003 --stepsize 20 40 --gpu-devices 4,5 "
          "--max-epoch 80 --save-dir path/to/dir --arch resnet50 --use-of --abd-dan cam pam "
          "--abd-np 2 --shallow-cam --use-ow")


def test_readme_command_parses_to_the_paper_settings():
    args = abd_parser().parse_args(README.split())
    assert args.source_names == ["market1501"] and args.target_names == ["market1501"]
    assert (args.height, args.width, args.train_batch_size, args.num_instances) == (384, 128, 64, 4)
    assert (args.criterion, args.margin, args.lambda_htri, args.label_smooth) == ("htri", 1.2, 0.1,
                                                                                  True)
    assert (args.stepsize, args.max_epoch, args.fixbase_epoch) == ([20, 40], 80, 10)
    assert (args.use_of, args.of_beta, args.of_start_epoch) == (True, 1e-6, 23)
    assert (args.use_ow, args.ow_beta, args.ow_scope, args.cam_softmax) == (True, 1e-3,
                                                                           "stem_only", "code")
    assert data_augment_steps(args.data_augment) == (True, True)
    model = build_model(751, **{**model_options(args), "pretrained": False})
    assert sum(p.numel() for p in model.parameters()) == 69_175_184


def test_bare_defaults_are_the_weak_setting_of_issue_36():
    args = abd_parser().parse_args(["-s", "market1501", "-t", "market1501"])
    assert (args.height, args.criterion, args.max_epoch, args.seed) == (256, "xent", 60, 1)
    assert not args.shallow_cam and args.abd_dan == []
    assert data_augment_steps(args.data_augment) == (False, False)  # 'crop' read letter by letter


@pytest.mark.parametrize("value, steps", [
    (["crop"], (True, False)),
    (["random-erase"], (False, True)),
    (["crop,random-erase"], (True, True)),  # matched nothing in the original (issue #9)
    (["crop,color-jitter,random-erase"], (True, True)),
    (["none"], (False, False)),
    (["crop", "color-jitter"], (True, False)),
])
def test_data_augment_space_and_comma_forms(value, steps):
    assert data_augment_steps(value) == steps


def test_variants_outside_the_paper_are_refused():
    parser = abd_parser()
    base = ["-s", "market1501", "-t", "market1501"]
    for extra, message in ((["--branches", "global", "np"], "--branches global np"),
                           (["--arch", "densenet121"], "--arch densenet121"),
                           (["--abd-dan-no-head"], "--abd-dan-no-head")):
        with pytest.raises(ValueError, match=message):
            model_options(parser.parse_args(base + extra))
    with pytest.raises(SystemExit):
        parser.parse_args(["-t", "market1501"])  # -s is required, as in the original


def test_height_must_split_the_layer4_map_into_the_stripes():
    base = ["-s", "market1501", "-t", "market1501"]
    with pytest.raises(OptionError, match=r"--height 72: .*\(height / 16 rows\).*multiple of 32"):
        check_options(abd_parser().parse_args([*base, "--height", "72"]), ABD_NET)
    check_options(abd_parser().parse_args([*base, "--height", "352"]), ABD_NET)  # 22 rows
