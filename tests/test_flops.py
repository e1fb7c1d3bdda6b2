"""Tests of pspnet.models.flops: hand-counted layers, the seed's measured total, sizes."""

import keras
import pytest

import pspnet
from pspnet.errors import ConfigError, PspnetWarning
from pspnet.models.flops import count_flops, layer_flops


def test_hand_counted_small_model():
    inputs = keras.Input((8, 8, 3), name="photo")
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)  # 8x8x4
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    # 3x3 dilated by 2, valid padding: 8x8 -> 4x4; two groups of 2 input channels.
    y = keras.layers.Conv2D(4, 3, dilation_rate=2, groups=2, use_bias=False, name="grouped")(x)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)  # 4x4x4
    x = keras.layers.Add(name="add")([x, y])
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)  # 4
    x = keras.layers.Dense(5, name="dense")(x)
    counts = layer_flops(keras.Model(inputs, x))
    assert counts == {
        "photo": 0,
        "conv": 2 * 8 * 8 * 4 * (3 * 3 * 3) + 8 * 8 * 4,
        "bn": 2 * 8 * 8 * 4,
        "relu": 8 * 8 * 4,
        "grouped": 2 * 4 * 4 * 4 * (3 * 3 * 2),
        "pool": 4 * 4 * 4 * 2 * 2,
        "add": 4 * 4 * 4,
        "gap": 4 * 4 * 4,
        "dense": 2 * 4 * 5 + 5,
    }


def test_seed_costs_85_gflops_at_256():
    # The lead measured 85 GFLOPs per 256x256 forward pass of the notebook's model.
    model = pspnet.build_pspnet("seed", head="rgb", input_shape=(256, 256, 3))
    assert 84.5e9 < count_flops(model) < 86e9


def test_counting_at_another_size_rebuilds_the_graph():
    free = pspnet.build_pspnet("fast", input_shape=(None, None, 3))
    fixed = pspnet.build_pspnet("fast", input_shape=(128, 96, 3))
    assert count_flops(free, (128, 96)) == count_flops(fixed)
    assert count_flops(fixed, (256, 192)) > 3.5 * count_flops(fixed)
    with pytest.raises(ConfigError, match="pass input_size"):
        count_flops(free)


def test_unknown_layer_types_warn():
    inputs = keras.Input((4, 4, 3))
    outputs = keras.layers.UnitNormalization(name="unit")(inputs)
    with pytest.warns(PspnetWarning, match="UnitNormalization"):
        assert count_flops(keras.Model(inputs, outputs)) == 0


def test_a_resize_to_the_same_size_costs_nothing():
    # ResizeToMatch returns its input unchanged when the sizes already match
    # (the "fast" pyramid's 6-bin branch on a 48-pixel photo: 6x6 features).
    model = pspnet.build_pspnet("fast", num_classes=5, input_shape=(48, 48, 3))
    counts = layer_flops(model)
    assert counts["green_upsampling"] == 0
    assert counts["blue_upsampling"] == 7 * 6 * 6 * 64  # 3x3 -> 6x6, 64 channels
