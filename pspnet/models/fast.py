"""The "fast" preset (``build_pspnet``'s default): the seed's network behind a strided stem."""

from __future__ import annotations

from keras import layers

from pspnet.models.blocks import conv_bn_relu, fcn_head, output_head
from pspnet.models.layers import AdaptiveAveragePooling2D, InputNormalization, ResizeToMatch
from pspnet.models.seed import seed_blocks

# The "fast" pyramid: colour name -> bins per side (PSPNet's 1, 2, 3, 6).
_FAST_BINS = {"red": 1, "yellow": 2, "blue": 3, "green": 6}

# ImageNet statistics of 0-255 RGB photos (torchvision's, scaled by 255).
_IMAGENET_MEAN_RGB = (123.675, 116.28, 103.53)
_IMAGENET_STD_RGB = (58.395, 57.12, 57.375)


def build_fast(inputs, channels: int, head: str, dropout: float, output_stride: int):
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
    x = InputNormalization(mean=_IMAGENET_MEAN_RGB, std=_IMAGENET_STD_RGB, name="normalization")(inputs)
    x = conv_bn_relu(x, 32, 3, "stem_1", strides=2)  # (B, H/2, W/2, 32)
    x = conv_bn_relu(x, 64, 3, "stem_2", strides=2)  # (B, H/4, W/4, 64)
    if output_stride == 8:
        x = conv_bn_relu(x, 64, 3, "stem_3", strides=2)  # (B, H/8, W/8, 64)
    base = seed_blocks(x)  # (B, H/8, W/8, 256) at output stride 8

    branches = []
    for colour, bins in _FAST_BINS.items():
        y = AdaptiveAveragePooling2D(bins, name=f"{colour}_pool")(base)  # (B, bins, bins, 256)
        y = layers.Conv2D(64, 1, name=f"{colour}_1_by_1")(y)
        branches.append(ResizeToMatch(name=f"{colour}_upsampling")([y, base]))
    x = layers.Concatenate(name="pyramid_concat")([base, *branches])  # (B, H/8, W/8, 512)

    x = fcn_head(x, 128, channels, dropout, "head")
    return output_head(x, inputs, head, "logits" if head == "classes" else "rgb")
