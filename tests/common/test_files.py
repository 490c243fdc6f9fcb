"""common/files.py: atomic writes say what went wrong in the user's terms and keep the old file;
Ctrl-C during a write waits for the write to end."""

import os
import signal

import pytest
import torch

from common.files import FileWriteError, atomic_write, remove_stale_temporary_files


def test_a_full_disk_keeps_the_previous_file_and_says_so(tmp_path, monkeypatch):
    path = tmp_path / "state.pt"
    torch.save({"epoch": 1}, path)
    before = path.read_bytes()

    def full_disk(*args, **kwargs):  # what torch.save raises when the disk fills
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter "
                           "failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(FileWriteError) as error:
        with atomic_write(path) as handle:
            torch.save({"epoch": 2}, handle)
    assert str(error.value) == (f"disk full while writing {path}; the previous state.pt is "
                                f"kept. Free some space and run again")
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["state.pt"]
    with pytest.raises(FileWriteError, match="nothing written"):
        with atomic_write(tmp_path / "new.pt") as handle:
            raise OSError(28, "No space left on device")


def test_a_file_where_the_folder_should_be_is_named(tmp_path):
    (tmp_path / "runs").write_text("not a folder")
    with pytest.raises(FileWriteError, match=rf"cannot write to {tmp_path}/runs/exp "
                                             rf"\({tmp_path}/runs is a file, not a folder\)"):
        with atomic_write(tmp_path / "runs" / "exp" / "log.txt", "w") as handle:
            handle.write("x")


def test_other_errors_pass_through_and_leave_no_temporary_file(tmp_path):
    with pytest.raises(ValueError, match="bug"):
        with atomic_write(tmp_path / "a.txt", "w"):
            raise ValueError("bug")
    assert os.listdir(tmp_path) == []


def test_ctrl_c_during_a_write_takes_effect_once_the_file_is_complete(tmp_path):
    path = tmp_path / "state.txt"
    # Ctrl-C raises KeyboardInterrupt as in a terminal (a job started with `&` by a script
    # inherits SIGINT ignored, and then a deferred Ctrl-C is rightly ignored too)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with atomic_write(path, "w") as handle:
                handle.write("first half, ")
                os.kill(os.getpid(), signal.SIGINT)
                handle.write("second half")
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)
    assert path.read_text() == "first half, second half"


def test_stale_temporary_files_are_found_in_subfolders(tmp_path):
    (tmp_path / "model").mkdir()
    stale = [tmp_path / ".training_state.pt.x1.tmp", tmp_path / "model" / ".model_best.pt.y2.tmp"]
    for path in stale:
        path.write_bytes(b"partial")
    (tmp_path / "model" / "model_best.pt").write_bytes(b"kept")
    assert sorted(remove_stale_temporary_files(tmp_path)) == sorted(stale)
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["model_best.pt"]
