"""Tests of pspnet.models.layers: values against NumPy, unknown sizes, dtypes, configs."""

import keras
import numpy as np
import pytest

import pspnet  # noqa: F401  (registers the layers)
from pspnet.errors import ConfigError
from pspnet.models.layers import (
    AdaptiveAveragePooling2D,
    InputNormalization,
    ResizeToMatch,
    adaptive_pooling_matrix,
    bilinear_resize_matrix,
)


def numpy_adaptive_pool(x: np.ndarray, bins_h: int, bins_w: int) -> np.ndarray:
    """PyTorch's AdaptiveAvgPool2d, written as loops over output cells."""
    batch, height, width, channels = x.shape
    out = np.zeros((batch, bins_h, bins_w, channels))
    for i in range(bins_h):
        top, bottom = (i * height) // bins_h, -(-((i + 1) * height) // bins_h)
        for j in range(bins_w):
            left, right = (j * width) // bins_w, -(-((j + 1) * width) // bins_w)
            out[:, i, j] = x[:, top:bottom, left:right].mean(axis=(1, 2))
    return out


def numpy_bilinear(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize with half-pixel centres, clamped at the borders."""

    def weights(in_size, out_size):
        source = np.clip((np.arange(out_size) + 0.5) * in_size / out_size - 0.5, 0, in_size - 1)
        lower = np.floor(source).astype(int)
        upper = np.minimum(lower + 1, in_size - 1)
        return lower, upper, source - lower

    top, bottom, dy = weights(x.shape[1], height)
    left, right, dx = weights(x.shape[2], width)
    rows = x[:, top] * (1 - dy)[None, :, None, None] + x[:, bottom] * dy[None, :, None, None]
    dx = dx[None, None, :, None]
    return rows[:, :, left] * (1 - dx) + rows[:, :, right] * dx


def dynamic_model(layer_fn):
    """A (None, None, C) model around a layer, to exercise unknown sizes."""
    inputs = keras.Input((None, None, 4))
    return keras.Model(inputs, layer_fn(inputs))


@pytest.mark.parametrize("size", [(12, 12), (13, 7), (4, 5), (1, 1)])
@pytest.mark.parametrize("bins", [1, 2, 3, 6, (2, 3)])
def test_adaptive_pooling_matches_numpy(size, bins):
    x = np.random.default_rng(0).normal(size=(2, *size, 4)).astype("float32")
    pooled = keras.ops.convert_to_numpy(AdaptiveAveragePooling2D(bins)(x))
    bins_h, bins_w = (bins, bins) if isinstance(bins, int) else bins
    assert pooled.shape == (2, bins_h, bins_w, 4)
    np.testing.assert_allclose(pooled, numpy_adaptive_pool(x, bins_h, bins_w), rtol=1e-5, atol=1e-6)


def test_adaptive_pooling_with_unknown_sizes():
    model = dynamic_model(lambda x: AdaptiveAveragePooling2D(6)(x))
    assert model.output.shape == (None, 6, 6, 4)
    rng = np.random.default_rng(1)
    # Several sizes in a row: TensorFlow retraces with unknown sizes after the first.
    for size in [(16, 16), (17, 40), (5, 9)]:
        x = rng.normal(size=(2, *size, 4)).astype("float32")
        np.testing.assert_allclose(model.predict(x, verbose=0), numpy_adaptive_pool(x, 6, 6), rtol=1e-5, atol=1e-6)


def test_adaptive_pooling_matrix_rows_average_their_cell():
    matrix = keras.ops.convert_to_numpy(adaptive_pooling_matrix(5, 3))
    expected = np.array([[1 / 2, 1 / 2, 0, 0, 0], [0, 1 / 3, 1 / 3, 1 / 3, 0], [0, 0, 0, 1 / 2, 1 / 2]])
    np.testing.assert_allclose(matrix, expected, rtol=1e-6)


@pytest.mark.parametrize("in_size, out_size", [(4, 8), (3, 10), (10, 3), (7, 7), (1, 5), (6, 1)])
def test_bilinear_matrix_matches_keras_resize(in_size, out_size):
    x = np.random.default_rng(2).normal(size=(1, in_size, 3, 2)).astype("float32")
    matrix = keras.ops.convert_to_numpy(bilinear_resize_matrix(in_size, out_size))
    by_matrix = np.einsum("ih,bhwc->biwc", matrix, x)
    by_keras = keras.ops.convert_to_numpy(keras.ops.image.resize(x, (out_size, 3)))
    np.testing.assert_allclose(by_matrix, by_keras, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(by_matrix, numpy_bilinear(x, out_size, 3), rtol=1e-5, atol=1e-6)


def test_resize_to_match_known_sizes():
    x = np.random.default_rng(3).normal(size=(2, 4, 6, 3)).astype("float32")
    reference = np.zeros((2, 8, 15, 1), "float32")
    resized = keras.ops.convert_to_numpy(ResizeToMatch()([x, reference]))
    assert resized.shape == (2, 8, 15, 3)
    np.testing.assert_allclose(resized, numpy_bilinear(x, 8, 15), rtol=1e-5, atol=1e-5)


def test_resize_to_match_unknown_sizes():
    inputs = keras.Input((None, None, 4))
    pooled = keras.layers.AveragePooling2D(4, name="pool")(inputs)
    model = keras.Model(inputs, ResizeToMatch()([pooled, inputs]))
    assert model.output.shape == (None, None, None, 4)
    rng = np.random.default_rng(4)
    for size in [(16, 16), (16, 40), (9, 13)]:
        x = rng.normal(size=(2, *size, 4)).astype("float32")
        pooled_np = (
            x[:, : size[0] // 4 * 4, : size[1] // 4 * 4]
            .reshape(2, size[0] // 4, 4, size[1] // 4, 4, 4)
            .mean(axis=(2, 4))
        )
        out = model.predict(x, verbose=0)
        assert out.shape == (2, *size, 4)
        np.testing.assert_allclose(out, numpy_bilinear(pooled_np, *size), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_layers_keep_their_compute_dtype(dtype):
    x = np.random.default_rng(5).uniform(0, 255, size=(1, 8, 8, 3)).astype("float32")
    resized = ResizeToMatch(dtype=dtype)([x, np.zeros((1, 16, 12, 1), "float32")])
    pooled = AdaptiveAveragePooling2D(3, dtype=dtype)(x)
    normalized = InputNormalization(dtype=dtype)(x)
    for y in (resized, pooled, normalized):
        assert keras.backend.standardize_dtype(y.dtype) == dtype
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(keras.ops.cast(pooled, "float32")), numpy_adaptive_pool(x, 3, 3), rtol=1e-2
    )


def test_input_normalization_values():
    x = np.array([[[[10.0, 20.0, 30.0]]]], "float32")
    rgb = InputNormalization(mean=(1.0, 2.0, 3.0), std=(3.0, 6.0, 9.0))(x)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(rgb), [[[[3.0, 3.0, 3.0]]]], rtol=1e-6)
    bgr = InputNormalization(mean=(30.0, 0.0, 0.0), std=1.0, to_bgr=True)(x)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bgr), [[[[0.0, 20.0, 10.0]]]], rtol=1e-6)
    default = InputNormalization()(x)  # 0-255 -> 0-1
    np.testing.assert_allclose(keras.ops.convert_to_numpy(default), x / 255.0, rtol=1e-6)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: InputNormalization(std=0.0), "std must be positive"),
        (lambda: InputNormalization(mean="a"), "mean must be a number"),
        (
            lambda: InputNormalization(mean=(1.0, 2.0))(np.zeros((1, 2, 2, 3), "float32")),
            "mean has 2 values for 3 input channels",
        ),
        (lambda: AdaptiveAveragePooling2D(0), "output_size must be a positive N or HxW"),
        (lambda: AdaptiveAveragePooling2D((1, 2, 3)), "output_size must be a positive N or HxW"),
        (lambda: AdaptiveAveragePooling2D("six"), "output_size must be N or HxW"),
    ],
)
def test_invalid_layer_arguments(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


@pytest.mark.parametrize(
    "layer, inputs",
    [
        (ResizeToMatch(name="resize"), "pair"),
        (AdaptiveAveragePooling2D((2, 3), name="pool"), "single"),
        (InputNormalization(mean=(1, 2, 3), std=(4, 5, 6), to_bgr=True, name="norm"), "single"),
    ],
)
def test_get_config_round_trip(layer, inputs):
    x = np.random.default_rng(6).normal(size=(1, 6, 6, 3)).astype("float32")
    args = [x, np.zeros((1, 9, 7, 1), "float32")] if inputs == "pair" else x
    config = layer.get_config()
    restored = type(layer).from_config(config)
    assert restored.get_config() == config
    # Through Keras' registry too: the "pspnet>" name resolves in safe mode.
    serialized = keras.saving.serialize_keras_object(layer)
    assert serialized["registered_name"].startswith("pspnet>")
    rebuilt = keras.saving.deserialize_keras_object(serialized, safe_mode=True)
    assert type(rebuilt) is type(layer) and rebuilt.get_config() == config
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(restored(args)), keras.ops.convert_to_numpy(layer(args)), rtol=1e-6
    )
