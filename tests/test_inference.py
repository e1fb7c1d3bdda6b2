"""pspnet.inference.Segmenter: how many forward passes a call makes, and what they are fed."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import BatchRecorder
from pspnet.errors import ConfigError
from pspnet.inference import Segmenter
from pspnet.modelfile import ModelInfo
from pspnet.runtimes import LiteRTModel

SIZE = (32, 48)
INFO = ModelInfo(head="classes", num_classes=19)


class CountingInterpreter:
    """A LiteRT interpreter stand-in with a batch of one: counts its invocations."""

    def __init__(self):
        self.invocations = 0
        self.fed = None

    def set_tensor(self, index, value):
        assert value.shape == (1, *SIZE, 3), value.shape
        self.fed = value

    def invoke(self):
        self.invocations += 1

    def get_tensor(self, index):
        return np.zeros((1, *SIZE, 19), np.float32)


def litert_runtime() -> LiteRTModel:
    """pspnet.runtimes.LiteRTModel (its own batching loop) over a counting interpreter."""
    runtime = LiteRTModel.__new__(LiteRTModel)
    runtime.interpreter = CountingInterpreter()
    runtime._input, runtime._output, runtime._batch = 0, 1, 1
    runtime.input_shape = (None, *SIZE, 3)
    return runtime


def test_one_photo_is_one_litert_call_at_batch_size_8():
    runtime = litert_runtime()
    segmenter = Segmenter(runtime, INFO, SIZE, batch_size=8)
    ids = segmenter.predict_ids(np.zeros((1, *SIZE, 3), np.uint8))
    assert ids.shape == (1, *SIZE)
    assert runtime.interpreter.invocations == 1


def test_three_photos_are_three_litert_calls_and_a_batch_one_pass():
    runtime = litert_runtime()
    Segmenter(runtime, INFO, SIZE, batch_size=2).predict_ids(np.zeros((3, *SIZE, 3), np.uint8))
    assert runtime.interpreter.invocations == 3


def test_keras_models_get_full_batches_and_only_real_photos_come_back():
    # A compiled (or, under keras.distribution, sharded) predict function sees one batch shape.
    model = BatchRecorder()
    ids = Segmenter(model, INFO, SIZE, batch_size=4).predict_ids(np.zeros((5, *SIZE, 3), np.uint8))
    assert model.batches == [4, 4] and ids.shape == (5, *SIZE)


def test_exported_runtimes_get_the_photos_given():
    model = BatchRecorder()
    ids = Segmenter(model, INFO, SIZE, batch_size=4, pad_batch=False).predict_ids(np.zeros((5, *SIZE, 3), np.uint8))
    assert model.batches == [4, 1] and ids.shape == (5, *SIZE)


@pytest.mark.parametrize("name", ["missing.onnx", "missing.tflite"])
def test_a_missing_exported_model_is_named_not_its_description(tmp_path, name):
    # A mistyped path is "model not found", not "no description beside the exported model".
    with pytest.raises(ConfigError, match=f"^model not found: .*{name}$"):
        Segmenter.load(tmp_path / name)


@pytest.mark.parametrize("size", ["big", [0, 32], {"h": 32}])
def test_a_garbled_trained_size_in_an_export_description_is_one_clear_error(size):
    from pspnet.runtimes import info_of

    with pytest.raises(ConfigError, match="export description lacks or garbles .*: model.onnx.json$"):
        info_of({"head": "classes", "num_classes": 19, "trained_image_size": size}, "model.onnx.json")
    assert info_of({"head": "classes", "num_classes": 19, "trained_image_size": [32, 48]}).image_size == (32, 48)
