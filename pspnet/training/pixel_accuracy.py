"""``PixelAccuracy``, the Keras metric training compiles with.

Registered, so saved models load after ``import pspnet`` (``pspnet.registry``).
"""

from __future__ import annotations

import keras
from keras import ops

from pspnet.palette import IGNORE_INDEX


@keras.saving.register_keras_serializable(package="pspnet")
class PixelAccuracy(keras.metrics.Metric):
    """Share of pixels whose arg-max class equals the truth, ignoring one id.

    Unlike ``keras.metrics.SparseCategoricalAccuracy``, pixels whose truth is
    ``ignore_class`` count neither as right nor as wrong.

    Args:
        ignore_class: truth id left out (255, void).
    """

    def __init__(self, ignore_class: int = IGNORE_INDEX, name: str = "pixel_accuracy", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.ignore_class = int(ignore_class)
        self.correct = self.add_variable((), initializer="zeros", name="correct", aggregation="sum")
        self.total = self.add_variable((), initializer="zeros", name="total", aggregation="sum")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(y_true, "int32")
        if len(y_true.shape) == len(y_pred.shape):  # (B, H, W, 1) truth
            y_true = ops.squeeze(y_true, axis=-1)
        predicted = ops.cast(ops.argmax(y_pred, axis=-1), "int32")
        valid = ops.not_equal(y_true, self.ignore_class)
        right = ops.logical_and(valid, ops.equal(predicted, y_true))
        self.correct.assign_add(ops.sum(ops.cast(right, self.dtype)))
        self.total.assign_add(ops.sum(ops.cast(valid, self.dtype)))

    def result(self):
        return ops.divide_no_nan(self.correct, self.total)

    def reset_state(self):
        self.correct.assign(0.0)
        self.total.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "ignore_class": self.ignore_class}
