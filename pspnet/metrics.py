"""Segmentation metrics: IoU and accuracies from a confusion matrix, in NumPy.

The confusion-matrix scores are pure NumPy, shared by training's final scoring
and ``pspnet.inference.evaluate`` (training's Keras metric is
``pspnet.training.pixel_accuracy``).
Every score is derived from one integer confusion matrix (rows = truth, columns =
prediction), so scores can be accumulated batch by batch in bounded memory.

Conventions (as in the Cityscapes and pix2pix tables):

- Pixels whose truth is ``ignore_index`` (255, void) are not counted.
- A class with no truth pixels and no predicted pixels has no IoU and no
  accuracy: it is NaN and left out of every mean.
- A class with no truth pixels but some predicted pixels has IoU 0 (every
  prediction of it is a false positive); its accuracy is NaN (no truth).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from pspnet.palette import CLASSES, IGNORE_INDEX, NUM_CLASSES


def confusion_matrix(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    num_classes: int,
    ignore_index: int | None = IGNORE_INDEX,
    return_missed: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Counts (truth, prediction) pairs over every valid pixel.

    Args:
        y_true: integer train ids, any shape; ``ignore_index`` marks void pixels.
        y_pred: integer predicted ids, the same shape as ``y_true``.
        num_classes: number of classes C; truth ids must lie in [0, C) or be
            ``ignore_index``.
        ignore_index: truth id left out of the count (None: keep every pixel).
        return_missed: also count predictions outside [0, C) (e.g. 255 where a
            colour output decodes to a void colour). Without it such
            predictions are an error.

    Returns:
        int64 array (C, C): entry [t, p] is the number of pixels of truth t
        predicted as p. With ``return_missed``, ``(confusion, missed)`` where
        ``missed`` int64 (C,) counts, per truth class, the pixels predicted
        outside [0, C): misses of that class, in no class's column (as in the
        official Cityscapes evaluation, where predicting void is a miss).
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"shapes differ: truth {y_true.shape}, prediction {y_pred.shape}")
    truth = y_true.reshape(-1).astype(np.int64)
    pred = y_pred.reshape(-1).astype(np.int64)
    if ignore_index is not None:
        valid = truth != ignore_index
        truth, pred = truth[valid], pred[valid]
    if truth.size and (truth.min() < 0 or truth.max() >= num_classes):
        raise ValueError(f"truth ids must lie in [0, {num_classes}) or be {ignore_index}")
    in_range = (pred >= 0) & (pred < num_classes)
    all_in_range = bool(in_range.all())
    if not all_in_range and not return_missed:
        raise ValueError(f"predictions must lie in [0, {num_classes}); pass return_missed=True to count others")
    if not all_in_range:
        missed = np.bincount(truth[~in_range], minlength=num_classes).astype(np.int64)
        truth, pred = truth[in_range], pred[in_range]
    else:
        missed = np.zeros(num_classes, dtype=np.int64)
    # One bincount over flat (truth, prediction) indices: fast, O(C^2) memory.
    confusion = np.bincount(truth * num_classes + pred, minlength=num_classes * num_classes)
    confusion = confusion.reshape(num_classes, num_classes).astype(np.int64)
    return (confusion, missed) if return_missed else confusion


class ConfusionMatrix:
    """Accumulates a confusion matrix over batches in bounded memory.

    Predictions outside [0, C) (a void colour decoded from a colour output)
    are kept apart in ``missed`` and count as misses of their truth class.

    Args:
        num_classes: number of classes C.
        ignore_index: truth id left out of the count.
        class_names: C names for ``result``'s per-class scores (a model's
            ``info.class_table().names``); None: as ``scores`` names them.

    Example:
        >>> cm = ConfusionMatrix(3)
        >>> cm.update(np.array([0, 1, 2]), np.array([0, 1, 1]))
        >>> round(cm.result()["pixel_accuracy"], 3)
        0.667
    """

    def __init__(
        self, num_classes: int, ignore_index: int | None = IGNORE_INDEX, class_names: Sequence[str] | None = None
    ):
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        if class_names is not None and len(class_names) != self.num_classes:
            raise ValueError(f"{len(class_names)} class names for {self.num_classes} classes")
        self.class_names = None if class_names is None else tuple(class_names)
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        self.missed = np.zeros(self.num_classes, dtype=np.int64)

    def update(self, y_true: np.ndarray, y_pred: np.ndarray) -> None:
        """Adds the pixels of one batch (any shape, truth and prediction alike)."""
        confusion, missed = confusion_matrix(y_true, y_pred, self.num_classes, self.ignore_index, return_missed=True)
        self.matrix += confusion
        self.missed += missed

    def reset(self) -> None:
        """Sets every count back to zero."""
        self.matrix[:] = 0
        self.missed[:] = 0

    def result(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """Returns ``scores(self.matrix, class_names, missed=self.missed)``; names default to its own."""
        return scores(self.matrix, self.class_names if class_names is None else class_names, missed=self.missed)


def default_class_names(num_classes: int) -> tuple[str, ...]:
    """Names for C classes whose table is not given: the Cityscapes names for 19, else "0", "1", ..."""
    if num_classes == NUM_CLASSES:
        return tuple(spec.name for spec in CLASSES)
    return tuple(str(index) for index in range(num_classes))


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Element-wise ratio, NaN where the denominator is 0."""
    out = np.full(numerator.shape, np.nan, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _nanmean(values: np.ndarray) -> float:
    """Mean over the non-NaN entries; NaN when there are none (no warning)."""
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


def scores(
    confusion: np.ndarray, class_names: Sequence[str] | None = None, missed: np.ndarray | None = None
) -> dict[str, Any]:
    """Computes the standard segmentation scores from a confusion matrix.

    With ``TP = diag``, ``FP = column sum - TP``, ``FN = row sum - TP``:
    IoU_c = TP / (TP + FP + FN); accuracy_c = TP / row sum; pixel accuracy =
    sum TP / sum; frequency-weighted IoU = sum_c (row sum_c / total) IoU_c.

    Args:
        confusion: (C, C) counts, rows = truth, columns = prediction.
        class_names: C names for the per-class dicts (the class table's);
            default the Cityscapes names when C is 19, else "0", "1", ...
        missed: optional (C,) counts of truth pixels predicted outside the C
            classes (see ``confusion_matrix``); they add to each class's
            false negatives and to the total, never to a true positive.

    Returns:
        dict with ``mean_iou``, ``pixel_accuracy``, ``mean_class_accuracy``,
        ``frequency_weighted_iou`` (floats, NaN when nothing was counted),
        ``per_class_iou`` and ``per_class_accuracy`` (name -> float or NaN;
        see the module docstring for when a class is NaN).
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"confusion must be square (C, C), got {confusion.shape}")
    num_classes = confusion.shape[0]
    if class_names is None:
        class_names = default_class_names(num_classes)
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for {num_classes} classes")

    missed = np.zeros(num_classes) if missed is None else np.asarray(missed, np.float64)
    if missed.shape != (num_classes,):
        raise ValueError(f"missed must have shape ({num_classes},), got {missed.shape}")

    true_positive = np.diag(confusion)
    truth_total = confusion.sum(axis=1) + missed
    pred_total = confusion.sum(axis=0)
    union = truth_total + pred_total - true_positive
    total = truth_total.sum()

    iou = _divide(true_positive, union)  # NaN: class neither present nor predicted
    accuracy = _divide(true_positive, truth_total)  # NaN: class absent from the truth
    # Classes absent from the truth have weight 0, so NaN IoUs never enter.
    fw_iou = float(np.sum((truth_total / total) * np.nan_to_num(iou))) if total > 0 else math.nan
    return {
        "mean_iou": _nanmean(iou),
        "pixel_accuracy": float(true_positive.sum() / total) if total > 0 else math.nan,
        "mean_class_accuracy": _nanmean(accuracy),
        "frequency_weighted_iou": fw_iou,
        "per_class_iou": {name: float(v) for name, v in zip(class_names, iou)},
        "per_class_accuracy": {name: float(v) for name, v in zip(class_names, accuracy)},
    }


def to_jsonable(value: Any) -> Any:
    """Replaces NaN/inf floats by None (JSON null) and NumPy scalars by Python ones.

    Args:
        value: a float, dict, list or tuple nesting them (e.g. ``scores(...)``).

    Returns:
        The same structure, safe for ``json.dump(..., allow_nan=False)``.
    """
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
