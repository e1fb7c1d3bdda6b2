"""Tests of pspnet.training.loop and pspnet-train on tiny synthetic data (32 px, batch 2)."""

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
import warnings
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
from conftest import REPO, make_pairs

from pspnet.cli import train_main
from pspnet.errors import ConfigError
from pspnet.models.modelfile import load_model
from pspnet.training.callbacks import TrainingDiverged
from pspnet.training.config import TrainConfig
from pspnet.training.loop import train

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


def test_a_different_run_in_a_used_run_folder_is_refused(one_epoch_run):
    config, _ = one_epoch_run
    run = Path(config.out)
    before = {path.name: path.stat().st_mtime_ns for path in run.iterdir() if path.name != ".lock"}
    with pytest.raises(ConfigError, match=r"holds another run \(--lr 0.001 -> 0.5; --seed 0 -> 3\)"):
        train(dataclasses.replace(config, learning_rate=0.5, seed=3))
    assert {path.name: path.stat().st_mtime_ns for path in run.iterdir() if path.name != ".lock"} == before
    # Fields that change only speed or verbosity may differ on a rerun.
    assert train(dataclasses.replace(config, workers=2, verbose=0))["epochs"] == 1


def test_a_non_empty_folder_without_config_is_refused(data_dir, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty and has no config.json"):
        train(TrainConfig(data=str(data_dir), out=str(tmp_path), **TINY))


# --- resume -------------------------------------------------------------------


def _train_command(data_dir: Path, run: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(REPO / "scripts" / "train.py"),
        "--data",
        str(data_dir),
        "--out",
        str(run),
        "--preset",
        "fast",
        "--image-size",
        "32",
        "--batch-size",
        "2",
        "--epochs",
        "3",
        "--workers",
        "1",
        "--verbose",
        "0",
        *extra,
    ]


def _kill_after_first_epoch(command: list[str], run: Path) -> None:
    process = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state = run / "backup" / "state.json"
    deadline = time.time() + 300  # generous: a loaded CI machine is slow
    try:
        while time.time() < deadline and process.poll() is None:
            if state.is_file():  # the first epoch is committed
                break
            time.sleep(0.02)
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL


def _final_outputs(run: Path) -> np.ndarray:
    model = keras.saving.load_model(run / "last.keras", compile=False)
    photos = np.random.default_rng(7).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    return np.asarray(model.predict_on_batch(photos))


def test_resume_after_sigkill_ends_exactly_like_an_uninterrupted_run(data_dir, tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    uninterrupted = subprocess.run(
        _train_command(data_dir, whole), env=_env(), capture_output=True, text=True, timeout=300
    )
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-2000:]

    command = _train_command(data_dir, killed)
    _kill_after_first_epoch(command, killed)
    assert not (killed / "metrics.json").exists()
    committed = json.loads((killed / "backup" / "state.json").read_text())["epoch"]
    assert 1 <= committed < 3
    # Leftovers of a kill at a worse moment: a torn CSV line and a half-written model.
    with (killed / "history.csv").open("a") as handle:
        handle.write("7,0.5,0.")
    (killed / ".best.keras.tmp-999.keras").write_bytes(b"partial")

    resumed = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    rows, expected = _rows(killed / "history.csv"), _rows(whole / "history.csv")
    assert [row["epoch"] for row in rows] == ["0", "1", "2"]
    for row, reference in zip(rows, expected):  # the same batches, the same numbers
        for key in reference:
            if key != "train_minutes":
                assert float(row[key]) == pytest.approx(float(reference[key]), rel=1e-5, abs=1e-6), (row["epoch"], key)
    assert np.max(np.abs(_final_outputs(killed) - _final_outputs(whole))) < 1e-5
    assert json.loads((killed / "metrics.json").read_text())["epochs"] == 3
    assert not list(killed.glob(".*.tmp-*"))
    assert len(list((killed / "backup").glob("epoch-*.weights.h5"))) == 1


def test_a_second_process_on_the_same_run_folder_is_refused_and_removes_nothing(data_dir, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    leftover = run / ".last.keras.tmp-1-abcd.keras"  # the running process's file in the making
    leftover.write_bytes(b"being written")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pspnet.fileio import FolderLock; "
            "lock = FolderLock(sys.argv[1]); lock.acquire(); print('held', flush=True); time.sleep(120)",
            str(run),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        second = subprocess.run(_train_command(data_dir, run), env=_env(), capture_output=True, text=True, timeout=300)
    finally:
        holder.kill()
        holder.wait()
    assert second.returncode == 1
    assert second.stderr.strip().splitlines()[-1] == (
        f"pspnet-train: error: {run} is in use by another pspnet-train (pid {holder.pid}); "
        "wait for it to end, or choose another --out"
    )
    assert leftover.read_bytes() == b"being written"
    assert sorted(p.name for p in run.iterdir()) == [".last.keras.tmp-1-abcd.keras", ".lock"]


# pspnet-train whose FolderLock waits for a file before it locks: the test chooses who locks first.
_GATED_TRAIN = """
import sys, time, pathlib
import pspnet.training.runfolder as runfolder
gate = pathlib.Path(sys.argv[1])

class GatedLock(runfolder.FolderLock):
    def acquire(self):
        while not gate.exists():
            time.sleep(0.01)
        super().acquire()

runfolder.FolderLock = GatedLock
from pspnet.cli import train_main
sys.exit(train_main(sys.argv[2:]))
"""


def _wait_for(condition, process, seconds: float = 300) -> None:
    deadline = time.time() + seconds
    while not condition():
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.time() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.slow
def test_two_trainings_started_together_leave_the_winners_run_intact(data_dir, tmp_path):
    # The race of two processes started at the same instant, made certain: the
    # loser creates the folder, then the winner takes its lock first.
    run = tmp_path / "run"
    command = _train_command(data_dir, run)[2:]
    started = []

    def start(name: str):
        gate = tmp_path / f"go-{name}"
        process = subprocess.Popen(
            [sys.executable, "-c", _GATED_TRAIN, str(gate), *command],
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        return process, gate

    try:
        loser, loser_gate = start("loser")
        _wait_for(run.is_dir, loser)  # the loser made the folder and waits to lock it
        winner, winner_gate = start("winner")
        winner_gate.touch()
        _wait_for(lambda: (run / ".lock").is_file() and (run / ".lock").read_text().strip() == str(winner.pid), winner)
        loser_gate.touch()
        lost = loser.communicate(timeout=300)[1]
        won = winner.communicate(timeout=300)[1]
    finally:
        for process in started:
            process.kill()
            process.wait()
    assert loser.returncode == 1 and "Traceback" not in lost
    assert lost.strip().splitlines()[-1] == (
        f"pspnet-train: error: {run} is in use by another pspnet-train (pid {winner.pid}); "
        "wait for it to end, or choose another --out"
    )
    assert winner.returncode == 0, won[-2000:]
    for name in ("config.json", "best.keras", "last.keras", "history.csv", "metrics.json", ".lock"):
        assert (run / name).is_file(), name
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 3


def test_a_larger_epoch_count_extends_a_finished_run(data_dir, tmp_path):
    config = TrainConfig(data=str(data_dir), out=str(tmp_path / "run"), **TINY)
    train(config)
    longer = dataclasses.replace(config, epochs=2)
    metrics = train(longer)
    run = Path(config.out)
    assert metrics["epochs"] == 2
    assert [row["epoch"] for row in _rows(run / "history.csv")] == ["0", "1"]
    assert TrainConfig.from_json((run / "config.json").read_text()).epochs == 2
    assert _iterations(run / "last.keras") == 8  # 2 epochs of 4 steps: the optimizer went on
    assert train(longer) == metrics  # and then it is complete again


def test_precision_auto_is_settled_printed_stored_and_kept_when_the_run_resumes(
    data_dir, tmp_path, monkeypatch, capsys
):
    import pspnet.training.loop

    def machine(bfloat16: bool):
        return lambda: {"kind": "cpu", "device": "a CPU", "bfloat16": bfloat16}

    monkeypatch.setattr(pspnet.training.loop, "describe_machine", machine(True))
    config = TrainConfig(data=str(data_dir), out=str(tmp_path / "run"), precision="auto", **{**TINY, "verbose": 2})
    train(config)
    said = capsys.readouterr().out
    assert "pspnet-train: precision mixed_bfloat16 (auto: this CPU has bfloat16 matrix instructions)" in said
    run = Path(config.out)
    assert TrainConfig.from_json((run / "config.json").read_text()).precision == "mixed_bfloat16"
    model, _ = load_model(run / "best.keras")
    assert "mixed_bfloat16" in {layer.dtype_policy.name for layer in model.layers if layer.weights}
    # Resumed (extended) on a machine without bfloat16 units: auto keeps the run's own policy.
    monkeypatch.setattr(pspnet.training.loop, "describe_machine", machine(False))
    assert train(dataclasses.replace(config, epochs=2))["epochs"] == 2
    assert "pspnet-train: precision mixed_bfloat16 (auto: the run's own)" in capsys.readouterr().out
    # An explicit other policy is another run; a new run there gets float32.
    with pytest.raises(ConfigError, match=r"holds another run \(--precision 'mixed_bfloat16' -> 'float32'\)"):
        train(dataclasses.replace(config, epochs=2, precision="float32"))
    train(dataclasses.replace(config, out=str(tmp_path / "other")))
    assert "precision float32 (auto: this CPU has no bfloat16 matrix instructions)" in capsys.readouterr().out


def _iterations(path: Path) -> int:
    model, _ = load_model(path, compile=True)
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


class _RecordRates(keras.callbacks.Callback):
    """Records the learning rate each step uses, and the optimizer's step count at the end."""

    def __init__(self):
        super().__init__()
        self.rates: list[float] = []
        self.iterations = None

    def on_train_batch_begin(self, batch, logs=None):
        self.rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))

    def on_train_end(self, logs=None):
        self.iterations = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))


@pytest.mark.slow
def test_a_run_extended_across_the_time_limit_keeps_its_optimizer_and_schedule(data_dir, tmp_path):
    # Legs: 1 epoch under a time limit that never triggers, 2 without one, 3 with it again.
    base = TrainConfig(data=str(data_dir), out=str(tmp_path / "run"), **TINY)
    legs = [dict(epochs=1, time_limit=1000.0), dict(epochs=2, time_limit=None), dict(epochs=3, time_limit=1000.0)]
    recorders = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for leg in legs:
            recorders.append(_RecordRates())
            train(dataclasses.replace(base, **leg), callbacks=[recorders[-1]])
    assert not [w for w in caught if "Skipping variable loading" in str(w.message)]
    assert [recorder.iterations for recorder in recorders] == [4, 8, 12]  # 4 steps an epoch, none lost
    assert _iterations(Path(base.out) / "last.keras") == 12
    # Each leg's rate is poly of the optimizer's step over that leg's length (nanoGPT's get_lr(iter)) ...
    for recorder, (first, total) in zip(recorders, [(0, 4), (4, 8), (8, 12)]):
        expected = [1e-3 * (1 - step / total) ** 0.9 for step in range(first, total)]
        np.testing.assert_allclose(recorder.rates, expected, rtol=1e-5)
    # ... and the last leg's are those of an uninterrupted run of 3 epochs.
    whole = _RecordRates()
    train(dataclasses.replace(base, out=str(tmp_path / "whole"), epochs=3, time_limit=1000.0), callbacks=[whole])
    np.testing.assert_allclose(recorders[-1].rates, whole.rates[8:], rtol=1e-6)


def test_a_bad_flag_leaves_nothing_behind_and_the_corrected_command_runs(data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    argv = [
        "--data",
        str(data_dir),
        "--out",
        str(run),
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
    ]
    assert train_main([*argv, "--seed", "-1"]) == 2
    assert capsys.readouterr().err == "pspnet-train: error: --seed must be an integer from 0 to 2**32 - 1, got -1\n"
    assert not run.exists()
    # A failure only the model build finds: the folder it made is removed again.
    assert (
        train_main([*argv, "--preset", "pspnet50", "--backbone-weights", str(tmp_path / "none.h5"), "--verbose", "1"])
        == 1
    )
    printed = capsys.readouterr()
    assert "no such weights file" in printed.err
    assert not run.exists() and "run folder" not in printed.out  # never named: it was never kept
    assert train_main(argv) == 0
    assert (run / "metrics.json").is_file()


def test_every_model_file_of_a_run_loads_compiled_in_a_fresh_process(one_epoch_run):
    run = Path(one_epoch_run[0].out)
    script = (
        "import sys, pspnet, keras, numpy as np\n"
        "for path in sys.argv[1:]:\n"
        "    model = keras.saving.load_model(path)\n"
        "    assert model.compiled and model.optimizer is not None, path\n"
        "    print(path.rsplit('/', 1)[-1], model.predict_on_batch(np.zeros((1, 32, 32, 3), 'float32')).shape)\n"
    )
    files = sorted(str(path) for path in run.glob("*.keras"))
    result = subprocess.run(
        [sys.executable, "-c", script, *files], env=_env(), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines() == ["best.keras (1, 32, 32, 19)", "last.keras (1, 32, 32, 19)"]


def test_training_and_evaluate_give_one_number_when_the_training_size_differs(tmp_path):
    from pspnet.inference.evaluate import EvalConfig, evaluate

    data = tmp_path / "data"
    make_pairs(data / "train", 4, size=48, split="train")
    make_pairs(data / "val", 3, size=48, split="val")
    config = TrainConfig(data=str(data), out=str(tmp_path / "run"), **TINY)  # trains at 32 on 48 px pairs
    metrics = train(config)
    evaluated = evaluate(EvalConfig(model=Path(config.out) / "best.keras", data=str(data), verbose=False))
    assert evaluated["image_size"] == [32, 32]  # the size it was trained at, read from the file
    for key in ("mean_iou", "pixel_accuracy", "mean_class_accuracy", "frequency_weighted_iou"):
        assert evaluated[key] == pytest.approx(metrics[key], abs=1e-12), key


def test_evaluating_a_run_never_overwrites_what_training_wrote(one_epoch_run, data_dir, capsys):
    from pspnet.cli import evaluate_main

    run = Path(one_epoch_run[0].out)
    before = (run / "metrics.json").read_bytes()
    assert evaluate_main(["--model", str(run / "best.keras"), "--data", str(data_dir), "--quiet", "--tta"]) == 0
    assert (run / "metrics.json").read_bytes() == before
    assert (run / "eval-best-val-tta" / "metrics.json").is_file()
    assert evaluate_main(["--model", str(run / "best.keras"), "--data", str(data_dir), "--out", str(run)]) == 1
    assert "is a training run folder; evaluation would overwrite its metrics.json" in capsys.readouterr().err
    assert (run / "metrics.json").read_bytes() == before


# --- NaN ------------------------------------------------------------------------


class _PoisonWeights(keras.callbacks.Callback):
    """Sets every weight to NaN when the second epoch begins: its first loss is NaN."""

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            for variable in self.model.trainable_variables:
                variable.assign(np.full(variable.shape, np.nan, dtype=variable.dtype))


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(data_dir, tmp_path):
    config = TrainConfig(data=str(data_dir), out=str(tmp_path / "run"), **{**TINY, "epochs": 3})
    with pytest.raises(TrainingDiverged, match=r"loss became nan in epoch 2;.*1 finished"):
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
    # 0.5 s steps against a 1.2 s (0.02 min) limit: the first epoch (4 steps)
    # ends after at most 3, and is validated, committed and the run marked
    # finished. Counted in steps, not minutes: the first step's compilation
    # takes from 1 to 20 s depending on the machine.
    config = TrainConfig(data=str(data_dir), out=str(tmp_path / "run"), **{**TINY, "epochs": 5}, time_limit=0.02)
    metrics = train(config, callbacks=[_SlowSteps(0.5)])
    run = Path(config.out)
    rows = _rows(run / "history.csv")
    assert metrics["epochs"] == len(rows) == 1
    assert 1 <= int(rows[0]["steps"]) <= 3
    assert float(rows[0]["train_minutes"]) >= 0.02
    assert "val_mean_iou" in rows[0]
    assert json.loads((run / "backup" / "state.json").read_text())["stopped"] is True
    assert train(config)["epochs"] == 1  # a rerun finds the run complete


class _Clock:
    """time for pspnet.training.callbacks, whose perf_counter advances 0.15 s a call: a
    training clock that does not depend on how fast this machine compiles."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += 0.15
        return self.now

    def __getattr__(self, name):
        return getattr(time, name)


def test_poly_decay_reaches_zero_at_the_time_limit(data_dir, tmp_path, monkeypatch):
    # Two clock reads a step (before and after it), 0.15 s each, against a 1.14 s
    # limit: 4 steps, the last one begun after 1.05 s. Step-based poly over 5
    # epochs of 4 steps would still be at 1e-3 * (1 - 3 / 20) ** 0.9 = 8.6e-4 there.
    monkeypatch.setattr("pspnet.training.callbacks.time", _Clock())
    config = TrainConfig(data=str(data_dir), out=str(tmp_path / "run"), **{**TINY, "epochs": 5}, time_limit=0.019)
    assert train(config)["epochs"] == 1
    model, _ = load_model(Path(config.out) / "last.keras", compile=True)
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(
        1e-3 * (1 - 1.05 / 1.14) ** 0.9, rel=1e-4
    )


def test_a_time_limited_epoch_reports_the_steps_it_ran(data_dir, tmp_path, monkeypatch, capsys):
    # The _Clock's 1.14 s limit stops the epoch after 4 of its 10 steps (as above).
    monkeypatch.setattr("pspnet.training.callbacks.time", _Clock())
    config = TrainConfig(
        data=str(data_dir),
        out=str(tmp_path / "run"),
        **{**TINY, "epochs": 5, "verbose": 2},
        steps_per_epoch=10,
        time_limit=0.019,
    )
    assert train(config)["epochs"] == 1
    lines = capsys.readouterr().out.splitlines()
    assert "pspnet-train: time limit of 0.019 minutes reached after 4 of 10 steps of epoch 1" in lines
    assert [float(row["steps"]) for row in _rows(Path(config.out) / "history.csv")] == [4]
    assert any("(best.keras, 1 epoch, " in line for line in lines)  # not "1 epochs"


def test_a_trained_model_takes_any_size_so_native_prediction_works(one_epoch_run, tmp_path):
    from pspnet.cli import predict_main
    from pspnet.inference.segmenter import fixed_input_size

    config, _ = one_epoch_run
    model, info = load_model(Path(config.out) / "best.keras")
    assert fixed_input_size(model) is None and tuple(info.image_size) == (32, 32)
    photo = tmp_path / "street.png"
    cv2.imwrite(str(photo), np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8))
    out = tmp_path / "out"
    assert (
        predict_main(
            [
                "--model",
                str(Path(config.out) / "best.keras"),
                "--input",
                str(photo),
                "--out",
                str(out),
                "--native",
                "--quiet",
            ]
        )
        == 0
    )
    assert cv2.imread(str(out / "street_ids.png"), cv2.IMREAD_UNCHANGED).shape == (40, 56)


def test_val_images_limits_per_epoch_validation_not_the_final_scores(data_dir, tmp_path):
    from pspnet.data import load_split
    from pspnet.inference.segmenter import Segmenter

    config = TrainConfig(data=str(data_dir), out=str(tmp_path / "run"), **TINY, val_images=1)
    validated = []

    class CountValidation(keras.callbacks.Callback):
        def on_test_batch_end(self, batch, logs=None):
            validated.append(batch)

    metrics = train(config, callbacks=[CountValidation()])
    assert validated == [0]  # one pair: one batch, where the 4 pairs make 2
    photos, ids = load_split(data_dir / "val", cache_dir=False, progress=False)
    assert len(photos) == 4
    every_pair = Segmenter.load(Path(config.out) / "best.keras", batch_size=2).confusion(photos, ids).result()
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


# --- the command line -------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--epochs", "0"], "--epochs must be a positive integer"),
        (["--data", "/no/such/folder"], "data folder not found: /no/such/folder"),
        (["--preset", "nope"], "argument --preset: invalid choice: 'nope'"),
        (["--image-size", "big"], "--base-size must be N or HxW"),
        (["--layout", "cityscapes", "--data", "/no/such/folder"], "data folder not found: /no/such/folder"),
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
    assert (
        capsys.readouterr().err
        == f"pspnet-train: error: data folder {tmp_path} has no val/ (it needs train/ and val/)\n"
    )


def test_ctrl_c_says_on_a_line_of_its_own_that_the_same_command_resumes(monkeypatch, capsys):
    import pspnet.training.loop

    def interrupted(config, callbacks=()):
        raise KeyboardInterrupt

    monkeypatch.setattr(pspnet.training.loop, "train", interrupted)
    assert train_main(["--epochs", "1"]) == 130
    assert capsys.readouterr().err == (
        "\npspnet-train: interrupted; run the same command again to resume from the last finished epoch\n"
    )
