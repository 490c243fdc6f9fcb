import os
import random
import shlex
import stat

import numpy as np
import pytest
import torch
import torch.nn as nn

from common.checkpoint import (CheckpointError, load_checkpoint, load_state_dict_checked,
                               resume_from, save_checkpoint)
from common.runtime import seed_everything


def make_run():
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.3), nn.Linear(8, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    return model, optimizer, scheduler


def train_epoch(model, optimizer, scheduler):
    # Randomness from all three generators: torch (data, dropout), numpy and Python.
    for _ in range(3):
        x = torch.randn(8, 4) + float(np.random.rand()) + random.random()
        loss = model(x).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    scheduler.step()


def test_interrupted_run_resumes_exactly(tmp_path):
    seed_everything(0)
    straight = make_run()
    for _ in range(4):
        train_epoch(*straight)

    seed_everything(0)
    first = make_run()
    for epoch in range(2):
        train_epoch(*first)
    save_checkpoint(tmp_path / "last.pt", model=first[0], optimizer=first[1],
                    scheduler=first[2], epoch=2)
    seed_everything(123)  # a new process starts with other generator states
    resumed = make_run()
    checkpoint = resume_from(tmp_path / "last.pt", *resumed)
    for _ in range(checkpoint["epoch"], 4):
        train_epoch(*resumed)
    for a, b in zip(straight[0].parameters(), resumed[0].parameters()):
        assert torch.equal(a, b)
    assert resumed[2].get_last_lr() == straight[2].get_last_lr()


def test_resume_from_already_read_contents_does_not_read_the_file_again(tmp_path, monkeypatch):
    model, optimizer, scheduler = make_run()
    train_epoch(model, optimizer, scheduler)
    path = save_checkpoint(tmp_path / "last.pt", model=model, optimizer=optimizer,
                           scheduler=scheduler, epoch=1)
    loaded = load_checkpoint(path)
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("the file was read twice"))
    resumed = make_run()
    assert resume_from(path, *resumed, loaded=loaded)["epoch"] == 1
    for a, b in zip(model.parameters(), resumed[0].parameters()):
        assert torch.equal(a, b)
    assert resumed[2].get_last_lr() == scheduler.get_last_lr()


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    model = nn.Linear(2, 2)
    path = save_checkpoint(tmp_path / "ckpt.pt", model=model, epoch=1)
    before = path.read_bytes()
    monkeypatch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model=model, epoch=2)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


class OwnClass:
    """A class of this test module: not on any weights-only allow-list."""


class ShellPayload:
    """Unpickling this runs a shell command that creates ``marker`` (the classic pickle attack)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def test_legacy_numpy_scalars_load(tmp_path):
    legacy = tmp_path / "abd.pth.tar"
    torch.save({"state_dict": nn.Linear(2, 2).state_dict(), "rank1": np.float64(0.9561),
                "epoch": np.int64(30)}, legacy)
    checkpoint = load_checkpoint(legacy)
    assert checkpoint["rank1"] == pytest.approx(0.9561) and checkpoint["epoch"] == 30


@pytest.mark.parametrize("payload", ["own_class", "reduce_payload"])
def test_objects_outside_the_allow_list_are_refused_and_nothing_runs(tmp_path, payload):
    marker = tmp_path / "payload_ran"
    hostile = tmp_path / "hostile.pt"
    obj = OwnClass() if payload == "own_class" else ShellPayload(marker)
    torch.save({"state_dict": nn.Linear(2, 2).state_dict(), "payload": obj}, hostile)
    with pytest.raises(CheckpointError, match="not loaded") as refused:
        load_checkpoint(hostile)
    assert not marker.exists()
    assert "weights_only" not in str(refused.value)


def test_corrupt_truncated_and_missing_files_are_named_as_such(tmp_path):
    legacy = tmp_path / "abd.pth.tar"
    torch.save({"state_dict": nn.Linear(2, 2).state_dict()}, legacy)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(legacy.read_bytes()[:100])
    random_bytes = tmp_path / "random.pt"
    random_bytes.write_bytes(np.random.default_rng(0).bytes(4096))
    empty = tmp_path / "empty.pt"
    empty.touch()
    text = tmp_path / "notes.pt"
    text.write_text("hello world\n")
    for path in (truncated, random_bytes, empty, text):
        with pytest.raises(CheckpointError, match="is not a torch checkpoint") as error:
            load_checkpoint(path)
        assert "weights_only" not in str(error.value) and "trust" not in str(error.value)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_resume_reports_mismatched_keys(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", model=nn.Linear(2, 2), epoch=1)
    with pytest.raises(RuntimeError, match="missing key.*unexpected key"):
        resume_from(path, nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(CheckpointError, match="no optimizer state"):
        model = nn.Linear(2, 2)
        resume_from(path, model, torch.optim.SGD(model.parameters(), lr=1))


def test_written_files_get_the_umask_permissions_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "ckpt.pt", model=nn.Linear(2, 2), epoch=1)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


class TinyReid(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.features = nn.Linear(4, 8)
        self.classifier = nn.Linear(8, num_classes)


def test_another_class_count_is_re_initialised_when_fine_tuning_and_an_error_otherwise():
    trained = TinyReid(16).state_dict()
    model = TinyReid(10)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    report = load_state_dict_checked(model, trained, new_classes_ok=True)
    assert sorted(report.reinitialized) == ["classifier.bias", "classifier.weight"]
    assert report.class_counts == (16, 10)  # (the file's, the model's)
    assert torch.equal(model.features.weight, trained["features.weight"])
    assert torch.equal(model.classifier.weight, initial["classifier.weight"])
    with pytest.raises(CheckpointError, match=r"classifier.weight: file \(16, 8\), model \(10, 8\)"):
        load_state_dict_checked(TinyReid(10), trained)
    wider = dict(trained, **{"features.weight": torch.zeros(9, 4)})  # not a classifier: an error
    with pytest.raises(CheckpointError, match=r"features.weight: file \(9, 4\), model \(8, 4\)"):
        load_state_dict_checked(TinyReid(10), wider, new_classes_ok=True)
