"""Silences the C++ start-up chatter of TensorFlow (absl, cudart, cpu_feature_guard).

TensorFlow writes these lines straight to file descriptor 2 while it loads and
while it first touches its devices, below Python's ``sys.stderr``, so neither
``TF_CPP_MIN_LOG_LEVEL`` nor ``warnings`` hides them all. They would otherwise
precede the one-line error of every command.
"""

from __future__ import annotations

import contextlib
import os
import sys


@contextlib.contextmanager
def quiet_native_stderr():
    """Points fd 2 at /dev/null for the duration; Python exceptions still show."""
    if os.environ.get("PSPNET_VERBOSE_IMPORT"):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real fd 2 (some notebooks)
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_keras_quietly(start_runtime: bool = True):
    """Imports keras and lets its backend find its devices, without native log lines.

    Args:
        start_runtime: also run a first op, which makes TensorFlow look for
            GPUs (and log about it). False where something must still be
            configured before the runtime starts, as a multi-worker strategy.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with quiet_native_stderr():
        import keras

        if start_runtime:
            keras.ops.convert_to_numpy(keras.ops.zeros((1,)))
    return keras
