"""APNet's configuration: the shipped YAML, yacs-style overrides and their errors (apnet.md §3)."""

from pathlib import Path

import pytest

from apnet.config import ConfigError, load_config
from apnet.trainer import warmup_multistep_factor

CONFIGS = Path(__file__).resolve().parents[2] / "apnet" / "configs"


def test_default_yml_holds_the_released_values():
    cfg = load_config(CONFIGS / "default.yml")
    assert (cfg.MODEL.NAME, cfg.MODEL.LAST_STRIDE, cfg.APNET.LEVEL) == ("resnet50", 1, 2)
    assert (cfg.INPUT.SIZE_TRAIN, cfg.INPUT.PADDING, cfg.INPUT.PROB) == ([384, 192], 10, 0.5)
    assert cfg.DATASETS.NAMES == "market1501"  # "('market1501')" read as a Python literal
    assert (cfg.DATALOADER.SAMPLER, cfg.DATALOADER.NUM_INSTANCE) == ("softmax_triplet", 4)
    solver = cfg.SOLVER
    assert (solver.BASE_LR, solver.IMS_PER_BATCH, solver.MAX_EPOCHS) == (4e-4, 80, 160)
    assert (solver.WEIGHT_DECAY, solver.WEIGHT_DECAY_BIAS, solver.BIAS_LR_FACTOR) == (1e-3, 1e-3, 1)
    assert (solver.STEPS, solver.WARMUP_FACTOR, solver.WARMUP_ITERS) == ([40, 80, 120, 160], 0.01, 10)
    assert (solver.MARGIN, solver.SMOOTH, solver.EVAL_PERIOD) == (0.3, 0.1, 40)
    assert load_config(CONFIGS / "msmt.yml").APNET.MSMT is True


def test_command_line_overrides_as_yacs():
    cfg = load_config(CONFIGS / "default.yml", ["APNET.LEVEL", "1", "DATASETS.NAMES",
                                                "('dukemtmc')", "SOLVER.BASE_LR", "1",
                                                "INPUT.SIZE_TEST", "(256, 128)"])
    assert (cfg.APNET.LEVEL, cfg.DATASETS.NAMES, cfg.SOLVER.BASE_LR) == (1, "dukemtmc", 1.0)
    assert cfg.INPUT.SIZE_TEST == [256, 128]


@pytest.mark.parametrize("overrides, message", [
    (["APNET.LEVLE", "2"], "non-existent config key APNET.LEVLE"),
    (["SOLVER", "3"], "non-existent config key SOLVER"),
    (["APNET.LEVEL", "two"], "APNET.LEVEL takes a value of type int"),
    (["TEST.RE_RANK", "1"], "TEST.RE_RANK takes a value of type bool"),
    (["APNET.LEVEL"], "has no value"),
])
def test_bad_keys_and_values_are_clear_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(CONFIGS / "default.yml", overrides)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yml")
    (tmp_path / "bad.yml").write_text("SOLVER:\n  BASE_LRR: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad.yml: non-existent config key SOLVER.BASE_LRR"):
        load_config(tmp_path / "bad.yml")


def test_apnet_s_yml_is_default_yml_with_the_rga_s_agent():
    released, spatial = load_config(CONFIGS / "default.yml"), load_config(CONFIGS / "apnet_s.yml")
    assert released.APNET.AGENT == "se" and spatial.APNET.AGENT == "rga_s"
    differences = {(section, key) for section, values in spatial.items() if isinstance(values, dict)
                   for key, value in values.items() if released[section][key] != value}
    assert differences == {("APNET", "AGENT")}
    assert (spatial.OUTPUT_DIR, spatial.APNET.LEVEL) == ("./output/apnet_s", 2)


@pytest.mark.parametrize("overrides, message", [
    (["APNET.AGENT", "rga"], "APNET.AGENT 'rga': use se .* or rga_s"),
    (["INPUT.SIZE_TEST", "[256, 128]"], r"rga_s needs INPUT.SIZE_TEST = INPUT.SIZE_TRAIN"),
    (["INPUT.SIZE_TRAIN", "[200, 100]", "INPUT.SIZE_TEST", "[200, 100]"],
     r"INPUT.SIZE_TRAIN \[200, 100\]: APNet-S level 2 .* \[50, 50, 25, 13, 13\].* multiple of 32"),
    (["APNET.LEVEL", "3", "MODEL.LAST_STRIDE", "2", "INPUT.SIZE_TRAIN", "[64, 32]",
      "INPUT.SIZE_TEST", "[64, 32]"], "multiple of 128"),
])
def test_agents_that_cannot_run_are_clear_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(CONFIGS / "apnet_s.yml", overrides)
    assert load_config(CONFIGS / "apnet_s.yml", ["APNET.LEVEL", "3"]).APNET.LEVEL == 3


def test_warmup_then_multistep_schedule():
    factor = [warmup_multistep_factor(e, [40, 80, 120, 160], 0.1, 0.01, 10, "linear")
              for e in (0, 1, 5, 9, 10, 39, 40, 80, 120, 159)]
    assert factor == pytest.approx([0.01, 0.109, 0.505, 0.901, 1.0, 1.0, 0.1, 0.01, 0.001, 0.001])
