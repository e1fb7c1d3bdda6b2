"""The peaks that benchmark rows are measured against: one per compute dtype.

A row that ran in mixed_bfloat16 is compared with the machine's bfloat16 peak,
a float32 row with the float32 one, so that "share of peak" says how much of
what that precision could do the row achieved.
"""

from __future__ import annotations

from collections.abc import Iterable

import keras

from pspnet.hardware import peak_tflops

__all__ = ["compute_dtype", "describe_peaks", "peaks_by_dtype", "share_of_peak"]


def compute_dtype(policy: str) -> str:
    """The compute dtype of a Keras dtype policy name ("mixed_bfloat16" -> "bfloat16")."""
    return keras.dtype_policies.get(policy).compute_dtype


def peaks_by_dtype(machine: dict, policies: Iterable[str]) -> dict[str, tuple[float, str]]:
    """Each compute dtype of ``policies`` -> (peak TFLOP/s, its source), each measured once."""
    dtypes = sorted({compute_dtype(policy) for policy in policies})
    return {dtype: peak_tflops(machine, dtype) for dtype in dtypes}


def share_of_peak(train_tflops: float, policy: str, peaks: dict[str, tuple[float, str]]) -> float | None:
    """``train_tflops`` over the peak of the policy's compute dtype (None: no such peak)."""
    peak = peaks.get(compute_dtype(policy), (0.0, ""))[0]
    return train_tflops / peak if peak else None


def describe_peaks(peaks: dict[str, tuple[float, str]]) -> str:
    """One line: "peak float32 0.12 TFLOP/s (measured float32 matmul), bfloat16 ..."."""
    return "peak " + ", ".join(f"{dtype} {tflops:.2f} TFLOP/s ({source})" for dtype, (tflops, source) in peaks.items())
