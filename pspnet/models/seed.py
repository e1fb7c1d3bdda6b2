"""The "seed" preset: the Kaggle seed notebook's network, layer for layer.

Its residual blocks (``seed_blocks``) are also the body of the "fast" preset
(``pspnet.models.fast``). Layer names, filters and initialisers are the
notebook's, so saved models and weight files keep loading.
"""

from __future__ import annotations

from collections.abc import Sequence

from keras import layers

from pspnet.models.layers import InputNormalization, ResizeToMatch

# The seed's pyramid branches: colour name -> average-pool window at full resolution.
_SEED_POOLS = {"yellow": 2, "blue": 4, "green": 8}


def seed_block(x, filters: Sequence[int], block: str):
    """The notebook's ``conv_block``: a dilated bottleneck with a 3x3 conv shortcut.

    1x1 conv, 3x3 conv with dilation 2, 1x1 conv (he_normal, BN, LeakyReLU 0.2
    after the first two), plus a 3x3 conv + BN on the shortcut, added, ReLU.
    Layer names are the notebook's (``block_1_a`` ... ``block_1_relu``).
    """
    prefix = f"block_{block}_"
    filters_a, filters_b, filters_c = filters
    shortcut = x
    x = layers.Conv2D(filters_a, 1, padding="same", kernel_initializer="he_normal", name=prefix + "a")(x)
    x = layers.BatchNormalization(name=prefix + "batch_norm_a")(x)
    x = layers.LeakyReLU(negative_slope=0.2, name=prefix + "leakyrelu_a")(x)
    x = layers.Conv2D(filters_b, 3, dilation_rate=2, padding="same", kernel_initializer="he_normal", name=prefix + "b")(
        x
    )
    x = layers.BatchNormalization(name=prefix + "batch_norm_b")(x)
    x = layers.LeakyReLU(negative_slope=0.2, name=prefix + "leakyrelu_b")(x)
    x = layers.Conv2D(filters_c, 1, padding="same", kernel_initializer="he_normal", name=prefix + "c")(x)
    x = layers.BatchNormalization(name=prefix + "batch_norm_c")(x)
    # The notebook leaves the shortcut conv at Keras' default (glorot_uniform) init.
    shortcut = layers.Conv2D(filters_c, 3, padding="same", name=prefix + "skip_conv")(shortcut)
    shortcut = layers.BatchNormalization(name=prefix + "batch_norm_skip_conv")(shortcut)
    x = layers.Add(name=prefix + "add")([x, shortcut])
    return layers.ReLU(name=prefix + "relu")(x)


def seed_blocks(x):
    """The notebook's ``base_feature_maps``: three blocks, 64 -> 128 -> 256 channels."""
    x = seed_block(x, (32, 32, 64), "1")
    x = seed_block(x, (64, 64, 128), "2")
    return seed_block(x, (128, 128, 256), "3")


def build_seed(inputs, channels: int, head: str):
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
    base = seed_blocks(x)  # (B, H, W, 256)

    red = layers.GlobalAveragePooling2D(name="red_pool")(base)
    red = layers.Reshape((1, 1, 256), name="red_reshape")(red)
    red = layers.Conv2D(64, 1, name="red_1_by_1")(red)
    red = ResizeToMatch(name="red_upsampling")([red, base])
    branches = [red]
    for colour, pool in _SEED_POOLS.items():
        y = layers.AveragePooling2D(pool_size=pool, name=f"{colour}_pool")(base)
        y = layers.Conv2D(64, 1, name=f"{colour}_1_by_1")(y)
        if fixed_upsampling:
            y = layers.UpSampling2D(size=pool, interpolation="bilinear", name=f"{colour}_upsampling")(y)
        else:
            y = ResizeToMatch(name=f"{colour}_upsampling")([y, base])
        branches.append(y)
    x = layers.Concatenate(name="pyramid_concat")([base, *branches])  # (B, H, W, 512)

    x = layers.Conv2D(channels, 3, padding="same", name="last_conv_3_by_3")(x)
    x = layers.BatchNormalization(name="last_conv_3_by_3_batch_norm")(x)
    if head == "rgb":
        return layers.Activation("sigmoid", dtype="float32", name="last_conv_relu")(x)
    return layers.Activation("linear", dtype="float32", name="logits")(x)
