"""The run folder of ``pspnet-train``: its lock, its config.json, and whether a rerun continues it.

A run folder holds::

    .lock           held (flock) by the process training into it
    config.json     the TrainConfig (written once the model is built; a rerun must match it)
    backup/         the resume state: weights + optimizer state of the last finished
                    epoch, and the history of every finished epoch (state.json)
    history.csv     one row per finished epoch (keras.callbacks.CSVLogger)
    last.keras      the model after the last finished epoch
    best.keras      the model of the epoch with the best val_mean_iou
    logs/           TensorBoard logs (when TensorFlow is installed)
    metrics.json    written last: the best model's val scores (pspnet.metrics)
    curves.png      the training curves (pspnet.inference.viz.plot_history)

Resume: starting the same command again continues from the last finished
epoch; ``backup/state.json`` is the single commit point of an epoch
(``pspnet.training.resume.ResumeState``), and everything else is derived from it and
rebuilt at start-up when a kill left it behind. A rerun may change how long
the run goes on (a larger ``--epochs`` or ``--time-limit`` extends a finished
run) and how it runs (``config.RESUMABLE_CHANGES``), never what it is.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pspnet.errors import ConfigError
from pspnet.fileio import FolderLock, atomic_write_text, remove_temporaries
from pspnet.training.config import TrainConfig
from pspnet.training.resume import history_csv_text, patience_count, read_state

CONFIG = "config.json"
METRICS = "metrics.json"


@dataclass
class Run:
    """An open run folder: where this process writes, and what was committed before."""

    path: Path  # the run folder
    folder: Path  # where this process writes: the run folder, or a non-chief worker's scratch folder
    saved: TrainConfig | None  # the config.json found, or None for a new run
    state: dict[str, Any]  # the committed resume state (read_state), {} for a new run

    @property
    def is_chief(self) -> bool:
        return self.folder == self.path

    def metrics(self) -> dict[str, Any] | None:
        """The finished run's metrics.json, or None."""
        path = self.path / METRICS
        return json.loads(path.read_text()) if path.is_file() else None

    def write_config(self, config: TrainConfig) -> None:
        """Records the config (a new run, or one a rerun extended); non-chief workers write nothing."""
        if self.is_chief and (self.saved is None or self.saved != config):
            atomic_write_text(self.path / CONFIG, config.to_json())
            self.saved = config

    def rebuild_history(self, rows) -> None:
        """history.csv = the committed rows (drops an uncommitted or torn last row)."""
        path = self.folder / "history.csv"
        if rows:
            atomic_write_text(path, history_csv_text(rows))
        elif path.exists():
            path.unlink()


def is_complete(state: dict[str, Any], config: TrainConfig) -> bool:
    """Whether a committed run is finished under ``config``'s limits.

    It is when it has run ``epochs`` epochs, or used up ``time_limit``, or
    ``early_stopping``'s patience (replayed from the history); a larger limit
    on a rerun makes it unfinished again.
    """
    history = state.get("history", [])
    if not history:
        return False
    if int(state.get("epoch", 0)) >= config.epochs:
        return True
    minutes = history[-1].get("train_minutes")
    if config.time_limit is not None and isinstance(minutes, (int, float)) and minutes >= config.time_limit:
        return True
    if config.early_stopping:
        _, _, waited = patience_count(history)  # the count ResumableEarlyStopping replays
        return waited >= config.early_stopping
    return False


def _read_config(path: Path) -> TrainConfig | None:
    if not path.is_file():
        return None
    try:
        return TrainConfig.from_json(path.read_text())
    except (ConfigError, OSError) as error:
        raise ConfigError(f"{path}: {error}") from error


def _check_reusable(path: Path) -> None:
    """Refuses a file, or a non-empty folder that holds no run."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"run folder {path} is a file")
    if path.is_dir() and not (path / CONFIG).is_file():
        # Hidden entries are the run's own: its lock and temporaries.
        if any(not entry.name.startswith(".") for entry in path.iterdir()):
            raise ConfigError(f"run folder {path} is not empty and has no {CONFIG}; choose another --out")


@contextlib.contextmanager
def open_run(config: TrainConfig, is_chief: bool = True, worker_index: int = 0) -> Iterator[Run]:
    """Opens (creating) the run folder of a resolved config for this process, locked.

    Args:
        config: a resolved TrainConfig; ``config.out`` is the run folder.
        is_chief: whether this process writes the run folder. Another process
            of a multi-process run writes nothing there: its files go to a
            scratch folder of its own (removed when it ends), and it restores
            from the chief's ``RUN/backup``, which it must see (a shared file
            system when the processes run on several machines).
        worker_index: the other process's index (names its scratch folder).

    Yields:
        The Run. A folder this call created is removed again when the body
        fails before config.json was written (by this process only, while it
        holds the lock).

    Raises:
        ConfigError: the folder holds another run, or is not a run folder, or
            another process is training into it.
    """
    path = Path(config.out)
    _check_reusable(path)
    if not is_chief:
        scratch = Path(tempfile.mkdtemp(prefix=f"pspnet-process{worker_index}-"))
        try:
            yield Run(path=path, folder=scratch, saved=_read_config(path / CONFIG), state=read_state(path / "backup"))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return
    created = _make_folder(path)
    lock = FolderLock(path, what="another pspnet-train")
    lock.acquire()  # a process that loses the lock leaves the folder alone: it may be the winner's now
    try:
        saved = _read_config(path / CONFIG)
        if saved is not None:
            changes = config.changes_from(saved)
            if changes:
                raise ConfigError(
                    f"run folder {path} holds another run ({'; '.join(changes)}); rerun with its flags to "
                    "resume or extend it, or choose another --out"
                )
        for place in (path, path / "backup"):
            remove_temporaries(place)
        yield Run(path=path, folder=path, saved=saved, state=read_state(path / "backup"))
    except BaseException:
        if created and not (path / CONFIG).exists():
            # Nothing of a run was written: leave no trace, while the lock still keeps others out.
            shutil.rmtree(path, ignore_errors=True)
        raise
    finally:
        lock.release()


def _make_folder(path: Path) -> bool:
    """Creates the run folder; whether this call created it (of processes racing to, exactly one did)."""
    try:
        path.mkdir(parents=True)
    except FileExistsError:
        return False
    return True
