"""The PSPNet builder and its four presets: the seed's network, the paper's, a fast one, a pretrained lite one.

Every preset is a functional ``keras.Model`` built from ``keras.layers`` and the
registered layers of ``pspnet.models.layers`` only, so it runs on TensorFlow, JAX and
PyTorch, saves as ``.keras`` and loads back after ``import pspnet``. Models take
photos in the 0-255 range (RGB, float or uint8 values) and normalise inside.

Presets (``PRESETS``):

- ``"fast"`` (``build_pspnet``'s default; ``pspnet-train``'s is ``"lite"``): the seed's
  dilated residual blocks and four-branch pyramid behind a strided stem, at output
  stride 8 (see ``_build_fast``).
- ``"seed"``: the Kaggle notebook's network, layer for layer (``_build_seed``).
- ``"pspnet50"``: the PSPNet paper's dilated ResNet-50 network (``_build_pspnet50``).
- ``"lite"``: an ImageNet-pretrained EfficientNet-Lite0 with a small pyramid head (``_build_lite``).

Example:
    >>> import pspnet
    >>> model = pspnet.build_pspnet("fast", num_classes=19, input_shape=(None, None, 3))
    >>> logits = model.predict(photos)  # (B, H, W, 19) float32
"""

from __future__ import annotations

import numbers
import os
import random
from typing import Sequence

import keras
from keras import layers

from pspnet.models.backbones import PREFIX as LITE0_PREFIX
from pspnet.models.backbones import lite0_features, load_lite0_weights
from pspnet.models.presets import HEADS, MIN_SIZE, OUTPUT_STRIDES, PRESETS, PRETRAINED
from pspnet.errors import ConfigError, first_line
from pspnet.models.layers import AdaptiveAveragePooling2D, InputNormalization, ResizeToMatch

# Layer-name prefixes of each preset's backbone; the layers after it (pyramid,
# classifiers) are the "head" that the paper's SGD trains at 10x the rate.
BACKBONE_PREFIXES = {
    "fast": ("stem_", "block_"),
    "seed": ("block_",),
    "pspnet50": ("conv1_", "conv2_", "conv3_", "conv4_", "conv5_"),
    "lite": (LITE0_PREFIX,),
}

# The seed's pyramid branches: colour name -> average-pool window at full resolution.
_SEED_POOLS = {"yellow": 2, "blue": 4, "green": 8}

# The "fast" pyramid: colour name -> bins per side (PSPNet's 1, 2, 3, 6).
_FAST_BINS = {"red": 1, "yellow": 2, "blue": 3, "green": 6}

# ImageNet statistics of 0-255 RGB photos (torchvision's, scaled by 255).
_IMAGENET_MEAN_RGB = (123.675, 116.28, 103.53)
_IMAGENET_STD_RGB = (58.395, 57.12, 57.375)

# Keras' ImageNet ResNet50 weights expect caffe-style input: BGR minus the BGR mean.
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

# ResNet-50 stages after the stem: (name, bottleneck filters, blocks, stride, dilation).
# Output stride 8 as in the PSPNet paper: conv4 and conv5 keep the resolution and
# dilate their 3x3 convolutions by 2 and 4 instead of striding.
_RESNET50_STAGES = (
    ("conv2", 64, 3, 1, 1),
    ("conv3", 128, 4, 2, 1),
    ("conv4", 256, 6, 1, 2),
    ("conv5", 512, 3, 1, 4),
)


def build_pspnet(
    preset: str = "fast",
    num_classes: int = 19,
    input_shape: Sequence[int | None] = (256, 256, 3),
    head: str = "classes",
    backbone_weights: str | os.PathLike | None = None,
    aux_head: bool = False,
    dropout: float = 0.1,
    output_stride: int | None = None,
    name: str | None = None,
) -> keras.Model:
    """Builds a PSPNet segmentation model.

    Args:
        preset: one of ``PRESETS``: ``"fast"``, ``"seed"``, ``"pspnet50"`` or ``"lite"``.
        num_classes: number of classes of the ``"classes"`` head.
        input_shape: (height, width, 3); height and width may be ``None``.
        head: ``"classes"`` for per-pixel logits (B, H, W, num_classes), or ``"rgb"``
            for the seed's sigmoid colour image (B, H, W, 3). Both float32, also under
            mixed precision.
        backbone_weights: ``"pspnet50"`` and ``"lite"``: ``None`` (random) or
            ``"imagenet"``; for ``"lite"`` also a Lite0 ``.pth``/``.npz`` file
            (``pspnet.models.backbones``); for ``"pspnet50"`` ``"imagenet"`` is Keras'
            ResNet50 weights, downloaded once into ``~/.keras/models``, or the path of a weights file of
            ``keras.applications.ResNet50(include_top=False)`` (Keras' own
            ``resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5``, or
            ``save_weights`` output).
        aux_head: ``"pspnet50"`` only: also return the auxiliary FCN head on conv4;
            the outputs are then a dict ``{"main": ..., "aux": ...}``.
        dropout: dropout rate before the classifier (``"fast"``, ``"pspnet50"``; the
            seed has none).
        output_stride: input size / feature size: ``"fast"`` 8 (default) or 4;
            ``"lite"`` 16 (default), 8 or 32.
        name: model name; defaults to ``"pspnet_<preset>"``.

    Returns:
        A functional ``keras.Model`` taking photos (B, H, W, 3) in 0-255.

    Raises:
        ConfigError: an invalid preset, head, size, class count or option.
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if head not in HEADS:
        raise ConfigError(f"unknown head {head!r}; choose one of {', '.join(HEADS)}")
    if (
        not isinstance(num_classes, numbers.Integral)
        or isinstance(num_classes, bool)
        or num_classes < 1
    ):
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
    input_shape = _check_input_shape(input_shape, MIN_SIZE[preset], preset)
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0 <= dropout < 1:
        raise ConfigError(f"dropout must be a rate in [0, 1), got {dropout!r}")
    if preset not in PRETRAINED and backbone_weights is not None:
        raise ConfigError(f"backbone_weights is for the {' and '.join(PRETRAINED)} presets only, not {preset!r}")
    if preset != "pspnet50" and aux_head:
        raise ConfigError(f"aux_head is for the pspnet50 preset only, not {preset!r}")
    if output_stride is not None and preset not in OUTPUT_STRIDES:
        raise ConfigError(f"output_stride is for the {' and '.join(OUTPUT_STRIDES)} presets only, not {preset!r}")
    if preset in OUTPUT_STRIDES:
        output_stride = OUTPUT_STRIDES[preset][0] if output_stride is None else output_stride
        if output_stride not in OUTPUT_STRIDES[preset]:
            choices = " or ".join(map(str, sorted(OUTPUT_STRIDES[preset])))
            raise ConfigError(f"output_stride must be {choices} for the {preset} preset, got {output_stride!r}")

    # Load the ResNet-50 weights first: a bad path fails before the slow build.
    source = None if backbone_weights is None or preset != "pspnet50" else _load_resnet50(backbone_weights)

    channels = num_classes if head == "classes" else 3
    inputs = keras.Input(shape=input_shape, name="input")
    if preset == "seed":
        outputs = _build_seed(inputs, channels, head)
    elif preset == "fast":
        outputs = _build_fast(inputs, channels, head, float(dropout), output_stride)
    elif preset == "lite":
        outputs = _build_lite(inputs, channels, head, float(dropout), output_stride)
    else:
        outputs = _build_pspnet50(inputs, channels, head, float(dropout), aux_head)
    model = keras.Model(inputs, outputs, name=name or f"pspnet_{preset}")
    if source is not None:
        copy_backbone_weights(source, model)
    if preset == "lite" and backbone_weights is not None:
        load_lite0_weights(model, backbone_weights)
    return model


def _check_input_shape(input_shape, min_size: int, preset: str) -> tuple:
    """Validates (height, width, 3) with None or int >= min_size sizes."""
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise ConfigError(f"input_shape must be (height, width, 3), got {input_shape!r}") from None
    if len(shape) != 3 or shape[2] != 3:
        raise ConfigError(f"input_shape must be (height, width, 3) for RGB photos, got {shape!r}")
    for size in shape[:2]:
        if size is None:
            continue
        if not isinstance(size, numbers.Integral) or isinstance(size, bool) or size < min_size:
            raise ConfigError(
                f"input_shape {shape!r}: height and width must be None or integers "
                f">= {min_size} for the {preset} preset"
            )
    return tuple(None if s is None else int(s) for s in shape)


def _output(x, reference, head: str, name: str):
    """Upsamples logits to the input size and applies the head, in float32.

    The last layers run in float32 so that mixed-precision models return float32.
    """
    if head == "classes":
        return ResizeToMatch(dtype="float32", name=name)([x, reference])
    x = ResizeToMatch(dtype="float32", name=f"{name}_upsampling")([x, reference])
    return layers.Activation("sigmoid", dtype="float32", name=name)(x)


# --- "seed": the Kaggle notebook's network ------------------------------------


def _seed_block(x, filters: Sequence[int], block: str):
    """The notebook's ``conv_block``: a dilated bottleneck with a 3x3 conv shortcut.

    1x1 conv, 3x3 conv with dilation 2, 1x1 conv (he_normal, BN, LeakyReLU 0.2
    after the first two), plus a 3x3 conv + BN on the shortcut, added, ReLU.
    Layer names are the notebook's (``block_1_a`` ... ``block_1_relu``).
    """
    prefix = f"block_{block}_"
    filters_a, filters_b, filters_c = filters
    shortcut = x
    x = layers.Conv2D(
        filters_a, 1, padding="same", kernel_initializer="he_normal", name=prefix + "a"
    )(x)
    x = layers.BatchNormalization(name=prefix + "batch_norm_a")(x)
    x = layers.LeakyReLU(negative_slope=0.2, name=prefix + "leakyrelu_a")(x)
    x = layers.Conv2D(
        filters_b,
        3,
        dilation_rate=2,
        padding="same",
        kernel_initializer="he_normal",
        name=prefix + "b",
    )(x)
    x = layers.BatchNormalization(name=prefix + "batch_norm_b")(x)
    x = layers.LeakyReLU(negative_slope=0.2, name=prefix + "leakyrelu_b")(x)
    x = layers.Conv2D(
        filters_c, 1, padding="same", kernel_initializer="he_normal", name=prefix + "c"
    )(x)
    x = layers.BatchNormalization(name=prefix + "batch_norm_c")(x)
    # The notebook leaves the shortcut conv at Keras' default (glorot_uniform) init.
    shortcut = layers.Conv2D(filters_c, 3, padding="same", name=prefix + "skip_conv")(shortcut)
    shortcut = layers.BatchNormalization(name=prefix + "batch_norm_skip_conv")(shortcut)
    x = layers.Add(name=prefix + "add")([x, shortcut])
    return layers.ReLU(name=prefix + "relu")(x)


def _seed_blocks(x):
    """The notebook's ``base_feature_maps``: three blocks, 64 -> 128 -> 256 channels."""
    x = _seed_block(x, (32, 32, 64), "1")
    x = _seed_block(x, (64, 64, 128), "2")
    return _seed_block(x, (128, 128, 256), "3")


def _build_seed(inputs, channels: int, head: str):
    """The seed notebook's network (``last_conv_module`` of the Kaggle notebook).

    Source: /work/shared/seeds/000_eaac23c80bab31b2.txt, functions ``conv_block``,
    ``base_feature_maps``, ``pyramid_feature_maps`` and ``last_conv_module``. Same
    layers, names, filters and initialisers, at full resolution throughout; with
    ``head="rgb"`` at 256x256 it has the notebook's 713,839 parameters. Differences,
    all without weights:

    - Input: the notebook min-max normalised each photo to [0, 1]; this model takes
      0-255 photos and divides by 255 (layer ``normalization``).
    - Red branch: the notebook upsampled the global pool with
      ``UpSampling2D(size=256)``, which only fits 256x256 inputs; here
      ``red_upsampling`` resizes to the base features' size, whatever it is.
    - Yellow/blue/green branches: ``AveragePooling2D(2/4/8)`` then
      ``UpSampling2D(2/4/8, bilinear)`` as in the notebook when both sizes are
      known multiples of 8; otherwise (``None`` sizes, other sizes) the upsampling
      is a bilinear resize to the base features' size, so any size >= 8 works.
    - Output: no ``Flatten``; ``head="rgb"`` returns the sigmoid image (B, H, W, 3),
      ``head="classes"`` gives the last conv ``num_classes`` filters and returns its
      batch-normalised output as logits (layer ``logits``).
    """
    height, width = inputs.shape[1], inputs.shape[2]
    fixed_upsampling = all(size is not None and size % 8 == 0 for size in (height, width))
    x = InputNormalization(mean=0.0, std=255.0, name="normalization")(inputs)
    base = _seed_blocks(x)  # (B, H, W, 256)

    red = layers.GlobalAveragePooling2D(name="red_pool")(base)
    red = layers.Reshape((1, 1, 256), name="red_reshape")(red)
    red = layers.Conv2D(64, 1, name="red_1_by_1")(red)
    red = ResizeToMatch(name="red_upsampling")([red, base])
    branches = [red]
    for colour, pool in _SEED_POOLS.items():
        y = layers.AveragePooling2D(pool_size=pool, name=f"{colour}_pool")(base)
        y = layers.Conv2D(64, 1, name=f"{colour}_1_by_1")(y)
        if fixed_upsampling:
            y = layers.UpSampling2D(
                size=pool, interpolation="bilinear", name=f"{colour}_upsampling"
            )(y)
        else:
            y = ResizeToMatch(name=f"{colour}_upsampling")([y, base])
        branches.append(y)
    x = layers.Concatenate(name="pyramid_concat")([base, *branches])  # (B, H, W, 512)

    x = layers.Conv2D(channels, 3, padding="same", name="last_conv_3_by_3")(x)
    x = layers.BatchNormalization(name="last_conv_3_by_3_batch_norm")(x)
    if head == "rgb":
        return layers.Activation("sigmoid", dtype="float32", name="last_conv_relu")(x)
    return layers.Activation("linear", dtype="float32", name="logits")(x)


# --- "fast": the seed's blocks behind a strided stem ----------------------------


def _conv_bn_relu(x, filters: int, kernel_size: int, name: str, strides: int = 1):
    """Conv (no bias, he_normal) + BN + ReLU, named ``<name>_conv/_bn/_relu``."""
    x = layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=f"{name}_conv",
    )(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _build_fast(inputs, channels: int, head: str, dropout: float, output_stride: int):
    """The default preset: the seed's network made cheap by a strided stem.

    Source: the seed notebook's ``conv_block`` residual blocks (32-32-64, 64-64-128,
    128-128-256, dilation 2) and four-branch red/yellow/blue/green pyramid (pool,
    1x1 conv to 64, bilinear upsampling, concatenation), run at 1/8 of the input
    resolution behind a stem of strided 3x3 conv-BN-ReLU layers (32 channels at
    1/2, 64 at 1/4, 64 at 1/8; ``output_stride=4`` drops the last one). The pyramid
    pools to PSPNet's bins 1, 2, 3 and 6 per side (adaptive pooling) instead of the
    seed's fixed 2/4/8-pixel windows, so it sees the same image fractions at every
    input size. The head follows PSPNet: 3x3 conv to 128 + BN + ReLU, dropout, 1x1
    classifier, bilinear upsampling to the input. Photos are normalised with the
    ImageNet mean and standard deviation.

    At 256x256 this costs about 3 GFLOPs per image forward, against 85 for the
    seed; docs/BENCHMARKS.md has the measured speeds.
    """
    x = InputNormalization(
        mean=_IMAGENET_MEAN_RGB, std=_IMAGENET_STD_RGB, name="normalization"
    )(inputs)
    x = _conv_bn_relu(x, 32, 3, "stem_1", strides=2)  # (B, H/2, W/2, 32)
    x = _conv_bn_relu(x, 64, 3, "stem_2", strides=2)  # (B, H/4, W/4, 64)
    if output_stride == 8:
        x = _conv_bn_relu(x, 64, 3, "stem_3", strides=2)  # (B, H/8, W/8, 64)
    base = _seed_blocks(x)  # (B, H/8, W/8, 256) at output stride 8

    branches = []
    for colour, bins in _FAST_BINS.items():
        y = AdaptiveAveragePooling2D(bins, name=f"{colour}_pool")(base)  # (B, bins, bins, 256)
        y = layers.Conv2D(64, 1, name=f"{colour}_1_by_1")(y)
        branches.append(ResizeToMatch(name=f"{colour}_upsampling")([y, base]))
    x = layers.Concatenate(name="pyramid_concat")([base, *branches])  # (B, H/8, W/8, 512)

    x = _fcn_head(x, 128, channels, dropout, "head")
    return _output(x, inputs, head, "logits" if head == "classes" else "rgb")


# --- "lite": an ImageNet-pretrained EfficientNet-Lite0 and a small pyramid -------


def _build_lite(inputs, channels: int, head: str, dropout: float, output_stride: int):
    """EfficientNet-Lite0 (``pspnet.models.backbones``) at output stride 16 with a small pyramid head.

    The backbone's last block (320 channels) at 1/16 of the input (its last
    stride-2 stage dilated instead of strided; 8 and 32 on request), PSPNet's
    pyramid of bins 1, 2, 3 and 6 reduced to 96 channels each (conv-BN-ReLU),
    concatenated with the features, then a 3x3 conv of 128 + BN + ReLU,
    dropout, a 1x1 classifier and bilinear upsampling to the input. Built to
    start from ImageNet weights (``backbone_weights="imagenet"``), which make
    the difference when training is short.
    """
    features = lite0_features(inputs, output_stride)["last"]  # (B, H/16, W/16, 320)
    x = pyramid_pooling_module(features, (1, 2, 3, 6), 96, name="ppm")  # (B, H/16, W/16, 704)
    x = _fcn_head(x, 128, channels, dropout, "head")
    return _output(x, inputs, head, "logits" if head == "classes" else "rgb")


# --- "pspnet50": the paper's network --------------------------------------------


def _bottleneck(x, filters: int, stride: int, dilation: int, shortcut_conv: bool, name: str):
    """A ResNet-50 v1 bottleneck with ``keras.applications.ResNet50``'s layer names.

    As Keras' ``residual_block_v1``: the stride sits on the first 1x1 conv and on
    the 1x1 shortcut conv; the 3x3 conv may be dilated (same weight shapes).
    """
    bn = dict(epsilon=1.001e-5)
    conv = dict(kernel_initializer="he_normal")
    if shortcut_conv:
        shortcut = layers.Conv2D(4 * filters, 1, strides=stride, name=f"{name}_0_conv", **conv)(x)
        shortcut = layers.BatchNormalization(name=f"{name}_0_bn", **bn)(shortcut)
    else:
        shortcut = x
    x = layers.Conv2D(filters, 1, strides=stride, name=f"{name}_1_conv", **conv)(x)
    x = layers.BatchNormalization(name=f"{name}_1_bn", **bn)(x)
    x = layers.Activation("relu", name=f"{name}_1_relu")(x)
    x = layers.Conv2D(
        filters, 3, padding="same", dilation_rate=dilation, name=f"{name}_2_conv", **conv
    )(x)
    x = layers.BatchNormalization(name=f"{name}_2_bn", **bn)(x)
    x = layers.Activation("relu", name=f"{name}_2_relu")(x)
    x = layers.Conv2D(4 * filters, 1, name=f"{name}_3_conv", **conv)(x)
    x = layers.BatchNormalization(name=f"{name}_3_bn", **bn)(x)
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.Activation("relu", name=f"{name}_out")(x)


def _dilated_resnet50(x):
    """ResNet-50 at output stride 8; returns (conv4 output, conv5 output).

    Layer names and weight shapes are those of ``keras.applications.ResNet50``
    (``conv1_pad`` ... ``conv5_block3_out``), so its ImageNet weights copy over.
    Every 3x3 conv of conv4 is dilated by 2 and of conv5 by 4, with stride 1
    (as hszhao/semseg's PSPNet; the paper's deep 3x3 stem is replaced by Keras'
    7x7 one so that the weights fit).
    """
    x = layers.ZeroPadding2D(3, name="conv1_pad")(x)
    x = layers.Conv2D(64, 7, strides=2, kernel_initializer="he_normal", name="conv1_conv")(x)
    x = layers.BatchNormalization(epsilon=1.001e-5, name="conv1_bn")(x)
    x = layers.Activation("relu", name="conv1_relu")(x)
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)  # (B, H/4, W/4, 64)
    stage_outputs = {}
    for stage, filters, blocks, stride, dilation in _RESNET50_STAGES:
        for block in range(1, blocks + 1):
            x = _bottleneck(
                x,
                filters,
                stride=stride if block == 1 else 1,
                dilation=dilation,
                shortcut_conv=block == 1,
                name=f"{stage}_block{block}",
            )
        stage_outputs[stage] = x
    # conv4: (B, H/8, W/8, 1024), conv5: (B, H/8, W/8, 2048)
    return stage_outputs["conv4"], stage_outputs["conv5"]


def pyramid_pooling_module(
    x, bin_sizes: Sequence[int] = (1, 2, 3, 6), channels: int = 512, name: str = "ppm"
):
    """PSPNet's pyramid pooling module, as named layers of a functional graph.

    For each bin size: adaptive average pool to bins x bins, 1x1 conv to
    ``channels``, BN, ReLU, bilinear resize back to ``x``'s size; then concatenate
    with ``x`` (hszhao/semseg ``PPM``, mmsegmentation ``PPM``).

    Args:
        x: features (B, h, w, C).
        bin_sizes: pooled grid sizes (``pool_scales`` in mmsegmentation).
        channels: output channels of each branch.
        name: prefix of the layer names.

    Returns:
        (B, h, w, C + len(bin_sizes) * channels).
    """
    branches = []
    for bins in bin_sizes:
        y = AdaptiveAveragePooling2D(bins, name=f"{name}_pool_{bins}")(x)
        y = layers.Conv2D(
            channels, 1, use_bias=False, kernel_initializer="he_normal", name=f"{name}_conv_{bins}"
        )(y)
        y = layers.BatchNormalization(name=f"{name}_bn_{bins}")(y)
        y = layers.ReLU(name=f"{name}_relu_{bins}")(y)
        branches.append(ResizeToMatch(name=f"{name}_upsampling_{bins}")([y, x]))
    return layers.Concatenate(name=f"{name}_concat")([x, *branches])


def _fcn_head(x, filters: int, channels: int, dropout: float, name: str):
    """3x3 conv + BN + ReLU + dropout + 1x1 classifier (PSPNet's final and aux heads)."""
    x = _conv_bn_relu(x, filters, 3, name)
    # A seed of its own, drawn from Python's generator as Keras draws a default
    # one (so set_random_seed fixes it, and TensorFlow and JAX draw the masks
    # they drew without it): unseeded, Keras's PyTorch backend draws the masks
    # from torch's global generator, which no saved state holds, so a resumed
    # run would not draw the masks the uninterrupted run draws. Seeded, they
    # come from the layer's SeedGenerator, which ResumeState saves. (Keras
    # draws no seed for a rate of 0; neither does this.)
    x = layers.Dropout(dropout, seed=random.randint(1, 10**9) if dropout > 0 else None, name=f"{name}_dropout")(x)
    return layers.Conv2D(channels, 1, name=f"{name}_classifier")(x)


def _build_pspnet50(inputs, channels: int, head: str, dropout: float, aux_head: bool):
    """The PSPNet paper's network: dilated ResNet-50 + pyramid pooling, output stride 8.

    Source: Zhao et al., "Pyramid Scene Parsing Network", CVPR 2017
    (arXiv:1612.01105), and its reference implementation hszhao/semseg
    ``model/pspnet.py``: ResNet-50 with conv4/conv5 dilated by 2/4 instead of
    strided, pyramid bins (1, 2, 3, 6) each reduced to 512 channels with
    conv-BN-ReLU, concatenation with the 2048 backbone channels, 3x3 conv 512 +
    BN + ReLU + dropout + 1x1 classifier, bilinear upsampling to the input. The
    auxiliary head (``aux_head=True``) is a 3x3 conv 256 + BN + ReLU + dropout +
    1x1 classifier on conv4, upsampled the same way; training weights its loss
    by 0.4. Backbone layer names and shapes are ``keras.applications.ResNet50``'s,
    and photos are normalised caffe-style (RGB -> BGR minus the ImageNet mean)
    as its ImageNet weights expect.
    """
    x = InputNormalization(mean=_CAFFE_MEAN_BGR, std=1.0, to_bgr=True, name="normalization")(inputs)
    conv4, conv5 = _dilated_resnet50(x)
    x = pyramid_pooling_module(conv5, (1, 2, 3, 6), 512, name="ppm")  # (B, H/8, W/8, 4096)
    x = _fcn_head(x, 512, channels, dropout, "head")
    if not aux_head:
        return _output(x, inputs, head, "logits" if head == "classes" else "rgb")
    aux = _fcn_head(conv4, 256, channels, dropout, "aux_head")
    return {"main": _output(x, inputs, head, "main"), "aux": _output(aux, inputs, head, "aux")}


# --- ImageNet weights for the pspnet50 backbone --------------------------------


def _load_resnet50(backbone_weights) -> keras.Model:
    """Builds ``keras.applications.ResNet50`` holding the requested weights.

    Raises:
        ConfigError: the ImageNet weights cannot be had (offline, say), or the
            file is missing or holds other weights. A requested backbone is
            never silently replaced by random weights.
    """
    if backbone_weights == "imagenet":
        try:
            return keras.applications.ResNet50(include_top=False, weights="imagenet")
        except Exception as error:  # offline: urllib/HTTP errors, wrapped by Keras
            raise ConfigError(
                "backbone_weights 'imagenet': could not download Keras's ResNet50 ImageNet weights "
                f"({first_line(error)}); on a machine with a network, run python -c \"import keras; "
                "keras.applications.ResNet50(include_top=False)\" to fetch them into ~/.keras/models, "
                "or pass the downloaded file "
                "(resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5) as --backbone-weights FILE"
            ) from None
    path = os.fspath(backbone_weights)
    if not os.path.isfile(path):
        raise ConfigError(
            f"backbone_weights: no such weights file (expected 'imagenet' or a file): {path}"
        )
    try:
        return keras.applications.ResNet50(include_top=False, weights=path)
    except Exception as error:  # Keras raises ValueError, KeyError or OSError here
        raise ConfigError(
            f"backbone_weights: not weights of ResNet50(include_top=False) ({error}): {path}"
        ) from None


def copy_backbone_weights(source: keras.Model, target: keras.Model) -> int:
    """Copies the weights of every layer of ``source`` into ``target``'s layer of that name.

    Args:
        source: a ``keras.applications.ResNet50`` (with ``include_top=True`` its
            ImageNet classifier ``predictions`` is skipped).
        target: a ``"pspnet50"`` model.

    Returns:
        The number of layers copied.

    Raises:
        ConfigError: a backbone layer is missing or its weight shapes differ.
    """
    target_layers = {layer.name: layer for layer in target.layers}
    copied = 0
    for layer in source.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        if layer.name in ("predictions",) and layer.name not in target_layers:
            continue  # the ImageNet classifier of an include_top model
        destination = target_layers.get(layer.name)
        if destination is None:
            raise ConfigError(
                f"backbone layer {layer.name!r} is missing from model {target.name!r}"
            )
        shapes = [tuple(w.shape) for w in destination.get_weights()]
        if shapes != [tuple(w.shape) for w in weights]:
            raise ConfigError(
                f"backbone layer {layer.name!r}: weight shapes {shapes} differ from "
                f"{[tuple(w.shape) for w in weights]}"
            )
        destination.set_weights(weights)
        copied += 1
    return copied
