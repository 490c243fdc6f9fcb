"""A run's output folder: one run at a time, and no leftovers of a killed one.

:class:`RunFolder` takes an exclusive lock on ``<folder>/.run.lock`` for the whole run (an OS file
lock: the kernel releases it when the process ends in any way, so a dead run never blocks the
next one), refuses a second run with a message naming the process that holds it, and removes
the temporary files that an interrupted write left behind. A run that fails with an error
before writing any output (a refused flag, a wrong data root) removes the folder it created,
logs and all: the error is on the console, and an empty run folder would only be in the way.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sys
from pathlib import Path

from common.files import FileWriteError, describe_folder_error, remove_stale_temporary_files

__all__ = ["FolderInUseError", "RunFolder"]

LOCK_NAME = ".run.lock"


class FolderInUseError(RuntimeError):
    """Another live process is running in the same output folder."""


class RunFolder:
    """Context manager: ``with RunFolder(path): ...`` holds the folder's lock for the block.

    ``enabled=False`` (a DDP process other than rank 0) makes it a no-op: rank 0 holds the lock
    for the whole group. ``logs``: the names of the run's log files, which do not count as output
    when the block ends with an error (then a folder this run created, and its parent folders
    this run created, are removed if they hold nothing else).

    Raises:
        FolderInUseError: another process holds the lock.
        FileWriteError: the folder cannot be created or written.
    """

    def __init__(self, path, enabled=True, logs=()):
        self.path = Path(path)
        self.enabled = enabled
        self.logs = set(logs)
        self.removed = []  # partial files of interrupted runs, deleted on entry
        self.created = None  # the outermost folder this run made (None: the folder existed)
        self._handle = None

    def __enter__(self):
        if not self.enabled:
            return self
        lock_path = self.path / LOCK_NAME
        try:
            self.created = _outermost_missing(self.path)
            self.path.mkdir(parents=True, exist_ok=True)
            handle = open(lock_path, "a+")
        except OSError as err:
            raise FileWriteError(f"cannot write to {self.path} "
                                 f"({describe_folder_error(self.path, err)}); choose another "
                                 f"output folder") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise FolderInUseError(f"{self.path} is in use by a running process ({holder}); "
                                   f"wait for it to end or choose another output folder") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}: {' '.join(sys.argv)}\n")
        handle.flush()
        self._handle = handle
        self.removed = remove_stale_temporary_files(self.path)
        return self

    def clear(self):
        """Deletes everything in the folder but the lock (a ``--reset``); returns whether
        anything was there."""
        removed = False
        for entry in self.path.iterdir():
            if entry.name == LOCK_NAME:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed = True
        return removed

    def holds_no_output(self):
        """Whether the folder holds only the lock and the run's logs."""
        return all(entry.name == LOCK_NAME or (entry.name in self.logs and entry.is_file())
                   for entry in self.path.iterdir())

    def __exit__(self, exc_type, *exc):
        if self._handle is None:
            return False
        try:
            failed = exc_type is not None and issubclass(exc_type, Exception)  # not Ctrl-C
            if failed and self.created is not None and self.holds_no_output():
                shutil.rmtree(self.path, ignore_errors=True)
                for parent in self.path.parents:  # the empty parents this run made, if any
                    if not parent.is_relative_to(self.created) or any(parent.iterdir()):
                        break
                    parent.rmdir()
        finally:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
        return False


def _outermost_missing(path):
    """The outermost of ``path`` and its parents that does not exist yet, or None."""
    missing = None
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing = folder
    return missing
