"""Atomic file writes: a reader sees either the old file or the complete new one, never a part.

A write is not cut by Ctrl-C or SIGTERM (the signal takes effect once the file is complete), and a
failed write is a :class:`FileWriteError` that says what happened in the user's terms (disk full,
read-only folder, a file where a folder should be), with the previous file kept.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import tempfile
import threading
from pathlib import Path

__all__ = ["FileWriteError", "TEMPORARY_SUFFIX", "atomic_write", "describe_folder_error",
           "remove_stale_temporary_files", "signals_deferred"]

TEMPORARY_SUFFIX = ".tmp"  # atomic_write's temporary files: ".<name>.<random>.tmp" beside <name>


class FileWriteError(OSError):
    """A file that could not be written; the message names it, the cause and what was kept."""


@contextlib.contextmanager
def signals_deferred():
    """Holds SIGINT and SIGTERM until the block ends, then delivers the first one that came.

    Only the main thread can handle signals; elsewhere the block runs unguarded."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = {sig: signal.signal(sig, lambda number, frame: received.append(number))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if received:
            signal.raise_signal(received[0])


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Opens a temporary file beside ``path``; on success it is flushed, synced and renamed onto
    ``path``. If the block raises, the temporary file is removed and ``path`` is untouched.

    The file gets the permissions a plain ``open`` would give it (0666 less the umask), not the
    private 0600 of a temporary file. SIGINT/SIGTERM wait until the write is over.

    Raises:
        FileWriteError: the folder cannot be created or written (read-only, a file in the way,
            no permission) or the disk is full; the previous ``path`` is kept.
    """
    path = Path(path)
    with signals_deferred():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                       suffix=TEMPORARY_SUFFIX)
        except OSError as err:
            raise FileWriteError(f"cannot write to {path.parent} "
                                 f"({describe_folder_error(path.parent, err)}); choose another output "
                                 f"folder") from None
        try:
            os.chmod(tmp, 0o666 & ~_current_umask())
            with os.fdopen(fd, mode) as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException as err:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            if _is_disk_full(err):
                kept = f"the previous {path.name} is kept" if path.exists() else "nothing written"
                raise FileWriteError(f"disk full while writing {path}; {kept}. "
                                     f"Free some space and run again") from None
            raise


def remove_stale_temporary_files(folder):
    """Deletes the temporary files that interrupted :func:`atomic_write` calls left in ``folder``
    and its subfolders (a killed process cannot clean up). Call it only while no other process
    writes there (e.g. holding the run folder's lock). Returns the paths removed."""
    removed = []
    for tmp in Path(folder).rglob(f".*{TEMPORARY_SUFFIX}"):
        if tmp.is_file():
            tmp.unlink()
            removed.append(tmp)
    return removed


def _is_disk_full(err):
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    # torch.save reports a failed write as RuntimeError("[enforce fail at inline_container.cc...")
    return isinstance(err, RuntimeError) and "file write failed" in str(err)


def describe_folder_error(folder, err):
    """Why ``folder`` could not be created or written (``err`` the OSError), in a user's words."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if err.errno == errno.EROFS:
        return "read-only file system"
    if err.errno in (errno.EACCES, errno.EPERM):
        return "permission denied: the folder is read-only for this user"
    return os.strerror(err.errno) if err.errno else str(err)


def _current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
