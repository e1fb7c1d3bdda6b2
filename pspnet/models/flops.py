"""Forward FLOPs of a functional Keras model, counted layer by layer from its shapes.

Counting rules (one multiply-add = 2 FLOPs; shapes are those of one image):

==========================================  ============================================
layer                                       FLOPs
==========================================  ============================================
Conv2D (any dilation, groups)               2 * Hout*Wout*Cout * kh*kw*Cin/groups
                                            (+ Hout*Wout*Cout for the bias)
DepthwiseConv2D, SeparableConv2D,           the same rule for each of their kernels
Conv2DTranspose, Dense
BatchNormalization, LayerNormalization,     2 per output element (scale and shift)
InputNormalization
Activation, ReLU, LeakyReLU, ELU, PReLU,    1 per output element ("linear": 0)
Softmax
Add, Subtract, Multiply, Average,           (inputs - 1) per output element
Maximum, Minimum
MaxPooling2D, AveragePooling2D              pool_h * pool_w per output element
GlobalAverage/MaxPooling2D,                 1 per input element
AdaptiveAveragePooling2D
ResizeToMatch, UpSampling2D / Resizing      7 per output element (4 multiplies, 3 adds)
(bilinear)                                  ("nearest", or ResizeToMatch to its own size: 0)
Dropout, Concatenate, Reshape, Flatten,     0 (data movement only)
ZeroPadding2D, Cropping2D, InputLayer
==========================================  ============================================

Other layer types count 0, with a ``PspnetWarning`` naming them. Convolutions
dominate every model of this package, so the elementwise conventions move the
totals by a few percent at most.

Example:
    >>> seed = build_pspnet("seed", head="rgb", input_shape=(None, None, 3))
    >>> count_flops(seed, input_size=(256, 256)) / 1e9
    85.302149184
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import keras
from keras import layers

from pspnet.errors import ConfigError, PspnetWarning
from pspnet.models.layers import AdaptiveAveragePooling2D, InputNormalization, ResizeToMatch

__all__ = ["count_flops", "layer_flops"]

_FREE = (
    layers.InputLayer,
    layers.Dropout,
    layers.Concatenate,
    layers.Reshape,
    layers.Flatten,
    layers.ZeroPadding2D,
    layers.Cropping2D,
    layers.Permute,
    layers.Identity,
    layers.SpatialDropout2D,
    layers.GaussianNoise,
)
_NORMALIZATIONS = (layers.BatchNormalization, layers.LayerNormalization, layers.GroupNormalization, InputNormalization)
_ACTIVATIONS = (layers.ReLU, layers.LeakyReLU, layers.ELU, layers.PReLU, layers.Softmax)
_MERGES = (layers.Add, layers.Subtract, layers.Multiply, layers.Average, layers.Maximum, layers.Minimum)
_WINDOW_POOLS = (layers.MaxPooling2D, layers.AveragePooling2D)
_GLOBAL_POOLS = tuple(
    pool
    for pool in (
        layers.GlobalAveragePooling2D,
        layers.GlobalMaxPooling2D,
        getattr(layers, "AdaptiveAveragePooling2D", None),  # Keras's own, from Keras 3.13
        AdaptiveAveragePooling2D,
    )
    if pool is not None
)
_BILINEAR_FLOPS = 7  # per output element: 4 multiplies and 3 adds


def layer_flops(model: keras.Model, input_size: Sequence[int] | None = None) -> dict[str, int]:
    """Forward FLOPs of each layer of a functional model for one image.

    Args:
        model: a functional ``keras.Model`` with one image input (B, H, W, C).
        input_size: (height, width) to count at; ``None`` uses the model's own
            input size, which must then be known.

    Returns:
        Layer name -> FLOPs, in the model's layer order.

    Raises:
        ConfigError: the size is unknown or the model has several inputs.
    """
    if len(model.inputs) != 1:
        raise ConfigError(f"model {model.name!r} has {len(model.inputs)} inputs; expected one image input")
    shape = tuple(model.inputs[0].shape)
    if input_size is not None:
        height, width = (int(v) for v in input_size)
        if (height, width) != tuple(shape[1:3]):
            # Rebuild the graph at this size (same layer configs, fresh weights).
            input_name = next(layer.name for layer in model.layers if isinstance(layer, layers.InputLayer))
            new_input = keras.Input(shape=(height, width, *shape[3:]), name=input_name)
            model = keras.models.clone_model(model, input_tensors=new_input)
    elif None in shape[1:]:
        raise ConfigError(f"model {model.name!r} has input shape {shape}; pass input_size=(height, width)")

    counts = {}
    unknown = set()
    for layer in model.layers:
        inputs = layer.input if isinstance(layer.input, (list, tuple)) else [layer.input]
        outputs = layer.output if isinstance(layer.output, (list, tuple)) else [layer.output]
        input_shapes = [_one_image(t.shape) for t in inputs]
        output_shapes = [_one_image(t.shape) for t in outputs]
        flops = _flops(layer, input_shapes, output_shapes)
        if flops is None:
            unknown.add(type(layer).__name__)
            flops = 0
        counts[layer.name] = int(flops)
    if unknown:
        warnings.warn(f"FLOPs of layer types {', '.join(sorted(unknown))} are not counted", PspnetWarning, stacklevel=2)
    return counts


def count_flops(model: keras.Model, input_size: Sequence[int] | None = None) -> int:
    """Total forward FLOPs of a functional model for one image (see ``layer_flops``)."""
    return sum(layer_flops(model, input_size).values())


def _one_image(shape) -> tuple[int, ...]:
    """A tensor shape with batch size 1; other sizes must be known."""
    shape = (1, *shape[1:])
    if None in shape:
        raise ConfigError(f"cannot count FLOPs with an unknown size in shape {shape}")
    return shape


def _size(shape: Sequence[int]) -> int:
    return math.prod(shape)


def _flops(layer, input_shapes, output_shapes) -> int | None:
    """FLOPs of one layer call, or None for a layer type without a rule."""
    out = _size(output_shapes[0])
    if isinstance(layer, _FREE):
        return 0
    if isinstance(layer, layers.SeparableConv2D):
        kh, kw, cin, multiplier = layer.depthwise_kernel.shape
        positions = _size(output_shapes[0][:3])
        depthwise = 2 * positions * kh * kw * cin * multiplier
        pointwise = 2 * positions * cin * multiplier * output_shapes[0][-1]
        return depthwise + pointwise + (out if layer.use_bias else 0)
    if isinstance(layer, layers.DepthwiseConv2D):
        kh, kw, _, _ = layer.kernel.shape
        return 2 * out * kh * kw + (out if layer.use_bias else 0)
    if isinstance(layer, layers.Conv2DTranspose):
        kh, kw, cout, cin = layer.kernel.shape
        positions = _size(input_shapes[0][:3])
        return 2 * positions * kh * kw * cin * cout + (out if layer.use_bias else 0)
    if isinstance(layer, layers.Conv2D):
        # kernel (kh, kw, Cin / groups, Cout): dilation changes only the output size.
        kh, kw, cin_per_group, _ = layer.kernel.shape
        return 2 * out * kh * kw * cin_per_group + (out if layer.use_bias else 0)
    if isinstance(layer, layers.Dense):
        units_in, _ = layer.kernel.shape
        return 2 * out * units_in + (out if layer.use_bias else 0)
    if isinstance(layer, _NORMALIZATIONS):
        return 2 * out
    if isinstance(layer, layers.Activation):
        name = getattr(layer.activation, "__name__", "")
        return 0 if name == "linear" else out
    if isinstance(layer, _ACTIVATIONS):
        return out
    if isinstance(layer, _MERGES):
        return (len(input_shapes) - 1) * out
    if isinstance(layer, _WINDOW_POOLS):
        return out * math.prod(layer.pool_size)
    if isinstance(layer, _GLOBAL_POOLS):
        return _size(input_shapes[0])
    if isinstance(layer, ResizeToMatch):
        # Sizes that already match return the input itself (ResizeToMatch.call).
        same = tuple(input_shapes[0][1:3]) == tuple(output_shapes[0][1:3])
        return 0 if same else _BILINEAR_FLOPS * out
    if isinstance(layer, (layers.UpSampling2D, layers.Resizing)):
        return 0 if layer.interpolation == "nearest" else _BILINEAR_FLOPS * out
    return None
