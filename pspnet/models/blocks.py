"""Functional building blocks that the presets share: conv-BN-ReLU, the pyramid pooling module, the heads.

Each function adds named ``keras.layers`` (and ``pspnet.models.layers``) to a
functional graph and returns the output tensor; the names it gives are part of
the saved models and weight files, so they must not change.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from keras import layers

from pspnet.models.layers import AdaptiveAveragePooling2D, ResizeToMatch


def conv_bn_relu(
    x,
    filters: int,
    kernel_size: int,
    name: str,
    strides: int = 1,
    kernel_initializer: str = "he_normal",
    max_value: float | None = None,
    relu: bool = True,
):
    """Conv ("same", no bias) + BN + ReLU, named ``<name>_conv``, ``<name>_bn``, ``<name>_relu``.

    Args:
        x: features (B, h, w, C).
        filters: output channels.
        kernel_size: side of the square kernel.
        name: prefix of the layer names.
        strides: of the convolution.
        kernel_initializer: of the convolution.
        max_value: the ReLU's cap (6.0 for ReLU6), or None.
        relu: False ends after the batch norm.

    Returns:
        (B, h / strides, w / strides, filters).
    """
    x = layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer=kernel_initializer,
        name=f"{name}_conv",
    )(x)
    # Keras's batch-norm defaults (epsilon 1e-3, momentum 0.99) are also EfficientNet-Lite0's.
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(max_value, name=f"{name}_relu")(x) if relu else x


def pyramid_pooling_module(x, bin_sizes: Sequence[int] = (1, 2, 3, 6), channels: int = 512, name: str = "ppm"):
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
        y = layers.Conv2D(channels, 1, use_bias=False, kernel_initializer="he_normal", name=f"{name}_conv_{bins}")(y)
        y = layers.BatchNormalization(name=f"{name}_bn_{bins}")(y)
        y = layers.ReLU(name=f"{name}_relu_{bins}")(y)
        branches.append(ResizeToMatch(name=f"{name}_upsampling_{bins}")([y, x]))
    return layers.Concatenate(name=f"{name}_concat")([x, *branches])


def fcn_head(x, filters: int, channels: int, dropout: float, name: str):
    """3x3 conv + BN + ReLU + dropout + 1x1 classifier (PSPNet's final and aux heads)."""
    return classifier(conv_bn_relu(x, filters, 3, name), channels, dropout, name)


def classifier(x, channels: int, dropout: float, name: str):
    """Dropout + 1x1 classifier, named ``<name>_dropout`` and ``<name>_classifier``."""
    # A seed of its own, drawn from Python's generator as Keras draws a default
    # one (so set_random_seed fixes it, and TensorFlow and JAX draw the masks
    # they drew without it): unseeded, Keras's PyTorch backend draws the masks
    # from torch's global generator, which no saved state holds, so a resumed
    # run would not draw the masks the uninterrupted run draws. Seeded, they
    # come from the layer's SeedGenerator, which ResumeState saves. (Keras
    # draws no seed for a rate of 0; neither does this.)
    x = layers.Dropout(dropout, seed=random.randint(1, 10**9) if dropout > 0 else None, name=f"{name}_dropout")(x)
    return layers.Conv2D(channels, 1, name=f"{name}_classifier")(x)


def output_head(x, reference, head: str, name: str):
    """Upsamples logits to the input size and applies the head, in float32.

    The last layers run in float32 so that mixed-precision models return float32.
    """
    if head == "classes":
        return ResizeToMatch(dtype="float32", name=name)([x, reference])
    x = ResizeToMatch(dtype="float32", name=f"{name}_upsampling")([x, reference])
    return layers.Activation("sigmoid", dtype="float32", name=name)(x)
