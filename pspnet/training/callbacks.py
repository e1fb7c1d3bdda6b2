"""The training callbacks: atomic checkpoints, time limit, NaN guard, early stopping, logs.

Every callback here is written on Keras's public ``Callback`` interface only
(no private attributes of Keras's own callbacks), so it works the same on
every Keras version the package allows.

Order matters in ``fit``'s callback list: the callbacks that stop a run or
refuse an epoch (time, NaN) come first, then ``ResumeState``
(``pspnet.training.resume``, the commit point of an epoch), then every file
derived from it (history.csv, last.keras, best.keras), so that nothing derived
is ever ahead of the commit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras

from pspnet.errors import PspnetError
from pspnet.models.modelfile import ModelInfo, save_model
from pspnet.training.resume import MONITOR, patience_count


class TrainingDiverged(PspnetError, RuntimeError):
    """The loss became NaN or infinite; the run folder keeps the last good epoch."""


# --- checkpoints --------------------------------------------------------------------


class Checkpoint(keras.callbacks.Callback):
    """Saves the model (with its ``ModelInfo``) at each epoch end, or when ``monitor`` improves.

    The file is written to a temporary name and renamed, so a kill never
    leaves a half-written model under its final name.

    Args:
        path: the ``.keras`` file.
        info: what the model is, stored inside the file.
        monitor: save only when this log value exceeds the best so far; None: every epoch.
        best: the best value before this run started (a resumed run's).
        save_on_train_begin: save once when training (re)starts, to rebuild a
            file that a kill after the last commit left stale.
    """

    def __init__(
        self,
        path: str | Path,
        info: ModelInfo,
        monitor: str | None = None,
        best: float | None = None,
        save_on_train_begin: bool = False,
    ):
        super().__init__()
        self.path = Path(path)
        self.info = info
        self.monitor = monitor
        self.best = -math.inf if best is None else float(best)
        self.save_on_train_begin = save_on_train_begin

    def save(self) -> None:
        save_model(self.model, self.path, self.info)

    def on_train_begin(self, logs=None):
        if self.save_on_train_begin:
            self.save()

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor is None:
            self.save()
            return
        value = (logs or {}).get(self.monitor)
        if value is not None and math.isfinite(float(value)) and float(value) > self.best:
            self.best = float(value)
            self.save()


# --- stopping -----------------------------------------------------------------------


class ResumableEarlyStopping(keras.callbacks.Callback):
    """Stops after ``patience`` epochs without a higher ``monitor``, counting the
    epochs before a restart too (it replays the committed history).

    Args:
        history: the committed rows of the epochs before this run.
        patience: epochs without improvement before stopping.
        monitor: the log value to maximise.
        verbose: say when it stops.
    """

    def __init__(self, history: Sequence[dict[str, Any]], patience: int, monitor: str = MONITOR, verbose: int = 0):
        super().__init__()
        self.history = list(history)
        self.patience = int(patience)
        self.monitor = monitor
        self.verbose = verbose
        self.best, self.best_epoch, self.wait = -math.inf, None, 0

    @property
    def exhausted(self) -> bool:
        """Whether the patience has run out."""
        return self.wait >= self.patience

    def on_train_begin(self, logs=None):
        self.best, self.best_epoch, self.wait = patience_count(self.history, self.monitor)

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch, self.monitor: (logs or {}).get(self.monitor)}
        self.best, self.best_epoch, self.wait = patience_count(
            [row], self.monitor, start=(self.best, self.best_epoch, self.wait)
        )
        if self.exhausted:
            self.model.stop_training = True
            if self.verbose:
                epochs = "epoch" if self.patience == 1 else "epochs"
                print(
                    f"early stopping: {self.patience} {epochs} without a better {self.monitor} "
                    f"(best {self.best:.4f}, epoch {self.best_epoch + 1})",
                    flush=True,
                )


class StopOnNaN(keras.callbacks.Callback):
    """Raises ``TrainingDiverged`` when an epoch's mean loss is NaN or infinite.

    It reads the loss from the epoch's logs (a NaN in any batch makes the
    epoch's mean NaN), so training steps never wait for the host; it must come
    before ``ResumeState`` and the checkpoints in the callback list, so that
    the raise keeps that epoch's weights out of every file.

    Args:
        learning_rate: named in the advice of the error.
        finished_epochs: returns the number of committed epochs (for the message).
    """

    def __init__(self, learning_rate: float, finished_epochs: Callable[[], int]):
        super().__init__()
        self.learning_rate = learning_rate
        self.finished_epochs = finished_epochs

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or math.isfinite(float(loss)):
            return
        done = self.finished_epochs()
        raise TrainingDiverged(
            f"loss became {float(loss)} in epoch {epoch + 1}; training stopped. "
            f"The run folder keeps the last good epoch ({done} finished"
            + (": last.keras, best.keras, history.csv" if done else "")
            + f"). Lower --lr (it was {self.learning_rate:g}) or use --precision float32, "
            "and start a new run with another --out"
        )


def optimizer_step(model) -> int:
    """The optimizer's step count (one sync with the device: call it per epoch, not per step)."""
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


class TrainingTime(keras.callbacks.Callback):
    """Logs ``train_minutes``, the minutes spent in training steps so far
    (validation and checkpointing left out), and ``steps``, the steps the
    epoch ran, per epoch.

    Args:
        start: minutes of the epochs finished before a resumption.
    """

    def __init__(self, start: float = 0.0):
        super().__init__()
        self.minutes = float(start)
        self._since = None
        self._first_step = 0

    def _count(self) -> None:
        if self._since is not None:
            now = time.perf_counter()
            self.minutes += (now - self._since) / 60.0
            self._since = now

    def elapsed(self) -> float:
        """The training minutes up to now."""
        self._count()
        return self.minutes

    def on_epoch_begin(self, epoch, logs=None):
        self._first_step = optimizer_step(self.model)
        self._since = time.perf_counter()

    def on_test_begin(self, logs=None):
        self._count()  # the training part of the epoch ends where validation begins
        self._since = None

    def on_epoch_end(self, epoch, logs=None):
        self._count()
        self._since = None
        if logs is not None:
            logs["train_minutes"] = self.minutes
            logs["steps"] = optimizer_step(self.model) - self._first_step


class TimeLimit(TrainingTime):
    """``TrainingTime`` that ends the run once the minutes pass ``limit``: the
    epoch stops after the batch that crosses it, is validated and committed as
    usual, and the run is marked finished. (Its per-batch hook makes Keras wait
    for each step, so it is only used when a limit is set.)

    Args:
        limit: minutes of training after which the run stops.
        start: minutes of the epochs finished before a resumption.
        verbose: say, when the limit stops an epoch, how many of its steps ran.
    """

    def __init__(self, limit: float, start: float = 0.0, verbose: int = 0):
        super().__init__(start)
        self.limit = float(limit)
        self.verbose = verbose
        self._epoch = 0
        self._stop = None  # (steps run, steps of the epoch, epoch), once the limit stopped an epoch

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self._count()
        if self.minutes >= self.limit and self._stop is None:
            self.model.stop_training = True
            self._stop = (batch + 1, self.params.get("steps"), self._epoch + 1)  # batch: the last step's index

    def on_train_end(self, logs=None):
        # After Keras's progress line, whose count is the epoch's length, not the steps run.
        if self.verbose and self._stop is not None:
            done, steps, epoch = self._stop
            print(
                f"pspnet-train: time limit of {self.limit:g} minutes reached after {done} of {steps} steps "
                f"of epoch {epoch}",
                flush=True,
            )


class PolyLearningRate(keras.callbacks.Callback):
    """Sets the optimizer's learning rate before each step to
    ``base * (1 - progress) ** 0.9``, ``progress`` being the fraction of the
    run done: the optimizer's step over ``total_steps``, or, when ``clock``
    (a ``TimeLimit``) predicts an earlier end, its minutes over its limit.

    The rate is a function of the optimizer's step, which a resumed run
    restores with the rest of the optimizer, so a rerun, extended or not, with
    or without a time limit, continues the schedule (nanoGPT's
    ``get_lr(iter)``); the optimizer holds a plain learning-rate variable
    (``pspnet.training.optimizers.build_optimizer``) whatever bounds the run. With
    ``steps_per_execution`` N the rate changes every N steps.

    Args:
        base: the learning rate at step 0.
        total_steps: the step at which the rate reaches 0 (``epochs * steps_per_epoch``).
        clock: a TimeLimit whose limit may end the run first, or None.
    """

    def __init__(self, base: float, total_steps: int, clock: TimeLimit | None = None):
        super().__init__()
        self.base = float(base)
        self.total_steps = max(1, int(total_steps))
        self.clock = clock
        self._first_step = 0

    def rate(self, step: int) -> float:
        """The learning rate of optimizer step ``step`` (0-based)."""
        progress = step / self.total_steps
        if self.clock is not None:
            # At a steady pace the limit falls at step * limit / minutes: the
            # clock's fraction is the same fraction of that horizon.
            progress = max(progress, self.clock.elapsed() / self.clock.limit)
        return self.base * (1.0 - min(1.0, progress)) ** 0.9

    def on_epoch_begin(self, epoch, logs=None):
        self._first_step = optimizer_step(self.model)

    def on_train_batch_begin(self, batch, logs=None):
        rate = self.rate(self._first_step + batch)  # batch: the epoch's step index
        # JAX threads the variables through the epoch: write its state back
        # first, so that the next step reads the new rate (Keras's own hook).
        sync = getattr(self.model, "jax_state_sync", None)
        if sync is not None:
            sync()
        self.model.optimizer.learning_rate = rate


# --- logs -----------------------------------------------------------------------------


class RenameOutputLogs(keras.callbacks.Callback):
    """Renames ``main_<metric>`` logs of a model with outputs {"main", "aux"}
    to ``<metric>``, so that ``val_mean_iou`` names the main output's mIoU."""

    def __init__(self, output: str = "main"):
        super().__init__()
        self.prefix = output + "_"

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        for key in list(logs):
            for split in ("", "val_"):
                if key.startswith(split + self.prefix) and not key.endswith("loss"):
                    logs[split + key[len(split + self.prefix) :]] = logs.pop(key)


class ColourScores(keras.callbacks.Callback):
    """Adds ``val_mean_iou`` and ``val_pixel_accuracy`` for the seed's colour head,
    scored the way ``pspnet-evaluate`` scores it (``pspnet.inference.segmenter``).

    Args:
        photos: (N, H, W, 3) uint8 val photos.
        train_ids: (N, H, W) uint8 val truth.
        info: the model's ModelInfo (head "rgb").
        batch_size: images per forward pass.
    """

    def __init__(self, photos, train_ids, info: ModelInfo, batch_size: int):
        super().__init__()
        self.photos, self.train_ids = photos, train_ids
        self.info = info
        self.batch_size = batch_size

    def on_epoch_end(self, epoch, logs=None):
        from pspnet.inference.segmenter import Segmenter

        segmenter = Segmenter(self.model, self.info, self.info.image_size, batch_size=self.batch_size)
        scores = segmenter.confusion(self.photos, self.train_ids).result()
        if logs is not None:
            logs["val_mean_iou"] = scores["mean_iou"]
            logs["val_pixel_accuracy"] = scores["pixel_accuracy"]
