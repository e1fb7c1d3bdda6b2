"""Tests of pspnet.train and pspnet-train on tiny synthetic data (32 px, batch 2)."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import REPO, make_pairs

import pspnet
from pspnet.cli import train_main
from pspnet.errors import ConfigError
from pspnet.train import (
    CHOICES,
    AtomicBackupAndRestore,
    PixelAccuracy,
    ResumableEarlyStopping,
    TrainConfig,
    TrainingDiverged,
    WeightedSparseCrossentropy,
    class_weights,
    config_field_help,
    flag_name,
    train,
)

TINY = dict(preset="fast", image_size=32, batch_size=2, epochs=1, workers=1, verbose=0)


def _env(**extra: str) -> dict[str, str]:
    """The environment of a subprocess: this one's (with its cache folder) plus ``extra``."""
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO), **extra}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """8 train and 4 val synthetic pairs of 32x64 px."""
    root = tmp_path_factory.mktemp("data")
    make_pairs(root / "train", 8, size=32, split="train")
    make_pairs(root / "val", 4, size=32, split="val")
    return root


@pytest.fixture(scope="module")
def one_epoch_run(data_dir, tmp_path_factory):
    """A finished one-epoch run: (config, returned metrics)."""
    config = TrainConfig(data=str(data_dir), out=str(tmp_path_factory.mktemp("runs") / "one"), **TINY)
    return config, train(config)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


# --- the run folder -------------------------------------------------------------


def test_one_epoch_writes_every_file_of_the_run_folder(one_epoch_run):
    config, metrics = one_epoch_run
    run = Path(config.out)
    for name in ("config.json", "best.keras", "last.keras", "history.csv", "metrics.json", "curves.png"):
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    if importlib.util.find_spec("tensorboard"):
        events = sorted(p.parent.name for p in (run / "logs").rglob("events.out.tfevents.*"))
        assert events == ["train", "validation"]
    assert TrainConfig.from_json((run / "config.json").read_text()) == config.resolved()

    rows = _rows(run / "history.csv")
    assert [row["epoch"] for row in rows] == ["0"]
    for column in ("loss", "mean_iou", "pixel_accuracy", "val_loss", "val_mean_iou", "val_pixel_accuracy"):
        assert math.isfinite(float(rows[0][column])), column
    assert 0.0 <= float(rows[0]["val_mean_iou"]) <= 1.0

    saved = json.loads((run / "metrics.json").read_text())
    assert saved == metrics
    for key in ("mean_iou", "pixel_accuracy", "mean_class_accuracy", "frequency_weighted_iou", "per_class_iou"):
        assert key in saved
    assert saved["epochs"] == 1 and saved["best_epoch"] == 1 and saved["model"] == "best.keras"
    # Keras's MeanIoU during fit and pspnet.metrics on the saved best model agree.
    assert saved["mean_iou"] == pytest.approx(float(rows[0]["val_mean_iou"]), abs=1e-5)
    assert saved["pixel_accuracy"] == pytest.approx(float(rows[0]["val_pixel_accuracy"]), abs=1e-5)

    model = keras.saving.load_model(run / "best.keras", compile=False)
    assert model.predict_on_batch(np.zeros((2, 32, 32, 3), np.float32)).shape == (2, 32, 32, 19)


def test_rerun_of_a_finished_run_returns_its_metrics_without_training(one_epoch_run):
    config, metrics = one_epoch_run
    run = Path(config.out)
    before = (run / "best.keras").stat().st_mtime_ns
    assert train(config) == metrics
    assert (run / "best.keras").stat().st_mtime_ns == before
    assert len(_rows(run / "history.csv")) == 1


def test_a_different_config_in_a_used_run_folder_is_refused(one_epoch_run):
    config, _ = one_epoch_run
    with pytest.raises(ConfigError, match=r"--epochs 1 -> 2"):
        train(dataclasses.replace(config, epochs=2))
    # Fields that change only speed or verbosity may differ on a rerun.
    assert train(dataclasses.replace(config, workers=2, verbose=0))["epochs"] == 1


def test_a_non_empty_folder_without_config_is_refused(data_dir, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty and has no config.json"):
        train(TrainConfig(data=str(data_dir), out=str(tmp_path), **TINY))


# --- resume -------------------------------------------------------------------


def test_resume_after_sigkill_ends_like_an_uninterrupted_run(data_dir, tmp_path):
    run = tmp_path / "run"
    command = [
        sys.executable, str(REPO / "scripts" / "train.py"), "--data", str(data_dir), "--out", str(run),
        "--image-size", "32", "--batch-size", "2", "--epochs", "3", "--workers", "1", "--verbose", "0",
    ]
    process = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    history = run / "history.csv"
    deadline = time.time() + 300  # generous: a loaded CI machine is slow
    try:
        while time.time() < deadline and process.poll() is None:
            if history.is_file() and len(history.read_text().splitlines()) >= 2:  # header + one epoch
                break
            time.sleep(0.05)
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (run / "metrics.json").exists()
    committed = json.loads((run / "backup" / "state.json").read_text())["epoch"]
    assert 1 <= committed < 3

    # Leftovers of a kill at a worse moment: a torn CSV line and a half-written model.
    with history.open("a") as handle:
        handle.write("7,0.5,0.")
    (run / ".best.keras.tmp-999.keras").write_bytes(b"partial")

    finished = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]
    rows = _rows(history)
    assert [row["epoch"] for row in rows] == ["0", "1", "2"]
    assert all(math.isfinite(float(row["val_mean_iou"])) for row in rows)
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 3
    assert json.loads((run / "backup" / "state.json").read_text())["epoch"] == 3
    assert not list(run.glob(".*.tmp-*"))
    assert len(list((run / "backup").glob("epoch-*.weights.h5"))) == 1


def _tiny_model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")])
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), "mse")
    return model


def test_backup_restores_weights_and_optimizer_state_from_its_commit(tmp_path):
    x, y = np.arange(12, dtype=np.float32).reshape(4, 3) / 10, np.ones((4, 2), np.float32)
    model = _tiny_model()
    backup = AtomicBackupAndRestore(tmp_path / "backup")
    model.fit(x, y, epochs=2, batch_size=2, verbose=0, callbacks=[backup])
    state = json.loads((tmp_path / "backup" / "state.json").read_text())
    assert state["epoch"] == 2 and [row["epoch"] for row in state["history"]] == [0, 1]
    assert not (tmp_path / "backup" / "epoch-000001.weights.h5").exists()  # only the committed file stays
    # A kill between a weights write and its commit leaves an orphan file: ignored.
    (tmp_path / "backup" / "epoch-000003.weights.h5").write_bytes(b"half written")

    restored = _tiny_model()
    restored.build((None, 3))
    resumed = AtomicBackupAndRestore(tmp_path / "backup")
    history = restored.fit(x, y, epochs=3, batch_size=2, verbose=0, callbacks=[resumed])
    assert len(history.history["loss"]) == 1  # only the third epoch ran
    assert int(restored.optimizer.iterations) == 6  # 2 steps per epoch, continued from 4
    assert [row["epoch"] for row in resumed.history] == [0, 1, 2]

    # The restored optimizer slots (momentum) are the saved ones.
    again = _tiny_model()
    again.build((None, 3))
    AtomicBackupAndRestore(tmp_path / "backup").set_model(again)
    again.optimizer.build(again.trainable_variables)
    again.load_weights(tmp_path / "backup" / "epoch-000003.weights.h5")
    for saved, live in zip(again.optimizer.variables, restored.optimizer.variables):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(saved), keras.ops.convert_to_numpy(live))


def test_early_stopping_counts_the_epochs_before_a_restart():
    history = [{"epoch": 0, "val_mean_iou": 0.3}, {"epoch": 1, "val_mean_iou": 0.5},
               {"epoch": 2, "val_mean_iou": 0.4}, {"epoch": 3, "val_mean_iou": 0.45}]
    callback = ResumableEarlyStopping(history, monitor="val_mean_iou", mode="max", patience=3)
    callback.on_train_begin()
    assert (callback.best, callback.best_epoch, callback.wait) == (0.5, 1, 2)


# --- NaN ------------------------------------------------------------------------


class _PoisonWeights(keras.callbacks.Callback):
    """Sets every weight to NaN when the second epoch begins: its first loss is NaN."""

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            for variable in self.model.trainable_variables:
                variable.assign(np.full(variable.shape, np.nan, dtype=variable.dtype))


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(data_dir, tmp_path):
    config = TrainConfig(data=str(data_dir), out=str(tmp_path / "run"), **{**TINY, "epochs": 3})
    with pytest.raises(TrainingDiverged, match=r"loss became nan in epoch 2 .*1 finished"):
        train(config, callbacks=[_PoisonWeights()])
    run = Path(config.out)
    assert [row["epoch"] for row in _rows(run / "history.csv")] == ["0"]
    assert json.loads((run / "backup" / "state.json").read_text())["epoch"] == 1
    assert not (run / "metrics.json").exists()
    for name in ("last.keras", "best.keras"):
        model = keras.saving.load_model(run / name, compile=False)
        assert all(np.isfinite(keras.ops.convert_to_numpy(w)).all() for w in model.weights), name
        assert np.isfinite(model.predict_on_batch(np.full((2, 32, 32, 3), 128.0, np.float32))).all()


def test_steps_per_epoch_need_not_divide_a_pass(data_dir, tmp_path):
    # 8 pairs, batch 2: 4 batches per pass; 3 epochs of 3 steps run into the third pass.
    config = TrainConfig(data=str(data_dir), out=str(tmp_path / "run"), **{**TINY, "epochs": 3}, steps_per_epoch=3)
    metrics = train(config)
    assert metrics["epochs"] == 3
    assert [row["epoch"] for row in _rows(Path(config.out) / "history.csv")] == ["0", "1", "2"]


class _SlowSteps(keras.callbacks.Callback):
    """Makes every training step take at least ``seconds``."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds

    def on_train_batch_end(self, batch, logs=None):
        time.sleep(self.seconds)


def test_time_limit_ends_the_epoch_and_the_run(data_dir, tmp_path):
    # 0.3 s steps against a 1.2 s (0.02 min) limit: the first epoch (4 steps)
    # ends early, and is validated, committed and the run marked finished.
    config = TrainConfig(data=str(data_dir), out=str(tmp_path / "run"), **{**TINY, "epochs": 5}, time_limit=0.02)
    metrics = train(config, callbacks=[_SlowSteps(0.3)])
    run = Path(config.out)
    rows = _rows(run / "history.csv")
    assert metrics["epochs"] == len(rows) == 1
    assert 0.02 <= float(rows[0]["train_minutes"]) < 0.2
    assert "val_mean_iou" in rows[0]
    assert json.loads((run / "backup" / "state.json").read_text())["stopped"] is True
    assert train(config)["epochs"] == 1  # a rerun finds the run complete


def test_val_images_limits_per_epoch_validation_not_the_final_scores(data_dir, tmp_path):
    from pspnet.data import SegmentationDataset, load_split
    from pspnet.train import score_model

    config = TrainConfig(data=str(data_dir), out=str(tmp_path / "run"), **TINY, val_images=1)
    validated = []

    class CountValidation(keras.callbacks.Callback):
        def on_test_batch_end(self, batch, logs=None):
            validated.append(batch)

    metrics = train(config, callbacks=[CountValidation()])
    assert validated == [0]  # one pair: one batch, where the 4 pairs make 2
    photos, ids = load_split(data_dir / "val", cache_dir=False, progress=False)
    assert len(photos) == 4
    model = keras.saving.load_model(Path(config.out) / "best.keras", compile=False)
    every_pair = score_model(model, SegmentationDataset(photos, ids, 2, image_size=32, augment=False, shuffle=False),
                             "classes", 2)
    assert metrics["pixel_accuracy"] == pytest.approx(every_pair["pixel_accuracy"])


# --- the rgb head -------------------------------------------------------------------


def test_rgb_head_trains_with_mse_and_is_scored_in_miou(data_dir, tmp_path):
    from pspnet.data import SegmentationDataset, load_split

    config = TrainConfig(data=str(data_dir), out=str(tmp_path / "run"), head="rgb", **TINY)
    metrics = train(config)
    run = Path(config.out)
    row = _rows(run / "history.csv")[0]
    assert 0.0 <= float(row["val_mean_iou"]) <= 1.0 and 0.0 <= float(row["val_pixel_accuracy"]) <= 1.0
    assert metrics["mean_iou"] == pytest.approx(float(row["val_mean_iou"]), abs=1e-6)

    # val_loss is the mean squared error of the colours in [0, 1].
    model = keras.saving.load_model(run / "last.keras", compile=False)
    photos, colours = load_split(data_dir / "val", target="rgb", progress=False)
    dataset = SegmentationDataset(photos, colours, 2, image_size=(32, 32), augment=False, shuffle=False)
    errors = [np.mean((model.predict_on_batch(x) - y) ** 2) for x, y in (dataset[i] for i in range(len(dataset)))]
    assert float(row["val_loss"]) == pytest.approx(float(np.mean(errors)), rel=1e-4)


# --- distribution ---------------------------------------------------------------------

_DISTRIBUTED_LOSSES = """
import csv, json, sys
{setup}
from pspnet.train import TrainConfig, distribution, train

with distribution(True) as placement:
    replicas = placement.replicas
losses = {{}}
for distribute in (False, True):
    out = sys.argv[2] + ("/two" if distribute else "/one")
    train(TrainConfig(data=sys.argv[1], out=out, preset="fast", image_size=32, batch_size=2, epochs=1,
                      workers=1, verbose=0, distribute=distribute))
    with open(out + "/history.csv") as handle:
        losses[distribute] = float(next(csv.DictReader(handle))["loss"])
print(json.dumps({{"replicas": replicas, "one": losses[False], "two": losses[True]}}))
"""


_TWO_TF_CPUS = """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
"""
_BACKENDS = {
    "tensorflow": (_TWO_TF_CPUS, {"KERAS_BACKEND": "tensorflow"}),
    "jax": ("", {"KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}),
}


@pytest.fixture(scope="module")
def distributed_runs(data_dir, tmp_path_factory):
    """Starts both backends' comparisons at once (they overlap): backend -> process."""
    processes = {}
    for backend, (setup, env) in _BACKENDS.items():
        if backend == "jax" and importlib.util.find_spec("jax") is None:
            continue
        out = tmp_path_factory.mktemp(f"distributed-{backend}")
        script = _DISTRIBUTED_LOSSES.format(setup=setup)
        processes[backend] = subprocess.Popen(
            [sys.executable, "-c", script, str(data_dir), str(out)], env=_env(**env),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
    yield processes
    for process in processes.values():
        process.kill()
        process.communicate()


def _losses(distributed_runs, backend: str) -> dict:
    if backend not in distributed_runs:
        pytest.skip(f"{backend} is not installed")
    stdout, stderr = distributed_runs[backend].communicate(timeout=600)
    assert distributed_runs[backend].returncode == 0, stderr[-3000:]
    return json.loads(stdout.strip().splitlines()[-1])


def test_distribute_on_two_tensorflow_cpus_matches_one_device(distributed_runs):
    losses = _losses(distributed_runs, "tensorflow")
    assert losses["replicas"] == 2
    # Batch norm statistics are per replica under MirroredStrategy: close, not equal.
    assert losses["two"] == pytest.approx(losses["one"], rel=0.05)


def test_distribute_on_two_jax_cpus_matches_one_device(distributed_runs):
    losses = _losses(distributed_runs, "jax")
    assert losses["replicas"] == 2
    # One global SPMD program: equal up to float rounding, amplified over a few Adam steps.
    assert losses["two"] == pytest.approx(losses["one"], rel=2e-3)


# --- the command line -------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--epochs", "0"], "--epochs must be a positive integer"),
        (["--data", "/no/such/folder"], "data folder not found: /no/such/folder"),
        (["--preset", "nope"], "argument --preset: invalid choice: 'nope'"),
        (["--image-size", "big"], "--image-size must be N or HxW"),
        (["--batch-size", "two"], "argument --batch-size: invalid int value"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--head", "rgb", "--class-weighting", "median_freq"], "--class-weighting needs --head classes"),
    ],
)
def test_bad_flags_and_paths_end_in_one_line(argv, message, capsys):
    try:
        code = train_main(argv)
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    err = capsys.readouterr().err
    assert code != 0
    assert err.count("\n") == 1 and err.startswith("pspnet-train: error: ") and message in err, err
    assert "Traceback" not in err


def test_a_data_folder_without_val_is_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "train").mkdir()
    assert train_main(["--data", str(tmp_path)]) == 1
    assert capsys.readouterr().err == f"pspnet-train: error: data folder {tmp_path} has no val/ (it needs train/ and val/)\n"


def test_every_config_field_has_a_flag_with_help(capsys):
    with pytest.raises(SystemExit):
        train_main(["--help"])
    text = capsys.readouterr().out
    help_texts = config_field_help()
    for field in dataclasses.fields(TrainConfig):
        assert flag_name(field.name) in text, field.name
        assert help_texts.get(field.name), field.name  # every field has its comment
    for flag in ("--lr", "--no-flip", "--no-scale", "--jitter", "--jit-compile", "--no-jit-compile",
                 "--distribute", "--early-stopping", "--steps-per-execution", "--cache-dir"):
        assert flag in text, flag
    assert CHOICES["preset"] == pspnet.model.PRESETS


def test_config_json_round_trip_and_resolved_defaults():
    config = TrainConfig(data="demo", image_size="48x64", optimizer="sgd", early_stopping=3)
    assert config.image_size == (48, 64)
    assert TrainConfig.from_json(config.to_json()) == config
    resolved = config.resolved()
    assert resolved.out == str(Path("runs") / "demo-fast-classes")
    assert (resolved.learning_rate, resolved.schedule) == (1e-2, "poly")
    demo = TrainConfig().resolved()
    assert (demo.image_size, demo.scale, demo.output_stride, demo.learning_rate) == ((64, 64), False, 4, 4e-3)
    assert (demo.batch_size, demo.epochs, demo.steps_per_epoch) == (2, 8, 300)
    assert (demo.schedule, demo.class_weighting) == ("poly", "none")
    assert TrainConfig(epochs=3, steps_per_epoch=5, schedule="constant").resolved().steps_per_epoch == 5
    data = TrainConfig(data="somewhere", preset="seed").resolved()
    assert (data.image_size, data.scale, data.output_stride, data.class_weighting) == ((256, 256), True, None, "none")
    assert (data.steps_per_epoch, data.schedule, data.learning_rate) == (None, "constant", 1e-3)
    assert data.out == str(Path("runs") / "somewhere-seed-classes") and Path(data.data).is_absolute()
    with pytest.raises(ConfigError, match="unknown config fields: colour"):
        TrainConfig.from_json('{"colour": 1}')


# --- losses and metrics --------------------------------------------------------------------


def test_class_weights_from_pixel_counts():
    train_ids = np.array([[[0, 0, 0, 1], [0, 0, 255, 255]]], np.uint8)  # 5 x class 0, 1 x class 1
    assert np.allclose(class_weights(train_ids, "none", num_classes=3), 1.0)
    weights = class_weights(train_ids, "inverse_sqrt_freq", num_classes=3)
    raw = np.array([1 / math.sqrt(5 / 6), 1 / math.sqrt(1 / 6)])
    raw /= (5 / 6) * raw[0] + (1 / 6) * raw[1]  # pixel-weighted mean 1
    assert np.allclose(weights, [raw[0], raw[1], 1.0])


def test_weighted_crossentropy_ignores_255_and_weights_classes():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
    truth = rng.integers(0, 3, size=(2, 4, 4)).astype(np.int32)
    truth[0, 0] = 255
    ones = WeightedSparseCrossentropy([1.0, 1.0, 1.0])(truth, logits)
    keras_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255)(truth, logits)
    assert float(ones) == pytest.approx(float(keras_loss), rel=1e-5)

    weights = np.array([0.5, 2.0, 1.0])
    valid = truth != 255
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    entropy = -np.take_along_axis(log_probs, np.where(valid, truth, 0)[..., None], -1)[..., 0]
    expected = (entropy * weights[np.where(valid, truth, 0)] * valid).sum() / (weights[truth[valid]]).sum()
    assert float(WeightedSparseCrossentropy(weights)(truth, logits)) == pytest.approx(expected, rel=1e-5)


def test_pixel_accuracy_leaves_out_ignored_pixels():
    truth = np.array([[0, 1, 255, 2]], np.int32)
    logits = np.eye(3, dtype=np.float32)[[[0, 2, 1, 2]]]  # right, wrong, (ignored), right
    metric = PixelAccuracy()
    metric.update_state(truth, logits)
    assert float(metric.result()) == pytest.approx(2 / 3)
