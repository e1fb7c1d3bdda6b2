"""The split cache's entries on disk: streamed .npy files, folder locks, publishing and clean-up.

An entry is a folder ``PREFIX+KEY`` holding ``photos.npy``, ``targets.npy``
and ``meta.json`` (written last: an entry without it is never trusted). It is
written into a temporary folder, held locked by its writer, and renamed into
place under the lock of the cache folder (``publish``), which also removes the
older entries of the same prefix (``clean_stale``). What an entry holds and
how it is keyed is ``pspnet.data.cache``'s job.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from pspnet.fileio import TEMPORARY_MARK

__all__ = ["FileSink", "clean_stale", "folder_lock", "npy_header", "publish"]

_NPY_HEADER_BYTES = 128  # fixed, so the final count can be written in place


def npy_header(dtype: np.dtype, shape: tuple) -> bytes:
    """A version 1.0 .npy header padded to a fixed length."""
    descr = np.lib.format.dtype_to_descr(np.dtype(dtype))
    text = repr({"descr": descr, "fortran_order": False, "shape": tuple(shape)})
    body_length = _NPY_HEADER_BYTES - 10  # magic (6) + version (2) + length (2)
    text = text.ljust(body_length - 1) + "\n"
    if len(text) != body_length:
        raise ValueError(f"shape {shape} too long for the .npy header")
    return b"\x93NUMPY\x01\x00" + body_length.to_bytes(2, "little") + text.encode("latin1")


class MemorySink:
    """Collects decoded chunks into preallocated arrays."""

    def __init__(self, count: int, photo_shape: tuple, target_shape: tuple, target_dtype):
        self.photos = np.empty((count, *photo_shape), dtype=np.uint8)
        self.targets = np.empty((count, *target_shape), dtype=target_dtype)
        self.filled = 0

    def write(self, photos: np.ndarray, targets: np.ndarray) -> None:
        stop = self.filled + len(photos)
        self.photos[self.filled : stop] = photos
        self.targets[self.filled : stop] = targets
        self.filled = stop

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        return self.photos[: self.filled], self.targets[: self.filled]


class FileSink:
    """Streams decoded chunks into two .npy files.

    Plain sequential writes keep the process's resident memory at a few chunks
    (written pages sit in the OS page cache, not in the process), unlike
    writing through a memory map, whose touched pages count as resident.
    """

    def __init__(self, folder: Path, count: int, photo_shape: tuple, target_shape: tuple, target_dtype):
        self.shapes = {"photos": photo_shape, "targets": target_shape}
        self.dtypes = {"photos": np.dtype(np.uint8), "targets": np.dtype(target_dtype)}
        self.files = {}
        for name in ("photos", "targets"):
            handle = open(folder / f"{name}.npy", "wb")  # noqa: SIM115 (open until close or abort)
            handle.write(npy_header(self.dtypes[name], (count, *self.shapes[name])))
            self.files[name] = handle
        self.filled = 0

    def write(self, photos: np.ndarray, targets: np.ndarray) -> None:
        for name, array in (("photos", photos), ("targets", targets)):
            self.files[name].write(memoryview(np.ascontiguousarray(array, dtype=self.dtypes[name])).cast("B"))
        self.filled += len(photos)

    def close(self) -> None:
        for name, handle in self.files.items():
            if not handle.closed:
                handle.seek(0)
                handle.write(npy_header(self.dtypes[name], (self.filled, *self.shapes[name])))
                handle.close()

    def abort(self) -> None:
        for handle in self.files.values():
            handle.close()


@contextlib.contextmanager
def folder_lock(folder: Path, wait: bool = True):
    """Holds an ``flock`` on a folder itself (its descriptor: no lock file to clean up).

    Yields True once held, or False when ``wait`` is off and another process
    (or another descriptor of this one) holds it. The kernel drops it when its
    holder ends, however it ends. Where ``fcntl`` does not exist (Windows) it
    yields True and locks nothing.
    """
    try:
        import fcntl
    except ImportError:
        yield True
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
        else:
            yield True
    finally:
        os.close(descriptor)


def _keyed_at(entry: Path) -> float:
    """When the files of a cache entry were looked at (0 for a damaged entry, which nobody writes into)."""
    try:
        meta = json.loads((entry / "meta.json").read_text())
        return float(meta.get("keyed", meta["created"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return 0.0


def clean_stale(root: Path, prefix: str, keep: str, keyed: float) -> None:
    """Removes the entries of the same folder and target keyed before ``keyed``, and abandoned temporary folders.

    Runs under the cache folder's lock. Another process's entry keyed later
    (it saw newer files) is kept, and so is the temporary folder of a writer
    still at work, however long it takes: the writer holds its lock.
    """
    now = time.time()
    for entry in root.iterdir():
        try:
            if entry.name.startswith(prefix) and entry.name != keep:
                if _keyed_at(entry) < keyed:
                    shutil.rmtree(entry, ignore_errors=True)
            elif TEMPORARY_MARK in entry.name and now - entry.stat().st_mtime > 3600:
                with folder_lock(entry, wait=False) as abandoned:
                    if abandoned:
                        shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            pass


def publish(root: Path, temporary: Path, entry: Path, prefix: str, keyed: float, read):
    """Moves a finished temporary entry into place, cleans up, and reads the entry back, under the cache's lock.

    An entry of the same key that another process finished first is kept and
    read instead (removing it could break that process's memory map).

    Args:
        read: ``read(entry)`` -> the entry memory-mapped, or None when it is
            incomplete or of another key.

    Returns:
        What ``read`` gives for the entry.
    """
    with folder_lock(root):
        found = read(entry) if entry.is_dir() else None
        if found is not None:
            shutil.rmtree(temporary, ignore_errors=True)
        else:
            if entry.exists():  # a damaged entry
                shutil.rmtree(entry, ignore_errors=True)
            try:
                os.rename(temporary, entry)
            except OSError:
                shutil.rmtree(temporary, ignore_errors=True)
            found = read(entry)  # mapped before anyone's clean-up can remove it
        clean_stale(root, prefix, entry.name, keyed)
    return found
