"""The model tests under the other Keras backends, and models that cross backends.

CI runs ``python -m pytest -q`` with the default TensorFlow backend; this file
runs the model, layer, optimizer, backbone, callback and loss tests again in a
subprocess under each other backend (JAX and PyTorch; TensorFlow too when the
suite itself runs under another), and checks that weights and whole ``.keras``
models saved under one backend give the same outputs under the other. Under
PyTorch, which no other test file starts, it also runs one training step of the
package's recipe and ``pspnet-train``, ``pspnet-evaluate`` and ``pspnet-predict``.
Each backend's tests are skipped when that backend is not installed.
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
from conftest import make_pairs

import pspnet

ROOT = Path(__file__).resolve().parents[1]
CURRENT = keras.backend.backend()
OTHERS = tuple(backend for backend in ("tensorflow", "jax", "torch") if backend != CURRENT)
# pspnet50 has the same layer types, and 190 MB of weights that would be slow to move.
PRESETS = ("fast", "seed")
SIZE = (40, 52)  # not a multiple of 8: exercises the resize-to-match paths


def _missing(backend):
    """Why ``backend``'s tests skip: its package is not installed (None: it is)."""
    if importlib.util.find_spec(backend) is not None:
        return None
    extra = ' (CI installs "torch==2.13.0", a CPU build: see .ci/run)' if backend == "torch" else ""
    return f"the {backend} backend is not installed{extra}"


other_backends = pytest.mark.parametrize(
    "backend",
    [
        pytest.param(backend, marks=pytest.mark.skipif(_missing(backend) is not None, reason=str(_missing(backend))))
        for backend in OTHERS
    ],
)
needs_torch = pytest.mark.skipif(_missing("torch") is not None, reason=str(_missing("torch")))


def run_python(args, backend, timeout):
    """Runs ``python ARGS`` in the repository under a Keras backend."""
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _failure(result, what):
    return f"{what} exited {result.returncode}:\n{result.stdout[-8000:]}\n{result.stderr[-4000:]}"


@other_backends
def test_model_and_layer_tests_pass_under_the_other_backend(backend):
    result = run_python(
        [
            "-m",
            "pytest",
            "tests/test_model.py",
            "tests/test_layers.py",
            "tests/test_optimizers.py",
            "tests/test_backbones.py",
            "tests/test_callbacks.py",
            "tests/test_resume.py",
            "tests/test_losses.py",
        ]
        + ["-q", "-p", "no:cacheprovider"],
        backend,
        timeout=1200,
    )
    assert result.returncode == 0, _failure(result, f"KERAS_BACKEND={backend} pytest")


# Builds a model, fills every weight with random values (BN statistics too, so
# that they matter), saves its weights, the whole compiled model as .keras,
# inputs and outputs; or loads someone else's weights and .keras file and checks
# their outputs. Run in this process and in a subprocess.
EXCHANGE = textwrap.dedent(
    """
    import sys
    import keras
    import numpy as np
    import pspnet

    def build(preset):
        return pspnet.build_pspnet(preset, num_classes=3, input_shape=(None, None, 3))

    def randomize(model, seed):
        rng = np.random.default_rng(seed)
        for weight in model.weights:
            shape, name = tuple(weight.shape), weight.name
            if name in ("gamma", "moving_variance"):
                value = rng.uniform(0.5, 1.5, shape)
            elif name in ("beta", "bias", "moving_mean"):
                value = rng.normal(0.0, 0.1, shape)
            else:
                value = keras.ops.convert_to_numpy(weight)
            weight.assign(value.astype("float32"))

    def save(folder, tag, preset, seed, size):
        model = build(preset)
        randomize(model, seed)
        model.compile(optimizer=keras.optimizers.Adam(1e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255))
        model.optimizer.build(model.trainable_variables)  # its slots go into the .keras file too
        x = np.random.default_rng(seed).uniform(0, 255, (2, *size, 3)).astype("float32")
        model.save_weights(f"{folder}/{tag}_{preset}.weights.h5")
        model.save(f"{folder}/{tag}_{preset}.keras")
        y = keras.ops.convert_to_numpy(model.predict_on_batch(x))
        np.savez(f"{folder}/{tag}_{preset}.npz", x=x, y=y)

    def check(folder, tag, preset):
        # Returns (what, max |difference| of the outputs, largest output) for each file.
        data = np.load(f"{folder}/{tag}_{preset}.npz")
        model = build(preset)
        model.load_weights(f"{folder}/{tag}_{preset}.weights.h5")
        whole = keras.saving.load_model(f"{folder}/{tag}_{preset}.keras")
        assert whole.compiled and whole.optimizer is not None, "the .keras model lost its compile"
        results = []
        for what, loaded in (("weights", model), (".keras", whole)):
            y = keras.ops.convert_to_numpy(loaded.predict_on_batch(data["x"]))
            results.append((what, float(np.abs(y - data["y"]).max()), float(np.abs(data["y"]).max())))
        return results

    if __name__ == "__main__":
        folder, presets = sys.argv[1], sys.argv[2].split(",")
        for preset in presets:
            for what, difference, scale in check(folder, "first", preset):
                backend = keras.backend.backend()
                print(f"{preset} {what} {backend} max|difference| {difference:.2e} of {scale:.2f}")
                if difference > 1e-4 * max(1.0, scale):
                    sys.exit(f"{preset}: outputs differ by {difference} after loading the {what} file")
            save(folder, "second", preset, seed=7, size=(48, 40))
    """
)


@other_backends
def test_weights_and_keras_files_cross_backends(backend, tmp_path):
    namespace = {}
    exec(compile(EXCHANGE, "exchange", "exec"), namespace)
    for preset in PRESETS:
        namespace["save"](tmp_path, "first", preset, seed=3, size=SIZE)

    script = tmp_path / "exchange.py"
    script.write_text(EXCHANGE)
    result = run_python([str(script), str(tmp_path), ",".join(PRESETS)], backend, timeout=600)
    assert result.returncode == 0, (
        f"{backend} could not use {CURRENT}'s files:\n{result.stdout}\n{result.stderr[-4000:]}"
    )
    assert result.stdout.count("max|difference|") == 2 * len(PRESETS)

    # And back: weights and models saved under the other backend, loaded here.
    for preset in PRESETS:
        for what, difference, scale in namespace["check"](tmp_path, "second", preset):
            assert difference <= 1e-4 * max(1.0, scale), (preset, what, difference)
    assert pspnet.build_pspnet is namespace["pspnet"].build_pspnet


# --- PyTorch: training and the commands -------------------------------------------
# The rest of the suite trains and runs the commands under TensorFlow, and JAX
# trains in tests/test_train.py; nothing else starts PyTorch.

# One training step of the package's own recipe (pspnet.training.recipe: its loss with the
# void label ignored, its mIoU metric, its optimizers and their poly schedule), as
# pspnet-train compiles it: Adam with class weights and decoupled weight decay,
# then SGD with its L2 penalty and 10x head learning rate.
FIT_STEP = textwrap.dedent(
    """
    import keras
    import numpy as np
    from pspnet.training.config import TrainConfig
    from pspnet.training.recipe import build_and_compile

    assert keras.backend.backend() == "torch", keras.backend.backend()
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 19, (2, 32, 32)).astype("int32")
    y[:, :4] = 255  # void: ignored by the loss and the metric
    for optimizer, weights in (("adam", np.linspace(0.5, 2.0, 19)), ("sgd", None)):
        config = TrainConfig(data="demo", preset="fast", image_size=32, batch_size=2, epochs=1,
                             optimizer=optimizer, weight_decay=1e-4).resolved()
        keras.utils.set_random_seed(0)
        model, _ = build_and_compile(config, weights=weights)
        before = [keras.ops.convert_to_numpy(w).copy() for w in model.trainable_weights]
        logs = model.fit(x, y, batch_size=2, epochs=1, verbose=0).history
        unchanged = [w.path for w, old in zip(model.trainable_weights, before)
                     if np.array_equal(keras.ops.convert_to_numpy(w), old)]
        assert np.isfinite(logs["loss"][0]) and 0 <= logs["mean_iou"][0] <= 1, logs
        assert not unchanged, f"{optimizer}: one step left {len(unchanged)} weights as they were: {unchanged[:3]}"
        assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 1
        print(optimizer, "loss", logs["loss"][0])
    """
)


@needs_torch
def test_one_fit_step_of_the_training_recipe_under_torch():
    result = run_python(["-c", FIT_STEP], "torch", timeout=600)
    assert result.returncode == 0, _failure(result, "the fit step under torch")
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["adam", "sgd"], result.stdout


def _command(name, *args):
    """The installed console script ``name`` (scripts/*.py when the package is not installed)."""
    installed_script = Path(sys.executable).parent / name
    if installed_script.is_file():
        return [str(installed_script), *args]
    return [sys.executable, str(ROOT / "scripts" / f"{name.removeprefix('pspnet-')}.py"), *args]


@pytest.fixture(scope="module")
def torch_commands(tmp_path_factory):
    """pspnet-train for one tiny epoch, then pspnet-evaluate and pspnet-predict on its model, under torch.

    Returns:
        (folder, {command name: its CompletedProcess}).
    """
    folder = tmp_path_factory.mktemp("torch")
    make_pairs(folder / "data" / "train", 4, size=32, split="train")
    make_pairs(folder / "data" / "val", 2, size=32, split="val")
    env = dict(os.environ, KERAS_BACKEND="torch", TF_CPP_MIN_LOG_LEVEL="2")
    model = str(folder / "run" / "best.keras")
    commands = {
        "pspnet-train": [
            "--data",
            "data",
            "--out",
            "run",
            "--preset",
            "fast",
            "--image-size",
            "32",
            "--batch-size",
            "2",
            "--epochs",
            "1",
            "--workers",
            "1",
            "--verbose",
            "0",
        ],
        "pspnet-evaluate": ["--model", model, "--data", "data", "--out", "eval", "--quiet"],
        "pspnet-predict": ["--model", model, "--input", "data/val", "--out", "predictions", "--quiet"],
    }
    results = {}
    for name, args in commands.items():
        results[name] = subprocess.run(
            _command(name, *args), cwd=folder, env=env, capture_output=True, text=True, timeout=600
        )
        if results[name].returncode != 0:
            break  # the later commands need this one's files
    return folder, results


def _command_result(torch_commands, name):
    folder, results = torch_commands
    assert name in results, f"{name} did not run: an earlier command failed"
    assert results[name].returncode == 0, _failure(results[name], f"KERAS_BACKEND=torch {name}")
    return folder


@needs_torch
def test_pspnet_train_under_torch_writes_a_scored_run(torch_commands):
    run = _command_result(torch_commands, "pspnet-train") / "run"
    for name in ("config.json", "best.keras", "last.keras", "history.csv", "metrics.json"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 1
    for key in ("mean_iou", "pixel_accuracy", "mean_class_accuracy", "frequency_weighted_iou"):
        assert 0.0 <= metrics[key] <= 1.0, (key, metrics[key])


@needs_torch
def test_pspnet_evaluate_under_torch_gives_trainings_numbers(torch_commands):
    folder = _command_result(torch_commands, "pspnet-evaluate")
    trained = json.loads((folder / "run" / "metrics.json").read_text())
    evaluated = json.loads((folder / "eval" / "metrics.json").read_text())
    assert evaluated["num_images"] == 2
    for key in ("mean_iou", "pixel_accuracy", "mean_class_accuracy", "frequency_weighted_iou"):
        assert evaluated[key] == pytest.approx(trained[key], abs=1e-6), key
    assert (folder / "eval" / "confusion_matrix.png").is_file()


@needs_torch
def test_pspnet_predict_under_torch_writes_the_maps(torch_commands):
    folder = _command_result(torch_commands, "pspnet-predict")
    for stem in ("1", "2"):
        for kind in ("color", "overlay"):
            path = folder / "predictions" / f"{stem}_{kind}.png"
            picture = cv2.imread(str(path))
            assert picture is not None and picture.shape == (32, 32, 3), path
        ids = cv2.imread(str(folder / "predictions" / f"{stem}_ids.png"), cv2.IMREAD_UNCHANGED)
        assert ids is not None and ids.shape == (32, 32) and ids.max() < 19, stem


@needs_torch
def test_a_model_trained_under_torch_predicts_the_same_here(torch_commands):
    from pspnet.data import read_pair
    from pspnet.inference.segmenter import Segmenter

    folder = _command_result(torch_commands, "pspnet-predict")
    model = keras.saving.load_model(folder / "run" / "best.keras")  # as README's Python section loads it
    assert model.compiled and model.optimizer is not None
    segmenter = Segmenter.load(folder / "run" / "best.keras")
    for stem in ("1", "2"):
        photo, _ = read_pair(folder / "data" / "val" / f"{stem}.jpg")
        here = segmenter.predict_ids(photo[None])[0]
        there = cv2.imread(str(folder / "predictions" / f"{stem}_ids.png"), cv2.IMREAD_UNCHANGED)
        # Logits agree across backends within 1e-4 (the .keras test above): only a near tie may differ.
        assert np.mean(here == there) >= 0.99, (stem, np.mean(here == there))
