"""What machine a benchmark ran on, and how many FLOP/s it can do at best.

``describe_machine()`` names the accelerator (or CPU), the backend and the
library versions, so that every recorded number carries them.
``peak_tflops()`` is the denominator of "share of peak": the vendor's dense
peak for the GPUs listed in ``NOMINAL_PEAKS``, else (a CPU, an unknown GPU) the
rate of a large matrix product measured here with ``keras.ops.matmul``.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import subprocess
import time

import keras
import numpy as np
from keras import ops

__all__ = ["NOMINAL_PEAKS", "describe_machine", "matmul_tflops", "nominal_peak_tflops", "peak_tflops"]

# Dense tensor-core peaks from the vendor's data sheets, TFLOP/s without
# sparsity: (16-bit floats, float32). float32 is the plain (non-TF32) rate.
NOMINAL_PEAKS = {
    "H200": (989.4, 66.9),
    "H100 PCIe": (756.0, 51.2),
    "H100": (989.4, 66.9),  # SXM
    "A100": (312.0, 19.5),
}


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "keras": keras.__version__}
    for package in ("tensorflow", "jax", "jaxlib", "torch", "numpy"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _accelerators() -> list[str]:
    """Names of the backend's GPUs (empty on a CPU-only machine)."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return [d.device_kind for d in jax.devices() if d.platform != "cpu"]
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return [tf.config.experimental.get_device_details(g).get("device_name", "GPU") for g in gpus]
    if backend == "torch":
        import torch

        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return []


def _nvidia_driver() -> str | None:
    try:
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip().splitlines()[0] if result.returncode == 0 and result.stdout.strip() else None


def describe_machine() -> dict:
    """The device the backend computes on, with versions.

    Returns:
        ``{"device": str, "kind": "gpu" | "cpu", "devices": int, "cpu": str,
        "cores": int, "backend": str, "driver": str | None, "versions": {...}}``.
    """
    gpus = _accelerators()
    cpu = _cpu_name()
    return {
        "device": gpus[0] if gpus else cpu,
        "kind": "gpu" if gpus else "cpu",
        "devices": len(gpus) or 1,
        "cpu": cpu,
        "cores": os.cpu_count() or 1,
        "backend": keras.backend.backend(),
        "driver": _nvidia_driver() if gpus else None,
        "versions": _versions(),
    }


def nominal_peak_tflops(device: str, dtype: str) -> float | None:
    """The vendor's dense peak of a known GPU for a compute dtype, else None.

    Args:
        device: a device name such as "NVIDIA H100 80GB HBM3".
        dtype: the compute dtype: "bfloat16", "float16" or "float32".
    """
    for key, (half, single) in NOMINAL_PEAKS.items():
        if all(re.search(re.escape(word), device, re.IGNORECASE) for word in key.split()):
            return half if dtype in ("bfloat16", "float16") else single
    return None


def matmul_tflops(dtype: str = "float32", size: int = 2048, repeats: int = 5) -> float:
    """TFLOP/s of ``size`` x ``size`` matrix products on the backend's default device.

    The best of ``repeats`` timed products (after one warm-up), each forced to
    finish by reading back one number of its result.
    """
    rng = np.random.default_rng(0)
    a = ops.convert_to_tensor(rng.standard_normal((size, size), dtype=np.float32), dtype=dtype)
    b = ops.convert_to_tensor(rng.standard_normal((size, size), dtype=np.float32), dtype=dtype)
    ops.convert_to_numpy(ops.matmul(a, b)[0, 0])
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        ops.convert_to_numpy(ops.matmul(a, b)[0, 0])
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best / 1e12


def peak_tflops(machine: dict, dtype: str) -> tuple[float, str]:
    """The denominator of "share of peak" and where it comes from: one device's.

    The benchmarks train and predict on one device (no ``--distribute``), so a
    machine with several GPUs is measured against one GPU's peak.

    Returns:
        (TFLOP/s, "nominal" or "measured matmul").
    """
    nominal = nominal_peak_tflops(machine["device"], dtype) if machine["kind"] == "gpu" else None
    if nominal is not None:
        return nominal, "nominal"
    return matmul_tflops(dtype, size=4096 if machine["kind"] == "gpu" else 2048), "measured matmul"
