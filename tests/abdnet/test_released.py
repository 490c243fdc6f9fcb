"""abdnet/released.py: a file already read is not read again."""

import numpy as np
import pytest
import torch
import torch.nn as nn

from common.checkpoint import load_checkpoint
from abdnet.released import read_released_checkpoint


def test_already_read_contents_give_the_same_checkpoint_without_reading(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint_ep3.pth.tar"
    torch.save({"state_dict": nn.Linear(2, 3).state_dict(), "rank1": np.float64(0.5),
                "epoch": 3}, path)
    direct = read_released_checkpoint(path)
    contents = load_checkpoint(path)
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("the file was read twice"))
    again = read_released_checkpoint(path, loaded=contents)
    assert (again.rank1, again.epoch) == (direct.rank1, direct.epoch) == (0.5, 3)
    assert all(torch.equal(again.state_dict[k], direct.state_dict[k]) for k in direct.state_dict)
