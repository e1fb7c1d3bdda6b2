"""Pictures of photos, label maps and scores: arrays and matplotlib figures.

Every function returns a uint8 RGB array or a ``matplotlib.figure.Figure``
built without pyplot, so no global figure state leaks and nothing is shown:
save with ``fig.savefig(path)``; in a notebook, a returned Figure displays
itself as the cell's value.

Colours and names come from a class table (``pspnet.data.classes.ClassTable``,
a model's ``info.class_table()``); without one, the 19 Cityscapes classes.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from pspnet.data.classes import CITYSCAPES, ClassTable
from pspnet.palette import IGNORE_INDEX


def _count(number: int, noun: str) -> str:
    """``"1 photo"``, ``"2 photos"``: a number and its noun in agreement."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def colorize(
    train_ids: np.ndarray, ignore_color: tuple[int, int, int] = (0, 0, 0), classes: ClassTable = CITYSCAPES
) -> np.ndarray:
    """Paints a train-id map with the colours of a class table.

    Args:
        train_ids: integer map (..., H, W), ids 0 to C-1; 255 (and any other
            id) is void.
        ignore_color: RGB colour of void pixels.
        classes: the class table (C classes and their colours).

    Returns:
        uint8 array (..., H, W, 3) RGB.
    """
    train_ids = np.asarray(train_ids)
    if not np.issubdtype(train_ids.dtype, np.integer):
        raise TypeError(f"train ids must be integers, got {train_ids.dtype}")
    # Ids outside 0-255 would wrap around when indexing; map them to void.
    ids = np.where((train_ids >= 0) & (train_ids <= 255), train_ids, IGNORE_INDEX)
    return classes.palette(ignore_color)[ids.astype(np.intp)]


def _to_uint8_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 RGB from uint8, or from float in 0-1 (colour targets) or 0-255 (photos)."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    image = image.astype(np.float32)
    if image.size and np.nanmax(image) <= 1.0:
        image = image * 255.0
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def overlay(
    photo: np.ndarray, train_ids: np.ndarray, alpha: float = 0.5, classes: ClassTable = CITYSCAPES
) -> np.ndarray:
    """Blends a colourised train-id map over a photo; void pixels keep the photo.

    Args:
        photo: (H, W, 3) RGB, uint8 or float 0-255.
        train_ids: integer map (h, w), ids 0 to C-1 (any other id is void);
            resized with nearest neighbour to the photo when sizes differ.
        alpha: weight of the label colours (0: photo only, 1: colours only).
        classes: the class table (C classes and their colours).

    Returns:
        uint8 array (H, W, 3) RGB.
    """
    photo = np.asarray(photo)
    if photo.ndim != 3 or photo.shape[-1] != 3:
        raise ValueError(f"photo must be (H, W, 3), got {photo.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    photo = np.clip(photo.astype(np.float32), 0, 255)
    train_ids = np.asarray(train_ids)
    if not np.issubdtype(train_ids.dtype, np.integer):
        raise TypeError(f"train ids must be integers, got {train_ids.dtype}")
    # Every id without a class colour is void (as colorize paints it), before
    # the uint8 resize could wrap it onto a class (256 -> road).
    known = (train_ids >= 0) & (train_ids < classes.num_classes)
    train_ids = np.where(known, train_ids, IGNORE_INDEX).astype(np.uint8)
    height, width = photo.shape[:2]
    if train_ids.shape != (height, width):
        # Nearest neighbour: a label map must never be interpolated.
        train_ids = cv2.resize(train_ids, (width, height), interpolation=cv2.INTER_NEAREST)
    colors = colorize(train_ids, classes=classes).astype(np.float32)
    blended = (1.0 - alpha) * photo + alpha * colors
    void = train_ids == IGNORE_INDEX
    blended[void] = photo[void]
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def _as_picture(image: np.ndarray, classes: ClassTable) -> np.ndarray:
    """A panel picture: RGB images as uint8, train-id maps colourised."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 3:
        return _to_uint8_rgb(image)
    if image.ndim == 2:
        return colorize(image, classes=classes)
    raise ValueError(f"expected an (H, W) train-id map or an (H, W, 3) image, got {image.shape}")


def three_panel(
    photos: np.ndarray,
    truths: np.ndarray | None,
    predictions: np.ndarray,
    titles: Sequence[str] = ("photo", "truth", "prediction"),
    panel_size: float = 3.0,
    classes: ClassTable = CITYSCAPES,
) -> Figure:
    """The seed's figure: photo | truth | prediction, one row per sample.

    Truths and predictions may be train-id maps (colourised with the class
    table's colours) or RGB colour images (the seed's colour output, float 0-1 or uint8).

    Args:
        photos: (H, W, 3) for one sample or (N, H, W, 3); uint8, or float in
            0-255 (or 0-1, the seed's scaling: a float image whose maximum is
            at most 1 is taken for 0-1).
        truths: (H, W) / (N, H, W) train ids, or (..., 3) colours; None
            leaves the truth column out.
        predictions: like ``truths``.
        titles: column titles.
        panel_size: inches per panel.
        classes: the class table the train ids are painted with.

    Returns:
        A Figure with N rows of 3 (or 2) panels.
    """
    photos = np.asarray(photos)
    single = photos.ndim == 3
    columns = [photos[None] if single else photos]
    names = [titles[0]]
    for values, title in ((truths, titles[1]), (predictions, titles[2])):
        if values is None:
            continue
        values = np.asarray(values)
        columns.append(values[None] if single else values)
        names.append(title)
    num_rows = len(columns[0])
    for column, title in zip(columns, names):
        if len(column) != num_rows:
            raise ValueError(f"{_count(len(column), title + ' image')} for {_count(num_rows, 'photo')}")

    figure = Figure(figsize=(panel_size * len(columns), panel_size * num_rows))
    axes = figure.subplots(num_rows, len(columns), squeeze=False)
    for row in range(num_rows):
        for col, (column, title) in enumerate(zip(columns, names)):
            axis = axes[row, col]
            axis.imshow(_to_uint8_rgb(column[row]) if col == 0 else _as_picture(column[row], classes))
            axis.set_axis_off()
            if row == 0:
                axis.set_title(title)
    figure.tight_layout()
    return figure


def legend(
    classes: ClassTable | Sequence[str] | None = None,
    colors: Sequence[Sequence[int]] | np.ndarray | None = None,
    columns: int = 4,
) -> Figure:
    """A colour key: one swatch and name per class.

    Args:
        classes: a class table (its names and colours; a model's
            ``info.class_table()``), or names with ``colors``; default the
            19 Cityscapes classes.
        colors: (K, 3) RGB uint8 colours, one per name (not with a table);
            default for names: the Cityscapes colours, in order.
        columns: swatches per row.

    Returns:
        A Figure of the key.

    Example:
        >>> legend(ClassTable(("crop", "weed"), ((0, 200, 0), (200, 0, 0))))
    """
    if classes is None:
        classes = CITYSCAPES
    if isinstance(classes, ClassTable):
        if colors is not None:
            raise ValueError("give colors with class names, not with a class table (it has its own)")
        class_names, colors = classes.names, classes.colors
    else:
        class_names = list(classes)
    if colors is None:
        if len(class_names) > CITYSCAPES.num_classes:
            raise ValueError(
                f"give colors (or a class table) for more names than the {CITYSCAPES.num_classes} Cityscapes classes"
            )
        colors = CITYSCAPES.colors[: len(class_names)]
    colors = np.asarray(colors, dtype=np.float64).reshape(-1, 3)
    if len(colors) != len(class_names):
        raise ValueError(f"{_count(len(colors), 'colour')} for {_count(len(class_names), 'name')}")

    num_rows = max(1, math.ceil(len(class_names) / columns))
    figure = Figure(figsize=(2.6 * columns, 0.45 * num_rows + 0.3))
    axis = figure.add_axes((0, 0, 1, 1))
    axis.set_xlim(0, columns)
    axis.set_ylim(num_rows, 0)
    axis.set_axis_off()
    for index, (name, color) in enumerate(zip(class_names, colors)):
        row, col = divmod(index, columns)
        axis.add_patch(
            Rectangle((col + 0.04, row + 0.15), 0.22, 0.7, facecolor=color / 255.0, edgecolor="black", linewidth=0.5)
        )
        axis.text(col + 0.3, row + 0.5, name, va="center", fontsize=10)
    return figure


def _read_history(history: str | Path | Mapping[str, Sequence[float]]) -> dict[str, np.ndarray]:
    """Columns of a CSVLogger file (or a Keras History.history dict) as float arrays."""
    if isinstance(history, Mapping):
        return {str(k): np.asarray(v, dtype=np.float64) for k, v in history.items()}
    if hasattr(history, "history") and isinstance(history.history, Mapping):
        return _read_history(history.history)  # a keras.callbacks.History
    path = Path(history)
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"no rows in history file {path}")

    def number(text: str | None) -> float:
        try:
            return float(text)
        except (TypeError, ValueError):
            return math.nan

    return {key: np.array([number(row.get(key)) for row in rows]) for key in rows[0]}


def _is_score(name: str) -> bool:
    """Whether a history column is a score in [0, 1] (IoU or accuracy, val_ or not)."""
    return "iou" in name or "accuracy" in name


def plot_history(history: str | Path | Mapping[str, Sequence[float]]) -> Figure:
    """Training curves: losses on the left, scores (IoU, accuracy) in [0, 1] on the right.

    Other columns (``train_minutes``, the learning rate, step counts) are
    bookkeeping, not curves, and are left out.

    Args:
        history: path of a ``history.csv`` written by ``CSVLogger``, a
            ``History.history`` dict, or a ``History`` object.

    Returns:
        A Figure with one or two panels, epochs on the x axis.
    """
    columns = _read_history(history)
    lengths = {len(v) for v in columns.values()}
    num_epochs = max(lengths) if lengths else 0
    epochs = columns.pop("epoch", None)
    epochs = epochs + 1 if epochs is not None else np.arange(1, num_epochs + 1)
    # Only named kinds are drawn: any other column (minutes, rates, counts) has
    # its own scale and would flatten the curves it shared an axis with.
    losses = {k: v for k, v in columns.items() if "loss" in k}
    metrics = {k: v for k, v in columns.items() if "loss" not in k and _is_score(k)}

    panels = [(title, group) for title, group in (("loss", losses), ("metrics", metrics)) if group]
    figure = Figure(figsize=(5.5 * max(1, len(panels)), 4))
    axes = figure.subplots(1, max(1, len(panels)), squeeze=False)[0]
    for axis, (title, group) in zip(axes, panels):
        for name, values in sorted(group.items()):
            style = "--" if name.startswith("val_") else "-"
            axis.plot(epochs[: len(values)], values, style, marker=".", label=name)
        axis.set_title(title)
        axis.set_xlabel("epoch")
        if title == "metrics":
            axis.set_ylim(0.0, 1.0)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    if not panels:
        axes[0].set_title("no curves")
    figure.tight_layout()
    return figure


def plot_confusion(
    confusion: np.ndarray, class_names: ClassTable | Sequence[str] | None = None, normalize: bool = True
) -> Figure:
    """The confusion matrix as a heat map, truth on rows, prediction on columns.

    Args:
        confusion: (C, C) counts (rows = truth).
        class_names: C names, or the class table whose names they are;
            default the Cityscapes names when C is 19, else "0", "1", ...
        normalize: divide each row by its truth count (rows without truth
            stay 0), so the diagonal is each class's accuracy.

    Returns:
        A Figure with the matrix and a colour bar.
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    num_classes = confusion.shape[0]
    if confusion.shape != (num_classes, num_classes):
        raise ValueError(f"confusion must be square (C, C), got {confusion.shape}")
    if isinstance(class_names, ClassTable):
        class_names = class_names.names
    elif class_names is None:
        class_names = (
            CITYSCAPES.names if num_classes == CITYSCAPES.num_classes else [str(index) for index in range(num_classes)]
        )
    if len(class_names) != num_classes:
        raise ValueError(f"{_count(len(class_names), 'class name')} for {num_classes} classes")
    values = confusion
    if normalize:
        totals = confusion.sum(axis=1, keepdims=True)
        values = np.divide(confusion, totals, out=np.zeros_like(confusion), where=totals > 0)

    size = max(4.0, 0.42 * num_classes + 2.5)
    figure = Figure(figsize=(size + 1.0, size))
    axis = figure.add_subplot()
    image = axis.imshow(values, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None)
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
    ticks = np.arange(num_classes)
    axis.set_xticks(ticks, labels=class_names, rotation=90, fontsize=8)
    axis.set_yticks(ticks, labels=class_names, fontsize=8)
    axis.set_xlabel("prediction")
    axis.set_ylabel("truth")
    axis.set_title("confusion matrix" + (" (rows normalised)" if normalize else ""))
    if num_classes <= 25:
        # Write the diagonal (the per-class accuracy when normalised).
        for index in range(num_classes):
            value = values[index, index]
            text = f"{value:.2f}" if normalize else f"{int(value)}"
            axis.text(
                index,
                index,
                text,
                ha="center",
                va="center",
                fontsize=6,
                color="white" if (value > 0.5 if normalize else False) else "black",
            )
    figure.tight_layout()
    return figure


def plot_per_class_iou(
    per_class_iou: Mapping[str, float | None], mean_iou: float | None = None, classes: ClassTable = CITYSCAPES
) -> Figure:
    """Per-class IoU as a horizontal bar chart in the class table's colours.

    Args:
        per_class_iou: class name -> IoU; NaN or None (class absent) is
            labelled "n/a" without a bar.
        mean_iou: drawn as a vertical line when given.
        classes: the class table the colours come from (a name it lacks
            gets a neutral grey).

    Returns:
        A Figure with one bar per class.
    """
    names = list(per_class_iou)
    values = np.array([math.nan if v is None else float(v) for v in per_class_iou.values()], dtype=np.float64)
    colors_by_name = {name: np.array(color) / 255.0 for name, color in zip(classes.names, classes.colors)}
    colors = [colors_by_name.get(name, (0.4, 0.4, 0.6)) for name in names]

    figure = Figure(figsize=(7, 0.32 * len(names) + 1.2))
    axis = figure.add_subplot()
    positions = np.arange(len(names))
    axis.barh(positions, np.nan_to_num(values), color=colors, edgecolor="black", linewidth=0.4)
    for position, value in zip(positions, values):
        label = "n/a" if math.isnan(value) else f"{value:.2f}"
        axis.text((0 if math.isnan(value) else value) + 0.01, position, label, va="center", fontsize=8)
    axis.set_yticks(positions, labels=names, fontsize=8)
    axis.invert_yaxis()
    axis.set_xlim(0, 1.08)
    axis.set_xlabel("IoU")
    if mean_iou is not None and not math.isnan(mean_iou):
        axis.axvline(mean_iou, color="black", linestyle="--", linewidth=1)
        axis.set_title(f"per-class IoU (mean {mean_iou:.3f})")
    else:
        axis.set_title("per-class IoU")
    figure.tight_layout()
    return figure
