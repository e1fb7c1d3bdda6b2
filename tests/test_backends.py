"""The model tests under the other Keras backend, and weights that cross backends.

CI runs ``python -m pytest -q`` with the default TensorFlow backend; this file
runs the model, layer, optimizer, callback and loss tests again in a subprocess under
JAX (or under TensorFlow when the suite itself runs under JAX), and checks that
weights saved under one backend give the same outputs under the other.
"""

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

import pspnet

ROOT = Path(__file__).resolve().parents[1]
CURRENT = keras.backend.backend()
OTHER = "tensorflow" if CURRENT == "jax" else "jax"
# pspnet50 has the same layer types, and 190 MB of weights that would be slow to move.
PRESETS = ("fast", "seed")
SIZE = (40, 52)  # not a multiple of 8: exercises the resize-to-match paths

needs_other = pytest.mark.skipif(
    importlib.util.find_spec(OTHER) is None, reason=f"the {OTHER} backend is not installed"
)


def run_python(args, backend, timeout):
    """Runs ``python ARGS`` in the repository under a Keras backend."""
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


@needs_other
def test_model_and_layer_tests_pass_under_the_other_backend():
    result = run_python(
        ["-m", "pytest", "tests/test_model.py", "tests/test_layers.py", "tests/test_optimizers.py", "tests/test_backbones.py",
         "tests/test_callbacks.py", "tests/test_losses.py"]
        + ["-q", "-p", "no:cacheprovider"],
        OTHER,
        timeout=1200,
    )
    assert result.returncode == 0, (
        f"KERAS_BACKEND={OTHER} pytest exited {result.returncode}:\n"
        f"{result.stdout[-8000:]}\n{result.stderr[-4000:]}"
    )


# Builds a model, fills every weight with random values (BN statistics too, so
# that they matter), saves weights, inputs and outputs; or loads someone else's
# weights and checks their outputs. Run in this process and in a subprocess.
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
        x = np.random.default_rng(seed).uniform(0, 255, (2, *size, 3)).astype("float32")
        model.save_weights(f"{folder}/{tag}_{preset}.weights.h5")
        y = keras.ops.convert_to_numpy(model.predict_on_batch(x))
        np.savez(f"{folder}/{tag}_{preset}.npz", x=x, y=y)

    def check(folder, tag, preset):
        model = build(preset)
        model.load_weights(f"{folder}/{tag}_{preset}.weights.h5")
        data = np.load(f"{folder}/{tag}_{preset}.npz")
        y = keras.ops.convert_to_numpy(model.predict_on_batch(data["x"]))
        return float(np.abs(y - data["y"]).max()), float(np.abs(data["y"]).max())

    if __name__ == "__main__":
        folder, presets = sys.argv[1], sys.argv[2].split(",")
        for preset in presets:
            difference, scale = check(folder, "first", preset)
            backend = keras.backend.backend()
            print(f"{preset} {backend} max|difference| {difference:.2e} of {scale:.2f}")
            if difference > 1e-4 * max(1.0, scale):
                sys.exit(f"{preset}: outputs differ by {difference} after loading the weights")
            save(folder, "second", preset, seed=7, size=(48, 40))
    """
)


@needs_other
def test_weights_cross_backends(tmp_path):
    namespace = {}
    exec(compile(EXCHANGE, "exchange", "exec"), namespace)
    for preset in PRESETS:
        namespace["save"](tmp_path, "first", preset, seed=3, size=SIZE)

    script = tmp_path / "exchange.py"
    script.write_text(EXCHANGE)
    result = run_python([str(script), str(tmp_path), ",".join(PRESETS)], OTHER, timeout=600)
    assert result.returncode == 0, (
        f"{OTHER} could not use {CURRENT}'s weights:\n{result.stdout}\n{result.stderr[-4000:]}"
    )
    assert result.stdout.count("max|difference|") == len(PRESETS)

    # And back: weights saved under the other backend, loaded here.
    for preset in PRESETS:
        difference, scale = namespace["check"](tmp_path, "second", preset)
        assert difference <= 1e-4 * max(1.0, scale), (preset, difference)
    assert pspnet.build_pspnet is namespace["pspnet"].build_pspnet
