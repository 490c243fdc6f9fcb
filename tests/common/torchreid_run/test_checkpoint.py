"""common/torchreid_run/checkpoint.py: the format's fields, key remapping, and a file already
read is not read again."""

import numpy as np
import pytest
import torch
import torch.nn as nn

from common.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from common.torchreid_run.checkpoint import load_torchreid_checkpoint, read_torchreid_checkpoint


def test_already_read_contents_give_the_same_checkpoint_without_reading(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint_ep3.pth.tar"
    torch.save({"state_dict": nn.Linear(2, 3).state_dict(), "rank1": np.float64(0.5),
                "epoch": 3}, path)
    direct = read_torchreid_checkpoint(path)
    contents = load_checkpoint(path)
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("the file was read twice"))
    again = read_torchreid_checkpoint(path, loaded=contents)
    assert (again.rank1, again.epoch) == (direct.rank1, direct.epoch) == (0.5, 3)
    assert all(torch.equal(again.state_dict[k], direct.state_dict[k]) for k in direct.state_dict)


def test_a_training_state_reads_with_its_last_epochs_index(tmp_path):
    path = save_checkpoint(tmp_path / "training_state.pth.tar", model=nn.Linear(2, 3), epoch=2)
    checkpoint = read_torchreid_checkpoint(path)
    assert checkpoint.epoch == 1  # two epochs finished: the last one's index is 1, as the format
    assert np.isnan(checkpoint.rank1)


def test_keys_are_remapped_classes_counted_and_a_mismatch_is_listed_with_the_hint(tmp_path):
    path = tmp_path / "checkpoint_best.pth.tar"
    head = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 7))
    torch.save({"state_dict": {f"module.{k}": v for k, v in head.state_dict().items()},
                "rank1": np.float32(0.25), "epoch": 9}, path)
    checkpoint = read_torchreid_checkpoint(
        path, lambda state: {k.replace("1.", "classifier.", 1): v for k, v in state.items()})
    assert sorted(checkpoint.state_dict) == ["0.bias", "0.weight", "classifier.bias",
                                             "classifier.weight"]
    assert checkpoint.num_classes("classifier.weight") == 7
    assert checkpoint.num_classes("fc.weight") is None
    assert (checkpoint.rank1, checkpoint.epoch) == (0.25, 9)

    model = nn.Sequential()
    model.add_module("0", nn.Linear(4, 4))
    model.add_module("classifier", nn.Linear(4, 7))
    info = load_torchreid_checkpoint(model, checkpoint)
    assert (info["rank1"], info["epoch"], info["reinitialized"]) == (0.25, 9, [])
    assert torch.equal(model.classifier.weight, head[1].weight)
    model.add_module("extra", nn.Linear(1, 1))
    with pytest.raises(CheckpointError, match=r"extra\.weight.*Same flags\?"):
        load_torchreid_checkpoint(model, checkpoint, hint=". Same flags?")
