"""Small file-system helpers: atomic writes, temporary names and the run-folder lock.

A file written through ``atomic_write`` is written under a temporary name in
the same folder, flushed to disk and renamed over its final name, so a reader
(or a restarted process) sees the old file or the whole new one, never a
partial one, whatever moment the writer is killed at. Data caches, synthetic
sets, checkpoints and metrics all go through it.
"""

from __future__ import annotations

import errno
import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path

from pspnet.errors import ConfigError

__all__ = [
    "FolderLock",
    "atomic_write",
    "atomic_write_text",
    "default_cache_dir",
    "final_name",
    "remove_temporaries",
    "temporary_name",
]

TEMPORARY_MARK = ".tmp-"  # every temporary name holds it (see remove_temporaries)


def temporary_name(path: str | os.PathLike, suffix: str = "") -> Path:
    """A unique hidden sibling of ``path`` to write before renaming (``.NAME.tmp-PID-XXXXXXXX``).

    Args:
        path: the final file or folder.
        suffix: an ending the temporary name must keep (".keras", ".weights.h5").

    Returns:
        The temporary path, in the same folder (so the rename is atomic).
    """
    path = Path(path)
    return path.with_name(f".{path.name}{TEMPORARY_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}")


def final_name(path: str | os.PathLike) -> Path:
    """The file a temporary name stands for (``DIR/.NAME.tmp-PID-XXXXXXXX.keras`` -> ``DIR/NAME``).

    Errors name the file the user asked for, not the temporary it was written
    under; any other path comes back as it is.
    """
    path = Path(os.fsdecode(path))
    match = re.fullmatch(rf"\.(.+){re.escape(TEMPORARY_MARK)}\d+-[0-9a-f]{{8}}.*", path.name)
    return path.with_name(match.group(1)) if match else path


def _fsync_path(path: Path) -> None:
    """Flushes a file (or folder entry) to disk; best effort where unsupported."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], suffix: str = "") -> None:
    """Writes a file under a temporary name, then renames it over ``path``.

    Args:
        path: the final file.
        write: called with the temporary path to write to.
        suffix: ending the temporary name must keep (".keras", ".weights.h5").
    """
    path = Path(path)
    temporary = temporary_name(path, suffix)
    try:
        write(temporary)
        _fsync_path(temporary)
        os.replace(temporary, path)
    except OSError as error:
        if error.filename is None and error.errno:  # a failed write() (disk full) names no file: name it
            raise OSError(error.errno, os.strerror(error.errno), str(path)) from error
        raise
    finally:
        if temporary.exists():
            _discard(temporary)
    _fsync_path(path.parent)


def _discard(temporary: Path) -> None:
    """Deletes a failed write's temporary file, emptied first.

    A writer may still hold it open (h5py after a write failed on a full disk):
    unlinked but not emptied, it would keep its space, and HDF5's last flush at
    exit would fail again and crash the process after the error line.
    """
    try:
        os.truncate(temporary, 0)
    except OSError:
        pass
    temporary.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """``atomic_write`` of a text file."""
    atomic_write(path, lambda temporary: temporary.write_text(text))


def remove_temporaries(folder: str | os.PathLike) -> None:
    """Deletes the temporary files a killed writer left in ``folder`` (``.NAME.tmp-...``)."""
    folder = Path(folder)
    if folder.is_dir():
        for leftover in folder.glob(f".*{TEMPORARY_MARK}*"):
            if leftover.is_file():
                leftover.unlink()


_HELD_ERRNOS = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES)  # what flock(LOCK_NB) gives when another holds it


class FolderLock:
    """An exclusive lock on a folder for as long as this process holds it open.

    The lock is an ``flock`` on ``FOLDER/.lock``: the kernel drops it when the
    process ends, however it ends, so a killed run never leaves a stale lock.
    Where ``fcntl`` does not exist (Windows) it does nothing.

    Args:
        folder: the folder to lock (must exist).
        what: how an error names a holder ("another pspnet-train").

    Example:
        >>> with FolderLock(run):
        ...     train_into(run)
    """

    NAME = ".lock"

    def __init__(self, folder: str | os.PathLike, what: str = "another process"):
        self.path = Path(folder) / self.NAME
        self.what = what
        self._file = None

    def acquire(self) -> None:
        """Takes the lock, or raises ``ConfigError`` when another process holds it."""
        try:
            import fcntl
        except ImportError:  # no flock on this platform
            return

        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in _HELD_ERRNOS:  # no lock support (Lustre without -o flock, some NFS): say so
                handle.close()
                raise ConfigError(
                    f"cannot lock {self.path}: {os.strerror(error.errno) if error.errno else error}"
                    " (a file system without flock?); choose an --out on another disk"
                ) from None
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            raise ConfigError(
                f"{self.path.parent} is in use by {self.what}"
                + (f" (pid {holder})" if holder else "")
                + "; wait for it to end, or choose another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        """Drops the lock (the file stays: deleting it would race with a waiting process)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def default_cache_dir() -> Path:
    """The cache root: ``$PSPNET_CACHE``, else ``~/.cache/pspnet``."""
    root = os.environ.get("PSPNET_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "pspnet"
