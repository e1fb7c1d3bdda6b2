"""Tests of pspnet.training.resume (the resume state, its file, what a restart derives) on tiny models."""

from __future__ import annotations

import json
import math

import keras
import numpy as np
import pytest

from pspnet.training.resume import ResumeState, best_of, history_csv_text, patience_count

X = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
Y = np.ones((4, 2), np.float32)


def _tiny_model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")])
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), "mse")
    return model


def test_resume_state_restores_weights_and_optimizer_state_from_its_commit(tmp_path):
    model = _tiny_model()
    state = ResumeState(tmp_path / "backup")
    model.fit(X, Y, epochs=2, batch_size=2, verbose=0, shuffle=False, callbacks=[state])
    saved = json.loads((tmp_path / "backup" / "state.json").read_text())
    assert saved["epoch"] == 2 and [row["epoch"] for row in saved["history"]] == [0, 1]
    assert not (tmp_path / "backup" / "epoch-000001.weights.h5").exists()  # only the committed file stays
    # A kill between a weights write and its commit leaves an orphan file: ignored.
    (tmp_path / "backup" / "epoch-000003.weights.h5").write_bytes(b"half written")

    restored = _tiny_model()
    resumed = ResumeState(tmp_path / "backup")
    finished = resumed.restore(restored)
    assert finished == 2
    np.testing.assert_allclose(restored.predict_on_batch(X), model.predict_on_batch(X), atol=1e-6)
    for saved_slot, live in zip(model.optimizer.variables, restored.optimizer.variables):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(saved_slot), keras.ops.convert_to_numpy(live))
    history = restored.fit(
        X, Y, epochs=3, initial_epoch=finished, batch_size=2, verbose=0, shuffle=False, callbacks=[resumed]
    )
    assert len(history.history["loss"]) == 1  # only the third epoch ran
    assert int(restored.optimizer.iterations) == 6  # 2 steps per epoch, continued from 4
    assert [row["epoch"] for row in resumed.history] == [0, 1, 2]
    assert sorted(p.name for p in (tmp_path / "backup").iterdir()) == ["epoch-000003.weights.h5", "state.json"]


def test_history_csv_text_matches_csvlogger_layout():
    text = history_csv_text([{"epoch": 0, "loss": 0.5, "val_mean_iou": 0.25}, {"epoch": 1, "loss": 0.4}])
    assert text.splitlines() == ["epoch,loss,val_mean_iou", "0,0.5,0.25", "1,0.4,NA"]


def test_a_damaged_backup_is_named_in_one_error(tmp_path):
    from pspnet.errors import ConfigError

    model = _tiny_model()
    model.fit(X, Y, epochs=1, batch_size=2, verbose=0, shuffle=False, callbacks=[ResumeState(tmp_path / "backup")])
    weights = tmp_path / "backup" / "epoch-000001.weights.h5"
    weights.write_bytes(weights.read_bytes()[:100])
    backup = tmp_path / "backup"
    with pytest.raises(
        ConfigError,
        match=rf"cannot be restored, its weights file is damaged .*: {weights}; "
        rf"delete {backup} to start the run again, or restore it from a copy$",
    ):
        ResumeState(backup).restore(_tiny_model())


@pytest.mark.parametrize(
    "text, problem", [("{", r"cannot read the resume state .*state.json \(.*\)"), ("[1]", "is not a JSON object")]
)
def test_an_unreadable_resume_state_says_what_to_do(tmp_path, text, problem):
    from pspnet.errors import ConfigError

    backup = tmp_path / "backup"
    backup.mkdir()
    (backup / "state.json").write_text(text)
    with pytest.raises(ConfigError, match=rf"{problem}; delete {backup} to start the run again, or restore it"):
        ResumeState(backup)


def _tiny_adam(learning_rate):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")])
    model.compile(keras.optimizers.Adam(learning_rate), "mse")
    return model


def test_a_backup_whose_optimizer_does_not_fit_is_refused_not_skipped(tmp_path):
    from pspnet.errors import ConfigError

    # A schedule leaves Adam without a learning-rate variable: 4 + 1 variables against 4 + 2.
    schedule = keras.optimizers.schedules.PolynomialDecay(1e-3, decay_steps=10)
    model = _tiny_adam(schedule)
    model.fit(X, Y, epochs=1, batch_size=2, verbose=0, shuffle=False, callbacks=[ResumeState(tmp_path / "backup")])
    with pytest.raises(
        ConfigError,
        match=r"optimizer state in .*epoch-000001.weights.h5 does not fit this run's "
        r"optimizer \(.*\); rerun with the flags .* or delete .*backup to start",
    ):
        ResumeState(tmp_path / "backup").restore(_tiny_adam(1e-3))


def test_best_of_and_the_patience_count_follow_the_first_strictly_best_finite_value():
    rows = [
        {"epoch": 0, "val_mean_iou": 0.5},
        {"epoch": 1, "val_mean_iou": float("nan")},
        {"epoch": 2, "loss": 0.1},
        {"epoch": 3, "val_mean_iou": 0.5},
        {"epoch": 4, "val_mean_iou": 0.25},
    ]
    assert best_of(rows) == (0, 0.5)
    assert best_of([{"epoch": 0, "loss": 0.1}]) == (None, None)
    assert patience_count(rows) == (0.5, 0, 2)  # only finite values count as epochs waited
    assert patience_count(rows[3:], start=patience_count(rows[:3])) == patience_count(rows)
    assert patience_count([]) == (-math.inf, None, 0)
