"""Tests of pspnet.fileio: atomic writes, temporary names and the folder lock."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time

import pytest
from conftest import REPO

from pspnet.errors import ConfigError
from pspnet.fileio import FolderLock, atomic_write, atomic_write_text, final_name, remove_temporaries, temporary_name


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "metrics.json"
    atomic_write_text(path, "old")

    def failing(temporary):
        temporary.write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(path, failing)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_temporaries_are_hidden_unique_and_removed(tmp_path):
    first, second = temporary_name(tmp_path / "a.keras", ".keras"), temporary_name(tmp_path / "a.keras", ".keras")
    assert first != second and first.name.startswith(".a.keras.tmp-") and first.suffix == ".keras"
    first.write_text("x")
    (tmp_path / "kept.txt").write_text("y")
    remove_temporaries(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.txt"]


def test_a_second_holder_of_the_lock_is_refused_in_one_line(tmp_path):
    with FolderLock(tmp_path, what="another pspnet-train"):
        with pytest.raises(ConfigError, match=rf"{tmp_path} is in use by another pspnet-train \(pid {os.getpid()}\)"):
            FolderLock(tmp_path, what="another pspnet-train").acquire()
    FolderLock(tmp_path).acquire()  # free again once released


def test_the_lock_dies_with_its_process(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pspnet.fileio import FolderLock; "
            "lock = FolderLock(sys.argv[1]); lock.acquire(); print('held', flush=True); time.sleep(60)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=f"pid {holder.pid}"):
            FolderLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    deadline = time.time() + 10
    while True:
        try:
            FolderLock(tmp_path).acquire()  # a killed holder leaves no stale lock
            break
        except ConfigError:
            assert time.time() < deadline
            time.sleep(0.05)


def test_a_failed_write_that_names_no_file_is_given_the_final_name(tmp_path):
    def write(temporary):
        temporary.write_text("part")
        raise OSError(errno.ENOSPC, "No space left on device")  # as a full disk's write() does

    with pytest.raises(OSError) as raised:
        atomic_write(tmp_path / "metrics.json", write)
    assert (raised.value.errno, raised.value.filename) == (errno.ENOSPC, str(tmp_path / "metrics.json"))
    assert list(tmp_path.iterdir()) == []


def test_a_temporary_name_leads_back_to_its_final_name(tmp_path):
    for final, suffix in ((tmp_path / "a.json", ""), (tmp_path / "best.keras", ".keras")):
        assert final_name(temporary_name(final, suffix)) == final
    assert final_name(tmp_path / ".hidden") == tmp_path / ".hidden"
    assert final_name(tmp_path / "a.json") == tmp_path / "a.json"


def test_a_file_system_without_flock_is_named_not_taken_for_a_holder(tmp_path, monkeypatch):
    import fcntl

    def unsupported(handle, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", unsupported)
    with pytest.raises(ConfigError, match=rf"cannot lock {tmp_path / '.lock'}: ") as caught:
        FolderLock(tmp_path, what="another pspnet-train").acquire()
    assert "in use" not in str(caught.value)
