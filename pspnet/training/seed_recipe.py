"""The seed notebook's recipe, transcribed: the baseline that ``pspnet-bench`` measures against.

Source: /work/shared/seeds/000_eaac23c80bab31b2.txt (the Kaggle notebook this
package started from), functions ``conv_block``, ``base_feature_maps``,
``pyramid_feature_maps``, ``last_conv_module`` and its training cell::

    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=0.001), loss='mse')
    model.fit(np.array(train_imgs, dtype='float16'), np.array(train_masks, dtype='float16'),
              ..., batch_size=10)

The transcription keeps the notebook's code line for line, with Keras 3 names
(``Conv2D`` for ``Convolution2D``, ``negative_slope`` for LeakyReLU's
``alpha``). Two of its layers were unnamed; Keras names them. The one change:
the notebook's red branch upsamples by a literal 256 (its input side), here by
``image_size`` so that tests can build it small. ``pspnet.models.builder``'s ``"seed"``
preset is the package's version of the same network (tests/test_model.py checks
that they agree layer for layer and output for output).
"""

from __future__ import annotations

import keras
import numpy as np
from keras.layers import (
    Activation,
    Add,
    AveragePooling2D,
    BatchNormalization,
    GlobalAveragePooling2D,
    LeakyReLU,
    ReLU,
    UpSampling2D,
)
from keras.layers import Conv2D as Convolution2D

__all__ = ["BATCH_SIZE", "LEARNING_RATE", "notebook_arrays", "notebook_model", "compile_notebook_model"]

BATCH_SIZE = 10  # the notebook's fit(batch_size=10)
LEARNING_RATE = 0.001  # the notebook's Adam(learning_rate=0.001)


def _conv_block(X, filters, block):
    b = "block_" + str(block) + "_"
    f1, f2, f3 = filters
    X_skip = X
    X = Convolution2D(
        filters=f1,
        kernel_size=(1, 1),
        dilation_rate=(1, 1),
        padding="same",
        kernel_initializer="he_normal",
        name=b + "a",
    )(X)
    X = BatchNormalization(name=b + "batch_norm_a")(X)
    X = LeakyReLU(negative_slope=0.2, name=b + "leakyrelu_a")(X)
    X = Convolution2D(
        filters=f2,
        kernel_size=(3, 3),
        dilation_rate=(2, 2),
        padding="same",
        kernel_initializer="he_normal",
        name=b + "b",
    )(X)
    X = BatchNormalization(name=b + "batch_norm_b")(X)
    X = LeakyReLU(negative_slope=0.2, name=b + "leakyrelu_b")(X)
    X = Convolution2D(
        filters=f3,
        kernel_size=(1, 1),
        dilation_rate=(1, 1),
        padding="same",
        kernel_initializer="he_normal",
        name=b + "c",
    )(X)
    X = BatchNormalization(name=b + "batch_norm_c")(X)
    X_skip = Convolution2D(filters=f3, kernel_size=(3, 3), padding="same", name=b + "skip_conv")(X_skip)
    X_skip = BatchNormalization(name=b + "batch_norm_skip_conv")(X_skip)
    X = Add(name=b + "add")([X, X_skip])
    X = ReLU(name=b + "relu")(X)
    return X


def _base_feature_maps(input_layer):
    base = _conv_block(input_layer, [32, 32, 64], "1")
    base = _conv_block(base, [64, 64, 128], "2")
    base = _conv_block(base, [128, 128, 256], "3")
    return base


def _pyramid_feature_maps(input_layer, image_size):
    base = _base_feature_maps(input_layer)
    red = GlobalAveragePooling2D(name="red_pool")(base)
    red = keras.layers.Reshape((1, 1, 256))(red)
    red = Convolution2D(filters=64, kernel_size=(1, 1), name="red_1_by_1")(red)
    red = UpSampling2D(size=image_size, interpolation="bilinear", name="red_upsampling")(red)
    yellow = AveragePooling2D(pool_size=(2, 2), name="yellow_pool")(base)
    yellow = Convolution2D(filters=64, kernel_size=(1, 1), name="yellow_1_by_1")(yellow)
    yellow = UpSampling2D(size=2, interpolation="bilinear", name="yellow_upsampling")(yellow)
    blue = AveragePooling2D(pool_size=(4, 4), name="blue_pool")(base)
    blue = Convolution2D(filters=64, kernel_size=(1, 1), name="blue_1_by_1")(blue)
    blue = UpSampling2D(size=4, interpolation="bilinear", name="blue_upsampling")(blue)
    green = AveragePooling2D(pool_size=(8, 8), name="green_pool")(base)
    green = Convolution2D(filters=64, kernel_size=(1, 1), name="green_1_by_1")(green)
    green = UpSampling2D(size=8, interpolation="bilinear", name="green_upsampling")(green)
    return keras.layers.concatenate([base, red, yellow, blue, green])


def _last_conv_module(input_layer, image_size):
    X = _pyramid_feature_maps(input_layer, image_size)
    X = Convolution2D(filters=3, kernel_size=3, padding="same", name="last_conv_3_by_3")(X)
    X = BatchNormalization(name="last_conv_3_by_3_batch_norm")(X)
    X = Activation("sigmoid", name="last_conv_relu")(X)
    X = keras.layers.Flatten(name="last_conv_flatten")(X)
    return X


def notebook_model(image_size: int = 256) -> keras.Model:
    """The notebook's model: photos in [0, 1] -> flattened sigmoid colours.

    Args:
        image_size: side of the square input, a multiple of 8 (the notebook: 256).

    Returns:
        An uncompiled ``keras.Model`` from (S, S, 3) to (S*S*3,); 713,839
        parameters at 256.
    """
    input_layer = keras.Input(shape=(image_size, image_size, 3), name="input")
    return keras.Model(inputs=input_layer, outputs=_last_conv_module(input_layer, image_size))


def compile_notebook_model(model: keras.Model) -> keras.Model:
    """Compiles as the notebook does: Adam(1e-3) and mean squared error."""
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=LEARNING_RATE), loss="mse")
    return model


def notebook_arrays(count: int, image_size: int = 256, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random stand-ins for the notebook's in-memory training arrays, in its dtype.

    The notebook fits on ``np.array(..., dtype='float16')`` of photos in [0, 1]
    and of flattened colour masks; only their shapes and dtype matter for speed.

    Returns:
        (photos float16 (N, S, S, 3), masks float16 (N, S*S*3)), values in [0, 1].
    """
    rng = np.random.default_rng(seed)
    photos = rng.random((count, image_size, image_size, 3), dtype=np.float32).astype(np.float16)
    masks = rng.random((count, image_size * image_size * 3), dtype=np.float32).astype(np.float16)
    return photos, masks
