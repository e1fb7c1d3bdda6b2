"""``pspnet-bench models``: each preset's size, FLOPs and training / inference speed.

Run from the command line (TensorFlow backend unless ``KERAS_BACKEND`` says otherwise)::

    pspnet-bench models --presets fast seed pspnet50 --image-size 256 --batch-size 2 --steps 3

Each measurement builds the model, compiles it with Adam and sparse categorical
cross-entropy from logits, runs ``warmup`` untimed steps (tracing, compilation,
allocation), then times ``steps`` calls of ``train_on_batch`` and of
``predict_on_batch`` on random photos and labels. Images/s = images / seconds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import keras
import numpy as np

from pspnet.bench.timing import images_per_second
from pspnet.errors import ConfigError
from pspnet.models.builder import build_pspnet
from pspnet.models.flops import count_flops
from pspnet.models.precision import check_policy, policy_scope, resolve_policy
from pspnet.models.presets import PRESETS

__all__ = ["ModelBenchmark", "benchmark_model", "benchmark_models", "check_presets", "format_models_table"]


@dataclasses.dataclass
class ModelBenchmark:
    """One row of the models table."""

    preset: str
    parameters: int  # all weights, trainable or not
    gflops: float  # forward GFLOPs per image at image_size
    train_images_per_s: float  # train_on_batch throughput after warm-up
    infer_images_per_s: float  # predict_on_batch throughput after warm-up
    image_size: tuple[int, int]
    batch_size: int
    steps: int
    backend: str
    dtype_policy: str  # the policy the model ran in ("auto" settled)
    requested_policy: str | None = None  # as asked: a policy, "auto", or None (the global one)
    train_tflops: float | None = None  # achieved: 3 x forward FLOPs x training images/s
    share_of_peak: float | None = None  # train_tflops / peak_tflops
    peak_tflops: float | None = None  # the machine's peak in the policy's compute dtype
    peak_source: str | None = None  # "nominal" or "measured DTYPE matmul"


def benchmark_model(
    preset: str,
    image_size: Sequence[int] = (256, 256),
    batch_size: int = 2,
    steps: int = 3,
    warmup: int = 1,
    num_classes: int = 19,
    dtype_policy: str | None = None,
    seed: int = 0,
) -> ModelBenchmark:
    """Measures one preset's size, FLOPs and training / inference speed.

    Args:
        preset: a name of ``pspnet.models.presets.PRESETS``.
        image_size: (height, width) of the random photos.
        batch_size: images per step.
        steps: timed steps of each kind.
        warmup: untimed steps before timing (compilation happens here).
        num_classes: classes of the logits head.
        dtype_policy: a Keras dtype policy such as ``"mixed_float16"``, ``"auto"``
            (``pspnet.models.precision.auto_precision`` for the preset), or
            ``None``: the current global policy. Restored afterwards.
        seed: seed of the random photos, labels and weights.

    Returns:
        A ``ModelBenchmark`` row.
    """
    height, width = (int(v) for v in image_size)
    if batch_size < 1 or steps < 1 or warmup < 0:
        raise ConfigError(f"batch_size and steps must be >= 1 and warmup >= 0, got {batch_size}, {steps}, {warmup}")
    with policy_scope(resolve_policy(dtype_policy, preset)):
        row = _measure(preset, height, width, batch_size, steps, warmup, num_classes, seed)
    row.requested_policy = dtype_policy
    return row


def _measure(preset, height, width, batch_size, steps, warmup, num_classes, seed) -> ModelBenchmark:
    """``benchmark_model``'s measurement under the global policy."""
    try:
        keras.utils.set_random_seed(seed)
        model = build_pspnet(preset, num_classes=num_classes, input_shape=(height, width, 3))
        gflops = count_flops(model) / 1e9
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        )
        rng = np.random.default_rng(seed)
        photos = rng.uniform(0, 255, (batch_size, height, width, 3)).astype("float32")
        labels = rng.integers(0, num_classes, (batch_size, height, width)).astype("int32")
        train_rate = images_per_second(lambda: model.train_on_batch(photos, labels), batch_size, steps, warmup)
        infer_rate = images_per_second(lambda: model.predict_on_batch(photos), batch_size, steps, warmup)
        return ModelBenchmark(
            preset=preset,
            parameters=int(model.count_params()),
            gflops=gflops,
            train_images_per_s=train_rate,
            infer_images_per_s=infer_rate,
            image_size=(height, width),
            batch_size=batch_size,
            steps=steps,
            backend=keras.backend.backend(),
            dtype_policy=keras.config.dtype_policy().name,
        )
    finally:
        keras.backend.clear_session()


def check_presets(presets: Sequence[str]) -> None:
    """Raises ConfigError naming the presets that are not in ``PRESETS``."""
    unknown = [p for p in presets if p not in PRESETS]
    if unknown:
        raise ConfigError(f"unknown preset(s) {', '.join(unknown)}; choose from {', '.join(PRESETS)}")


def benchmark_models(
    presets: Sequence[str] = PRESETS,
    progress: Callable[[ModelBenchmark], None] | None = None,
    dtype_policies: Sequence[str | None] = (None,),
    machine: dict | None = None,
    **kwargs,
) -> list[ModelBenchmark]:
    """Runs ``benchmark_model`` for each preset in each dtype policy, and each row's share of peak.

    Args:
        presets: preset names, in table order.
        progress: called with each row as soon as it is measured.
        dtype_policies: the policies of each preset, in row order (``"auto"``
            allowed; None: the global policy).
        machine: ``describe_machine()`` (None: described here), whose peak in
            each row's compute dtype is measured once, after the rows.
        **kwargs: passed to ``benchmark_model``.

    Returns:
        One ``ModelBenchmark`` per preset and policy.
    """
    from pspnet.bench.peaks import compute_dtype, peaks_by_dtype, share_of_peak
    from pspnet.hardware import describe_machine

    check_presets(presets)
    for policy in dtype_policies:  # a bad name fails before anything is measured
        check_policy(policy)
    machine = machine or describe_machine()
    rows = []
    for preset in presets:
        for policy in dtype_policies:
            row = benchmark_model(preset, dtype_policy=resolve_policy(policy, preset, machine), **kwargs)
            row.requested_policy = policy
            row.train_tflops = 3 * row.gflops * row.train_images_per_s / 1e3
            rows.append(row)
            if progress is not None:
                progress(row)
    peaks = peaks_by_dtype(machine, [row.dtype_policy for row in rows])
    for row in rows:
        row.peak_tflops, row.peak_source = peaks[compute_dtype(row.dtype_policy)]
        row.share_of_peak = share_of_peak(row.train_tflops, row.dtype_policy, peaks)
    return rows


def format_models_table(rows: Sequence[ModelBenchmark]) -> str:
    """A Markdown table of benchmark rows, one line per preset and policy."""
    lines = [
        "| preset | policy | parameters | GFLOPs / image (forward) | training images/s | inference images/s "
        "| achieved TFLOP/s (training) | share of peak | input | batch | timed steps | backend |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for row in rows:
        policy = row.dtype_policy if row.requested_policy != "auto" else f"auto: {row.dtype_policy}"
        tflops = "-" if row.train_tflops is None else f"{row.train_tflops:.3f}"
        share = "-" if row.share_of_peak is None else f"{100 * row.share_of_peak:.1f} %"
        lines.append(
            f"| {row.preset} | {policy} | {row.parameters:,} | {row.gflops:.1f} "
            f"| {row.train_images_per_s:.2f} | {row.infer_images_per_s:.2f} | {tflops} | {share} "
            f"| {row.image_size[0]}x{row.image_size[1]} | {row.batch_size} | {row.steps} | {row.backend} |"
        )
    return "\n".join(lines)
