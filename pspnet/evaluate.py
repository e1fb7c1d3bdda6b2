"""Scores a saved model on a labelled split: mIoU, accuracies, confusion matrix.

    pspnet-evaluate --model runs/demo-fast-classes/best.keras --data ../shared/data/cityscapes_data/val
    pspnet-evaluate --model runs/demo-fast-classes/best.keras --data demo --tta

Predictions come from ``pspnet.inference.Segmenter``, the path training's
own final scoring takes: batch by batch at the size the model was trained
at, logits (or colours) resized bilinearly to the label size, reduced to
train ids and added to one confusion matrix, so memory does not grow with
the split. Writes ``metrics.json``, ``confusion_matrix.png`` and
``per_class_iou.png`` to its own folder, ``MODEL_FOLDER/eval-<model>-<split>``
(``-tta`` with flips) unless ``out`` says otherwise, never into a training
run's folder, whose ``metrics.json`` is training's, and never over the scores
of another model or data folder (``metrics.json`` records both): only the
same model on the same data replaces its own results.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pspnet.config import HEADS, check_choice
from pspnet.errors import ConfigError, DataError
from pspnet.fileio import atomic_write, atomic_write_text
from pspnet.inference import Segmenter
from pspnet.metrics import to_jsonable
from pspnet.palette import CLASS_NAMES


@dataclass
class EvalConfig:
    """What to evaluate, on what, and where the results go."""

    model: str | Path  # a .keras file saved by pspnet-train (or any Keras model)
    data: str | Path  # a split folder of pairs, a data folder with val/, or "demo"
    out: str | Path | None = None  # output folder; None: MODEL_FOLDER/eval-<model>-<split>[-tta]
    batch_size: int = 8  # images per forward pass
    image_size: int | tuple[int, int] | None = None  # None: the size the model was trained at
    tta_flip: bool = False  # average the predictions of each image and its mirror image
    cache_dir: str | Path | None = None  # decoded-split cache of pspnet.data.load_split
    head: str | None = None  # "classes" or "rgb"; None: what the model file says
    verbose: bool = True  # progress bar and printed table
    skip_bad: bool = False  # skip unusable files of the split with one warning instead of stopping


# --- data -------------------------------------------------------------------


def resolve_split(data: str | Path) -> Path:
    """The split folder to score: DIR itself, DIR/val, or the demo set's val/.

    Args:
        data: a folder of pairs, a folder holding ``val/``, or "demo".

    Returns:
        The folder of composite pairs.

    Raises:
        DataError: the folder does not exist.
    """
    if str(data) == "demo":
        # The very set ``pspnet-train --data demo`` trains on (written once, cached).
        from pspnet.data.synth import demo_data

        return demo_data() / "val"
    folder = Path(data)
    if not folder.is_dir():
        raise DataError(f"data folder not found: {folder}" if not folder.exists() else f"not a folder: {folder}")
    if (folder / "val").is_dir():
        return folder / "val"
    return folder


# --- evaluation -------------------------------------------------------------


def format_table(results: dict[str, Any]) -> str:
    """The per-class IoU/accuracy table and the summary lines, as text.

    Args:
        results: the dict returned by ``evaluate`` (or ``metrics.scores``).

    Returns:
        A printable multi-line string; absent classes show "n/a".
    """

    def cell(value) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "   n/a"
        return f"{value:6.3f}"

    width = max(len(name) for name in results["per_class_iou"]) if results["per_class_iou"] else 5
    lines = [f"{'class':<{width}}     IoU  accuracy", "-" * (width + 18)]
    for name, iou in results["per_class_iou"].items():
        accuracy = results.get("per_class_accuracy", {}).get(name)
        lines.append(f"{name:<{width}}  {cell(iou)}    {cell(accuracy)}")
    lines.append("-" * (width + 18))
    for key in ("mean_iou", "pixel_accuracy", "mean_class_accuracy", "frequency_weighted_iou"):
        lines.append(f"{key:<24}{cell(results[key])}")
    return "\n".join(lines)


def default_out_dir(model: str | Path, split: Path, tta: bool) -> Path:
    """``MODEL_FOLDER/eval-<model stem>-<split name>[-tta]``: one folder per thing scored."""
    model = Path(model)
    return model.parent / f"eval-{model.stem}-{split.name}{'-tta' if tta else ''}"


def _check_out_dir(out_dir: Path, model: Path, split: Path) -> None:
    """Refuses a training run's folder (its metrics.json is training's) and a folder
    holding the scores of another model or data set (two folders named ``val``
    give one default folder); the same model on the same data may replace its own."""
    if (out_dir / "config.json").is_file() and (out_dir / "backup").is_dir():
        raise ConfigError(
            f"{out_dir} is a training run folder; evaluation would overwrite its metrics.json. "
            "Leave out --out (results go to RUN/eval-<model>-<split>) or choose another folder"
        )
    metrics = out_dir / "metrics.json"
    if not metrics.exists():
        return
    try:
        before = json.loads(metrics.read_text())
        # Scores written before these fields were recorded name their files as given.
        scored = Path(before.get("model_file", before["model"])).resolve()
        data = Path(before.get("data_folder", before["data"])).resolve()
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise ConfigError(f"{out_dir} holds a metrics.json that pspnet-evaluate did not write; "
                          f"choose another --out: {metrics}") from None
    if (scored, data) != (model.resolve(), split.resolve()):
        raise ConfigError(f"{out_dir} holds the scores of {scored} on {data}; choose another --out "
                          f"(nothing was replaced): {metrics}")


def evaluate(config: EvalConfig) -> dict[str, Any]:
    """Scores ``config.model`` on a split and writes metrics.json and figures.

    Args:
        config: an ``EvalConfig``.

    Returns:
        The metrics: ``mean_iou``, ``pixel_accuracy``, ``mean_class_accuracy``,
        ``frequency_weighted_iou``, ``per_class_iou``, ``per_class_accuracy``
        (NaN for classes absent from truth and prediction) and
        ``num_images``, ``model``, ``data``, ``model_file`` and
        ``data_folder`` (resolved), ``head``, ``tta``,
        ``image_size``, ``confusion_matrix``, ``seconds``, ``out``.

    Raises:
        ConfigError: bad model file, image size or batch size, or an output
            folder that belongs to a training run or holds the scores of
            another model or data folder.
        DataError: missing or malformed data (an unusable file only
            without ``skip_bad``).
    """
    if config.batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {config.batch_size}")
    if config.head is not None:
        check_choice("head", config.head, HEADS)
    split = resolve_split(config.data)  # check the data and the output before the (slow) model load
    out_dir = Path(config.out) if config.out is not None else default_out_dir(config.model, split, config.tta_flip)
    _check_out_dir(out_dir, Path(config.model), split)
    segmenter = Segmenter.load(
        config.model, image_size=config.image_size, head=config.head, batch_size=config.batch_size,
        tta_flip=config.tta_flip,
    )

    from pspnet.data import load_split
    from pspnet.viz import plot_confusion, plot_per_class_iou

    photos, truths = load_split(
        split, cache_dir=config.cache_dir, skip_bad=config.skip_bad, progress=config.verbose
    )
    if len(photos) == 0:
        raise DataError(f"no images in {split}")
    started = time.perf_counter()
    progress = None
    if config.verbose:
        from tqdm.auto import tqdm

        progress = tqdm(total=len(photos), desc="evaluate", unit="img", disable=None)
    try:
        confusion = segmenter.confusion(photos, truths, progress=progress.update if progress else None)
    finally:
        if progress is not None:
            progress.close()
    seconds = time.perf_counter() - started

    results = confusion.result(CLASS_NAMES)
    results.update(
        num_images=int(len(photos)),
        model=str(config.model),
        data=str(split),
        model_file=str(Path(config.model).resolve()),  # what this folder's scores are of (never replaced by another's)
        data_folder=str(split.resolve()),
        head=segmenter.head,
        tta=bool(config.tta_flip),
        image_size=list(segmenter.input_size),
        seconds=round(seconds, 3),
        confusion_matrix=confusion.matrix.tolist(),
        missed_pixels=int(confusion.missed.sum()),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "metrics.json", json.dumps(to_jsonable(results), indent=2, allow_nan=False) + "\n")
    for name, figure in (
        ("confusion_matrix.png", plot_confusion(confusion.matrix, CLASS_NAMES, normalize=True)),
        ("per_class_iou.png", plot_per_class_iou(results["per_class_iou"], results["mean_iou"])),
    ):
        atomic_write(out_dir / name, lambda tmp: figure.savefig(tmp, format="png", dpi=110), suffix=".png")
    results["out"] = str(out_dir)

    if config.verbose:
        print(format_table(results))
        print(f"{len(photos)} images in {seconds:.1f} s; wrote {out_dir / 'metrics.json'}")
    return results
