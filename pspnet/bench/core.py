"""Speed benchmarks: the seed's recipe against the package's training, and each preset's size and speed.

Run from the command line (TensorFlow backend unless ``KERAS_BACKEND`` says otherwise)::

    pspnet-bench train                      # the training-speed table (speed_table)
    pspnet-bench models --presets fast seed pspnet50 --image-size 256 --batch-size 2 --steps 3

``pspnet-bench train`` times ``model.fit`` itself: the seed notebook's recipe
(``pspnet.training.seed_recipe``: its model, float32, MSE, Adam 1e-3, batch 10, in-memory
float16 arrays) against each preset built, compiled and fed as ``pspnet-train``
does, with this machine's settings (``machine_settings``). Training FLOPs are
counted as 3x the forward FLOPs (forward, and a backward pass of about twice
its cost); the peak is ``pspnet.hardware.peak_tflops``. ``--num-classes C``
times a model of C classes (labels drawn from C numbered classes) instead of
the 19 Cityscapes ones.

``pspnet-bench models``:

Each measurement builds the model, compiles it with Adam and sparse categorical
cross-entropy from logits, runs ``warmup`` untimed steps (tracing, compilation,
allocation), then times ``steps`` calls of ``train_on_batch`` and of
``predict_on_batch`` on random photos and labels. Images/s = images / seconds.
"""

from __future__ import annotations

import dataclasses
import os
import time
import warnings
from typing import Callable, Sequence

import keras
import numpy as np

from pspnet.errors import ConfigError
from pspnet.models.flops import count_flops
from pspnet.models.presets import PRESETS
from pspnet.models.builder import build_pspnet

__all__ = [
    "ModelBenchmark", "SpeedRow", "add_ratios", "bench_classes", "benchmark_model", "benchmark_models",
    "benchmark_package_training", "benchmark_pipeline", "benchmark_seed_recipe", "format_models_table",
    "format_speed_table", "machine_settings",
]


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
        preset: a name of ``pspnet.models.builder.PRESETS``.
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
        model.compile(optimizer=keras.optimizers.Adam(1e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        rng = np.random.default_rng(seed)
        photos = rng.uniform(0, 255, (batch_size, height, width, 3)).astype("float32")
        labels = rng.integers(0, num_classes, (batch_size, height, width)).astype("int32")
        train_rate = _images_per_second(lambda: model.train_on_batch(photos, labels), batch_size, steps, warmup)
        infer_rate = _images_per_second(lambda: model.predict_on_batch(photos), batch_size, steps, warmup)
        return ModelBenchmark(
            preset=preset, parameters=int(model.count_params()), gflops=gflops, train_images_per_s=train_rate,
            infer_images_per_s=infer_rate, image_size=(height, width), batch_size=batch_size, steps=steps,
            backend=keras.backend.backend(), dtype_policy=keras.config.dtype_policy().name,
        )
    finally:
        keras.config.set_dtype_policy(previous_policy)
        keras.backend.clear_session()


def _images_per_second(
    step: Callable[[], object], batch_size: int, steps: int, warmup: int
) -> float:
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


def benchmark_models(
    presets: Sequence[str] = PRESETS,
    progress: Callable[[ModelBenchmark], None] | None = None,
    **kwargs,
) -> list[ModelBenchmark]:
    """Runs ``benchmark_model`` for each preset.

    Args:
        presets: preset names, in table order.
        progress: called with each row as soon as it is measured.
        **kwargs: passed to ``benchmark_model``.

    Returns:
        One ``ModelBenchmark`` per preset.
    """
    unknown = [p for p in presets if p not in PRESETS]
    if unknown:
        raise ConfigError(
            f"unknown preset(s) {', '.join(unknown)}; choose from {', '.join(PRESETS)}"
        )
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


# --- the training-speed table: the seed's recipe against the package's way -------------


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
    share_of_peak: float | None = None  # train_tflops / the machine's peak


def machine_settings(preset: str, kind: str, backend: str) -> dict:
    """The training settings the benchmark (and a user) should use on a machine.

    CPU (measured on a 2-core CPU, docs/BENCHMARKS.md): float32, XLA off on
    TensorFlow (it was slower there), one step per execution, batch 8. GPU
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
        return {"batch_size": 32 if preset == "fast" else 16, "precision": "mixed_bfloat16",
                "jit_compile": True, "steps_per_execution": 8}
    return {"batch_size": 8, "precision": "float32", "jit_compile": backend == "jax",
            "steps_per_execution": 1}


class _StepClock(keras.callbacks.Callback):
    """Times training executions. Overriding ``on_train_batch_end`` makes Keras
    call it synchronously with the logs read back, so each mark follows the
    step's completion on the device."""

    def __init__(self):
        super().__init__()
        self.marks: list[tuple[int, float]] = []  # (last step of the execution, time)

    def on_train_batch_end(self, batch, logs=None):
        self.marks.append((int(batch), time.perf_counter()))


def _rate(marks: Sequence[tuple[int, float]], batch_size: int, warmup: int) -> float:
    """Images/s over the executions after the first ``warmup`` ones."""
    if len(marks) <= warmup or warmup < 1:
        raise ConfigError(f"need more than {warmup} timed executions (and warmup >= 1), got {len(marks)}")
    (step0, time0), (step1, time1) = marks[warmup - 1], marks[-1]
    return batch_size * (step1 - step0) / (time1 - time0)


def benchmark_seed_recipe(image_size: int = 256, steps: int = 3, warmup: int = 1,
                          batch_size: int | None = None, seed: int = 0) -> SpeedRow:
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
        clock = _StepClock()
        model.fit(photos, masks, batch_size=batch_size, epochs=1, shuffle=True, verbose=0, callbacks=[clock])
        infer = _images_per_second(lambda: model.predict_on_batch(photos[:batch_size]), batch_size, steps, 1)
        return SpeedRow("seed recipe", batch_size, "float32", "-", 1,
                        train_images_per_s=_rate(clock.marks, batch_size, warmup), infer_images_per_s=infer,
                        gflops=count_flops(model) / 1e9)
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


def benchmark_package_training(preset: str, image_size: int = 256, steps: int = 3, warmup: int = 1,
                               batch_size: int = 8, precision: str = "float32", jit_compile: bool = False,
                               steps_per_execution: int = 1, workers: int | None = None,
                               source_size: int = 256, seed: int = 0, num_classes: int = 19) -> SpeedRow:
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
    executions = warmup + steps
    config = TrainConfig(data="bench", preset=preset, image_size=image_size, batch_size=batch_size,
                         epochs=1, steps_per_epoch=executions * steps_per_execution, precision=precision,
                         jit_compile=jit_compile, steps_per_execution=steps_per_execution, seed=seed,
                         class_weighting="none", scale=True).resolved()
    keras.utils.set_random_seed(seed)
    try:
        model, _ = build_and_compile(config, None, aux_head=False, classes=classes)
        photos, ids = _random_pairs(max(2 * batch_size, 16), source_size, seed, classes.num_classes)
        data = SegmentationDataset(photos, ids, batch_size, image_size=image_size, seed=seed,
                                   drop_remainder=True, steps_per_epoch=config.steps_per_epoch,
                                   workers=workers or min(4, os.cpu_count() or 1), use_multiprocessing=False)
        clock = _StepClock()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Explicitly requested dtype int64", category=UserWarning)
            model.fit(data, epochs=1, shuffle=False, verbose=0, callbacks=[clock])
        batch = data[0][0]
        infer = _images_per_second(lambda: model.predict_on_batch(batch), batch_size, max(1, steps), 1)
        return SpeedRow(preset, batch_size, precision, "on" if jit_compile else "off", steps_per_execution,
                        train_images_per_s=_rate(clock.marks, batch_size, warmup),
                        infer_images_per_s=infer, gflops=count_flops(model) / 1e9)
    finally:
        keras.backend.clear_session()


def benchmark_pipeline(image_size: int = 256, batch_size: int = 8, batches: int = 40,
                       workers: int | None = None, source_size: int = 256, seed: int = 0,
                       num_classes: int = 19) -> SpeedRow:
    """Images/s of the input pipeline alone (``SegmentationDataset``, scale, crop
    and flip), its batches made on ``workers`` threads as ``fit`` makes them."""
    from concurrent.futures import ThreadPoolExecutor

    from pspnet.data.pipeline import SegmentationDataset

    workers = workers or min(4, os.cpu_count() or 1)
    photos, ids = _random_pairs(max(2 * batch_size, 16), source_size, seed, num_classes)
    data = SegmentationDataset(photos, ids, batch_size, image_size=image_size, seed=seed,
                               drop_remainder=True, steps_per_epoch=batches)
    data[0]  # warm up OpenCV
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(data.__getitem__, range(batches)):
            pass
    rate = batch_size * batches / (time.perf_counter() - start)
    return SpeedRow("input pipeline", batch_size, "-", "-", 1, train_images_per_s=rate)


def add_ratios(rows: Sequence[SpeedRow], peak_tflops: float | None) -> None:
    """Fills in each row's speed-up over the seed recipe, achieved TFLOP/s
    (training = 3 x the forward FLOPs per image) and share of ``peak_tflops``."""
    seed_rate = next((r.train_images_per_s for r in rows if r.name == "seed recipe"), None)
    for row in rows:
        if row.gflops is None or row.train_images_per_s is None:
            continue
        if seed_rate:
            row.speedup = row.train_images_per_s / seed_rate
        row.train_tflops = 3 * row.gflops * row.train_images_per_s / 1e3
        if peak_tflops:
            row.share_of_peak = row.train_tflops / peak_tflops


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


def speed_table(presets: Sequence[str] = PRESETS, image_size: int = 256, steps: int = 3, warmup: int = 1,
                seed_recipe: bool = True, pipeline_batches: int = 40, workers: int | None = None,
                overrides: dict | None = None, progress: Callable[[SpeedRow], None] | None = None,
                num_classes: int = 19) -> tuple[dict, tuple[float, str], list[SpeedRow]]:
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
        (``describe_machine()``, (peak TFLOP/s, its source), rows).
    """
    from pspnet.hardware import describe_machine, peak_tflops

    unknown = [p for p in presets if p not in PRESETS]
    if unknown:
        raise ConfigError(f"unknown preset(s) {', '.join(unknown)}; choose from {', '.join(PRESETS)}")
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
        record(benchmark_package_training(preset, image_size, steps=steps, warmup=warmup, workers=workers,
                                          num_classes=num_classes, **settings))
    if pipeline_batches:
        record(benchmark_pipeline(image_size, max(batch_sizes or [8]), pipeline_batches, workers=workers,
                                  num_classes=num_classes))
    policies = {row.precision for row in rows if row.precision != "-"}
    compute = "bfloat16" if "mixed_bfloat16" in policies else "float16" if "mixed_float16" in policies else "float32"
    peak = peak_tflops(machine, compute)
    add_ratios(rows, peak[0])
    return machine, peak, rows


# --- pspnet-bench runtimes -------------------------------------------------------------


@dataclasses.dataclass
class RuntimeRow:
    """One runtime's inference speed (and val scores) for one trained model."""

    runtime: str  # "keras (tensorflow)", "onnxruntime", "litert", "litert int8"
    images_per_s: dict[int, float]  # batch size -> images/s
    mean_iou: float | None = None
    pixel_accuracy: float | None = None
    file_mb: float | None = None  # size of the artefact


def benchmark_runtimes(model_path, work_dir, batch_sizes: Sequence[int] = (1, 8), steps: int = 5,
                       val=None, calibration=None, progress: Callable[[RuntimeRow], None] | None = None
                       ) -> list[RuntimeRow]:
    """Exports a model to ONNX and LiteRT (and int8 LiteRT with ``calibration``) and times each runtime.

    Args:
        model_path: a ``.keras`` file.
        work_dir: an empty folder for the exports.
        batch_sizes: batches to time ``predict_on_batch`` at (after one untimed call).
        steps: timed calls per batch size.
        val: ``(photos, train_ids)`` to score each runtime on with ``Segmenter``, or None.
        calibration: a folder of photos for the int8 model, or None (no int8 row).
        progress: called with each row.

    Returns:
        One ``RuntimeRow`` per runtime, Keras first.
    """
    from pathlib import Path

    from pspnet.inference.export import export
    from pspnet.inference.segmenter import Segmenter, model_input_size
    from pspnet.models.modelfile import load_model
    from pspnet.inference.runtimes import load_exported

    work_dir = Path(work_dir)
    model, info = load_model(model_path)
    size = model_input_size(model, info)
    exports = [("onnxruntime", "onnx", work_dir / "model.onnx", False),
               ("litert", "litert", work_dir / "model.tflite", False)]
    if calibration is not None:
        exports.append(("litert int8", "litert", work_dir / "model-int8.tflite", True))
    runtimes = [("keras (" + keras.backend.backend() + ")", model, info, Path(model_path))]
    for name, format, path, quantize in exports:
        export(model_path, format, path, quantize=quantize, calibration=calibration if quantize else None,
               verbose=False)
        runtimes.append((name, *load_exported(path), path))
    photos = np.random.default_rng(0).uniform(0, 255, (max(batch_sizes), *size, 3)).astype(np.float32)
    rows = []
    for name, runner, runner_info, path in runtimes:
        speeds = {
            batch: _images_per_second(lambda: runner.predict_on_batch(photos[:batch]), batch, steps, 1)
            for batch in batch_sizes
        }
        row = RuntimeRow(name, speeds, file_mb=path.stat().st_size / 2**20 if path.is_file() else None)
        if val is not None:
            scores = Segmenter(runner, runner_info, size, batch_size=8).confusion(*val).result()
            row.mean_iou, row.pixel_accuracy = scores["mean_iou"], scores["pixel_accuracy"]
        if progress is not None:
            progress(row)
        rows.append(row)
    return rows


def format_runtimes_table(rows: Sequence[RuntimeRow]) -> str:
    """A Markdown table of ``benchmark_runtimes`` rows."""
    batches = sorted({batch for row in rows for batch in row.images_per_s})
    header = ["runtime", *[f"images/s, batch {batch}" for batch in batches], "val mIoU", "pixel acc.", "file MB"]

    def number(value, digits):
        return "" if value is None else f"{value:.{digits}f}"

    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in rows:
        cells = [row.runtime, *[number(row.images_per_s.get(batch), 1) for batch in batches],
                 number(row.mean_iou, 3), number(row.pixel_accuracy, 3), number(row.file_mb, 1)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
