"""Tests of pspnet.training.optimizers: the paper's SGD (L2 in the gradient, a faster head)."""

from __future__ import annotations

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import REPO

from pspnet.training.config import TrainConfig
from pspnet.training.optimizers import PaperSGD, add_l2_penalty, build_optimizer

X = np.array([[1.0, 2.0], [0.5, -1.0], [2.0, 0.0]], np.float32)
T = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32)


def _two_branch_model():
    """A backbone Dense ("block_1") and a head Dense ("head") side by side on the same input."""
    inputs = keras.Input((2,))
    outputs = keras.layers.Concatenate()(
        [
            keras.layers.Dense(1, name="block_1", kernel_initializer="ones")(inputs),
            keras.layers.Dense(1, name="head", kernel_initializer="ones")(inputs),
        ]
    )
    return keras.Model(inputs, outputs)


def test_one_step_is_pytorchs_sgd_with_weight_decay_and_a_tenfold_head():
    model = _two_branch_model()
    learning_rate, l2 = 0.1, 0.01
    optimizer = PaperSGD(learning_rate, momentum=0.9, head_lr_multiplier=10.0, backbone_prefixes=("block_",))
    add_l2_penalty(model, l2)
    model.compile(optimizer, "mse")
    before = {v.path: keras.ops.convert_to_numpy(v).copy() for v in model.trainable_variables}
    model.train_on_batch(X, T)

    outputs = X @ np.ones((2, 2)) + 0.0  # both branches start with kernel 1, bias 0
    d_outputs = 2.0 * (outputs - T) / T.size  # mean squared error over every element
    for column, name, factor in ((0, "block_1", 1.0), (1, "head", 10.0)):
        kernel, bias = before[f"{name}/kernel"], before[f"{name}/bias"]
        grad_kernel = X.T @ d_outputs[:, [column]] + l2 * kernel  # L2 through the gradient
        grad_bias = d_outputs[:, column].sum(keepdims=True) + l2 * bias
        live = {v.path: keras.ops.convert_to_numpy(v) for v in model.trainable_variables}
        np.testing.assert_allclose(live[f"{name}/kernel"], kernel - factor * learning_rate * grad_kernel, rtol=1e-5)
        np.testing.assert_allclose(
            live[f"{name}/bias"], bias - factor * learning_rate * grad_bias, rtol=1e-5, atol=1e-7
        )


def test_the_paper_recipe_builds_paper_sgd_and_adam_stays_decoupled():
    sgd = build_optimizer(TrainConfig(data="x", optimizer="sgd", weight_decay=1e-4).resolved(), ("conv1_",))
    assert isinstance(sgd, PaperSGD)
    assert (sgd.head_lr_multiplier, sgd.backbone_prefixes, sgd.weight_decay) == (10.0, ("conv1_",), None)
    adam = build_optimizer(TrainConfig(data="x", weight_decay=1e-4).resolved())
    assert isinstance(adam, keras.optimizers.Adam) and adam.weight_decay == pytest.approx(1e-4)


def test_a_model_compiled_with_it_loads_in_a_fresh_process_after_import_pspnet(tmp_path):
    model = _two_branch_model()
    model.compile(PaperSGD(0.1, head_lr_multiplier=10.0, backbone_prefixes=("block_",)), "mse")
    model.train_on_batch(X, T)
    model.save(tmp_path / "model.keras")
    script = (
        "import sys, pspnet, keras; model = keras.saving.load_model(sys.argv[1]); "
        "print(type(model.optimizer).__name__, model.optimizer.head_lr_multiplier, model.optimizer.backbone_prefixes)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "model.keras")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["PaperSGD", "10.0", "('block_',)"]


def test_sgd_takes_any_momentum_the_config_accepts():
    # An integer momentum (momentum=0 from Python or a config.json) is one Keras's SGD refuses.
    for momentum in (0, 1, 0.5):
        config = TrainConfig(data="x", optimizer="sgd", momentum=momentum).resolved()
        assert build_optimizer(config).momentum == momentum
