"""Registered Keras layers that the PSPNet builders need and Keras lacks.

Every layer here works with unknown spatial sizes (``input_shape=(None, None, 3)``)
on the TensorFlow, JAX and PyTorch backends, uses only ``keras.ops``, stores all
its constructor arguments in ``get_config`` and is registered under the
``pspnet`` package, so a saved ``.keras`` model loads in safe mode after
``import pspnet`` without ``custom_objects``.

Unknown sizes are the hard part: ``keras.ops.image.resize`` needs Python ints
for its target size (under TensorFlow graph tracing a ``None`` height is a
tensor), and ``keras.layers.AdaptiveAveragePooling2D`` needs static input sizes.
Both operations are linear along each spatial axis, so with unknown sizes they
are written as two small matrix products, ``out = A_h @ x @ A_w^T``, whose
matrices are built from ``keras.ops.arange`` of the (possibly dynamic) sizes.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import keras
from keras import ops

from pspnet.checks import parse_size
from pspnet.errors import ConfigError

__all__ = [
    "AdaptiveAveragePooling2D",
    "InputNormalization",
    "ResizeToMatch",
    "adaptive_pooling_matrix",
    "bilinear_resize_matrix",
]


def _floats(value, argument: str) -> list[float]:
    """Turns one number or a sequence of numbers into a non-empty list of floats."""
    values = [value] if isinstance(value, numbers.Real) else value
    try:
        values = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ConfigError(f"{argument} must be a number or a sequence of numbers, got {value!r}") from None
    if not values:
        raise ConfigError(f"{argument} must not be empty")
    return values


def bilinear_resize_matrix(in_size, out_size, dtype="float32"):
    """Matrix that resizes one axis bilinearly, like ``keras.ops.image.resize``.

    Half-pixel centres without antialiasing (TensorFlow 2's ``tf.image.resize``
    and ``jax.image.resize`` conventions): output pixel ``i`` samples the input at
    ``(i + 0.5) * in_size / out_size - 0.5``, clamped to the first and last pixel.

    Args:
        in_size: input length, a Python int or a scalar int tensor.
        out_size: output length, a Python int or a scalar int tensor.
        dtype: float dtype of the matrix.

    Returns:
        Tensor (out_size, in_size); ``matrix @ x`` resizes ``x`` along its first axis.
    """
    in_float = ops.cast(in_size, "float32")
    source = (ops.arange(out_size, dtype="float32") + 0.5) * (in_float / ops.cast(out_size, "float32")) - 0.5
    source = ops.minimum(ops.maximum(source, 0.0), in_float - 1.0)
    lower = ops.floor(source)
    fraction = source - lower  # weight of the upper neighbour
    lower = ops.cast(lower, "int32")
    upper = ops.minimum(lower + 1, ops.cast(in_size, "int32") - 1)
    positions = ops.arange(in_size, dtype="int32")[None, :]  # (1, in)
    matrix = (
        ops.cast(ops.equal(lower[:, None], positions), "float32") * (1.0 - fraction)[:, None]
        + ops.cast(ops.equal(upper[:, None], positions), "float32") * fraction[:, None]
    )
    return ops.cast(matrix, dtype)


def adaptive_pooling_matrix(in_size, bins: int, dtype="float32"):
    """Matrix that averages one axis into ``bins`` cells, like PyTorch's adaptive pooling.

    Cell ``i`` is the mean over ``[floor(i * n / bins), ceil((i + 1) * n / bins))``,
    so cells may overlap when ``n`` is not a multiple of ``bins`` and every cell
    holds at least one pixel even when ``n < bins``.

    Args:
        in_size: input length ``n``, a Python int or a scalar int tensor.
        bins: number of output cells.
        dtype: float dtype of the matrix.

    Returns:
        Tensor (bins, in_size); ``matrix @ x`` pools ``x`` along its first axis.
    """
    size = ops.cast(in_size, "int32")
    cells = ops.arange(bins, dtype="int32")
    starts = ops.floor_divide(cells * size, bins)
    ends = ops.floor_divide((cells + 1) * size + bins - 1, bins)
    positions = ops.arange(in_size, dtype="int32")[None, :]  # (1, n)
    inside = ops.logical_and(ops.greater_equal(positions, starts[:, None]), ops.less(positions, ends[:, None]))
    counts = ops.cast(ends - starts, "float32")[:, None]
    return ops.cast(ops.cast(inside, "float32") / counts, dtype)


def _static_ints(*values) -> bool:
    """True when every value is a Python int (a size known while tracing)."""
    return all(isinstance(v, numbers.Integral) for v in values)


@keras.saving.register_keras_serializable(package="pspnet")
class ResizeToMatch(keras.layers.Layer):
    """Resizes ``x`` bilinearly to the height and width of a reference tensor.

    Called on ``[x, reference]`` with channels-last tensors ``x`` (B, h, w, C) and
    ``reference`` (B, H, W, ...); returns (B, H, W, C) in ``x``'s dtype. Only the
    reference's shape is used, so it works when H and W are unknown until run
    time (models built with ``input_shape=(None, None, 3)``). Sampling follows
    ``keras.ops.image.resize(..., interpolation="bilinear")`` (half-pixel centres,
    no antialiasing), which it calls directly whenever the target size is known.

    Example:
        >>> logits = ResizeToMatch(name="upsample")([logits, photos])
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)

    def call(self, inputs):
        x, reference = inputs
        in_shape = ops.shape(x)
        out_shape = ops.shape(reference)
        in_height, in_width = in_shape[1], in_shape[2]
        out_height, out_width = out_shape[1], out_shape[2]
        if _static_ints(in_height, in_width, out_height, out_width):
            if (in_height, in_width) == (out_height, out_width):
                return x
            # In float32 whatever the policy: precise, and Keras < 3.10 cannot resize bfloat16 on TensorFlow.
            resized = ops.image.resize(
                ops.cast(x, "float32"), (out_height, out_width), interpolation="bilinear", data_format="channels_last"
            )
            return ops.cast(resized, self.compute_dtype)
        # Sizes known only at run time (TensorFlow graph with None dims).
        rows = bilinear_resize_matrix(in_height, out_height, self.compute_dtype)  # (H, h)
        cols = bilinear_resize_matrix(in_width, out_width, self.compute_dtype)  # (W, w)
        x = ops.einsum("ih,bhwc->biwc", rows, x)  # (B, H, w, C)
        return ops.einsum("jw,biwc->bijc", cols, x)  # (B, H, W, C)

    def compute_output_shape(self, input_shape):
        x_shape, reference_shape = input_shape
        return (x_shape[0], reference_shape[1], reference_shape[2], x_shape[3])


@keras.saving.register_keras_serializable(package="pspnet")
class AdaptiveAveragePooling2D(keras.layers.Layer):
    """Average-pools a channels-last tensor into ``output_size`` cells of any input size.

    The PSPNet pyramid pooling bins (1, 2, 3, 6): cell (i, j) is the mean of the
    input rows ``[floor(i*H/bins), ceil((i+1)*H/bins))`` and likewise for the
    columns (PyTorch's ``AdaptiveAvgPool2d``). Unlike
    ``keras.layers.AdaptiveAveragePooling2D`` it needs no static input size. The
    means are computed in float32 and returned in the layer's compute dtype.

    Args:
        output_size: bins per side, an int or (height_bins, width_bins).

    Example:
        >>> AdaptiveAveragePooling2D(6)(keras.ops.ones((2, 32, 64, 8))).shape
        (2, 6, 6, 8)
    """

    def __init__(self, output_size: int | Sequence[int], **kwargs):
        super().__init__(**kwargs)
        self.output_size = parse_size(output_size, "output_size")

    def call(self, inputs):
        shape = ops.shape(inputs)
        rows = adaptive_pooling_matrix(shape[1], self.output_size[0])  # (bins_h, H)
        cols = adaptive_pooling_matrix(shape[2], self.output_size[1])  # (bins_w, W)
        x = ops.cast(inputs, "float32")  # float32 sums even under mixed precision
        x = ops.einsum("ih,bhwc->biwc", rows, x)  # (B, bins_h, W, C)
        x = ops.einsum("jw,biwc->bijc", cols, x)  # (B, bins_h, bins_w, C)
        return ops.cast(x, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.output_size, input_shape[3])

    def get_config(self):
        config = super().get_config()
        config.update({"output_size": list(self.output_size)})
        return config


@keras.saving.register_keras_serializable(package="pspnet")
class InputNormalization(keras.layers.Layer):
    """Turns photos in the 0-255 range into a network's input: ``(x - mean) / std``.

    With ``to_bgr=True`` the channels are reversed first (RGB photos to BGR), and
    ``mean``/``std`` are then given in BGR order, as Keras' caffe-style ImageNet
    ResNet50 weights expect (``mean=(103.939, 116.779, 123.68), std=(1, 1, 1)``).
    Mean and std are constants in the config, not weights.

    Args:
        mean: per-channel value subtracted (one float or one per channel).
        std: per-channel divisor (positive; one float or one per channel).
        to_bgr: reverse the channel order before normalising.
    """

    def __init__(
        self, mean: float | Sequence[float] = 0.0, std: float | Sequence[float] = 255.0, to_bgr: bool = False, **kwargs
    ):
        super().__init__(**kwargs)
        self.mean = _floats(mean, "mean")
        self.std = _floats(std, "std")
        if min(self.std) <= 0.0:
            raise ConfigError(f"std must be positive, got {std!r}")
        self.to_bgr = bool(to_bgr)

    def build(self, input_shape):
        channels = input_shape[-1]
        for argument, values in (("mean", self.mean), ("std", self.std)):
            if channels is not None and len(values) not in (1, channels):
                raise ConfigError(f"{argument} has {len(values)} values for {channels} input channels")

    def call(self, inputs):
        x = ops.flip(inputs, axis=-1) if self.to_bgr else inputs
        mean = ops.convert_to_tensor(self.mean, dtype=x.dtype)
        scale = ops.convert_to_tensor([1.0 / v for v in self.std], dtype=x.dtype)
        return (x - mean) * scale

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"mean": list(self.mean), "std": list(self.std), "to_bgr": self.to_bgr})
        return config
