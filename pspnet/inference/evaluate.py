"""Scores a saved model on a labelled split: mIoU, accuracies, confusion matrix.

    pspnet-evaluate --model runs/demo-fast-classes/best.keras --data ../shared/data/cityscapes_data/val
    pspnet-evaluate --model runs/demo-fast-classes/best.keras --data demo --tta
    pspnet-evaluate --model runs/cityscapes-lite-classes/best.keras --data CITYSCAPES_ROOT \
        --slide 512 1024 341 683 --scales 0.75 1.0 1.25

``--data`` is a data set root of any layout (``pspnet.data.layouts``: pairs,
cityscapes, folders; detected, or ``--layout``) whose ``--split`` (val) is
scored, a folder of composite pairs (``DIR/val``), or ``demo``. A data set
whose class table (names, colours, ignore index) is not the model's is
refused in one line naming both.

Predictions come from ``pspnet.inference.segmenter.Segmenter``, the path training's
own final scoring takes: each photo at the scale the model was trained at
(fitted into its base size keeping the aspect ratio and letterboxed to it, as
training's validation batches are; ``--base-size`` for another, ``--stretch``
to resize to it exactly), as a whole or in sliding
windows (``--slide CROP_H CROP_W STRIDE_H STRIDE_W``), at one or more scales
(``--scales``), optionally with flips (``--tta``); scores are resized
bilinearly to the label's full size, reduced to train ids and added to one
confusion matrix, so memory does not grow with the split: the pairs' cached
arrays are scored batch by batch, the other layouts' files decoded one image
at a time. Writes ``metrics.json`` (with the inference mode),
``confusion_matrix.png`` and ``per_class_iou.png`` to its own folder,
``MODEL_FOLDER/eval-<model>-<split>`` (``-slide``, ``-ms``, ``-tta`` for the
modes) unless ``out`` says otherwise, never into a training run's folder,
whose ``metrics.json`` is training's, and never over the scores of another
model or data folder (``metrics.json`` records both): only the same model on
the same data replaces its own results.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pspnet.errors import ConfigError, DataError
from pspnet.fileio import atomic_write, atomic_write_text
from pspnet.inference.segmenter import Segmenter, check_run_options, parse_scales, parse_slide
from pspnet.metrics import to_jsonable


@dataclass
class EvalConfig:
    """What to evaluate, on what, and where the results go."""

    model: str | Path  # a .keras file saved by pspnet-train (or any Keras model, or an export)
    data: str | Path  # a data set root (any layout), a split folder of pairs, a data folder with val/, or "demo"
    out: str | Path | None = None  # output folder; None: MODEL_FOLDER/eval-<model>-<split>[-slide][-ms][-tta]
    batch_size: int = 8  # images (or sliding windows) per forward pass
    image_size: int | tuple[int, int] | None = None  # the base size; None: the size the model was trained at
    tta_flip: bool = False  # average the predictions of each image and its mirror image
    cache_dir: str | Path | None = None  # decoded-split cache (pairs) and scan cache (other layouts)
    head: str | None = None  # "classes" or "rgb"; None: what the model file says
    verbose: bool = True  # progress bar and printed table
    skip_bad: bool = False  # skip unusable files of the split with one warning instead of stopping
    split: str = "val"  # the split of a data set root
    layout: str | None = None  # "pairs", "cityscapes" or "folders"; None: detected
    slide: tuple | None = None  # ((crop_h, crop_w), (stride_h, stride_w)): sliding windows; None: whole image
    scales: tuple[float, ...] | None = None  # multiples of the base size, probabilities averaged; None: (1.0,)
    keep_aspect: bool | None = None  # fit photos keeping their aspect ratio; None: yes for any-size models


# --- data -------------------------------------------------------------------


def resolve_split(data: str | Path, split: str = "val", layout: str | None = None):
    """The split to score (``pspnet.data.layouts.resolve_split``).

    Args:
        data: a data set root, a folder of pairs, a folder holding ``val/``, or "demo".
        split: the split of a root.
        layout: forced layout; None: detected.

    Returns:
        A ``pspnet.data.layouts.Split``.

    Raises:
        DataError: the folder does not exist or is not a data set.
    """
    from pspnet.data.layouts import resolve_split as resolve

    return resolve(data, split, layout)


def classes_file(split) -> Path:
    """Where a split's classes are told: a folders root's dataset.json, else the split's folder."""
    from pspnet.data.classes import DATASET_JSON

    return split.root / DATASET_JSON if split.layout == "folders" else split.folder


def check_classes(info, split, model: str | Path):
    """The model's class table when it is the data set's.

    Raises:
        ConfigError: the tables differ (one line naming the model, the data and what differs),
            or the model does not say which classes it predicts.
    """
    try:
        table = info.class_table()
    except ConfigError as error:
        raise ConfigError(f"{error}: {model}") from None
    difference = table.difference(split.classes)
    if difference is not None:
        raise ConfigError(
            f"the model was trained on other classes than the data set's ({difference}, the "
            f"model's first): {model} against {classes_file(split)}"
        )
    return table


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


def default_out_dir(model: str | Path, split: Path, tta: bool, slide: bool = False, multi_scale: bool = False) -> Path:
    """``MODEL_FOLDER/eval-<model stem>-<split name>[-slide][-ms][-tta]``: one folder per thing scored."""
    model = Path(model)
    modes = "".join(suffix for suffix, used in (("-slide", slide), ("-ms", multi_scale), ("-tta", tta)) if used)
    return model.parent / f"eval-{model.stem}-{split.name}{modes}"


def _check_out_dir(out_dir: Path, model: Path, split: Path) -> None:
    """Refuses a training run's folder (its metrics.json is training's) and a folder
    holding the scores of another model or data set (two folders named ``val``
    give one default folder); the same model on the same data may replace its own."""
    # A file at or above it would fail the first write, after the whole scoring.
    for folder in (out_dir, *out_dir.parents):
        if folder.exists():
            if not folder.is_dir():
                raise ConfigError(f"not a folder: {folder}")
            break
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
        raise ConfigError(
            f"{out_dir} holds a metrics.json that pspnet-evaluate did not write; choose another --out: {metrics}"
        ) from None
    if (scored, data) != (model.resolve(), split.resolve()):
        raise ConfigError(
            f"{out_dir} holds the scores of {scored} on {data}; choose another --out (nothing was replaced): {metrics}"
        )


def _check_config(config: EvalConfig) -> None:
    """Raises ConfigError for a bad option, before anything is read."""
    check_run_options(config.batch_size, config.head)
    parse_slide(config.slide)
    parse_scales(config.scales)


def _score(segmenter: Segmenter, photos, truths, verbose: bool):
    """The confusion matrix over a split, with a progress bar; and the seconds it took."""
    started = time.perf_counter()
    progress = None
    if verbose:
        from tqdm.auto import tqdm

        progress = tqdm(total=len(photos), desc="evaluate", unit="img", disable=None)
    try:
        confusion = segmenter.confusion(photos, truths, progress=progress.update if progress else None)
    finally:
        if progress is not None:
            progress.close()
    return confusion, time.perf_counter() - started


def _write_results(out_dir: Path, results: dict, confusion, classes) -> None:
    """metrics.json and the two figures."""
    from pspnet.inference.viz import plot_confusion, plot_per_class_iou

    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "metrics.json", json.dumps(to_jsonable(results), indent=2, allow_nan=False) + "\n")
    for name, figure in (
        ("confusion_matrix.png", plot_confusion(confusion.matrix, classes, normalize=True)),
        ("per_class_iou.png", plot_per_class_iou(results["per_class_iou"], results["mean_iou"], classes=classes)),
    ):
        atomic_write(
            out_dir / name, lambda tmp, figure=figure: figure.savefig(tmp, format="png", dpi=110), suffix=".png"
        )


def _results(config: EvalConfig, split, segmenter: Segmenter, confusion, classes, count: int, seconds: float) -> dict:
    """The scores and what they are of (metrics.json)."""
    results = confusion.result(classes.names)
    results.update(
        num_images=int(count),
        model=str(config.model),
        data=str(split.folder),
        model_file=str(Path(config.model).resolve()),  # what this folder's scores are of (never replaced by another's)
        data_folder=str(split.folder.resolve()),
        layout=split.layout,
        split=split.name,
        head=segmenter.head,
        tta=bool(config.tta_flip),
        image_size=list(segmenter.input_size),
        inference=segmenter.mode(),
        seconds=round(seconds, 3),
        confusion_matrix=confusion.matrix.tolist(),
        missed_pixels=int(confusion.missed.sum()),
    )
    return results


def evaluate(config: EvalConfig) -> dict[str, Any]:
    """Scores ``config.model`` on a split and writes metrics.json and figures.

    Args:
        config: an ``EvalConfig``.

    Returns:
        The metrics: ``mean_iou``, ``pixel_accuracy``, ``mean_class_accuracy``,
        ``frequency_weighted_iou``, ``per_class_iou``, ``per_class_accuracy``
        (NaN for classes absent from truth and prediction; keys: the model's
        class names) and ``num_images``, ``model``, ``data``, ``model_file``
        and ``data_folder`` (resolved), ``layout``, ``split``, ``head``,
        ``tta``, ``image_size`` (the base size), ``inference`` (mode, crop,
        stride, scales, flip, keep_aspect, base_size), ``confusion_matrix``,
        ``seconds``, ``out``.

    Raises:
        ConfigError: bad model file, image size, batch size, slide or scales,
            a data set of other classes than the model's, or an output folder
            that belongs to a training run or holds the scores of another
            model or data folder.
        DataError: missing or malformed data (an unusable file only
            without ``skip_bad``).
    """
    _check_config(config)
    split = resolve_split(config.data, config.split, config.layout)  # before the (slow) model load
    out_dir = (
        Path(config.out)
        if config.out is not None
        else default_out_dir(
            config.model, split.folder, config.tta_flip, config.slide is not None, len(parse_scales(config.scales)) > 1
        )
    )
    _check_out_dir(out_dir, Path(config.model), split.folder)
    segmenter = Segmenter.load(
        config.model,
        image_size=config.image_size,
        head=config.head,
        batch_size=config.batch_size,
        tta_flip=config.tta_flip,
        slide=config.slide,
        scales=config.scales,
        keep_aspect=config.keep_aspect,
    )
    classes = check_classes(segmenter.info, split, config.model)  # before the (slow) scan of the files

    from pspnet.data.samples import load_arrays

    if len(split) == 0:
        raise DataError(f"no images in {split.folder}")
    photos, truths, _ = load_arrays(
        split, cache_dir=config.cache_dir, skip_bad=config.skip_bad, progress=config.verbose
    )
    if len(photos) == 0:
        raise DataError(f"no images in {split.folder}")
    confusion, seconds = _score(segmenter, photos, truths, config.verbose)
    results = _results(config, split, segmenter, confusion, classes, len(photos), seconds)
    # Again: another evaluation may have written its scores there during this one's.
    _check_out_dir(out_dir, Path(config.model), split.folder)
    _write_results(out_dir, results, confusion, classes)
    results["out"] = str(out_dir)
    if config.verbose:
        print(format_table(results))
        print(f"{len(photos)} images in {seconds:.1f} s ({_describe(segmenter)}); wrote {out_dir / 'metrics.json'}")
    return results


def _describe(segmenter: Segmenter) -> str:
    """ "whole image fitted into 256x256", "512x1024 windows every 341x683 at scales 0.75, 1" and the like."""
    base = ("fitted into " if segmenter.keep_aspect else "resized to ") + "x".join(map(str, segmenter.input_size))
    if segmenter.slide is not None:
        crop, stride = segmenter.slide
        text = f"{crop[0]}x{crop[1]} windows every {stride[0]}x{stride[1]} of photos {base}"
    else:
        text = f"whole photos {base}"
    if segmenter.scales != (1.0,):
        text += " at scales " + ", ".join(f"{scale:g}" for scale in segmenter.scales)
    return text + (", flipped" if segmenter.tta_flip else "")
