"""Tests of pspnet.training.callbacks on tiny models (a Dense layer, 4 samples)."""

from __future__ import annotations

import zipfile

import keras
import numpy as np
import pytest

from pspnet.models.modelfile import INFO_NAME, ModelInfo, read_model_info
from pspnet.training.callbacks import (
    Checkpoint,
    PolyLearningRate,
    ResumableEarlyStopping,
    StopOnNaN,
    TimeLimit,
    TrainingDiverged,
    TrainingTime,
)

X = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
Y = np.ones((4, 2), np.float32)


def _tiny_model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")])
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), "mse")
    return model


def test_early_stopping_counts_the_epochs_before_a_restart():
    history = [
        {"epoch": 0, "val_mean_iou": 0.3},
        {"epoch": 1, "val_mean_iou": 0.5},
        {"epoch": 2, "val_mean_iou": 0.4},
        {"epoch": 3, "val_mean_iou": 0.45},
    ]
    callback = ResumableEarlyStopping(history, patience=3)
    callback.on_train_begin()
    assert (callback.best, callback.best_epoch, callback.wait) == (0.5, 1, 2)
    assert not callback.exhausted
    callback.set_model(_tiny_model())
    callback.on_epoch_end(4, {"val_mean_iou": 0.49})
    assert callback.exhausted and callback.model.stop_training


def test_best_checkpoint_saves_only_improvements_and_stores_the_model_info(tmp_path):
    model = _tiny_model()
    info = ModelInfo(head="classes", num_classes=2, preset="fast", image_size=(32, 48))
    checkpoint = Checkpoint(tmp_path / "best.keras", info, monitor="val_mean_iou", best=0.5)
    checkpoint.set_model(model)
    checkpoint.on_epoch_end(0, {"val_mean_iou": 0.4})
    assert not (tmp_path / "best.keras").exists()  # below the best of the run before a restart
    checkpoint.on_epoch_end(1, {"val_mean_iou": 0.6})
    assert (tmp_path / "best.keras").is_file() and checkpoint.best == 0.6
    stored = read_model_info(tmp_path / "best.keras")
    assert (stored.head, stored.num_classes, stored.preset, stored.image_size) == ("classes", 2, "fast", (32, 48))
    with zipfile.ZipFile(tmp_path / "best.keras") as archive:
        assert {"config.json", INFO_NAME} <= set(archive.namelist())
    assert not list(tmp_path.glob(".*"))  # no temporary file left


def test_nan_guard_reads_the_epoch_logs_not_every_batch():
    # A per-batch hook would make every step wait for the host on an accelerator.
    assert StopOnNaN.on_train_batch_end is keras.callbacks.Callback.on_train_batch_end
    assert StopOnNaN.on_batch_end is keras.callbacks.Callback.on_batch_end
    guard = StopOnNaN(1e-3, lambda: 4)
    guard.on_epoch_end(4, {"loss": 0.7})
    with pytest.raises(TrainingDiverged, match=r"loss became nan in epoch 5;.*4 finished.*Lower --lr \(it was 0.001\)"):
        guard.on_epoch_end(4, {"loss": float("nan")})


def test_poly_sets_each_steps_rate_from_the_optimizer_step_and_the_backend_uses_it():
    # Loss w . x has the constant gradient x, so plain SGD moves w by exactly
    # -x * (the sum of the rates it used): a rate set but not used (JAX threads
    # its state through an epoch) shows in the weights.
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")(inputs))
    model.compile(keras.optimizers.SGD(0.5), loss=lambda y_true, y_pred: keras.ops.mean(y_pred))
    model.optimizer.build(model.trainable_variables)
    model.optimizer.iterations.assign(2)  # a resumed optimizer: its schedule goes on from step 2
    x = np.tile(np.array([[1.0, 2.0, 3.0]], np.float32), (6, 1))
    total = 10  # the poly length: 2 epochs of 3 steps from step 2 end at 8 / 10 of it
    limit = TimeLimit(1e6)  # minutes: the steps bound the decay here
    poly = PolyLearningRate(0.5, total, clock=limit)
    model.fit(
        x, np.zeros((6, 1), np.float32), batch_size=2, epochs=2, shuffle=False, verbose=0, callbacks=[limit, poly]
    )
    used = sum(0.5 * (1 - step / total) ** 0.9 for step in range(2, 8))
    expected = -used * np.array([[1.0], [2.0], [3.0]])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model.layers[-1].kernel), expected, rtol=1e-5)
    # The clock bounds it too: past the limit the rate is 0.
    late = TimeLimit(1.0, start=2.0)
    assert PolyLearningRate(0.5, total, clock=late).rate(0) == 0.0
    assert PolyLearningRate(0.5, total).rate(0) == 0.5


def test_a_time_limit_logs_and_says_the_steps_it_ran(capsys):
    model = _tiny_model()
    limit = TimeLimit(0.0, verbose=1)  # stops after the first step
    model.fit(np.tile(X, (3, 1)), np.tile(Y, (3, 1)), epochs=2, batch_size=2, verbose=0, callbacks=[limit])
    assert int(model.optimizer.iterations) == 1
    assert capsys.readouterr().out == "pspnet-train: time limit of 0 minutes reached after 1 of 6 steps of epoch 1\n"
    logged = keras.callbacks.History()
    model.fit(X, Y, epochs=1, batch_size=2, verbose=0, callbacks=[TrainingTime(), logged])
    assert logged.history["steps"] == [2]
