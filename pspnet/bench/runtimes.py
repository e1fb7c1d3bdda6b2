"""``pspnet-bench runtimes``: a trained model's inference speed and scores in each runtime it exports to."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np

from pspnet.bench.timing import images_per_second

__all__ = ["RuntimeRow", "benchmark_runtimes", "format_runtimes_table"]


@dataclasses.dataclass
class RuntimeRow:
    """One runtime's inference speed (and val scores) for one trained model."""

    runtime: str  # "keras (tensorflow)", "onnxruntime", "litert", "litert int8"
    images_per_s: dict[int, float]  # batch size -> images/s
    mean_iou: float | None = None
    pixel_accuracy: float | None = None
    file_mb: float | None = None  # size of the artefact


def benchmark_runtimes(
    model_path,
    work_dir,
    batch_sizes: Sequence[int] = (1, 8),
    steps: int = 5,
    val=None,
    calibration=None,
    progress: Callable[[RuntimeRow], None] | None = None,
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
    from pspnet.inference.export import export
    from pspnet.inference.runtimes import load_exported
    from pspnet.inference.segmenter import Segmenter, model_input_size
    from pspnet.models.modelfile import load_model

    work_dir = Path(work_dir)
    model, info = load_model(model_path)
    size = model_input_size(model, info)
    exports = [
        ("onnxruntime", "onnx", work_dir / "model.onnx", False),
        ("litert", "litert", work_dir / "model.tflite", False),
    ]
    if calibration is not None:
        exports.append(("litert int8", "litert", work_dir / "model-int8.tflite", True))
    runtimes = [("keras (" + keras.backend.backend() + ")", model, info, Path(model_path))]
    for name, format, path, quantize in exports:
        export(
            model_path, format, path, quantize=quantize, calibration=calibration if quantize else None, verbose=False
        )
        runtimes.append((name, *load_exported(path), path))
    photos = np.random.default_rng(0).uniform(0, 255, (max(batch_sizes), *size, 3)).astype(np.float32)
    rows = []
    for name, runner, runner_info, path in runtimes:
        speeds = {
            batch: images_per_second(
                lambda runner=runner, batch=batch: runner.predict_on_batch(photos[:batch]), batch, steps, 1
            )
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
        cells = [
            row.runtime,
            *[number(row.images_per_s.get(batch), 1) for batch in batches],
            number(row.mean_iou, 3),
            number(row.pixel_accuracy, 3),
            number(row.file_mb, 1),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
