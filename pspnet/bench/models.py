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
    dtype_policy: str


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
        dtype_policy: a Keras dtype policy such as ``"mixed_float16"``; ``None``
            keeps the current global policy. Restored afterwards.
        seed: seed of the random photos, labels and weights.

    Returns:
        A ``ModelBenchmark`` row.
    """
    height, width = (int(v) for v in image_size)
    if batch_size < 1 or steps < 1 or warmup < 0:
        raise ConfigError(f"batch_size and steps must be >= 1 and warmup >= 0, got {batch_size}, {steps}, {warmup}")
    previous_policy = keras.config.dtype_policy()
    if dtype_policy is not None:
        try:
            keras.config.set_dtype_policy(dtype_policy)
        except ValueError as error:
            raise ConfigError(f"invalid dtype policy {dtype_policy!r}: {error}") from None
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
        keras.config.set_dtype_policy(previous_policy)
        keras.backend.clear_session()


def check_presets(presets: Sequence[str]) -> None:
    """Raises ConfigError naming the presets that are not in ``PRESETS``."""
    unknown = [p for p in presets if p not in PRESETS]
    if unknown:
        raise ConfigError(f"unknown preset(s) {', '.join(unknown)}; choose from {', '.join(PRESETS)}")


def benchmark_models(
    presets: Sequence[str] = PRESETS, progress: Callable[[ModelBenchmark], None] | None = None, **kwargs
) -> list[ModelBenchmark]:
    """Runs ``benchmark_model`` for each preset.

    Args:
        presets: preset names, in table order.
        progress: called with each row as soon as it is measured.
        **kwargs: passed to ``benchmark_model``.

    Returns:
        One ``ModelBenchmark`` per preset.
    """
    check_presets(presets)
    rows = []
    for preset in presets:
        row = benchmark_model(preset, **kwargs)
        rows.append(row)
        if progress is not None:
            progress(row)
    return rows


def format_models_table(rows: Sequence[ModelBenchmark]) -> str:
    """A Markdown table of benchmark rows, one line per preset."""
    lines = [
        "| preset | parameters | GFLOPs / image (forward) | training images/s | inference images/s "
        "| input | batch | timed steps | backend, policy |",
        "|---|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.preset} | {row.parameters:,} | {row.gflops:.1f} "
            f"| {row.train_images_per_s:.2f} | {row.infer_images_per_s:.2f} "
            f"| {row.image_size[0]}x{row.image_size[1]} | {row.batch_size} | {row.steps} "
            f"| {row.backend}, {row.dtype_policy} |"
        )
    return "\n".join(lines)
