"""What machine a benchmark ran on, and how many FLOP/s it can do at best.

``describe_machine()`` names the accelerator (or CPU), the backend and the
library versions, so that every recorded number carries them.
``peak_tflops()`` is the denominator of "share of peak": the vendor's dense
peak for the GPUs listed in ``NOMINAL_PEAKS``, else (a CPU, an unknown GPU) the
rate of a large matrix product measured here with ``keras.ops.matmul``, in the
compute dtype the measured work ran in (a CPU with AMX multiplies bfloat16
faster than float32). ``fast_bfloat16()`` says whether the machine has
bfloat16 matrix instructions: AMX tiles or AVX-512 BF16 dot products on a
CPU (oneDNN runs bfloat16 convolutions and matrix products on either), tensor
cores from compute capability 8.0 (Ampere) on a GPU.
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

__all__ = [
    "CPU_FEATURES",
    "NOMINAL_PEAKS",
    "cpu_features",
    "describe_machine",
    "fast_bfloat16",
    "matmul_tflops",
    "nominal_peak_tflops",
    "peak_tflops",
]

# Dense tensor-core peaks from the vendor's data sheets, TFLOP/s without
# sparsity: (16-bit floats, float32). float32 is the plain (non-TF32) rate.
NOMINAL_PEAKS = {
    "H200": (989.4, 66.9),
    "H100 PCIe": (756.0, 51.2),
    "H100": (989.4, 66.9),  # SXM
    "A100": (312.0, 19.5),
}


# The CPU's matrix and vector units that decide what mixed precision gains, by their
# /proc/cpuinfo flag: AMX tiles with bfloat16 and int8 products (Sapphire Rapids on),
# AVX-512 bfloat16 dot products (Cooper Lake on) and float16 arithmetic.
CPU_FEATURES = ("amx_tile", "amx_bf16", "amx_int8", "avx512_bf16", "avx512_fp16", "avx512f")
BFLOAT16_GPU_CAPABILITY = 8.0  # Ampere and later multiply bfloat16 on tensor cores


def cpu_features(cpuinfo: str | None = None) -> list[str]:
    """The ``CPU_FEATURES`` this CPU has, in that order (Linux; elsewhere none are known).

    Args:
        cpuinfo: the text of ``/proc/cpuinfo``; None: read it.
    """
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as handle:
                cpuinfo = handle.read()
        except OSError:
            return []
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return [name for name in CPU_FEATURES if name in flags]


def fast_bfloat16(machine: dict) -> bool:
    """Whether the machine the backend computes on has bfloat16 matrix instructions.

    A GPU: compute capability 8.0 or more (or, where the backend does not say, a
    GPU of ``NOMINAL_PEAKS``, all of which have them). A CPU: AMX's bfloat16
    tiles, or AVX-512 BF16 (measured on a 2-core AMD EPYC with it and no AMX:
    bfloat16 matrix products at 1.8x the float32 rate, docs/BENCHMARKS.md).
    """
    if machine["kind"] == "gpu":
        capability = machine.get("compute_capability")
        if capability is not None:
            return capability >= BFLOAT16_GPU_CAPABILITY
        return nominal_peak_tflops(machine["device"], "bfloat16") is not None
    features = machine.get("cpu_features", [])
    return "amx_bf16" in features or "avx512_bf16" in features


def _compute_capability() -> float | None:
    """The first GPU's compute capability (major.minor) as the backend reports it, else None."""
    backend = keras.backend.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            major_minor = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability") if gpus else None
        elif backend == "torch":
            import torch

            major_minor = torch.cuda.get_device_capability(0) if torch.cuda.is_available() else None
        elif backend == "jax":
            import jax

            gpus = [d for d in jax.devices() if d.platform == "gpu"]
            major_minor = tuple(int(v) for v in gpus[0].compute_capability.split(".")) if gpus else None
        else:
            major_minor = None
    except (AttributeError, ValueError, RuntimeError):
        return None
    return None if major_minor is None else major_minor[0] + major_minor[1] / 10


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
        "cpu_features": [...], "cores": int, "backend": str, "driver": str | None,
        "compute_capability": float | None, "bfloat16": bool, "versions": {...}}``;
        ``bfloat16`` is ``fast_bfloat16`` of the rest.
    """
    gpus = _accelerators()
    cpu = _cpu_name()
    machine = {
        "device": gpus[0] if gpus else cpu,
        "kind": "gpu" if gpus else "cpu",
        "devices": len(gpus) or 1,
        "cpu": cpu,
        "cpu_features": cpu_features(),
        "cores": os.cpu_count() or 1,
        "backend": keras.backend.backend(),
        "driver": _nvidia_driver() if gpus else None,
        "compute_capability": _compute_capability() if gpus else None,
        "versions": _versions(),
    }
    machine["bfloat16"] = fast_bfloat16(machine)
    return machine


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
    # One number read back, cast first: TensorFlow cannot hand NumPy a bfloat16 scalar.
    ops.convert_to_numpy(ops.cast(ops.matmul(a, b)[0, 0], "float32"))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        ops.convert_to_numpy(ops.cast(ops.matmul(a, b)[0, 0], "float32"))
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best / 1e12


def peak_tflops(machine: dict, dtype: str) -> tuple[float, str]:
    """The denominator of "share of peak" and where it comes from: one device's.

    The benchmarks train and predict on one device (no ``--distribute``), so a
    machine with several GPUs is measured against one GPU's peak.

    Returns:
        (TFLOP/s, "nominal" or "measured DTYPE matmul").
    """
    nominal = nominal_peak_tflops(machine["device"], dtype) if machine["kind"] == "gpu" else None
    if nominal is not None:
        return nominal, "nominal"
    return matmul_tflops(dtype, size=4096 if machine["kind"] == "gpu" else 2048), f"measured {dtype} matmul"
