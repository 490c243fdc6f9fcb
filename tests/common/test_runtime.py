import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from common.data.dataset import DatasetError
from common.history import LossMeter
from common.runtime import (OptionError, RunInterrupted, autocast, exit_on_user_error,
                            grad_scaler, init_distributed, optimizer_by_name, optimizer_step,
                            seed_everything, select_device, setup_logging, user_error_message)

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_seeding_repeats_every_generator():
    import random
    seed_everything(3)
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_everything(3)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_single_process_defaults():
    env = init_distributed(cpu=True)
    assert not env.enabled and env.is_main
    assert select_device(cpu=True).type == "cpu"
    assert not grad_scaler("cpu", enabled=True).is_enabled()
    with autocast("cpu", enabled=True):  # mixed precision is for CUDA only
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_log_file(tmp_path):
    logger = setup_logging(tmp_path / "log" / "train.log")
    logger.info("epoch 1 done")
    for handler in logger.handlers:
        handler.flush()
    assert "epoch 1 done" in (tmp_path / "log" / "train.log").read_text()


@pytest.mark.slow
def test_two_process_torchrun_on_gloo(tmp_path):
    out = tmp_path / "ddp.json"
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                    "--master_port", "29531", str(PROJECT_ROOT / "tests/common/ddp_worker.py"),
                    str(out)], check=True, env=env, cwd=tmp_path, timeout=240)
    result = json.loads(out.read_text())
    assert result["world_size"] == 2 and result["backend"] == "gloo"
    assert result["same_weights"]  # gradients were averaged across the two processes
    rank0, rank1 = map(set, result["indices"])
    assert rank0 and rank0.isdisjoint(rank1)  # each identity has exactly K=4 images
    assert len(result["indices"][0]) == len(result["indices"][1])


def test_loss_meter_means_and_optimizer_step():
    meter = LossMeter()
    meter.update({"a": torch.tensor(1.0, requires_grad=True), "b": 4})
    meter.update({"a": 3.0, "b": torch.tensor(0.0)})
    assert meter.means() == {"a": 2.0, "b": 2.0}
    weight = torch.nn.Parameter(torch.tensor([1.0]))
    optimizer = torch.optim.SGD([weight], lr=0.5)
    optimizer_step((2 * weight).sum(), optimizer, grad_scaler("cpu", enabled=False))
    assert weight.item() == pytest.approx(0.0)  # 1 - 0.5 * 2


@pytest.mark.parametrize("name, cls, amsgrad", [("adam", torch.optim.Adam, False),
                                                ("ADAM", torch.optim.Adam, False),
                                                ("amsgrad", torch.optim.Adam, True),
                                                ("SGD", torch.optim.SGD, None),
                                                ("NADAM", torch.optim.NAdam, None),
                                                ("RMSprop", torch.optim.RMSprop, None)])
def test_optimizer_by_name_spells_the_four_clis_names(name, cls, amsgrad):
    parameter = torch.nn.Parameter(torch.zeros(3))
    optimizer = optimizer_by_name(name, [parameter], lr=0.5, weight_decay=1e-4)
    assert type(optimizer) is cls
    group = optimizer.param_groups[0]
    assert (group["lr"], group["weight_decay"]) == (0.5, 1e-4)
    if amsgrad is not None:
        assert group["amsgrad"] is amsgrad


def test_an_unknown_optimizer_names_the_flag_and_the_choices():
    with pytest.raises(OptionError, match=r"--optimizer 'LAMB': choose one of adagrad, adam, "):
        optimizer_by_name("LAMB", [torch.nn.Parameter(torch.zeros(1))], flag="--optimizer")


def test_a_refused_optimizer_value_is_an_option_error():
    with pytest.raises(OptionError, match=r"--optim adam: Invalid learning rate: -1.0 \(given "
                                          r"lr -1.0, weight_decay 0.0005\)"):
        optimizer_by_name("adam", [torch.nn.Parameter(torch.zeros(1))], lr=-1.0,
                          weight_decay=5e-4)


class _UnreadableImages(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, index):
        raise DatasetError(f"image {index}.jpg cannot be read: cannot identify image file")


def test_an_error_in_a_loader_worker_keeps_only_its_own_message():
    loader = torch.utils.data.DataLoader(_UnreadableImages(), num_workers=1)
    with pytest.raises(DatasetError) as caught:
        next(iter(loader))
    assert "Original Traceback" in str(caught.value)
    assert user_error_message(caught.value) == ("image 0.jpg cannot be read: cannot identify "
                                                "image file")
    plain = DatasetError("folder x holds no image")
    assert user_error_message(plain) == "folder x holds no image"


@pytest.mark.parametrize("interruption, status", [(KeyboardInterrupt(), 130),
                                                  (RunInterrupted("interrupted in epoch 2"), 130),
                                                  (RunInterrupted("interrupted", 143), 143)])
def test_an_interruption_exits_with_the_shells_status(interruption, status, capsys):
    with pytest.raises(SystemExit) as exited:
        with exit_on_user_error("main.py"):
            raise interruption
    assert exited.value.code == status
    assert capsys.readouterr().err.startswith("main.py: interrupted")
