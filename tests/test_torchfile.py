"""Tests of pspnet.models.torchfile, the safe reader of old-format PyTorch state dicts."""

from __future__ import annotations

import os
import pickle
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, make_pairs

from pspnet.errors import DataError
from pspnet.models import torchfile
from pspnet.models.torchfile import MAGIC_NUMBER, PROTOCOL_VERSION, read_state_dict

# A child that reads a file under this address-space limit: a reader that
# allocates what a file asks fails there with a MemoryError, not the machine.
CHILD_MEMORY_LIMIT = 2 << 30
TRAIN_MEMORY_LIMIT = 8 << 30  # TensorFlow reserves about 3 GiB of address space
TF_NATIVE_LOG = re.compile(r"^(WARNING: All log messages before absl|[IWE]\d{4} |To enable the following)")


# --- a tiny old-format file, written opcode by opcode (no PyTorch) ------------------------


def _unicode(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data  # BINUNICODE


def _int(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)  # BININT


def _global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()  # GLOBAL


def _tuple(items: bytes) -> bytes:
    return b"(" + items + b"t"  # MARK ... TUPLE


def _build(state: dict[str, str]) -> bytes:
    """BUILD with ``state`` on the object on top of the stack (as ``__setstate__``)."""
    items = b"".join(_unicode(key) + _unicode(value) for key, value in state.items())
    return b"}(" + items + b"ub"  # EMPTY_DICT, MARK ... SETITEMS, BUILD


def old_format_file(
    tensors: dict,
    rebuild=("torch._utils", "_rebuild_tensor_v2"),
    truncate: int = 0,
    views: dict | None = None,
    storage_state: dict | None = None,
    tensor_state: dict | None = None,
) -> bytes:
    """Bytes of an old-format state dict file of float32 tensors, as torch.save wrote them before 1.6.

    Args:
        tensors: name -> array; each is stored whole in a storage of its own.
        rebuild: the global that rebuilds a tensor.
        truncate: bytes cut off the end.
        views: name -> (offset, shape, stride) that the tensor claims instead of its own.
        storage_state: a BUILD applied to each storage type stand-in.
        tensor_state: a BUILD applied to each rebuilt tensor.
    """
    header = b"".join(
        pickle.dumps(value, protocol=2)
        for value in (MAGIC_NUMBER, PROTOCOL_VERSION, {"protocol_version": 1001, "little_endian": True})
    )
    state = b"\x80\x02" + _global("collections", "OrderedDict") + b")R("  # OrderedDict(), then its items
    keys, storages = [], b""
    for index, (name, array) in enumerate(tensors.items()):
        array = np.ascontiguousarray(array, np.float32)
        key = str(1000 + index)
        storage_type = _global("torch", "FloatStorage") + (_build(storage_state) if storage_state else b"")
        storage = (
            _tuple(_unicode("storage") + storage_type + _unicode(key) + _unicode("cpu") + _int(array.size) + b"N")
            + b"Q"
        )  # BINPERSID
        offset, shape, stride = (views or {}).get(name, (0, array.shape, [s // 4 for s in array.strides]))
        arguments = (
            storage
            + _int(offset)
            + _tuple(b"".join(map(_int, shape)))
            + _tuple(b"".join(map(_int, stride)))
            + b"\x89"
            + _global("collections", "OrderedDict")
            + b")R"
        )
        state += _unicode(name) + _global(*rebuild) + _tuple(arguments) + b"R"
        state += _build(tensor_state) if tensor_state else b""
        keys.append(key)
        storages += struct.pack("<q", array.size) + array.tobytes()
    state += b"u."  # SETITEMS, STOP
    data = header + state + pickle.dumps(keys, protocol=2) + storages
    return data[: len(data) - truncate]


def test_the_reader_reads_a_hand_written_file(tmp_path):
    kernel = np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2)
    path = tmp_path / "tiny.pth"
    path.write_bytes(old_format_file({"conv.weight": kernel, "bn.bias": np.array([1.5, -2.0], np.float32)}))
    state = read_state_dict(path)
    assert list(state) == ["conv.weight", "bn.bias"]
    np.testing.assert_array_equal(state["conv.weight"], kernel)
    np.testing.assert_array_equal(state["bn.bias"], [1.5, -2.0])


def test_a_pickle_naming_any_other_global_is_rejected_unexecuted(tmp_path):
    path = tmp_path / "evil.pth"
    path.write_bytes(old_format_file({"w": np.zeros(2, np.float32)}, rebuild=("os", "system")))
    with pytest.raises(DataError, match=r"it names os\.system, which a state dict never needs"):
        read_state_dict(path)


def test_a_file_of_the_zip_format_is_named_with_how_to_resave_it(tmp_path):
    # torch.save's default since PyTorch 1.6: a zip archive, which this reader does not read.
    import zipfile

    path = tmp_path / "new.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("new/data.pkl", pickle.dumps({}, protocol=2))
        archive.writestr("new/version", "3\n")
    with pytest.raises(DataError, match=r"zip format.*_use_new_zipfile_serialization=False"):
        read_state_dict(path)


def test_a_truncated_file_is_refused_before_any_array_is_made(tmp_path):
    path = tmp_path / "cut.pth"
    path.write_bytes(old_format_file({"w": np.zeros(100, np.float32)}, truncate=10))
    with pytest.raises(DataError, match="truncated"):
        read_state_dict(path)
    (tmp_path / "other.pth").write_bytes(b"\x80\x02K\x01.")
    with pytest.raises(DataError, match="wrong magic number"):
        read_state_dict(tmp_path / "other.pth")


# --- views that ask for more than the file holds -------------------------------------------


ZERO_STRIDE_SCRIPT = """
import collections, sys, torch
view = torch.ones(1).as_strided((60000, 60000), (0, 0))  # one stored float seen 3.6e9 times
torch.save(collections.OrderedDict(w=view), sys.argv[1], _use_new_zipfile_serialization=False)
"""


def _zero_stride_file(path: Path, writer: str) -> Path:
    """A state dict whose one tensor views one stored float as 60000x60000 (13.4 GiB as an array)."""
    if writer == "torch.save":
        pytest.importorskip("torch")
        # In a child: this process has TensorFlow loaded, and the two need not share one.
        subprocess.run([sys.executable, "-c", ZERO_STRIDE_SCRIPT, str(path)], check=True, timeout=120)
    else:
        path.write_bytes(old_format_file({"w": np.ones(1, np.float32)}, views={"w": (0, (60000, 60000), (0, 0))}))
    return path


READ_SCRIPT = """
import sys, tracemalloc
from pspnet.errors import DataError
from pspnet.models.torchfile import read_state_dict
tracemalloc.start()
try:
    read_state_dict(sys.argv[1])
except DataError as error:
    print(f"DataError: {error}")
print(f"peak bytes: {tracemalloc.get_traced_memory()[1]}")
"""


def _read_in_child(path: Path) -> list[str]:
    """Reads ``path`` in a memory-limited child; its stdout lines (a traceback fails the test)."""
    done = subprocess.run(
        [sys.executable, "-c", READ_SCRIPT, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_limit_memory(CHILD_MEMORY_LIMIT),
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0 and not done.stderr, done.stderr[-2000:]
    return done.stdout.splitlines()


@pytest.mark.parametrize("writer", ["by hand", "torch.save"])
def test_a_zero_stride_view_is_one_line_and_allocates_nothing_large(tmp_path, writer):
    path = _zero_stride_file(tmp_path / "zero-stride.pth", writer)
    assert path.stat().st_size < 1000
    message, peak = _read_in_child(path)
    assert message.startswith("DataError: ") and message.endswith(f": {path}")
    assert "tensor 'w'" in message and "60000x60000" in message
    assert int(peak.removeprefix("peak bytes: ")) < 1 << 20  # a few copies of the file, no array


def test_one_tensor_under_many_names_costs_its_storage_once(tmp_path):
    # A pickle names a tensor it built again for 5 bytes (LONG_BINGET): 1000 names of one
    # 4 MiB tensor would be 4 GiB of copies from a 4 MiB file.
    data = old_format_file({"w": np.arange(1 << 20, dtype=np.float32)})
    end = data.index(b"Ru.")  # the last tensor's REDUCE, then SETITEMS and STOP of the state dict
    memo = struct.pack("<I", 9999)
    names = b"".join(_unicode(f"w{index}") + b"j" + memo for index in range(1000))  # LONG_BINGET
    path = tmp_path / "many-names.pth"
    path.write_bytes(data[:end] + b"Rr" + memo + names + data[end + 1 :])  # LONG_BINPUT after the REDUCE
    (peak,) = _read_in_child(path)  # no DataError: a MemoryError was one
    assert int(peak.removeprefix("peak bytes: ")) < 4 * path.stat().st_size
    state = read_state_dict(path)
    assert len(state) == 1001
    np.testing.assert_array_equal(state["w999"], np.arange(1 << 20, dtype=np.float32))


@pytest.mark.parametrize(
    "offset, shape, stride, problem",
    [
        (0, (3, 4), (4, 0), "overlap"),  # a zero stride on a dimension of 4
        (0, (4, 3), (1, 2), "overlap"),  # columns two apart, four tall: they share elements
        (0, (6, 3), (3, 1), "more elements than its storage"),  # 18 elements, 12 stored
        (5, (8,), (1,), "more elements than its storage"),  # 8 elements, 7 after the offset
        (0, (2, 6), (7, 1), "reaches past its storage"),  # 12 elements, but the last lies at 12
        (0, (2, 6), (6, -1), "negative"),
        (0, (2, 6), (6,), "2 sizes but 1 stride"),
    ],
)
def test_views_that_alias_or_overrun_their_storage_are_refused(tmp_path, offset, shape, stride, problem):
    path = tmp_path / "view.pth"
    path.write_bytes(old_format_file({"w": np.arange(12, dtype=np.float32)}, views={"w": (offset, shape, stride)}))
    with pytest.raises(DataError, match=rf"tensor 'w' .*{problem}.*: {path}$"):
        read_state_dict(path)


@pytest.mark.parametrize(
    "offset, shape, stride",
    [
        (0, (4, 3), (1, 4)),  # transposed (PyTorch's .t() saved as is)
        (2, (2, 5), (5, 1)),  # an offset view that ends at the last element
        (0, (1, 12), (0, 1)),  # any stride on a dimension of size 1
        (0, (0, 4), (0, 0)),  # empty
        (3, (), ()),  # a scalar
    ],
)
def test_legal_strided_views_are_read_as_numpy_sees_them(tmp_path, offset, shape, stride):
    values = np.arange(12, dtype=np.float32)
    path = tmp_path / "view.pth"
    path.write_bytes(old_format_file({"w": values}, views={"w": (offset, shape, stride)}))
    expected = np.lib.stride_tricks.as_strided(values[offset:], shape, [s * 4 for s in stride])
    np.testing.assert_array_equal(read_state_dict(path)["w"], expected)


@pytest.mark.parametrize("target", ["storage type", "tensor"])
def test_a_build_that_rewrites_a_stand_in_is_one_data_error(tmp_path, target):
    path = tmp_path / "rewritten.pth"
    if target == "storage type":
        build = {"storage_state": {"name": "NoSuchStorage"}}
    else:
        build = {"tensor_state": {"shape": "ab"}}
    path.write_bytes(old_format_file({"w": np.zeros(2, np.float32)}, **build))
    with pytest.raises(DataError, match=rf"^not a PyTorch state dict file .*: {path}$"):
        read_state_dict(path)


def test_any_other_failure_inside_the_reader_is_one_data_error(tmp_path, monkeypatch):
    path = tmp_path / "tiny.pth"
    path.write_bytes(old_format_file({"w": np.zeros(2, np.float32)}))

    def unexpected(*args):
        raise KeyError("a failure nobody foresaw")

    monkeypatch.setattr(torchfile, "_rebuild_tensor", unexpected)
    with pytest.raises(DataError, match=rf"^not a PyTorch state dict file .*a failure nobody foresaw.*: {path}$"):
        read_state_dict(path)


def _limit_memory(limit: int):
    """A ``preexec_fn`` that caps a child's address space at ``limit`` bytes."""
    import resource

    return lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


@pytest.mark.slow
def test_pspnet_train_on_a_zero_stride_file_is_one_line_before_training(tmp_path):
    path = _zero_stride_file(tmp_path / "zero-stride.pth", "by hand")
    data = tmp_path / "data"
    make_pairs(data / "train", 2, size=32, split="train")
    make_pairs(data / "val", 2, size=32, split="val")
    run = tmp_path / "run"
    command = [
        sys.executable,
        str(REPO / "scripts" / "train.py"),
        "--data",
        str(data),
        "--out",
        str(run),
        "--preset",
        "lite",
        "--backbone-weights",
        str(path),
        "--image-size",
        "32",
        "--batch-size",
        "2",
        "--epochs",
        "1",
        "--workers",
        "1",
        "--verbose",
        "0",
    ]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_limit_memory(TRAIN_MEMORY_LIMIT),
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)},
    )
    lines = [line for line in done.stderr.splitlines() if line and not TF_NATIVE_LOG.match(line)]
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("pspnet-train: error: ") and lines[0].endswith(str(path)), lines
    assert not (run / "best.keras").exists() and not (run / "last.keras").exists()
