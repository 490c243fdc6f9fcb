"""apnet/main.py end to end on real Market-1501 files at a tiny size: train, --test, --resume,
and the errors a user meets (apnet.md §2, §5, §6)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from apnet.main import main
from apnet.model import build_model

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_YML = str(PROJECT_ROOT / "apnet" / "configs" / "default.yml")
APNET_S_YML = str(PROJECT_ROOT / "apnet" / "configs" / "apnet_s.yml")


def tiny(root, output_dir, *overrides, config=DEFAULT_YML):
    return ["--config_file", config, "DATASETS.ROOT_DIR", str(root), "INPUT.SIZE_TRAIN",
            "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]", "SOLVER.IMS_PER_BATCH", "16",
            "SOLVER.EVAL_PERIOD", "2", "MODEL.PRETRAINED", "False", "DATALOADER.NUM_WORKERS", "0",
            "MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(output_dir), *overrides]


def exit_message(argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return str(exc.value.code)


def checkpoints(folder):
    return sorted(Path(folder).glob("resnet50_checkpoint_*.pt"),
                  key=lambda p: int(p.stem.rsplit("_", 1)[1]))


@pytest.mark.slow
def test_train_test_and_resume(market_mini, tmp_path, capsys):
    straight = tmp_path / "straight"
    main(tiny(market_mini, straight, "SOLVER.MAX_EPOCHS", "6"))
    assert "APNet (best, epoch" in capsys.readouterr().out
    history = json.loads((straight / "history.json").read_text())
    assert [row["epoch"] for row in history["evaluations"]] == [4, 6]  # second half, period 2
    lrs = [row["lr"] for row in history["epochs"]]
    assert lrs[:3] == pytest.approx([4e-6, 4.36e-5, 8.32e-5])  # warm-up from 0.01 x 4e-4
    # the original's ignite files: one per epoch, named by iteration, the last five kept
    files = checkpoints(straight)
    assert [p.name for p in files] == [f"resnet50_checkpoint_{4 * e}.pt" for e in range(2, 7)]
    last = torch.load(files[-1], weights_only=True)
    assert {"model", "optimizer"} <= set(last) and len(last["model"]) == 722

    # tools/test.py: --test with TEST.WEIGHT reproduces the last evaluation
    capsys.readouterr()
    main(["--test", *tiny(market_mini, tmp_path / "test", "TEST.WEIGHT", str(files[-1]))])
    assert "mAP" in capsys.readouterr().out
    tested = json.loads((tmp_path / "test/results_evaluate.json").read_text())
    tested = tested["targets"]["market1501"]
    assert tested["mAP"] == pytest.approx(history["evaluations"][-1]["mAP"])

    # stopped after epoch 3, resumed to 6: the same weights
    split = tmp_path / "split"
    main(tiny(market_mini, split, "SOLVER.MAX_EPOCHS", "3"))
    record = (split / "run.json").read_text()
    # (without the size keys: the resumed run takes the recorded 64x32, not the YAML's size;
    # the equal weights below show it)
    size_free = tiny(market_mini, split, "SOLVER.MAX_EPOCHS", "6")
    for key in ("INPUT.SIZE_TRAIN", "INPUT.SIZE_TEST"):
        del size_free[size_free.index(key):size_free.index(key) + 2]
    main(["--resume", *size_free])
    assert (split / "run.json").read_text() == record
    resumed = torch.load(checkpoints(split)[-1], weights_only=True)["model"]
    assert all(torch.equal(last["model"][k], resumed[k]) for k in resumed)


@pytest.mark.slow
def test_apnet_s_trains_and_tests(market_mini, tmp_path, capsys):
    main(tiny(market_mini, tmp_path / "train", "SOLVER.MAX_EPOCHS", "2", config=APNET_S_YML))
    assert "APNet (best, epoch 2" in capsys.readouterr().out
    history = json.loads((tmp_path / "train" / "history.json").read_text())
    assert [row["epoch"] for row in history["evaluations"]] == [2]
    last = checkpoints(tmp_path / "train")[-1]
    state = torch.load(last, weights_only=True)["model"]
    assert len(state) == 1207 and "att_s5.agents.1.gg_spatial.0.weight" in state
    capsys.readouterr()
    main(["--test", *tiny(market_mini, tmp_path / "test", "TEST.WEIGHT", str(last),
                          config=APNET_S_YML)])
    tested = json.loads((tmp_path / "test/results_evaluate.json").read_text())
    tested = tested["targets"]["market1501"]
    assert tested["mAP"] == pytest.approx(history["evaluations"][-1]["mAP"])
    # an APNet-C file given to APNet-S: the missing and unexpected keys are named
    torch.save({"model": build_model(16, pretrained=False).state_dict()}, tmp_path / "c.pt")
    message = exit_message(["--test", *tiny(market_mini, tmp_path / "c", "TEST.WEIGHT",
                                            str(tmp_path / "c.pt"), config=APNET_S_YML)])
    assert "missing key" in message and "att1.agents.0.theta_spatial" in message


def test_user_errors(market_mini, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "resnet50_checkpoint_4.pt").write_bytes(b"")
    assert "already holds a run" in exit_message(tiny(market_mini, tmp_path / "run"))
    assert "--resume: no resnet50_checkpoint" in exit_message(
        ["--resume", *tiny(market_mini, tmp_path / "empty")])
    assert "DATASETS.NAMES 'viper'" in exit_message(
        tiny(market_mini, tmp_path / "x", "DATASETS.NAMES", "viper"))
    assert "non-existent config key" in exit_message(tiny(market_mini, tmp_path / "y", "A.B", "1"))
    assert "APNET.LEVEL 5" in exit_message(tiny(market_mini, tmp_path / "z", "APNET.LEVEL", "5"))
    message = exit_message(tiny(market_mini, tmp_path / "b", "SOLVER.IMS_PER_BATCH", "800"))
    assert "SOLVER.IMS_PER_BATCH 800 with DATALOADER.NUM_INSTANCE 4: a batch needs 200" in message
    torch.save({"model": build_model(16, level=1, pretrained=False).state_dict()},
               tmp_path / "level1.pt")
    message = exit_message(["--test", *tiny(market_mini, tmp_path / "t", "TEST.WEIGHT",
                                            str(tmp_path / "level1.pt"))])
    assert "missing key" in message and "att_s1" in message and "APNET.LEVEL" in message


@pytest.mark.slow
def test_two_process_torchrun_on_cpu(market_mini, tmp_path, torchrun):
    torchrun("apnet", *tiny(market_mini, tmp_path / "ddp", "SOLVER.MAX_EPOCHS", "2",
                            "SOLVER.IMS_PER_BATCH", "8"), port=29561)
    history = json.loads((tmp_path / "ddp/history.json").read_text())
    assert [row["epoch"] for row in history["epochs"]] == [1, 2]
    assert [row["epoch"] for row in history["evaluations"]] == [2]


def test_shell_scripts_run_main_with_the_default_config(tmp_path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    usage = subprocess.run([str(PROJECT_ROOT / "apnet" / "test.sh")], env=env, cwd=tmp_path,
                           capture_output=True, text=True)
    assert usage.returncode == 2 and "usage:" in usage.stderr
    for script, args in (("train.sh", []), ("test.sh", ["weights.pt"])):
        result = subprocess.run([str(PROJECT_ROOT / "apnet" / script), *args, "APNET.LEVLE", "1"],
                                env=env, cwd=tmp_path, capture_output=True, text=True)
        assert result.returncode == 1
        assert "non-existent config key APNET.LEVLE" in result.stderr, result.stderr
        # CONFIG picks the config file (APNet-S: CONFIG=apnet/configs/apnet_s.yml)
        result = subprocess.run([str(PROJECT_ROOT / "apnet" / script), *args],
                                env={**env, "CONFIG": "apnet/configs/nowhere.yml"}, cwd=tmp_path,
                                capture_output=True, text=True)
        assert "--config_file apnet/configs/nowhere.yml does not exist" in result.stderr
