"""Tests of pspnet.training.recipe: the compiled model of a config, for the class table it trains on."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from pspnet.data.classes import CITYSCAPES, ClassTable
from pspnet.models.modelfile import load_model, save_model
from pspnet.training.config import TrainConfig
from pspnet.training.losses import WeightedSparseCrossentropy
from pspnet.training.recipe import build_and_compile, model_info

FARM = ClassTable(
    ("soil", "crop", "weed", "water", "stone"),
    ((120, 80, 40), (0, 200, 0), (200, 0, 200), (0, 0, 255), (128, 128, 128)),
)


def _config(**overrides) -> TrainConfig:
    values = dict(
        data="demo",
        preset="fast",
        image_size=32,
        batch_size=2,
        epochs=1,
        steps_per_epoch=1,
        class_weighting="none",
        jit_compile=False,
        backbone_weights="none",
    )
    return TrainConfig(**{**values, **overrides}).resolved()


def test_model_info_stores_the_table_and_its_class_count():
    info = model_info(_config(), FARM)
    assert (info.head, info.num_classes, info.image_size) == ("classes", 5, (32, 32))
    assert info.class_table() == FARM
    default = model_info(_config())
    assert default.num_classes == 19 and default.class_table() == CITYSCAPES


def test_a_five_class_model_trains_saves_and_loads_back_with_its_table(tmp_path):
    config = _config()
    weights = np.array([1.0, 2.0, 0.5, 1.0, 1.0], np.float32)
    model, aux = build_and_compile(config, weights, classes=FARM)
    assert not aux and model.output_shape[-1] == 5
    assert isinstance(model.loss, WeightedSparseCrossentropy)
    rng = np.random.default_rng(0)
    photos = rng.uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    ids = rng.integers(0, 5, (2, 32, 32)).astype(np.uint8)
    ids[:, :4] = 255  # ignored
    logs = model.train_on_batch(photos, ids, return_dict=True)
    assert np.isfinite(logs["loss"]) and 0.0 <= logs["mean_iou"] <= 1.0
    mean_iou = next(metric for metric in model.metrics[1].metrics if metric.name == "mean_iou")
    assert mean_iou.num_classes == 5

    save_model(model, tmp_path / "farm.keras", model_info(config, FARM))
    loaded, info = load_model(tmp_path / "farm.keras")
    table = info.class_table()
    assert table.names == FARM.names and table.colors == FARM.colors and info.num_classes == 5
    np.testing.assert_allclose(loaded.predict_on_batch(photos), model.predict_on_batch(photos), atol=1e-5)
    keras.backend.clear_session()


def test_weights_for_another_class_count_are_refused():
    with pytest.raises(ValueError, match="^19 class weights for 5 classes$"):
        build_and_compile(_config(), np.ones(19, np.float32), classes=FARM)
    keras.backend.clear_session()


def test_ohem_compiles_into_the_hard_pixel_loss_and_trains():
    model, _ = build_and_compile(_config(ohem=True), None, classes=FARM)
    assert isinstance(model.loss, WeightedSparseCrossentropy) and model.loss.ohem_threshold == 0.7
    rng = np.random.default_rng(0)
    photos = rng.uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    ids = rng.integers(0, 5, (2, 32, 32)).astype(np.uint8)
    assert np.isfinite(model.train_on_batch(photos, ids, return_dict=True)["loss"])
    plain, _ = build_and_compile(_config(), None, classes=FARM)
    assert isinstance(plain.loss, keras.losses.SparseCategoricalCrossentropy)
    keras.backend.clear_session()


def test_the_fusion_decoder_is_built_from_the_config():
    model, _ = build_and_compile(_config(preset="lite", decoder="fusion"), None, classes=FARM)
    assert model.get_layer("fusion_concat").output.shape[-1] == 128 + 48
    keras.backend.clear_session()
