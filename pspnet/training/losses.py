"""The losses training compiles with, and the per-class weights of the weighted one.

The class count C comes from the caller (the class table of the data a model
trains on); targets are train ids 0 to C-1 with 255 for ignored pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from pspnet.checks import check_choice
from pspnet.data.classes import CITYSCAPES
from pspnet.palette import IGNORE_INDEX
from pspnet.training.config import CLASS_WEIGHTINGS

# mmsegmentation's OHEMPixelSampler: a pixel is hard while its true class has a
# probability under 0.7; its min_kept of 100,000 pixels of a batch of two
# 512x1024 crops is about a tenth of them.
OHEM_THRESHOLD = 0.7
OHEM_MIN_KEPT = 0.1


@keras.saving.register_keras_serializable(package="pspnet")
class WeightedSparseCrossentropy(keras.losses.Loss):
    """Sparse cross-entropy from logits with per-class weights and an ignored id.

    The batch loss is ``sum(w[y] * ce) / sum(w[y])`` over the pixels whose
    truth is not ``ignore_class``, so with all weights 1 it equals Keras's
    ``SparseCategoricalCrossentropy(from_logits=True, ignore_class=...)``.

    With ``ohem_threshold`` it is online hard example mining (mmsegmentation's
    ``OHEMPixelSampler``): the sum runs over the pixels whose true class has a
    probability below the threshold, and over at least the ``ohem_min_kept``
    share of the batch's pixels with the lowest, so the easy road and sky
    pixels stop drowning the few of poles and signs.

    Args:
        class_weights: C per-class weights.
        ignore_class: truth id left out of the loss.
        ohem_threshold: probability below which a pixel counts as hard, or None (all pixels).
        ohem_min_kept: share of the batch's pixels kept at the least (the hardest).
    """

    def __init__(
        self,
        class_weights: Sequence[float],
        ignore_class: int = IGNORE_INDEX,
        ohem_threshold: float | None = None,
        ohem_min_kept: float = OHEM_MIN_KEPT,
        name: str = "weighted_sparse_crossentropy",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.class_weights = [float(w) for w in class_weights]
        self.ignore_class = int(ignore_class)
        self.ohem_threshold = None if ohem_threshold is None else float(ohem_threshold)
        self.ohem_min_kept = float(ohem_min_kept)

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "int32")
        valid = ops.not_equal(y_true, self.ignore_class)
        safe_true = ops.where(valid, y_true, 0)
        entropy = ops.sparse_categorical_crossentropy(safe_true, y_pred, from_logits=True)  # (B, H, W)
        weight_table = ops.convert_to_tensor(self.class_weights, dtype=entropy.dtype)
        weights = ops.take(weight_table, safe_true) * ops.cast(valid, entropy.dtype)
        if self.ohem_threshold is not None:
            weights = weights * ops.cast(self._hard(entropy, valid), entropy.dtype)
        # The default reduction divides by the pixel count: rescale so that it
        # yields the weighted mean over the valid pixels instead.
        count = ops.cast(ops.size(entropy), entropy.dtype)
        return entropy * weights * (count / ops.maximum(ops.sum(weights), 1e-6))

    def _hard(self, entropy, valid):
        """The pixels OHEM keeps: true-class probability under the threshold, or among the hardest share."""
        flat = ops.reshape(ops.where(valid, entropy, -1.0), (-1,))  # ignored pixels: never among the hardest
        if flat.shape[0] is not None:  # static (JAX and PyTorch always; TensorFlow for fixed-size batches)
            kept = max(1, int(self.ohem_min_kept * flat.shape[0]))
        else:  # TensorFlow takes a tensor k
            kept = ops.maximum(ops.cast(self.ohem_min_kept * ops.cast(ops.size(flat), "float32"), "int32"), 1)
        kth_hardest = ops.top_k(flat, kept, sorted=False)[0]
        bound = ops.minimum(ops.min(kth_hardest), -math.log(self.ohem_threshold))
        return ops.logical_and(valid, entropy >= bound)

    def get_config(self):
        return {
            **super().get_config(),
            "class_weights": self.class_weights,
            "ignore_class": self.ignore_class,
            "ohem_threshold": self.ohem_threshold,
            "ohem_min_kept": self.ohem_min_kept,
        }


def class_weights(train_ids, method: str, num_classes: int = CITYSCAPES.num_classes) -> np.ndarray:
    """Per-class loss weights from the pixel counts of the training targets.

    Args:
        train_ids: uint8 train ids (N, H, W), 255 = ignore; a memmap, or any
            sequence of (H, W) maps (the lazily decoded labels of a split).
        method: "none", "inverse_sqrt_freq" or "median_freq".
        num_classes: number of classes C (the model's class table's).

    Returns:
        float32 (C,) weights (see ``class_weights_from_counts``).
    """
    check_choice("class_weighting", method, CLASS_WEIGHTINGS)
    if method == "none":
        return np.ones(num_classes, np.float32)
    counts = np.zeros(256, np.int64)
    if isinstance(train_ids, np.ndarray):
        for start in range(0, len(train_ids), 64):  # bounded memory on a memmap
            counts += np.bincount(np.asarray(train_ids[start : start + 64]).ravel(), minlength=256)
    else:
        for index in range(len(train_ids)):  # one map at a time: images of any size
            counts += np.bincount(np.asarray(train_ids[index], np.uint8).ravel(), minlength=256)
    return class_weights_from_counts(counts[:num_classes], method)


def class_weights_from_counts(counts, method: str) -> np.ndarray:
    """Per-class loss weights from per-class pixel counts (ignored pixels not among them).

    ``inverse_sqrt_freq``: w_c = 1 / sqrt(f_c); ``median_freq`` (SegNet):
    w_c = median(f) / f_c. Both are scaled so that the pixel-weighted mean
    weight is 1 (the loss keeps its scale). Classes absent from the targets
    get weight 1 (they never occur, so it does not matter).

    Args:
        counts: (C,) pixel counts, one per class (e.g. a split summary's).
        method: "none", "inverse_sqrt_freq" or "median_freq".

    Returns:
        float32 (C,) weights.
    """
    check_choice("class_weighting", method, CLASS_WEIGHTINGS)
    counts = np.asarray(counts, dtype=np.float64).reshape(-1)
    num_classes = len(counts)
    present = counts > 0
    if method == "none" or not present.any():
        return np.ones(num_classes, np.float32)
    frequency = counts / counts.sum()
    weights = np.ones(num_classes)
    if method == "inverse_sqrt_freq":
        weights[present] = 1.0 / np.sqrt(frequency[present])
    else:
        weights[present] = np.median(frequency[present]) / frequency[present]
    weights[present] /= np.sum(frequency[present] * weights[present])
    return weights.astype(np.float32)
