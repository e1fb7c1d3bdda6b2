"""pspnet.inference.segmenter.Segmenter: how many forward passes a call makes, and what they are fed."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import BatchRecorder

from pspnet.errors import ConfigError
from pspnet.inference.runtimes import LiteRTModel
from pspnet.inference.segmenter import Segmenter
from pspnet.models.modelfile import ModelInfo

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
    """pspnet.inference.runtimes.LiteRTModel (its own batching loop) over a counting interpreter."""
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
    from pspnet.inference.runtimes import info_of

    with pytest.raises(ConfigError, match="export description lacks or garbles .*: model.onnx.json$"):
        info_of({"head": "classes", "num_classes": 19, "trained_image_size": size}, "model.onnx.json")
    assert info_of({"head": "classes", "num_classes": 19, "trained_image_size": [32, 48]}).image_size == (32, 48)


# --- photos of any size: scales, sliding windows, multi-scale -------------------------------------


class PixelModel:
    """A stand-in that takes any size, with a one-pixel receptive field: logits = photo @ weights.

    Records the (H, W) of every batch it is fed.
    """

    input_shape = (None, None, None, 3)

    def __init__(self, num_classes: int = 5, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.weights = rng.normal(size=(3, num_classes)).astype(np.float32) / 64.0
        self.sizes = []
        self.fed = []

    def predict_on_batch(self, photos):
        self.sizes.append(tuple(photos.shape[1:3]))
        self.fed.append(np.array(photos))
        return np.asarray(photos, np.float32) @ self.weights


class FixedPixelModel(PixelModel):
    """``PixelModel`` built for one input size, as an export is."""

    def __init__(self, size, **kwargs):
        super().__init__(**kwargs)
        self.input_shape = (None, *size, 3)

    def predict_on_batch(self, photos):
        assert photos.shape[1:3] == self.input_shape[1:3], photos.shape
        return super().predict_on_batch(photos)


class WindowMean:
    """A stand-in whose every output pixel is the mean of its input (a receptive field of the whole input)."""

    input_shape = (None, None, None, 3)

    def predict_on_batch(self, photos):
        means = np.asarray(photos, np.float32).mean(axis=(1, 2, 3))  # (B,)
        return np.broadcast_to(means[:, None, None, None], (*photos.shape[:3], 2)).copy()


INFO5 = ModelInfo(head="classes", num_classes=5, image_size=(40, 60))


def photos_of(*shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for shape in shapes]


def test_window_starts_cover_the_axis_and_end_flush():
    from pspnet.inference.segmenter import window_starts

    assert window_starts(100, 32, 24) == [0, 24, 48, 68]
    assert window_starts(32, 32, 16) == [0]
    assert window_starts(20, 32, 16) == [0]  # smaller than the crop: one padded window


def test_a_non_square_photo_is_fitted_keeping_its_aspect_ratio_and_letterboxed():
    from pspnet.data.geometry import PAD_RGB
    from pspnet.inference.segmenter import resize_batch

    model = PixelModel()
    photo = photos_of((64, 128))[0][None]
    ids = Segmenter(model, INFO5, (32, 32), batch_size=1).predict_ids(photo)
    (fed,) = model.fed
    assert fed.shape == (1, 32, 32, 3) and ids.shape == (1, 64, 128)
    np.testing.assert_array_equal(fed[:, :16], resize_batch(photo.astype(np.float32), (16, 32)))
    assert (fed[:, 16:] == np.float32(PAD_RGB)).all()  # the letterbox of training's validation batches
    Segmenter(model, INFO5, (32, 32), batch_size=1, keep_aspect=False).predict_ids(photo)
    np.testing.assert_array_equal(model.fed[-1], resize_batch(photo.astype(np.float32), (32, 32)))  # stretched


def test_a_fixed_size_export_scores_a_non_square_photo_as_its_any_size_model():
    photo = photos_of((30, 70))[0][None]
    any_size = Segmenter(PixelModel(), INFO5, (32, 48)).scores(photo)
    fixed = Segmenter(FixedPixelModel((32, 48)), INFO5, (32, 48)).scores(photo)
    np.testing.assert_array_equal(fixed, any_size)


def test_fit_size_is_the_training_pipelines_fit():
    from pspnet.data import geometry, pipeline
    from pspnet.inference.segmenter import fit_size

    assert fit_size is geometry.fit_size is pipeline.fit_size  # one fit for training and inference
    for shape in [(256, 256), (1024, 2048), (375, 500), (500, 375), (33, 97), (1, 640), (720, 1280)]:
        for base in [(256, 256), (512, 1024), (48, 80), (31, 17)]:
            height, width = fit_size(shape, base)
            assert (height == base[0] and width <= base[1]) or (width == base[1] and height <= base[0]), (shape, base)
            assert abs(height * shape[1] - width * shape[0]) <= max(shape), (shape, base)  # the aspect ratio kept
    assert fit_size((256, 256), (512, 1024)) == (512, 512) and fit_size((1024, 2048), (512, 512)) == (256, 512)
    assert fit_size((1024, 2048), (512, 1024), 0.75) == (384, 768)


def test_sliding_windows_equal_whole_image_inference_for_a_one_pixel_receptive_field():
    photo = photos_of((40, 60))[0][None]
    model = PixelModel()
    whole = Segmenter(model, INFO5, (40, 60), batch_size=4)
    slide = Segmenter(model, INFO5, (40, 60), batch_size=4, slide=((16, 24), (8, 12)))
    np.testing.assert_allclose(slide.scores(photo), whole.scores(photo), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(slide.predict_ids(photo), whole.predict_ids(photo))
    # Each of the two slide calls: 4 x 4 windows of 16x24 in 4 batches of 4.
    assert model.sizes.count((16, 24)) == 2 * 4 and model.sizes.count((40, 60)) == 2


def test_sliding_windows_of_a_keras_model_with_five_classes_equal_whole_image_inference():
    import keras

    model = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(5, 1, name="logits")])
    photo = photos_of((36, 52))[0][None]
    info = ModelInfo(head="classes", num_classes=5, image_size=(36, 52))
    whole = Segmenter(model, info, batch_size=2).scores(photo)
    slide = Segmenter(model, info, batch_size=2, slide=((16, 16), (12, 12))).scores(photo)
    assert whole.shape == (1, 36, 52, 5)
    np.testing.assert_allclose(slide, whole, rtol=1e-5, atol=1e-4)


def test_overlapping_windows_average_their_scores():
    photo = np.zeros((1, 8, 12, 3), np.uint8)
    photo[:, :, 6:] = 90  # right half bright
    segmenter = Segmenter(
        WindowMean(), ModelInfo(head="classes", num_classes=2), (8, 12), batch_size=8, slide=((8, 8), (8, 4))
    )  # windows at columns 0-7 (mean 22.5) and 4-11 (mean 67.5)
    scores = segmenter.scores(photo)[0, 0, :, 0]
    np.testing.assert_allclose(scores, [22.5] * 4 + [45] * 4 + [67.5] * 4)


def test_a_photo_smaller_than_the_window_is_padded_and_cropped_back():
    model = PixelModel()
    photo = photos_of((20, 30))[0][None]
    slide = Segmenter(model, INFO5, (20, 30), slide=((32, 48), (16, 24)))
    whole = Segmenter(model, INFO5, (20, 30))
    np.testing.assert_array_equal(slide.predict_ids(photo), whole.predict_ids(photo))
    assert model.sizes[0] == (32, 48)


def test_scales_run_at_multiples_of_the_fitted_size_and_average_probabilities():
    model = PixelModel()
    photo = photos_of((64, 96))[0][None]  # the base's aspect ratio: no letterbox
    segmenter = Segmenter(model, INFO5, (32, 48), batch_size=1, scales=(0.5, 1.0))
    scores = segmenter.scores(photo)
    assert model.sizes == [(16, 24), (32, 48)]
    from pspnet.inference.segmenter import _softmax, resize_batch

    expected = np.mean(
        [
            resize_batch(_softmax(model.predict_on_batch(resize_batch(photo.astype(np.float32), size))), (64, 96))
            for size in [(16, 24), (32, 48)]
        ],
        axis=0,
    )
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores.sum(axis=-1), 1.0, rtol=1e-5)


def test_lazy_sequences_of_any_size_are_scored_at_each_labels_size():
    from pspnet.metrics import ConfusionMatrix

    photos = photos_of((40, 60), (40, 60), (30, 70), (40, 60))
    rng = np.random.default_rng(1)
    truths = [rng.integers(0, 5, photo.shape[:2], dtype=np.uint8) for photo in photos]
    model, counted = PixelModel(), []
    segmenter = Segmenter(model, INFO5, (40, 60), batch_size=4, pad_batch=False)
    confusion = segmenter.confusion(photos, truths, progress=counted.append)
    expected = ConfusionMatrix(5)
    for photo, truth in zip(photos, truths):
        expected.update(truth[None], segmenter.predict_ids(photo[None], truth.shape))
    assert confusion.matrix.shape == (5, 5)
    np.testing.assert_array_equal(confusion.matrix, expected.matrix)
    assert confusion.matrix.sum() == sum(truth.size for truth in truths)
    assert counted == [2, 1, 1]  # runs of same-sized images, one image decoded at a time


def test_the_channel_count_comes_from_the_model_info():
    photo = np.zeros((1, *SIZE, 3), np.uint8)
    with pytest.raises(ConfigError, match="a classes head must output 5 channels, this model outputs 19"):
        Segmenter(BatchRecorder(), ModelInfo(head="classes", num_classes=5), SIZE).predict_ids(photo)


def test_fixed_size_models_take_windows_of_their_size_and_one_scale():
    runtime = litert_runtime()
    with pytest.raises(ConfigError, match="sliding windows must be 32x48, not 16x16"):
        Segmenter(runtime, INFO, SIZE, slide=((16, 16), (8, 8)))
    with pytest.raises(ConfigError, match="multi-scale inference needs a model that takes any size"):
        Segmenter(runtime, INFO, SIZE, scales=(0.5, 1.0))
    ids = Segmenter(runtime, INFO, (64, 96), slide=(SIZE, (16, 24))).predict_ids(np.zeros((1, 64, 96, 3), np.uint8))
    assert ids.shape == (1, 64, 96) and runtime.interpreter.invocations == 9


@pytest.mark.parametrize("slide, message", [(((16, 16), (20, 8)), "exceeds the crop"), ((16,), "crop, stride")])
def test_bad_slides_are_one_clear_error(slide, message):
    with pytest.raises(ConfigError, match=message):
        Segmenter(PixelModel(), INFO5, SIZE, slide=slide)


def test_a_model_trained_on_the_squashed_pairs_stretches_photos_and_others_fit_them():
    # The pairs are 2:1 frames squashed square: their models run any photo stretched to their size.
    photo = np.zeros((1, 64, 128, 3), np.uint8)
    for layout, expected in (("pairs", (32, 32)), ("cityscapes", (16, 32)), (None, (16, 32))):
        segmenter = Segmenter(BatchRecorder(), ModelInfo(head="classes", num_classes=19, layout=layout), (32, 32))
        assert segmenter.run_size(photo.shape[1:3]) == expected, layout
        assert segmenter.predict_ids(photo).shape == (1, 64, 128)
    stretched = Segmenter(
        BatchRecorder(), ModelInfo(head="classes", num_classes=19, layout="cityscapes"), (32, 32), keep_aspect=False
    )
    assert stretched.run_size((64, 128)) == (32, 32)


def test_a_trained_models_file_records_its_layout():
    from pspnet.training.config import TrainConfig
    from pspnet.training.recipe import model_info

    assert model_info(TrainConfig(data="demo").resolved()).layout == "pairs"
