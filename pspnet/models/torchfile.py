"""Reads a PyTorch state dict saved in the old (pre-1.6, non-zip) format, with NumPy alone.

The file is five pickles, then the raw storages::

    magic number, protocol version, system info      three small pickles
    the state dict                                   tensors refer to storages by persistent id
    the list of storage keys                         the order the storages follow in
    for each key: int64 element count, then the elements (little-endian)

The reader never executes what the file says: its unpickler resolves only the
few names a state dict needs (an ordered dict, the tensor rebuild function,
the storage types), each to a harmless stand-in that a pickle cannot rewrite,
and rejects any other global. Every size is checked against the file before an
array is made: a tensor is a view of its storage that must fit in it and never
reads one stored element twice, so the arrays together are never larger than
the file.
"""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pspnet.errors import DataError, first_line

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C  # torch.serialization's
PROTOCOL_VERSION = 1001
ZIP_MAGIC = b"PK\x03\x04"  # what a file of the newer zip format starts with

# The storage types a state dict may name, and their element types.
STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class _Unbuildable:
    """A stand-in that a pickle BUILD (``__setstate__``) cannot rewrite."""

    def __setstate__(self, state):
        raise pickle.UnpicklingError(f"it sets the state of a {type(self).__name__.lstrip('_')}")


@dataclass(frozen=True)
class _StorageType(_Unbuildable):
    name: str

    @property
    def dtype(self) -> np.dtype:
        return STORAGE_DTYPES[self.name]


@dataclass
class _Storage(_Unbuildable):
    key: str
    dtype: np.dtype
    count: int  # elements, as the state dict says


@dataclass
class _TensorSpec(_Unbuildable):
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage, offset, shape, stride, *unused):
    """Stand-in for ``torch._utils._rebuild_tensor_v2``: records where the tensor's values lie."""
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("a tensor that names no storage")
    return _TensorSpec(storage, int(offset), tuple(int(s) for s in shape), tuple(int(s) for s in stride))


class _StateDictUnpickler(pickle.Unpickler):
    """Resolves the names of a state dict to stand-ins; any other global is an error."""

    def __init__(self, file):
        super().__init__(file)
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"it names {module}.{name}, which a state dict never needs")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"an unknown persistent id {pid!r:.80}")
        _, storage_type, key, _location, count = pid[:5]
        if len(pid) > 5 and pid[5] is not None:
            raise pickle.UnpicklingError("storage views are not supported")
        if not isinstance(count, int) or count < 0:
            raise pickle.UnpicklingError(f"storage {key!r} has a bad size {count!r}")
        storage = self.storages.setdefault(str(key), _Storage(str(key), storage_type.dtype, count))
        return storage


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads the tensors of an old-format PyTorch state dict file.

    Args:
        path: the ``.pth`` file.

    Returns:
        name -> NumPy array (in the file's dtype and shape), in the file's order. Each
        storage is copied once, and its tensors are views of that copy, so tensors that
        share a storage in the file share memory here, as in PyTorch.

    Raises:
        DataError: a missing, truncated or malformed file, or one that names
            anything a state dict does not need (the message says what).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"weights file not found: {path}")
    try:
        return _read(path, path.read_bytes())
    except DataError:
        raise
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror or error}") from None
    except Exception as error:  # whatever else a crafted file provokes is still the file's fault
        reason = f"{type(error).__name__}: {first_line(error)}"
        raise DataError(f"not a PyTorch state dict file ({reason}): {path}") from None


def _read(path: Path, data: bytes) -> dict[str, np.ndarray]:
    """``read_state_dict`` of the file's bytes; raises DataError (or anything a malformed file provokes)."""
    if data.startswith(ZIP_MAGIC):  # torch.save's default since 1.6; its pickle fails with a cryptic error
        raise DataError(
            "a PyTorch file of the zip format (torch.save's default since 1.6), not of the old format read "
            "here; resave it with torch.save(torch.load(path), new_path, _use_new_zipfile_serialization=False): "
            f"{path}"
        )
    stream = io.BytesIO(data)
    unpickler = _StateDictUnpickler(stream)

    def load(what: str):
        try:
            return unpickler.load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as error:
            raise DataError(f"not a PyTorch state dict file ({what}: {error}): {path}") from None

    if load("magic number") != MAGIC_NUMBER:
        raise DataError(f"not a PyTorch state dict file of the old format (wrong magic number): {path}")
    if load("protocol version") != PROTOCOL_VERSION:
        raise DataError(f"unsupported PyTorch file protocol: {path}")
    info = load("system info")
    if not isinstance(info, dict) or info.get("little_endian") is not True:
        raise DataError(f"only little-endian PyTorch files are supported: {path}")
    state = load("state dict")
    keys = load("storage keys")
    if not isinstance(state, dict) or not isinstance(keys, list):
        raise DataError(f"not a PyTorch state dict file (no dict of tensors): {path}")
    storages = unpickler.storages
    if sorted(map(str, keys)) != sorted(storages):
        raise DataError(f"the storage list does not match the tensors' storages: {path}")

    values: dict[str, np.ndarray] = {}
    position = stream.tell()
    for key in map(str, keys):
        storage = storages[key]
        if position + 8 > len(data):
            raise DataError(f"truncated: storage {key} is missing: {path}")
        count = int(np.frombuffer(data, "<i8", count=1, offset=position)[0])
        size = count * storage.dtype.itemsize
        if count != storage.count or position + 8 + size > len(data):
            raise DataError(f"truncated or inconsistent: storage {key} needs {size} bytes: {path}")
        values[key] = np.frombuffer(data, storage.dtype, count=count, offset=position + 8).copy()
        position += 8 + size

    tensors: dict[str, np.ndarray] = {}
    for name, spec in state.items():
        if not isinstance(spec, _TensorSpec):
            raise DataError(f"entry {name!r} is not a tensor: {path}")
        problem = _view_problem(spec, len(values[spec.storage.key]))
        if problem:
            raise DataError(f"tensor {name!r} {problem}: {path}")
        flat = values[spec.storage.key]
        itemsize = flat.dtype.itemsize
        # A view of the storage's one copy, not a copy of its own: a pickle can name one
        # tensor any number of times for a few bytes each, and copies would add up past any file.
        tensors[str(name)] = np.lib.stride_tricks.as_strided(
            flat[spec.offset :], shape=spec.shape, strides=tuple(s * itemsize for s in spec.stride)
        )
    return tensors


def _view_problem(spec: _TensorSpec, stored: int) -> str | None:
    """Why a tensor's view of its ``stored`` elements is refused, or None when it reads each at most once.

    A view is legal when its elements fit after the offset, its last element
    lies in the storage, and, over the dimensions of size > 1 taken by
    increasing stride, each stride steps over everything the smaller ones
    span (so no two indices share an element). Python integers: no overflow.
    """
    shape, stride, offset = spec.shape, spec.stride, spec.offset
    text = "x".join(map(str, shape)) or "()"
    if len(shape) != len(stride):
        return f"has {len(shape)} sizes but {len(stride)} stride{'s' if len(stride) != 1 else ''}"
    if offset < 0 or any(value < 0 for value in shape + stride):
        return "has a negative size, offset or stride"
    count = math.prod(shape)
    if count == 0:
        return None
    if count > stored - offset:
        return (
            f"of shape {text} has more elements than its storage holds after offset {offset} "
            f"({count} > {stored - offset})"
        )
    span = 0  # the elements the smaller strides reach beyond the first
    for size, step in sorted((pair for pair in zip(shape, stride) if pair[0] > 1), key=lambda pair: pair[1]):
        if step <= span:
            return f"of shape {text} has strides {tuple(stride)} that overlap (they would read stored elements twice)"
        span += (size - 1) * step
    if offset + span >= stored:
        return f"of shape {text} reaches past its storage of {stored} elements"
    return None
