"""Timing helpers of the benchmarks: images per second of a step, and of ``fit``'s executions."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import keras

from pspnet.errors import ConfigError

__all__ = ["StepClock", "images_per_second", "marks_rate"]


def images_per_second(step: Callable[[], object], batch_size: int, steps: int, warmup: int) -> float:
    """Runs ``step`` warmup + steps times; images per second over the timed steps.

    ``train_on_batch`` and ``predict_on_batch`` return NumPy values, so each call
    has finished computing when it returns.
    """
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return batch_size * steps / (time.perf_counter() - start)


class StepClock(keras.callbacks.Callback):
    """Times training executions. Overriding ``on_train_batch_end`` makes Keras
    call it synchronously with the logs read back, so each mark follows the
    step's completion on the device."""

    def __init__(self):
        super().__init__()
        self.marks: list[tuple[int, float]] = []  # (last step of the execution, time)

    def on_train_batch_end(self, batch, logs=None):
        self.marks.append((int(batch), time.perf_counter()))


def marks_rate(marks: Sequence[tuple[int, float]], batch_size: int, warmup: int) -> float:
    """Images/s over the ``StepClock`` marks of the executions after the first ``warmup`` ones."""
    if len(marks) <= warmup or warmup < 1:
        raise ConfigError(f"need more than {warmup} timed executions (and warmup >= 1), got {len(marks)}")
    (step0, time0), (step1, time1) = marks[warmup - 1], marks[-1]
    return batch_size * (step1 - step0) / (time1 - time0)
