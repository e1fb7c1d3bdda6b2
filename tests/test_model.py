"""Tests of pspnet.models.builder: shapes of every preset, seed parity, saving, training, dtypes."""

import warnings

import keras
import numpy as np
import pytest

import pspnet
from pspnet.errors import ConfigError
from pspnet.models.builder import PRESETS, build_pspnet
from pspnet.models.layers import InputNormalization, ResizeToMatch
from pspnet.models.resnet_weights import copy_backbone_weights
from pspnet.training.seed_recipe import notebook_model

NUM_CLASSES = 3
_MODELS = {}


def cached_model(preset, input_shape, **kwargs):
    """Builds each configuration once per test session (pspnet50 takes seconds)."""
    key = (preset, input_shape, tuple(sorted(kwargs.items())))
    if key not in _MODELS:
        keras.utils.set_random_seed(0)
        _MODELS[key] = build_pspnet(preset, num_classes=NUM_CLASSES, input_shape=input_shape, **kwargs)
    return _MODELS[key]


def photos(batch, height, width, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (batch, height, width, 3)).astype("float32")


def predict(model, x):
    """Inference-mode forward pass as NumPy (dicts stay dicts).

    JAX compiles each new operation shape when run eagerly, so there one
    compiled call of the whole model is much faster; TensorFlow runs small
    inputs eagerly faster than it traces a graph.
    """
    if keras.backend.backend() == "jax":
        out = model.predict_on_batch(x)
    else:
        out = model(x, training=False)
    if isinstance(out, dict):
        return {k: keras.ops.convert_to_numpy(v) for k, v in out.items()}
    return keras.ops.convert_to_numpy(out)


def batch_for(preset):
    return 1 if preset == "pspnet50" else 2


# --- shapes -------------------------------------------------------------------


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("size", [(64, 64), (64, 128)])
def test_output_shape_with_known_size(preset, size):
    model = cached_model(preset, (*size, 3))
    assert model.output.shape == (None, *size, NUM_CLASSES)
    batch = batch_for(preset)
    logits = predict(model, photos(batch, *size))
    assert logits.shape == (batch, *size, NUM_CLASSES)
    assert logits.dtype == np.float32 and np.isfinite(logits).all()


@pytest.mark.parametrize("preset", ["seed", "fast"])
def test_output_shape_with_unknown_size(preset):
    model = cached_model(preset, (None, None, 3))
    assert model.output.shape == (None, None, None, NUM_CLASSES)
    for size in [(64, 64), (64, 128)]:
        logits = predict(model, photos(2, *size))
        assert logits.shape == (2, *size, NUM_CLASSES)
        assert np.isfinite(logits).all()


def test_pspnet50_output_shapes_with_unknown_size_and_aux_head():
    # One pspnet50 build for both checks: it is the slowest model to build.
    model = cached_model("pspnet50", (None, None, 3), aux_head=True)
    assert [tuple(t.shape) for t in model.outputs] == [(None, None, None, NUM_CLASSES)] * 2
    for size in [(64, 64), (64, 128)]:
        out = predict(model, photos(1, *size))
        assert sorted(out) == ["aux", "main"]
        for logits in out.values():
            assert logits.shape == (1, *size, NUM_CLASSES) and np.isfinite(logits).all()
    assert not np.allclose(out["main"], out["aux"])
    assert {"main", "aux"} <= {layer.name for layer in model.layers}


@pytest.mark.parametrize("preset", ["seed", "fast"])
def test_unknown_size_model_takes_odd_sizes(preset):
    # Sizes that are not multiples of the pools or strides still come back whole.
    model = cached_model(preset, (None, None, 3))
    assert predict(model, photos(1, 36, 52)).shape == (1, 36, 52, NUM_CLASSES)


@pytest.mark.parametrize("preset", ["seed", "fast"])
def test_rgb_head_is_a_sigmoid_image(preset):
    model = cached_model(preset, (None, None, 3), head="rgb")
    rgb = predict(model, photos(2, 32, 48))
    assert rgb.shape == (2, 32, 48, 3) and rgb.dtype == np.float32
    assert rgb.min() > 0.0 and rgb.max() < 1.0


def test_fast_output_stride():
    model8 = cached_model("fast", (64, 64, 3))
    model4 = cached_model("fast", (64, 64, 3), output_stride=4)
    assert model8.get_layer("block_3_relu").output.shape == (None, 8, 8, 256)
    assert model4.get_layer("block_3_relu").output.shape == (None, 16, 16, 256)


def test_the_fusion_decoder_classifies_the_pyramid_fused_with_the_quarter_resolution_features():
    pyramid = build_pspnet("lite", num_classes=5, input_shape=(64, 64, 3))
    fusion = build_pspnet("lite", num_classes=5, input_shape=(64, 64, 3), decoder="fusion")
    assert fusion.get_layer("fusion_low_relu").output.shape == (None, 16, 16, 48)
    assert fusion.get_layer("fusion_concat").output.shape == (None, 16, 16, 128 + 48)
    assert fusion.get_layer("head_classifier").output.shape == (None, 16, 16, 5)
    assert pyramid.get_layer("head_classifier").output.shape == (None, 4, 4, 5)
    assert not any(layer.name.startswith("fusion") for layer in pyramid.layers)
    # The same backbone and pyramid, layer for layer: ImageNet and trained weights load into both.
    shared = [layer.name for layer in pyramid.layers if not layer.name.startswith("head_classifier")]
    assert set(shared) <= {layer.name for layer in fusion.layers}
    assert fusion.predict_on_batch(np.zeros((2, 64, 64, 3), np.float32)).shape == (2, 64, 64, 5)


# --- the seed notebook's network ----------------------------------------------


def test_seed_matches_the_notebook():
    keras.utils.set_random_seed(0)
    notebook = notebook_model()
    ours = build_pspnet("seed", head="rgb", input_shape=(256, 256, 3))
    assert notebook.count_params() == ours.count_params() == 713_839

    # Layer types in graph order, with the documented differences mapped.
    def kinds(model):
        return [type(layer).__name__ for layer in model.layers]

    expected = kinds(notebook)
    expected.remove("Flatten")  # no flattening: the output stays (B, H, W, 3)
    expected[expected.index("UpSampling2D")] = "ResizeToMatch"  # red: resize to the base's size
    expected.insert(1, "InputNormalization")  # 0-255 photos / 255 inside the model
    assert kinds(ours) == expected
    assert isinstance(ours.get_layer("red_upsampling"), ResizeToMatch)
    assert isinstance(ours.get_layer("normalization"), InputNormalization)

    # Same names and weight shapes; the notebook's two unnamed layers got names.
    # (Keras numbers auto names per session, "reshape" or "reshape_3": match by type.)
    renamed = {keras.layers.Reshape: "red_reshape", keras.layers.Concatenate: "pyramid_concat"}
    for layer in notebook.layers:
        if layer.name == "last_conv_flatten":
            continue
        mine = ours.get_layer(renamed.get(type(layer), layer.name))
        assert [w.shape for w in mine.weights] == [w.shape for w in layer.weights], layer.name
        if hasattr(layer, "kernel_initializer"):
            assert type(mine.kernel_initializer) is type(layer.kernel_initializer), layer.name
        mine.set_weights(layer.get_weights())

    # Same weights -> same output: the notebook fed photos in [0, 1], ours takes 0-255.
    x = photos(1, 256, 256)
    expected_rgb = predict(notebook, x / 255.0).reshape(1, 256, 256, 3)
    np.testing.assert_allclose(predict(ours, x), expected_rgb, rtol=1e-4, atol=1e-5)


def test_seed_keeps_upsampling_layers_only_for_multiples_of_8():
    fixed = cached_model("seed", (64, 128, 3))
    free = cached_model("seed", (None, None, 3))
    assert isinstance(fixed.get_layer("green_upsampling"), keras.layers.UpSampling2D)
    assert isinstance(free.get_layer("green_upsampling"), ResizeToMatch)


# --- saving, training, precision ---------------------------------------------


@pytest.mark.parametrize("preset, head", [("fast", "classes"), ("seed", "rgb")])
def test_keras_file_round_trip(tmp_path, preset, head):
    model = cached_model(preset, (None, None, 3), head=head)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)  # safe mode, no custom_objects
    assert [type(layer) for layer in loaded.layers] == [type(layer) for layer in model.layers]
    x = photos(2, 40, 56, seed=1)
    np.testing.assert_allclose(predict(loaded, x), predict(model, x), rtol=1e-5, atol=1e-5)


def _training_loss(model, loss, x, y):
    return float(keras.ops.convert_to_numpy(loss(y, model(x, training=True))))


@pytest.mark.parametrize("preset, head", [("fast", "classes"), ("seed", "rgb")])
def test_one_fit_step_lowers_the_loss(preset, head):
    keras.utils.set_random_seed(1)
    model = build_pspnet(preset, num_classes=NUM_CLASSES, input_shape=(32, 32, 3), head=head, dropout=0.0)
    rng = np.random.default_rng(2)
    x = photos(2, 32, 32, seed=3)
    if head == "classes":
        y = rng.integers(0, NUM_CLASSES, (2, 32, 32)).astype("int32")
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    else:
        y = rng.uniform(0, 1, (2, 32, 32, 3)).astype("float32")
        loss = keras.losses.MeanSquaredError()
    # A small step: Adam's first update moves every weight by about the learning rate.
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=loss)
    before = _training_loss(model, loss, x, y)
    history = model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    after = _training_loss(model, loss, x, y)
    assert np.isfinite(history.history["loss"][0])
    assert after < before


def test_dropout_masks_follow_the_generator_state_a_resumed_run_restores():
    # pspnet.training.callbacks.ResumeState saves the variables that are not weights (the
    # random generators' states) so that a resumed run draws the uninterrupted
    # run's dropout masks; masks drawn from a backend's global generator (Keras's
    # PyTorch backend, for an unseeded Dropout) would not come back.
    model = cached_model("fast", (None, None, 3))  # dropout 0.1
    weights = {id(weight) for weight in model.weights}
    generators = [variable for variable in model.variables if id(variable) not in weights]
    saved = [keras.ops.convert_to_numpy(variable).copy() for variable in generators]
    dropout = model.get_layer("head_dropout")
    features = np.ones((2, 8, 8, 16), "float32")  # the layer alone: JAX runs a whole model eagerly slowly
    first = keras.ops.convert_to_numpy(dropout(features, training=True))
    keras.utils.set_random_seed(1)  # every global generator elsewhere
    for variable, value in zip(generators, saved):
        variable.assign(value)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(dropout(features, training=True)), first)
    # And the generator moves on: a new mask each step.
    assert not np.array_equal(keras.ops.convert_to_numpy(dropout(features, training=True)), first)


@pytest.fixture
def policy():
    """Sets a global dtype policy for one test and restores the previous one."""
    previous = keras.config.dtype_policy()
    yield keras.config.set_dtype_policy
    keras.config.set_dtype_policy(previous)


@pytest.mark.parametrize(
    "name, preset, options",
    [
        ("mixed_float16", "fast", {}),
        ("mixed_bfloat16", "fast", {}),
        ("mixed_float16", "seed", {"head": "rgb"}),
        ("mixed_bfloat16", "pspnet50", {"aux_head": True}),
    ],
)
def test_mixed_precision_outputs_float32(policy, name, preset, options):
    policy(name)
    model = build_pspnet(preset, num_classes=NUM_CLASSES, input_shape=(None, None, 3), **options)
    first_conv = "conv1_conv" if preset == "pspnet50" else "block_1_a"
    assert model.get_layer(first_conv).compute_dtype == name.split("_")[1]
    out = predict(model, photos(1, 32, 32))
    for value in out.values() if isinstance(out, dict) else [out]:
        channels = 3 if options.get("head") == "rgb" else NUM_CLASSES
        assert value.dtype == np.float32 and value.shape == (1, 32, 32, channels)
        assert np.isfinite(value).all()


# --- arguments and weights ---------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"preset": "pspnet101"}, "unknown preset 'pspnet101'"),
        ({"head": "softmax"}, "unknown head 'softmax'"),
        ({"num_classes": 0}, "num_classes must be a positive integer"),
        ({"num_classes": 2.5}, "num_classes must be a positive integer"),
        ({"num_classes": True}, "num_classes must be a positive integer"),
        ({"input_shape": (64, 64)}, r"input_shape must be \(height, width, 3\)"),
        ({"input_shape": (64, 64, 1)}, r"input_shape must be \(height, width, 3\)"),
        ({"input_shape": 64}, r"input_shape must be \(height, width, 3\)"),
        ({"input_shape": (4, 64, 3)}, "integers >= 8 for the fast preset"),
        ({"input_shape": (64.0, 64, 3)}, "integers >= 8"),
        ({"preset": "pspnet50", "input_shape": (16, 64, 3)}, ">= 32 for the pspnet50 preset"),
        ({"dropout": 1.0}, r"dropout must be a rate in \[0, 1\)"),
        ({"aux_head": True}, "aux_head is for the pspnet50 preset only"),
        (
            {"preset": "seed", "backbone_weights": "imagenet"},
            "backbone_weights is for the pspnet50, lite, lite1, lite2 presets only",
        ),
        ({"output_stride": 16}, "output_stride must be 4 or 8 for the fast preset"),
        ({"preset": "seed", "output_stride": 8}, "output_stride is for the fast, lite, lite1, lite2 presets only"),
        ({"decoder": "fusion"}, "decoder is for the lite, lite1, lite2 presets only, not 'fast'"),
        ({"preset": "lite", "decoder": "unet"}, "decoder must be pyramid or fusion, got 'unet'"),
    ],
)
def test_invalid_arguments_raise_config_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        build_pspnet(**kwargs)


def test_pspnet50_backbone_is_resnet50_at_output_stride_8_and_takes_its_weights(tmp_path):
    keras.utils.set_random_seed(4)
    resnet = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(64, 64, 3))
    path = tmp_path / "resnet50.weights.h5"
    resnet.save_weights(path)
    model = build_pspnet("pspnet50", num_classes=NUM_CLASSES, input_shape=(64, 64, 3), backbone_weights=path)

    # Every ResNet50 layer is there, same type, same weight shapes, same weights.
    weighted = 0
    for layer in resnet.layers[1:]:
        mine = model.get_layer(layer.name)
        assert type(mine) is type(layer), layer.name
        assert [w.shape for w in mine.weights] == [w.shape for w in layer.weights], layer.name
        for ours, theirs in zip(mine.get_weights(), layer.get_weights()):
            np.testing.assert_array_equal(ours, theirs)
        weighted += bool(layer.weights)
    assert weighted == 106  # 53 convolutions, 53 batch norms
    assert copy_backbone_weights(resnet, model) == 106

    # Output stride 8: conv4 and conv5 keep conv3's size and dilate instead.
    assert model.get_layer("conv3_block4_out").output.shape == (None, 8, 8, 512)
    assert model.get_layer("conv4_block6_out").output.shape == (None, 8, 8, 1024)
    assert model.get_layer("conv5_block3_out").output.shape == (None, 8, 8, 2048)
    assert model.get_layer("conv4_block1_2_conv").dilation_rate == (2, 2)
    assert model.get_layer("conv5_block3_2_conv").dilation_rate == (4, 4)
    assert model.get_layer("conv4_block1_1_conv").strides == (1, 1)
    assert model.get_layer("ppm_concat").output.shape == (None, 8, 8, 2048 + 4 * 512)


def test_backbone_weights_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such weights file"):
        build_pspnet("pspnet50", input_shape=(32, 32, 3), backbone_weights=tmp_path / "missing.h5")
    (tmp_path / "notes.h5").write_text("not an HDF5 file")
    with pytest.raises(ConfigError, match="not weights of ResNet50"):
        build_pspnet("pspnet50", input_shape=(32, 32, 3), backbone_weights=tmp_path / "notes.h5")


def test_imagenet_weights_offline_are_an_error_not_random_weights(monkeypatch):
    def offline(**kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- offline")

    monkeypatch.setattr(keras.applications, "ResNet50", offline)
    with pytest.raises(
        ConfigError,
        match=r"could not download Keras's ResNet50 ImageNet weights \(URL fetch failure"
        r".*--backbone-weights FILE$",
    ):
        build_pspnet("pspnet50", input_shape=(32, 32, 3), backbone_weights="imagenet")


def test_package_exports():
    assert pspnet.build_pspnet is build_pspnet
    assert pspnet.PRESETS == ("fast", "seed", "pspnet50", "lite", "lite1", "lite2")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # building warns about nothing
        assert build_pspnet().name == "pspnet_fast"
    assert build_pspnet("seed", name="mine", input_shape=(32, 32, 3)).name == "mine"
