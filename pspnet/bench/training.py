"""``pspnet-bench train``: the seed's recipe against the package's training, and the input pipeline.

Run from the command line (TensorFlow backend unless ``KERAS_BACKEND`` says otherwise)::

    pspnet-bench train                      # the training-speed table (speed_table)

It times ``model.fit`` itself: the seed notebook's recipe
(``pspnet.training.seed_recipe``: its model, float32, MSE, Adam 1e-3, batch 10, in-memory
float16 arrays) against each preset built, compiled and fed as ``pspnet-train``
does, with this machine's settings (``machine_settings``). Training FLOPs are
counted as 3x the forward FLOPs (forward, and a backward pass of about twice
its cost); each row's peak is ``pspnet.hardware.peak_tflops`` in its compute dtype. ``--num-classes C``
times a model of C classes (labels drawn from C numbered classes) instead of
the 19 Cityscapes ones.
"""

from __future__ import annotations

import dataclasses
import os
import time
import warnings
from collections.abc import Callable, Sequence

import keras
import numpy as np

from pspnet.bench.models import check_presets
from pspnet.bench.peaks import peaks_by_dtype, share_of_peak
from pspnet.bench.timing import StepClock, images_per_second, marks_rate
from pspnet.errors import ConfigError
from pspnet.models.flops import count_flops
from pspnet.models.precision import resolve_policy
from pspnet.models.presets import PRESETS

__all__ = [
    "SpeedRow",
    "add_ratios",
    "bench_classes",
    "benchmark_package_training",
    "benchmark_pipeline",
    "benchmark_seed_recipe",
    "format_speed_table",
    "machine_settings",
    "speed_table",
]


@dataclasses.dataclass
class SpeedRow:
    """One row of the training-speed table (``pspnet-bench train``)."""

    name: str  # "seed recipe", a preset, or "input pipeline"
    batch_size: int
    precision: str  # dtype policy
    jit_compile: str  # "on", "off" or "-"
    steps_per_execution: int
    train_images_per_s: float | None = None
    infer_images_per_s: float | None = None
    gflops: float | None = None  # forward GFLOPs per image
    speedup: float | None = None  # training images/s over the seed recipe's
    train_tflops: float | None = None  # achieved: 3 x forward FLOPs x training images/s
    share_of_peak: float | None = None  # train_tflops / the machine's peak in the row's compute dtype


def machine_settings(preset: str, kind: str, backend: str) -> dict:
    """The training settings the benchmark (and a user) should use on a machine.

    CPU (measured on a 2-core CPU, docs/BENCHMARKS.md): ``--precision auto``'s
    policy (``pspnet.models.precision``), XLA off on TensorFlow (it was slower
    there), one step per execution, batch 8. GPU
    (not yet measured here: no GPU was lent): bfloat16 mixed precision, XLA,
    8 steps per execution, batch 16 (``seed`` and ``pspnet50``) or 32 (``fast``).

    Args:
        preset: a preset name.
        kind: "cpu" or "gpu" (``describe_machine()["kind"]``).
        backend: the Keras backend.

    Returns:
        ``{"batch_size", "precision", "jit_compile", "steps_per_execution"}``.
    """
    if kind == "gpu":
        return {
            "batch_size": 32 if preset == "fast" else 16,
            "precision": "mixed_bfloat16",
            "jit_compile": True,
            "steps_per_execution": 8,
        }
    return {"batch_size": 8, "precision": "auto", "jit_compile": backend == "jax", "steps_per_execution": 1}


def benchmark_seed_recipe(
    image_size: int = 256, steps: int = 3, warmup: int = 1, batch_size: int | None = None, seed: int = 0
) -> SpeedRow:
    """Training images/s of the seed notebook's own recipe (``pspnet.training.seed_recipe``).

    The transcribed model, float32, Adam 1e-3, MSE, ``model.fit`` on float16
    arrays held in memory, batch 10: ``warmup`` untimed steps, then ``steps``;
    inference is ``predict_on_batch`` on one batch.
    """
    from pspnet.training.seed_recipe import BATCH_SIZE, compile_notebook_model, notebook_arrays, notebook_model

    batch_size = batch_size or BATCH_SIZE
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        keras.utils.set_random_seed(seed)
        model = compile_notebook_model(notebook_model(image_size))
        photos, masks = notebook_arrays(batch_size * (warmup + steps), image_size, seed)
        clock = StepClock()
        model.fit(photos, masks, batch_size=batch_size, epochs=1, shuffle=True, verbose=0, callbacks=[clock])
        infer = images_per_second(lambda: model.predict_on_batch(photos[:batch_size]), batch_size, steps, 1)
        return SpeedRow(
            "seed recipe",
            batch_size,
            "float32",
            "-",
            1,
            train_images_per_s=marks_rate(clock.marks, batch_size, warmup),
            infer_images_per_s=infer,
            gflops=count_flops(model) / 1e9,
        )
    finally:
        keras.config.set_dtype_policy(previous_policy)
        keras.backend.clear_session()


def bench_classes(num_classes: int):
    """The class table a benchmark of C classes trains on: Cityscapes for 19, else C numbered classes.

    Raises:
        ConfigError: C is not 2 to 255 (what a class table holds).
    """
    from pspnet.data.classes import CITYSCAPES, MAX_CLASSES, MIN_CLASSES, ClassTable

    if not MIN_CLASSES <= num_classes <= MAX_CLASSES:
        raise ConfigError(f"--num-classes must be {MIN_CLASSES} to {MAX_CLASSES}, got {num_classes}")
    if num_classes == CITYSCAPES.num_classes:
        return CITYSCAPES
    # Distinct colours: the red channel alone tells the classes apart.
    colors = [(index, (97 * index) % 256, (211 * index) % 256) for index in range(num_classes)]
    return ClassTable(tuple(f"class {index}" for index in range(num_classes)), tuple(colors))


def _random_pairs(count: int, size: int, seed: int, num_classes: int = 19) -> tuple[np.ndarray, np.ndarray]:
    """uint8 photos (N, S, S, 3) and train ids (N, S, S) of C classes: the shapes of the real pairs."""
    rng = np.random.default_rng(seed)
    photos = rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)
    ids = rng.integers(0, num_classes, (count, size // 8, size // 8), dtype=np.uint8)
    return photos, np.repeat(np.repeat(ids, 8, axis=1), 8, axis=2)  # blocky, like real labels


def benchmark_package_training(
    preset: str,
    image_size: int = 256,
    steps: int = 3,
    warmup: int = 1,
    batch_size: int = 8,
    precision: str = "float32",
    jit_compile: bool = False,
    steps_per_execution: int = 1,
    workers: int | None = None,
    source_size: int = 256,
    seed: int = 0,
    num_classes: int = 19,
) -> SpeedRow:
    """Training and inference images/s of a preset trained the package's way.

    The model of ``num_classes`` classes, its loss (cross-entropy ignoring 255),
    metrics (mean IoU, pixel accuracy) and optimizer are built by
    ``pspnet.training.recipe`` exactly as ``pspnet-train`` builds them; batches come from ``SegmentationDataset``
    with scale, crop and flip augmentation on ``workers`` threads, fed to
    ``model.fit``. ``warmup`` and ``steps`` count executions of
    ``steps_per_execution`` batches. Inference is ``predict_on_batch`` on
    one batch, after one untimed call.
    """
    from pspnet.data.pipeline import SegmentationDataset
    from pspnet.training.config import TrainConfig
    from pspnet.training.recipe import build_and_compile

    classes = bench_classes(num_classes)
    precision = resolve_policy(precision, preset)  # the row names the policy it ran in
    executions = warmup + steps
    config = TrainConfig(
        data="bench",
        preset=preset,
        image_size=image_size,
        batch_size=batch_size,
        epochs=1,
        steps_per_epoch=executions * steps_per_execution,
        precision=precision,
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
        seed=seed,
        class_weighting="none",
        scale=True,
    ).resolved()
    keras.utils.set_random_seed(seed)
    try:
        model, _ = build_and_compile(config, None, aux_head=False, classes=classes)
        photos, ids = _random_pairs(max(2 * batch_size, 16), source_size, seed, classes.num_classes)
        data = SegmentationDataset(
            photos,
            ids,
            batch_size,
            image_size=image_size,
            seed=seed,
            drop_remainder=True,
            steps_per_epoch=config.steps_per_epoch,
            workers=workers or min(4, os.cpu_count() or 1),
            use_multiprocessing=False,
        )
        clock = StepClock()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Explicitly requested dtype int64", category=UserWarning)
            model.fit(data, epochs=1, shuffle=False, verbose=0, callbacks=[clock])
        batch = data[0][0]
        infer = images_per_second(lambda: model.predict_on_batch(batch), batch_size, max(1, steps), 1)
        return SpeedRow(
            preset,
            batch_size,
            precision,
            "on" if jit_compile else "off",
            steps_per_execution,
            train_images_per_s=marks_rate(clock.marks, batch_size, warmup),
            infer_images_per_s=infer,
            gflops=count_flops(model) / 1e9,
        )
    finally:
        keras.backend.clear_session()


def benchmark_pipeline(
    image_size: int = 256,
    batch_size: int = 8,
    batches: int = 40,
    workers: int | None = None,
    source_size: int = 256,
    seed: int = 0,
    num_classes: int = 19,
) -> SpeedRow:
    """Images/s of the input pipeline alone (``SegmentationDataset``, scale, crop
    and flip), its batches made on ``workers`` threads as ``fit`` makes them."""
    from concurrent.futures import ThreadPoolExecutor

    from pspnet.data.pipeline import SegmentationDataset

    workers = workers or min(4, os.cpu_count() or 1)
    photos, ids = _random_pairs(max(2 * batch_size, 16), source_size, seed, num_classes)
    data = SegmentationDataset(
        photos, ids, batch_size, image_size=image_size, seed=seed, drop_remainder=True, steps_per_epoch=batches
    )
    data[0]  # warm up OpenCV
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(data.__getitem__, range(batches)):
            pass
    rate = batch_size * batches / (time.perf_counter() - start)
    return SpeedRow("input pipeline", batch_size, "-", "-", 1, train_images_per_s=rate)


def add_ratios(rows: Sequence[SpeedRow], peaks: dict[str, tuple[float, str]]) -> None:
    """Fills in each row's speed-up over the seed recipe, achieved TFLOP/s
    (training = 3 x the forward FLOPs per image) and share of the peak of its
    compute dtype (``peaks``: ``pspnet.bench.peaks.peaks_by_dtype``)."""
    seed_rate = next((r.train_images_per_s for r in rows if r.name == "seed recipe"), None)
    for row in rows:
        if row.gflops is None or row.train_images_per_s is None:
            continue
        if seed_rate:
            row.speedup = row.train_images_per_s / seed_rate
        row.train_tflops = 3 * row.gflops * row.train_images_per_s / 1e3
        row.share_of_peak = share_of_peak(row.train_tflops, row.precision, peaks)


def format_speed_table(rows: Sequence[SpeedRow]) -> str:
    """The training-speed table in Markdown."""

    def number(value, spec):
        return "-" if value is None else format(value, spec)

    lines = [
        "| what | batch | policy | XLA | steps/execution | training images/s | x seed recipe "
        "| inference images/s | GFLOPs/image (fwd) | achieved TFLOP/s (training) | share of peak |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        share = "-" if row.share_of_peak is None else f"{100 * row.share_of_peak:.1f} %"
        lines.append(
            f"| {row.name} | {row.batch_size} | {row.precision} | {row.jit_compile} | {row.steps_per_execution} "
            f"| {number(row.train_images_per_s, '.2f')} | {number(row.speedup, '.1f')} "
            f"| {number(row.infer_images_per_s, '.2f')} | {number(row.gflops, '.1f')} "
            f"| {number(row.train_tflops, '.3f')} | {share} |"
        )
    return "\n".join(lines)


def speed_table(
    presets: Sequence[str] = PRESETS,
    image_size: int = 256,
    steps: int = 3,
    warmup: int = 1,
    seed_recipe: bool = True,
    pipeline_batches: int = 40,
    workers: int | None = None,
    overrides: dict | None = None,
    progress: Callable[[SpeedRow], None] | None = None,
    num_classes: int = 19,
) -> tuple[dict, dict[str, tuple[float, str]], list[SpeedRow]]:
    """Measures the whole training-speed table on this machine.

    Args:
        presets: presets trained the package's way, in table order.
        image_size: side of the square training images (the seed's: 256).
        steps, warmup: timed and untimed executions per training row.
        seed_recipe: include the seed notebook's recipe (the 1.0x baseline).
        pipeline_batches: batches timed for the input-pipeline row (0: no row).
        workers: input pipeline threads (None: min(4, CPU count)).
        overrides: settings replacing ``machine_settings``' (batch_size,
            precision, jit_compile, steps_per_execution) for every preset.
        progress: called with each row when it is measured.
        num_classes: classes of the presets' heads and of the random labels
            (the seed recipe's colour head has none).

    Returns:
        (``describe_machine()``, {compute dtype: (peak TFLOP/s, its source)}, rows).
    """
    from pspnet.hardware import describe_machine

    check_presets(presets)
    bench_classes(num_classes)  # a bad count fails before anything is measured
    machine = describe_machine()
    rows: list[SpeedRow] = []

    def record(row: SpeedRow) -> None:
        rows.append(row)
        if progress is not None:
            progress(row)

    if seed_recipe:
        record(benchmark_seed_recipe(image_size, steps=steps, warmup=warmup))
    batch_sizes = []
    for preset in presets:
        settings = {**machine_settings(preset, machine["kind"], machine["backend"]), **(overrides or {})}
        batch_sizes.append(settings["batch_size"])
        record(
            benchmark_package_training(
                preset, image_size, steps=steps, warmup=warmup, workers=workers, num_classes=num_classes, **settings
            )
        )
    if pipeline_batches:
        record(
            benchmark_pipeline(
                image_size, max(batch_sizes or [8]), pipeline_batches, workers=workers, num_classes=num_classes
            )
        )
    peaks = peaks_by_dtype(machine, [row.precision for row in rows if row.precision != "-"])
    add_ratios(rows, peaks)
    return machine, peaks, rows
