"""The resume state of a run: ``backup/state.json``, the commit point of each finished epoch.

``ResumeState`` writes it at each epoch end and restores it; ``read_state``
reads it, and ``best_of``, ``patience_count`` and ``history_csv_text`` derive
from its committed rows what a restart rebuilds (best.keras's bar, early
stopping's count, history.csv).
"""

from __future__ import annotations

import csv
import io
import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from pspnet.errors import ConfigError, first_line
from pspnet.fileio import atomic_write, atomic_write_text

MONITOR = "val_mean_iou"  # what best.keras and early stopping follow


class ResumeState(keras.callbacks.Callback):
    """Commits each finished epoch atomically, so a killed run resumes from the last one.

    Each epoch writes ``epoch-NNNNNN.weights.h5`` (model and optimizer
    variables: ``save_weights`` includes the optimizer) under a temporary name
    and then replaces ``state.json``, the commit point, which names that file
    and holds every finished epoch's logs and the states of the model's random
    generators (dropout's ``SeedGenerator``, which ``save_weights`` leaves
    out), so a resumed run draws the dropout masks the uninterrupted run
    draws. Nothing is deleted when training ends.

    Args:
        backup_dir: folder of the state (``RUN/backup``).
        restore_dir: folder to restore from (default ``backup_dir``; a
            multi-worker non-chief reads the chief's).
        class_names: the data set's classes, in index order; a resume whose
            classes are not the committed ones is refused.
    """

    STATE = "state.json"

    def __init__(
        self, backup_dir: str | Path, restore_dir: str | Path | None = None, class_names: Sequence[str] | None = None
    ):
        super().__init__()
        self.backup_dir = Path(backup_dir)
        self.restore_dir = Path(restore_dir or backup_dir)
        self.class_names = None if class_names is None else [str(name) for name in class_names]
        self.state = read_state(self.restore_dir)
        self.history: list[dict[str, Any]] = list(self.state.get("history", []))

    @property
    def _start_again(self) -> str:
        """What to do about a resume state that cannot be used."""
        return f"delete {self.restore_dir} to start the run again, or restore it from a copy"

    @property
    def epochs_done(self) -> int:
        """Epochs committed so far."""
        return int(self.state.get("epoch", 0))

    def restore(self, model) -> int:
        """Loads the committed weights and optimizer state into ``model`` (built and compiled).

        Returns:
            The number of finished epochs: ``fit(initial_epoch=...)``.
        """
        self._check_classes()
        name = self.state.get("weights")
        if name:
            if model.optimizer is not None and not model.optimizer.built:
                model.optimizer.build(model.trainable_variables)  # create the slots before loading
            path = self.restore_dir / name
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    model.load_weights(path)
            except Exception as error:  # h5py and Keras raise several types for a damaged file
                raise ConfigError(
                    f"the last committed epoch cannot be restored, its weights file is damaged "
                    f"({first_line(error)}): {path}; {self._start_again}"
                ) from None
            _check_optimizer_loaded(caught, path, self._start_again)
        generators = _generator_variables(model)
        saved = self.state.get("generators", [])
        if len(saved) == len(generators):
            for variable, value in zip(generators, saved):
                variable.assign(np.asarray(value, dtype=variable.dtype))
        return self.epochs_done

    def _check_classes(self) -> None:
        """Refuses to resume on other classes: the weights would load (same count) or fail as if damaged."""
        saved = self.state.get("class_names")  # absent in the states of older runs
        if saved is None or self.class_names is None or saved == self.class_names:
            return
        if len(saved) != len(self.class_names):
            change = f"{len(saved)} classes, now {len(self.class_names)}"
        else:
            change = ", ".join(f"{a} -> {b}" for a, b in zip(saved, self.class_names) if a != b)
        raise ConfigError(
            f"the data set's classes changed since this run began ({change}): {self.restore_dir / self.STATE}; "
            "train into another --out, or give the data its old classes"
        )

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch, **{key: _plain(value) for key, value in (logs or {}).items()}}
        self.history = [r for r in self.history if r["epoch"] < epoch] + [row]
        self.backup_dir.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{epoch + 1:06d}.weights.h5"
        atomic_write(self.backup_dir / name, lambda tmp: self.model.save_weights(str(tmp)), suffix=".weights.h5")
        best_epoch, best_value = best_of(self.history)
        state = {
            "epoch": epoch + 1,  # epochs finished
            "weights": name,
            "stopped": bool(self.model.stop_training),  # a time limit or early stopping ended the run
            "best_epoch": best_epoch,
            "best_value": best_value,
            "generators": [keras.ops.convert_to_numpy(v).tolist() for v in _generator_variables(self.model)],
            "history": self.history,
        }
        if self.class_names is not None:
            state["class_names"] = self.class_names
        atomic_write_text(self.backup_dir / self.STATE, json.dumps(state, indent=1, allow_nan=True))  # the commit
        self.state = state
        for stale in self.backup_dir.glob("epoch-*.weights.h5"):
            if stale.name != name:
                stale.unlink()


def _check_optimizer_loaded(caught: list, path: Path, advice: str) -> None:
    """Raises when ``load_weights`` skipped the optimizer (Keras only warns); re-issues other warnings.

    A fresh optimizer would lose its moments and its step, the learning
    rate's schedule, without a word.
    """
    for warning in caught:
        message = str(warning.message)
        if "Skipping variable loading for optimizer" in message:
            raise ConfigError(
                f"the optimizer state in {path} does not fit this run's optimizer ({first_line(warning.message)}); "
                f"rerun with the flags that made it (config.json), or {advice}"
            )
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)


def _generator_variables(model) -> list:
    """The model's variables that are not weights: the states of its random generators, in build order."""
    weights = {id(variable) for variable in model.weights}
    return [variable for variable in model.variables if id(variable) not in weights]


def read_state(folder: str | Path) -> dict[str, Any]:
    """The committed resume state of a run (``backup/state.json``), or {} when none.

    Raises:
        ConfigError: the state file is unreadable or names a missing weights file.
    """
    path = Path(folder) / ResumeState.STATE
    if not path.is_file():
        return {}
    advice = f"delete {folder} to start the run again, or restore it from a copy"
    try:
        state = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"cannot read the resume state {path} ({first_line(error)}); {advice}") from None
    if not isinstance(state, dict):
        raise ConfigError(f"the resume state {path} is not a JSON object; {advice}")
    if state.get("weights") and not (Path(folder) / state["weights"]).is_file():
        raise ConfigError(f"the resume state {path} names a missing file {state['weights']}; {advice}")
    return state


def best_of(history: Sequence[dict[str, Any]], monitor: str = MONITOR) -> tuple[int | None, float | None]:
    """(epoch, value) of the first strictly best ``monitor`` value in the rows."""
    best_value, best_epoch, _ = patience_count(history, monitor)
    return best_epoch, None if best_epoch is None else best_value


def patience_count(
    rows: Sequence[dict[str, Any]], monitor: str = MONITOR, start: tuple[float, int | None, int] = (-math.inf, None, 0)
) -> tuple[float, int | None, int]:
    """Early stopping's count over rows, continued from ``start``.

    Returns:
        (best ``monitor`` value, its epoch, epochs with a finite value since it).
    """
    best, best_epoch, wait = start
    for row in rows:
        value = row.get(monitor)
        if not isinstance(value, (int, float, np.generic)) or not math.isfinite(float(value)):
            continue
        wait += 1
        if float(value) > best:
            best, best_epoch, wait = float(value), int(row["epoch"]), 0
    return best, best_epoch, wait


def history_csv_text(rows: Sequence[dict[str, Any]]) -> str:
    """history.csv text for committed rows, in CSVLogger's layout (epoch, sorted keys)."""
    if not rows:
        return ""
    keys = sorted(k for k in rows[0] if k != "epoch")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["epoch"] + keys, dialect=csv.excel)
    writer.writeheader()
    for row in rows:
        writer.writerow({key: row.get(key, "NA") for key in ["epoch"] + keys})
    return buffer.getvalue()


def _plain(value):
    """A log value as a JSON-ready Python number (a count stays an int, as CSVLogger writes it)."""
    if isinstance(value, (np.generic, np.ndarray)) or hasattr(value, "numpy"):
        value = np.asarray(value)
        value = value.item() if value.size == 1 else value.tolist()
    return value
