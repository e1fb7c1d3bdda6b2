"""pspnet.allocator: the heap padding takes effect (page faults of a free/allocate churn)."""

import os
import platform
import subprocess
import sys

import pytest

glibc_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="needs Linux with glibc"
)

# Allocates 32 MiB in 64 KiB blocks (below the mmap threshold, so from the heap),
# writes them, frees them all, and counts the page faults of rounds 2-5.
_CHURN = r"""
import ctypes, importlib.util, resource
if {pad}:  # the module alone, without the package's Keras import
    spec = importlib.util.spec_from_file_location("allocator", {path!r})
    allocator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(allocator)
    assert allocator.pad_heap(), "pad_heap() returned False"
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
def round_():
    blocks = [libc.malloc(64 << 10) for _ in range(512)]
    for block in blocks:
        ctypes.memset(block, 1, 64 << 10)
    for block in reversed(blocks):
        libc.free(block)
round_()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    round_()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(pad: bool) -> int:
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pspnet", "allocator.py")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    result = subprocess.run(
        [sys.executable, "-c", _CHURN.format(path=path, pad=pad)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return int(result.stdout.strip())


@glibc_only
def test_padding_stops_the_heap_from_being_faulted_in_again():
    # Without padding glibc trims the freed 32 MiB and every round faults its
    # 8192 pages back in; with 64 MiB of padding the pages stay.
    assert _faults(pad=False) > 4 * 4000
    assert _faults(pad=True) < 1000


def test_environment_setting_wins(monkeypatch):
    from pspnet.allocator import pad_heap

    monkeypatch.setenv("MALLOC_TOP_PAD_", "0")
    assert pad_heap() is False
