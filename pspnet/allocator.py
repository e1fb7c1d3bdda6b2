"""Keeps glibc from handing the heap back to the kernel between training steps.

TensorFlow's CPU kernels free their buffers at the end of every step and
allocate them again at the start of the next. With glibc's default settings
that memory is returned to the kernel each time and faulted back in page by
page, so a small model spends as much time in page faults as in arithmetic:
the demo (64 px, batch 2) took 100 ms a step on a 2-core CPU, with 9.8 million
page faults and 28 s of system time in 3 epochs. Asking glibc to keep 64 MiB
of padding at the top of each heap (``mallopt(M_TOP_PAD)``, the setting behind
the ``MALLOC_TOP_PAD_`` variable) brought that to 54 ms, 0.18 million faults
and 2.6 s, for about 60 MB more resident memory (docs/BENCHMARKS.md, "The heap").

It only works when set before TensorFlow's runtime starts (its first op),
which is why the command-line entry points call ``pad_heap`` before anything
else, and ``pspnet.training.loop.train`` before its first op. Importing pspnet does
not call it. In a process that ran TensorFlow before calling ``train``, set
``MALLOC_TOP_PAD_`` in the environment instead (``MALLOC_TOP_PAD_=67108864``).
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["HEAP_TOP_PAD", "pad_heap"]

HEAP_TOP_PAD = 64 << 20  # bytes glibc keeps at the top of each heap instead of trimming
_M_TOP_PAD = -2  # mallopt parameter number (malloc.h)


def pad_heap(pad_bytes: int = HEAP_TOP_PAD) -> bool:
    """Sets glibc's ``M_TOP_PAD`` for this process (harmless to call again).

    Does nothing where it cannot help or was chosen already: outside Linux,
    on a C library without ``mallopt`` (musl's ignores it), or when
    ``MALLOC_TOP_PAD_`` is set in the environment (which is how to opt out:
    ``MALLOC_TOP_PAD_=131072`` is glibc's default).

    Args:
        pad_bytes: the padding in bytes.

    Returns:
        Whether this call set it.
    """
    if not sys.platform.startswith("linux") or "MALLOC_TOP_PAD_" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already uses
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_TOP_PAD, int(pad_bytes)))
