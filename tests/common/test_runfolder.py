"""common/runfolder.py: what a run's folder holds after a run that failed early."""

import contextlib

import pytest

from common.runfolder import LOCK_NAME, RunFolder


class RefusedFlag(ValueError):
    pass


def test_a_run_refused_before_any_output_leaves_no_folder_it_created(tmp_path):
    (tmp_path / "experiment").mkdir()
    folder = tmp_path / "experiment" / "market" / "run"
    with pytest.raises(RefusedFlag):
        with RunFolder(folder, logs=("log.txt",)):
            (folder / "log.txt").write_text("Running with config: ...\n")
            raise RefusedFlag("--batchid 1 gives one identity per batch")
    assert not (tmp_path / "experiment" / "market").exists()  # and the parent it made
    assert (tmp_path / "experiment").is_dir()  # a folder that was there stays


@pytest.mark.parametrize("case", ["folder existed", "output written", "run succeeded",
                                  "interrupted"])
def test_the_folder_stays_when_it_existed_holds_output_or_the_run_did_not_fail(tmp_path, case):
    folder = tmp_path / "run"
    if case == "folder existed":
        folder.mkdir()
    error = {"run succeeded": None, "interrupted": KeyboardInterrupt}.get(case, RefusedFlag)
    with pytest.raises(error) if error else contextlib.nullcontext():
        with RunFolder(folder, logs=("log.txt",)):
            (folder / "log.txt").write_text("epoch 1\n")
            if case == "output written":
                (folder / "history.json").write_text("{}")
            if error:
                raise error("stop")
    assert (folder / "log.txt").exists() and (folder / LOCK_NAME).exists()
