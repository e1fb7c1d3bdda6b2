"""Trains a PSPNet into a run folder that survives being killed at any moment.

    pspnet-train                                  # the demo: synthetic data, fast preset, CPU, < 3 min
    pspnet-train --data ../shared/data/cityscapes_data --preset fast --epochs 50
    pspnet-train --data DIR --preset seed --head rgb --no-flip --no-scale --batch-size 10
    pspnet-train --data DIR --preset pspnet50 --optimizer sgd --lr 0.01 --weight-decay 1e-4 --distribute

A run folder holds::

    config.json     the TrainConfig (written first; a rerun must match it)
    backup/         the resume state: weights + optimizer state of the last finished
                    epoch, and the history of every finished epoch (state.json)
    history.csv     one row per finished epoch (keras.callbacks.CSVLogger)
    last.keras      the model after the last finished epoch
    best.keras      the model of the epoch with the best val_mean_iou
    logs/           TensorBoard logs (when TensorFlow is installed)
    metrics.json    written last: the best model's val scores (pspnet.metrics)
    curves.png      the training curves (pspnet.viz.plot_history)

Resume: starting the same command again continues from the last finished
epoch. ``backup/state.json`` is the single commit point of an epoch: it is
replaced atomically (write to a temporary file, then ``os.replace``) after
the weights file it names is complete, and it carries the history rows.
Everything else is derived from it and rebuilt at start-up when a kill left it
behind: ``history.csv`` is rewritten from the committed rows (dropping a row of
an uncommitted epoch or a half-written line), ``last.keras`` is re-saved from
the restored state, and ``best.keras`` too when the last committed epoch was
the best. The ``.keras`` files are written to a temporary name and renamed, so
a kill never leaves a half-written model under its final name.

Distribution (``distribute=True``): TensorFlow trains data-parallel with
``tf.distribute.MirroredStrategy`` over the visible GPUs (or CPUs when there is
none), or ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` is set; JAX with
``keras.distribution.DataParallel`` over ``keras.distribution.list_devices()``.
``batch_size`` is the global batch, split evenly over the devices.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import time
import typing
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import keras
import numpy as np
from keras import ops

from pspnet.errors import ConfigError, PspnetError, PspnetWarning
from pspnet.model import HEADS, PRESETS
from pspnet.palette import IGNORE_INDEX, NUM_CLASSES
from pspnet.synth import DEMO_SIZE, demo_data

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "poly")
CLASS_WEIGHTINGS = ("none", "inverse_sqrt_freq", "median_freq")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")

# What fields left at None become (see TrainConfig.resolved). The demo's were
# chosen by measurement on a 2-core CPU (docs/BENCHMARKS.md, "The demo"): no
# rescaling and a finer feature map, since its thin classes (poles, signs) are a
# few pixels wide at 64 px; batch 2, which a CPU runs at the images/s of batch 8
# with four times the updates; 2400 steps over 1440 pairs, which fit in the
# time and keep train and val mIoU together (240 pairs overfit); poly decay.
DEMO_DEFAULTS = {"image_size": DEMO_SIZE, "batch_size": 2, "epochs": 8, "steps_per_epoch": 300, "scale": False,
                 "output_stride": 4, "adam_learning_rate": 4e-3, "adam_schedule": "poly"}
DATA_DEFAULTS = {"image_size": 256, "batch_size": 8, "epochs": 50, "steps_per_epoch": None, "scale": True,
                 "output_stride": None, "adam_learning_rate": 1e-3, "adam_schedule": "constant"}
SGD_LEARNING_RATE = 1e-2  # the paper's

# The allowed values of the config's string fields (also the flags' choices).
CHOICES = {
    "preset": PRESETS,
    "head": HEADS,
    "optimizer": OPTIMIZERS,
    "schedule": SCHEDULES,
    "class_weighting": CLASS_WEIGHTINGS,
    "precision": PRECISIONS,
}

MONITOR = "val_mean_iou"  # what best.keras and early stopping follow


class TrainingDiverged(PspnetError, RuntimeError):
    """The loss became NaN or infinite; the run folder keeps the last good epoch."""


# --- configuration ----------------------------------------------------------


@dataclass
class TrainConfig:
    """Everything one training run depends on; saved as ``config.json`` in the run folder.

    Fields left at ``None`` are filled in by ``resolved()`` (demo or data defaults).
    """

    data: str = "demo"  # folder holding train/ and val/ pairs, or "demo" (synthetic set in the cache)
    out: str | None = None  # run folder; None: runs/<data name>-<preset>-<head> (same command, same folder)
    preset: str = "fast"  # model preset: fast, seed or pspnet50 (pspnet.model.PRESETS)
    head: str = "classes"  # classes (logits, cross-entropy) or rgb (the seed's sigmoid colours, MSE)
    image_size: int | tuple[int, int] | None = None  # training size, H or (H, W); None: 256 (demo: 64)
    batch_size: int | None = None  # global batch over all devices; None: 8 (demo: 2)
    epochs: int | None = None  # number of epochs; None: 50 (demo: 8)
    steps_per_epoch: int | None = None  # batches per epoch; None: one pass over train/ (demo: 300)
    time_limit: float | None = None  # minutes of training steps (validation not counted, a resumed run counts on) after which the epoch ends and the run stops; None: no limit
    optimizer: str = "adam"  # adam (the seed) or sgd (the paper, with momentum)
    learning_rate: float | None = None  # initial learning rate; None: 1e-3 for adam (demo: 4e-3), 1e-2 for sgd
    schedule: str | None = None  # constant or poly (power 0.9 down to 0); None: poly for sgd, constant for adam (demo: poly)
    momentum: float = 0.9  # sgd momentum (the paper: 0.9)
    weight_decay: float = 0.0  # decoupled weight decay (the paper: 1e-4); norms and biases are exempt
    flip: bool = True  # random horizontal flips
    scale: bool | None = None  # random rescaling in [0.5, 2] and cropping (the paper's); None: on (demo: off)
    jitter: bool = False  # random brightness / contrast / saturation
    class_weighting: str | None = None  # none, inverse_sqrt_freq or median_freq; None: none
    aux_loss_weight: float = 0.4  # pspnet50: weight of the auxiliary head's loss (the paper: 0.4); 0: no aux head
    dropout: float = 0.1  # dropout before the classifier (fast, pspnet50)
    output_stride: int | None = None  # fast: features at 1/8 (8) or 1/4 (4) of the input; None: 8 (demo: 4)
    backbone_weights: str | None = None  # pspnet50: None (random), imagenet, or a ResNet50 weights file
    precision: str = "float32"  # dtype policy: float32, mixed_bfloat16 or mixed_float16
    jit_compile: bool | None = None  # XLA compilation; None: Keras's "auto"
    steps_per_execution: int = 1  # batches per compiled call (fewer host round trips)
    seed: int = 0  # seeds the weights, the shuffling and the augmentation
    distribute: bool = False  # data-parallel over every visible device (see the module docstring)
    val_images: int | None = None  # validate each epoch on the first N val pairs (the final metrics.json uses all); None: all
    early_stopping: int | None = None  # stop after this many epochs without a better val mIoU; None: off
    cache_dir: str | None = None  # cache folder of decoded splits (pspnet.data.load_split); None: the default cache ($PSPNET_CACHE or ~/.cache/pspnet)
    workers: int | None = None  # input pipeline threads; None: min(4, CPU count)
    verbose: int | None = None  # 0 silent, 1 progress bar, 2 one line per epoch; None: Keras's auto

    def __post_init__(self):
        self.image_size = _size_pair(self.image_size)
        self.data = str(self.data)
        if self.out is not None:
            self.out = str(self.out)
        _check_choice("preset", self.preset, PRESETS)
        _check_choice("head", self.head, HEADS)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        if self.schedule is not None:
            _check_choice("schedule", self.schedule, SCHEDULES)
        if self.class_weighting is not None:
            _check_choice("class_weighting", self.class_weighting, CLASS_WEIGHTINGS)
        _check_choice("precision", self.precision, PRECISIONS)
        for name in ("batch_size", "epochs", "steps_per_epoch", "early_stopping", "workers", "val_images"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{flag_name(name)} must be a positive integer, got {value!r}")
        if not isinstance(self.steps_per_execution, int) or self.steps_per_execution < 1:
            raise ConfigError(f"--steps-per-execution must be a positive integer, got {self.steps_per_execution!r}")
        if self.time_limit is not None and not (isinstance(self.time_limit, (int, float)) and self.time_limit > 0):
            raise ConfigError(f"--time-limit must be a positive number of minutes, got {self.time_limit!r}")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ConfigError(f"--lr must be positive, got {self.learning_rate!r}")
        for name in ("weight_decay", "aux_loss_weight", "momentum"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{flag_name(name)} must be >= 0, got {getattr(self, name)!r}")
        if self.output_stride is not None and (self.preset != "fast" or self.output_stride not in (4, 8)):
            raise ConfigError(f"--output-stride must be 4 or 8 and needs --preset fast, got {self.output_stride!r}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"--dropout must lie in [0, 1), got {self.dropout!r}")
        if self.head == "rgb" and self.class_weighting not in (None, "none"):
            raise ConfigError("--class-weighting needs --head classes (the rgb head is trained with MSE)")

    @property
    def is_demo(self) -> bool:
        """Whether the run trains on the built-in synthetic demo set."""
        return self.data == "demo"

    def resolved(self) -> "TrainConfig":
        """Returns a copy with every ``None`` default filled in (what config.json records).

        Returns:
            A TrainConfig whose out, image_size, batch_size, epochs,
            learning_rate, schedule, scale, class_weighting and (fast)
            output_stride are set; ``data`` is an absolute path (or "demo").
        """
        defaults = DEMO_DEFAULTS if self.is_demo else DATA_DEFAULTS
        data = self.data if self.is_demo else str(Path(self.data).expanduser().resolve())
        data_name = "demo" if self.is_demo else Path(data).name
        learning_rate = SGD_LEARNING_RATE if self.optimizer == "sgd" else defaults["adam_learning_rate"]
        return dataclasses.replace(
            self,
            data=data,
            out=self.out or str(Path("runs") / f"{data_name}-{self.preset}-{self.head}"),
            image_size=self.image_size or defaults["image_size"],
            batch_size=self.batch_size or defaults["batch_size"],
            epochs=self.epochs or defaults["epochs"],
            learning_rate=self.learning_rate or learning_rate,
            steps_per_epoch=self.steps_per_epoch or defaults["steps_per_epoch"],
            schedule=self.schedule or ("poly" if self.optimizer == "sgd" else defaults["adam_schedule"]),
            scale=defaults["scale"] if self.scale is None else self.scale,
            class_weighting=self.class_weighting or "none",
            output_stride=self.output_stride or (defaults["output_stride"] if self.preset == "fast" else None),
        )

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (tuples become lists)."""
        values = dataclasses.asdict(self)
        if values["image_size"] is not None:
            values["image_size"] = list(values["image_size"])
        return values

    def to_json(self) -> str:
        """The config as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        """Reads a config written by ``to_json``.

        Args:
            text: JSON text of an object with TrainConfig fields.

        Returns:
            The TrainConfig.

        Raises:
            ConfigError: invalid JSON, unknown fields or invalid values.
        """
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"config is not valid JSON: {error}") from error
        if not isinstance(values, dict):
            raise ConfigError("config JSON must be an object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown config fields: {', '.join(unknown)}")
        try:
            return cls(**values)
        except TypeError as error:
            raise ConfigError(f"invalid config: {error}") from error


# Fields that may change between a run and its resumption: they change how
# fast or how verbosely it runs, never what it computes.
RESUMABLE_CHANGES = ("workers", "cache_dir", "verbose")


def flag_name(name: str) -> str:
    """The command-line flag of a config field (``learning_rate`` -> ``--lr``)."""
    return {"learning_rate": "--lr"}.get(name, "--" + name.replace("_", "-"))


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"{flag_name(name)} must be one of {', '.join(choices)}; got {value!r}")


def _size_pair(value) -> tuple[int, int] | None:
    """Normalises an image size (int, "HxW", (H, W)) to a (H, W) tuple of ints."""
    if value is None:
        return None
    if isinstance(value, str):
        parts = value.lower().replace(",", "x").split("x")
        try:
            value = [int(part) for part in parts]
        except ValueError:
            raise ConfigError(f"--image-size must be N or HxW, got {value!r}") from None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (int(value), int(value))
    if (
        not isinstance(value, (list, tuple))
        or len(value) not in (1, 2)
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise ConfigError(f"--image-size must be a positive N or HxW, got {value!r}")
    return (int(value[0]), int(value[-1]))


def config_field_help() -> dict[str, str]:
    """Each TrainConfig field's comment in the source, the help text of its flag.

    Returns:
        field name -> comment (empty when the source is not available).
    """
    import inspect

    try:
        source = inspect.getsource(TrainConfig)
    except (OSError, TypeError):
        return {}
    help_texts = {}
    for line in source.splitlines():
        stripped = line.strip()
        name, colon, rest = stripped.partition(":")
        if colon and name.isidentifier() and "  # " in rest:
            help_texts[name] = rest.split("  # ", 1)[1].strip()
    return help_texts


def config_field_types() -> dict[str, Any]:
    """Each TrainConfig field's resolved type annotation (``int | None`` etc.)."""
    return typing.get_type_hints(TrainConfig)


# --- losses and metrics ------------------------------------------------------


@keras.saving.register_keras_serializable(package="pspnet")
class WeightedSparseCrossentropy(keras.losses.Loss):
    """Sparse cross-entropy from logits with per-class weights and an ignored id.

    The batch loss is ``sum(w[y] * ce) / sum(w[y])`` over the pixels whose
    truth is not ``ignore_class``, so with all weights 1 it equals Keras's
    ``SparseCategoricalCrossentropy(from_logits=True, ignore_class=...)``.

    Args:
        class_weights: C per-class weights.
        ignore_class: truth id left out of the loss.
    """

    def __init__(self, class_weights: Sequence[float], ignore_class: int = IGNORE_INDEX,
                 name: str = "weighted_sparse_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.class_weights = [float(w) for w in class_weights]
        self.ignore_class = int(ignore_class)

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "int32")
        valid = ops.not_equal(y_true, self.ignore_class)
        safe_true = ops.where(valid, y_true, 0)
        entropy = ops.sparse_categorical_crossentropy(safe_true, y_pred, from_logits=True)  # (B, H, W)
        weight_table = ops.convert_to_tensor(self.class_weights, dtype=entropy.dtype)
        weights = ops.take(weight_table, safe_true) * ops.cast(valid, entropy.dtype)
        # The default reduction divides by the pixel count: rescale so that it
        # yields the weighted mean over the valid pixels instead.
        count = ops.cast(ops.size(entropy), entropy.dtype)
        return entropy * weights * (count / ops.maximum(ops.sum(weights), 1e-6))

    def get_config(self):
        return {**super().get_config(), "class_weights": self.class_weights, "ignore_class": self.ignore_class}


@keras.saving.register_keras_serializable(package="pspnet")
class PixelAccuracy(keras.metrics.Metric):
    """Share of pixels whose arg-max class equals the truth, ignoring one id.

    Unlike ``keras.metrics.SparseCategoricalAccuracy``, pixels whose truth is
    ``ignore_class`` count neither as right nor as wrong.

    Args:
        ignore_class: truth id left out (255, void).
    """

    def __init__(self, ignore_class: int = IGNORE_INDEX, name: str = "pixel_accuracy", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.ignore_class = int(ignore_class)
        self.correct = self.add_variable((), initializer="zeros", name="correct", aggregation="sum")
        self.total = self.add_variable((), initializer="zeros", name="total", aggregation="sum")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(y_true, "int32")
        if len(y_true.shape) == len(y_pred.shape):  # (B, H, W, 1) truth
            y_true = ops.squeeze(y_true, axis=-1)
        predicted = ops.cast(ops.argmax(y_pred, axis=-1), "int32")
        valid = ops.not_equal(y_true, self.ignore_class)
        right = ops.logical_and(valid, ops.equal(predicted, y_true))
        self.correct.assign_add(ops.sum(ops.cast(right, self.dtype)))
        self.total.assign_add(ops.sum(ops.cast(valid, self.dtype)))

    def result(self):
        return ops.divide_no_nan(self.correct, self.total)

    def reset_state(self):
        self.correct.assign(0.0)
        self.total.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "ignore_class": self.ignore_class}


def class_weights(train_ids: np.ndarray, method: str, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Per-class loss weights from the pixel counts of the training targets.

    ``inverse_sqrt_freq``: w_c = 1 / sqrt(f_c); ``median_freq`` (SegNet):
    w_c = median(f) / f_c. Both are scaled so that the pixel-weighted mean
    weight is 1 (the loss keeps its scale). Classes absent from the targets
    get weight 1 (they never occur, so it does not matter).

    Args:
        train_ids: uint8 train ids (N, H, W), 255 = ignore; may be a memmap.
        method: "none", "inverse_sqrt_freq" or "median_freq".
        num_classes: number of classes C.

    Returns:
        float32 (C,) weights.
    """
    _check_choice("class_weighting", method, CLASS_WEIGHTINGS)
    if method == "none":
        return np.ones(num_classes, np.float32)
    counts = np.zeros(256, np.int64)
    for start in range(0, len(train_ids), 64):  # bounded memory on a memmap
        counts += np.bincount(np.asarray(train_ids[start : start + 64]).ravel(), minlength=256)
    counts = counts[:num_classes].astype(np.float64)
    present = counts > 0
    if not present.any():
        return np.ones(num_classes, np.float32)
    frequency = counts / counts.sum()
    weights = np.ones(num_classes)
    if method == "inverse_sqrt_freq":
        weights[present] = 1.0 / np.sqrt(frequency[present])
    else:
        weights[present] = np.median(frequency[present]) / frequency[present]
    weights[present] /= np.sum(frequency[present] * weights[present])
    return weights.astype(np.float32)


# --- small file helpers -------------------------------------------------------


def _fsync_path(path: Path) -> None:
    """Flushes a file (or folder entry) to disk; best effort where unsupported."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, write: Callable[[Path], None], suffix: str = "") -> None:
    """Writes a file under a temporary name, then renames it over ``path``.

    A reader (or a restarted run) sees the old file or the complete new one,
    never a partial one, whatever moment the process is killed at.

    Args:
        path: the final file.
        write: called with the temporary path to write to.
        suffix: ending the temporary name must keep (".keras", ".weights.h5").
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}{suffix}")
    try:
        write(temporary)
        _fsync_path(temporary)
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()
    _fsync_path(path.parent)


def _atomic_write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda temporary: temporary.write_text(text))


def _remove_temporaries(folder: Path) -> None:
    """Deletes the temporary files a killed run left behind (``.NAME.tmp-PID...``)."""
    if folder.is_dir():
        for leftover in folder.glob(".*.tmp-*"):
            if leftover.is_file():
                leftover.unlink()


def _history_csv_text(rows: Sequence[dict[str, Any]]) -> str:
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


# --- callbacks -----------------------------------------------------------------


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` whose every save is atomic and carries the history.

    Keras's callback writes ``latest.weights.h5`` in place and then a separate
    ``training_metadata.json``: a kill during the first write leaves a corrupt
    file, one between the two leaves weights and epoch count out of step, and
    the backup is deleted when ``fit`` ends (so a finished or early-stopped run
    would start over). Here each epoch writes ``epoch-NNNNNN.weights.h5``
    (model and optimizer variables: ``save_weights`` includes the optimizer)
    under a temporary name, and then replaces ``state.json``, the commit
    point, which names that file and holds every finished epoch's logs.
    Nothing is deleted at the end of training.

    Args:
        backup_dir: folder of the state (``RUN/backup``).
        restore_dir: folder to restore from (default ``backup_dir``; a
            multi-worker non-chief reads the chief's).
    """

    STATE = "state.json"

    def __init__(self, backup_dir: str | Path, restore_dir: str | Path | None = None):
        super().__init__(str(backup_dir), save_freq="epoch", delete_checkpoint=False)
        self.restore_dir = Path(restore_dir or backup_dir)
        self.state = read_backup_state(self.restore_dir)
        self.history = list(self.state.get("history", []))

    def on_train_begin(self, logs=None):
        self._load_model()

    def _load_model(self):
        if not self.model.built:
            raise ValueError("the model must be built before fit() to restore a backup")
        name = self.state.get("weights")
        if not name:
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)  # create slots before loading
        self.model.load_weights(self.restore_dir / name)
        self.model._initial_epoch = int(self.state["epoch"])  # read by fit() after on_train_begin

    def on_epoch_end(self, epoch, logs=None):
        self._current_epoch = epoch + 1
        row = {"epoch": epoch, **{k: _plain(v) for k, v in (logs or {}).items()}}
        self.history = [r for r in self.history if r["epoch"] < epoch] + [row]
        self._save_model()

    def _save_model(self):
        folder = Path(self.backup_dir)
        folder.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{self._current_epoch:06d}.weights.h5"
        _atomic_write(folder / name, lambda tmp: self.model.save_weights(tmp), suffix=".weights.h5")
        best_epoch, best_value = best_of(self.history)
        state = {
            "epoch": self._current_epoch,  # epochs finished
            "weights": name,
            "stopped": bool(getattr(self.model, "stop_training", False)),  # early stopping ended the run
            "best_epoch": best_epoch,
            "best_value": best_value,
            "history": self.history,
        }
        _atomic_write_text(folder / self.STATE, json.dumps(state, indent=1, allow_nan=True))  # the commit
        self.state = state
        for stale in folder.glob("epoch-*.weights.h5"):
            if stale.name != name:
                stale.unlink()

    def on_train_end(self, logs=None):
        pass  # keep the state: a rerun of a finished run must not start over


def read_backup_state(folder: str | Path) -> dict[str, Any]:
    """The committed resume state of a run (``backup/state.json``), or {} when none.

    Raises:
        ConfigError: the state file is unreadable or names a missing weights file.
    """
    path = Path(folder) / AtomicBackupAndRestore.STATE
    if not path.is_file():
        return {}
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError(f"cannot read the resume state {path}: {error}") from error
    if state.get("weights") and not (Path(folder) / state["weights"]).is_file():
        raise ConfigError(f"the resume state {path} names a missing file {state['weights']}")
    return state


def best_of(history: Sequence[dict[str, Any]], monitor: str = MONITOR) -> tuple[int | None, float | None]:
    """(epoch, value) of the first strictly best ``monitor`` value in the rows (as ModelCheckpoint)."""
    best_epoch, best_value = None, None
    for row in history:
        value = row.get(monitor)
        if isinstance(value, (int, float)) and math.isfinite(value) and (best_value is None or value > best_value):
            best_epoch, best_value = int(row["epoch"]), float(value)
    return best_epoch, best_value


def _plain(value):
    """A log value as a JSON-ready Python number."""
    if isinstance(value, (np.generic, np.ndarray)):
        value = np.asarray(value).item() if np.asarray(value).size == 1 else np.asarray(value).tolist()
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """``ModelCheckpoint`` that writes through a temporary file and a rename.

    Args:
        filepath: the ``.keras`` file.
        resave_on_train_begin: save once when training (re)starts, to rebuild
            a file that a kill after the last commit left stale.
        **kwargs: ModelCheckpoint's (monitor, mode, save_best_only, ...).
    """

    def __init__(self, filepath, resave_on_train_begin: bool = False, **kwargs):
        super().__init__(str(filepath), **kwargs)
        self.resave_on_train_begin = resave_on_train_begin

    def on_train_begin(self, logs=None):
        if self.resave_on_train_begin:
            self._write()

    def _write(self):
        _atomic_write(Path(self.filepath), lambda tmp: self.model.save(tmp), suffix=".keras")

    def _save_model(self, epoch, batch, logs):
        if self._should_save_model(epoch, batch, logs, self.filepath):
            self._write()


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """``EarlyStopping`` that replays the committed history when training restarts,
    so patience counts the epochs before the interruption too."""

    def __init__(self, history: Sequence[dict[str, Any]], **kwargs):
        super().__init__(**kwargs)
        self.history = list(history)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.monitor_op is None:
            self._set_monitor_op()
        for row in self.history:  # the same bookkeeping as on_epoch_end
            current = row.get(self.monitor)
            if not isinstance(current, (int, float)):
                continue
            self.wait += 1
            if self._is_improvement(current, self.best):
                self.best, self.best_epoch, self.wait = current, int(row["epoch"]), 0


class StopOnNaN(keras.callbacks.TerminateOnNaN):
    """``TerminateOnNaN`` that raises at once (``raise_error=True``): the epoch's
    ``on_epoch_end`` never runs, so no NaN weights reach a checkpoint or the
    backup, and the error says what to do."""

    def __init__(self, learning_rate: float, finished_epochs: Callable[[], int]):
        super().__init__(raise_error=True)
        self.learning_rate = learning_rate
        self.finished_epochs = finished_epochs
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            done = self.finished_epochs()
            raise TrainingDiverged(
                f"loss became {float(loss)} in epoch {self.epoch + 1} (batch {batch + 1}); training stopped. "
                f"The run folder keeps the last good epoch ({done} finished"
                + (": last.keras, best.keras, history.csv" if done else "")
                + f"). Lower --lr (it was {self.learning_rate:g}) or use --precision float32, "
                "and start a new run with another --out"
            )


class TrainingTime(keras.callbacks.Callback):
    """Logs ``train_minutes``, the minutes spent in training steps so far
    (validation and checkpointing left out), per epoch.

    Args:
        start: minutes of the epochs finished before a resumption.
    """

    def __init__(self, start: float = 0.0):
        super().__init__()
        self.minutes = float(start)
        self._since = None

    def _count(self) -> None:
        if self._since is not None:
            now = time.perf_counter()
            self.minutes += (now - self._since) / 60.0
            self._since = now

    def on_epoch_begin(self, epoch, logs=None):
        self._since = time.perf_counter()

    def on_test_begin(self, logs=None):
        self._count()  # the training part of the epoch ends where validation begins
        self._since = None

    def on_epoch_end(self, epoch, logs=None):
        self._count()
        self._since = None
        if logs is not None:
            logs["train_minutes"] = self.minutes


class TimeLimit(TrainingTime):
    """``TrainingTime`` that ends the run once the minutes pass ``limit``: the
    epoch stops after the batch that crosses it, is validated and committed as
    usual, and the run is marked finished. (Its per-batch hook makes Keras wait
    for each step, so it is only used when a limit is set.)"""

    def __init__(self, limit: float, start: float = 0.0):
        super().__init__(start)
        self.limit = float(limit)

    def on_train_batch_end(self, batch, logs=None):
        self._count()
        if self.minutes >= self.limit:
            self.model.stop_training = True


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
                    logs[split + key[len(split + self.prefix):]] = logs.pop(key)


class ColourScores(keras.callbacks.Callback):
    """Adds ``val_mean_iou`` and ``val_pixel_accuracy`` for the seed's colour head:
    predicts the validation set, decodes the colours to train ids with the
    palette (pspnet.data.decode_labels) and scores them (pspnet.metrics)."""

    def __init__(self, dataset, batch_size: int):
        super().__init__()
        self.dataset = dataset
        self.batch_size = batch_size

    def on_epoch_end(self, epoch, logs=None):
        scores = score_model(self.model, self.dataset, head="rgb", batch_size=self.batch_size)
        if logs is not None:
            logs["val_mean_iou"] = scores["mean_iou"]
            logs["val_pixel_accuracy"] = scores["pixel_accuracy"]


# --- scoring -------------------------------------------------------------------


def _main(outputs):
    return outputs["main"] if isinstance(outputs, dict) else outputs


def predict_train_ids(model, photos: np.ndarray, head: str, batch_size: int | None = None) -> np.ndarray:
    """Train ids predicted for one batch of photos (arg-max logits or decoded colours).

    The batch is padded to ``batch_size`` so a compiled (or sharded) function
    always sees one shape.

    Args:
        model: a model from build_pspnet (dict outputs: "main" is used).
        photos: float32 (B, H, W, 3) in 0-255.
        head: "classes" or "rgb".
        batch_size: pad the batch to this many images (None: no padding).

    Returns:
        uint8 (B, H, W) train ids (255 where a colour decodes to void).
    """
    count = len(photos)
    if batch_size and count < batch_size:
        padding = np.zeros((batch_size - count,) + photos.shape[1:], photos.dtype)
        photos = np.concatenate([photos, padding])
    outputs = np.asarray(keras.ops.convert_to_numpy(_main(model.predict_on_batch(photos))))[:count]
    if head == "rgb":
        from pspnet.data import decode_labels

        colours = np.clip(np.rint(outputs.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
        return decode_labels(colours)
    return np.argmax(outputs, axis=-1).astype(np.uint8)


def score_model(model, dataset, head: str, batch_size: int | None = None) -> dict[str, Any]:
    """Scores a model on every batch of a (non-augmented) dataset of train ids.

    Args:
        model: the model.
        dataset: a SegmentationDataset yielding (photos, train ids).
        head: "classes" or "rgb".
        batch_size: see ``predict_train_ids``.

    Returns:
        ``pspnet.metrics.scores`` of the accumulated confusion matrix.
    """
    from pspnet.metrics import ConfusionMatrix

    confusion = ConfusionMatrix(NUM_CLASSES)
    for index in range(len(dataset)):
        photos, train_ids = dataset[index]
        confusion.update(np.asarray(train_ids), predict_train_ids(model, np.asarray(photos), head, batch_size))
    return confusion.result()


# --- distribution ----------------------------------------------------------------


@dataclass
class _Distribution:
    replicas: int = 1
    is_chief: bool = True  # the worker that writes the run folder
    worker_index: int = 0


@contextlib.contextmanager
def distribution(enabled: bool) -> Iterator[_Distribution]:
    """Data-parallel training over every visible device, on the current backend.

    TensorFlow: a ``MirroredStrategy`` over the GPUs (the CPUs when there is
    no GPU), or ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` is set;
    the model must be built and compiled inside this context. JAX: a
    ``keras.distribution.DataParallel`` over ``keras.distribution.list_devices()``,
    set globally while the context lasts.

    Args:
        enabled: False: a no-op context on the default device.

    Yields:
        The number of replicas and whether this process writes the run folder.

    Raises:
        ConfigError: the backend has no data-parallel support here.
    """
    if not enabled:
        yield _Distribution()
        return
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf  # only on this backend: model code stays keras-only

        if os.environ.get("TF_CONFIG"):
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
            resolver = strategy.cluster_resolver
            task_type, task_id = resolver.task_type, int(resolver.task_id or 0)
            has_chief = "chief" in resolver.cluster_spec().as_dict()
            is_chief = task_type in (None, "chief") or (task_type == "worker" and task_id == 0 and not has_chief)
            info = _Distribution(strategy.num_replicas_in_sync, is_chief, task_id)
        else:
            devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
            strategy = tf.distribute.MirroredStrategy(devices=[device.name for device in devices])
            info = _Distribution(strategy.num_replicas_in_sync)
        with strategy.scope():
            yield info
    elif backend == "jax":
        devices = keras.distribution.list_devices()
        previous = keras.distribution.distribution()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        try:
            yield _Distribution(len(devices))
        finally:
            keras.distribution.set_distribution(previous)
    else:
        raise ConfigError(f"--distribute needs the tensorflow or jax backend, not {backend}")


# --- the run -------------------------------------------------------------------


def _data_folder(config: TrainConfig) -> Path:
    """The folder holding train/ and val/ (writing the demo set first when asked)."""
    if config.is_demo:
        return demo_data()
    folder = Path(config.data)
    if not folder.is_dir():
        raise ConfigError(f"data folder not found: {folder}")
    missing = [name for name in ("train", "val") if not (folder / name).is_dir()]
    if missing:
        raise ConfigError(f"data folder {folder} has no {' or '.join(s + '/' for s in missing)} (it needs train/ and val/)")
    return folder


def _prepare_run_folder(run: Path, config: TrainConfig) -> None:
    """Creates the run folder and its config.json, or checks that a rerun matches it."""
    config_path = run / "config.json"
    if config_path.is_file():
        try:
            saved = TrainConfig.from_json(config_path.read_text()).to_dict()
        except ConfigError as error:
            raise ConfigError(f"{config_path}: {error}") from error
        current = config.to_dict()
        differing = [
            name for name in current
            if name not in RESUMABLE_CHANGES + ("out",) and saved.get(name) != current[name]
        ]
        if differing:
            changes = "; ".join(f"{flag_name(n)} {saved.get(n)!r} -> {current[n]!r}" for n in differing)
            raise ConfigError(
                f"run folder {run} holds another run ({changes}); rerun with its flags to resume, "
                "or choose another --out"
            )
        return
    if run.exists() and not run.is_dir():
        raise ConfigError(f"run folder {run} is a file")
    if run.is_dir() and any(".tmp-" not in entry.name for entry in run.iterdir()):
        raise ConfigError(f"run folder {run} is not empty and has no config.json; choose another --out")
    run.mkdir(parents=True, exist_ok=True)
    _atomic_write_text(config_path, config.to_json())


class _DictTargets(keras.utils.PyDataset):
    """Feeds one target to both outputs of a model with outputs {"main", "aux"}."""

    def __init__(self, dataset):
        super().__init__(
            workers=dataset.workers, use_multiprocessing=dataset.use_multiprocessing,
            max_queue_size=dataset.max_queue_size,
        )
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        photos, targets = self.dataset[index]
        return photos, {"main": targets, "aux": targets}

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def on_epoch_begin(self):
        self.dataset.on_epoch_begin()

    def on_epoch_end(self):
        self.dataset.on_epoch_end()


class _PaddedBatches(keras.utils.PyDataset):
    """Pads a short last batch to the full batch with black photos whose labels
    are all 255 (ignored by the loss and the metrics): a batch sharded over
    several devices must divide evenly."""

    def __init__(self, dataset, batch_size: int):
        super().__init__(
            workers=dataset.workers, use_multiprocessing=dataset.use_multiprocessing,
            max_queue_size=dataset.max_queue_size,
        )
        self.dataset = dataset
        self.batch_size = batch_size

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        photos, train_ids = self.dataset[index]
        missing = self.batch_size - len(photos)
        if missing > 0:
            photos = np.concatenate([photos, np.zeros((missing,) + photos.shape[1:], photos.dtype)])
            train_ids = np.concatenate([train_ids, np.full((missing,) + train_ids.shape[1:], IGNORE_INDEX,
                                                           train_ids.dtype)])
        return photos, train_ids


def _optimizer(config: TrainConfig, steps_per_epoch: int):
    """The optimizer of the config: Adam or SGD+momentum, constant or poly learning rate."""
    learning_rate = config.learning_rate
    if config.schedule == "poly":
        learning_rate = keras.optimizers.schedules.PolynomialDecay(
            initial_learning_rate=config.learning_rate,
            decay_steps=max(1, config.epochs * steps_per_epoch),
            end_learning_rate=0.0,
            power=0.9,
        )
    weight_decay = config.weight_decay or None
    if config.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(learning_rate, momentum=config.momentum, weight_decay=weight_decay)
    else:
        optimizer = keras.optimizers.Adam(learning_rate, weight_decay=weight_decay)
    if weight_decay:
        optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    return optimizer


def build_and_compile(config: TrainConfig, steps_per_epoch: int, weights: np.ndarray | None,
                      aux_head: bool | None = None):
    """Builds and compiles the model of a resolved config (call it inside the distribution scope).

    Args:
        config: a resolved TrainConfig.
        steps_per_epoch: batches per epoch (the poly schedule's length).
        weights: per-class loss weights, or None.
        aux_head: give pspnet50 its auxiliary head; None: when the config's
            ``aux_loss_weight`` is positive (and the head is "classes").

    Returns:
        (compiled model, whether it has the auxiliary head).
    """
    from pspnet.model import build_pspnet

    if aux_head is None:
        aux_head = config.preset == "pspnet50" and config.head == "classes" and config.aux_loss_weight > 0
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(config.precision)
    try:
        model = build_pspnet(
            preset=config.preset,
            num_classes=NUM_CLASSES,
            input_shape=(*config.image_size, 3),
            head=config.head,
            backbone_weights=config.backbone_weights,
            aux_head=aux_head,
            dropout=config.dropout,
            **({} if config.output_stride is None else {"output_stride": config.output_stride}),
        )
    finally:
        keras.config.set_dtype_policy(previous_policy)

    if config.head == "rgb":
        loss, metrics = keras.losses.MeanSquaredError(), []
    else:
        if weights is None:
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=IGNORE_INDEX)
        else:
            loss = WeightedSparseCrossentropy(weights.tolist())
        metrics = [
            keras.metrics.MeanIoU(NUM_CLASSES, ignore_class=IGNORE_INDEX, sparse_y_pred=False, name="mean_iou"),
            PixelAccuracy(name="pixel_accuracy"),
        ]
    loss_weights = None
    if aux_head:
        loss = {"main": loss, "aux": keras.losses.deserialize(keras.losses.serialize(loss))}
        loss_weights = {"main": 1.0, "aux": config.aux_loss_weight}
        metrics = {"main": metrics}
    model.compile(
        optimizer=_optimizer(config, steps_per_epoch),
        loss=loss,
        loss_weights=loss_weights,
        metrics=metrics,
        jit_compile="auto" if config.jit_compile is None else config.jit_compile,
        steps_per_execution=config.steps_per_execution,
    )
    # Create the optimizer's slots now, eagerly: created during the first traced
    # train step instead, they cost TensorFlow about 15 s more for the fast preset.
    model.optimizer.build(model.trainable_variables)
    return model, aux_head


def _say(config: TrainConfig, message: str) -> None:
    if config.verbose != 0:
        print(message, flush=True)


def train(config: TrainConfig, callbacks: Sequence[keras.callbacks.Callback] = ()) -> dict[str, Any]:
    """Trains (or resumes) a run and scores its best model on the validation split.

    Args:
        config: the run's TrainConfig (``None`` fields get their defaults).
        callbacks: extra Keras callbacks, called before the built-in ones
            (their epoch-end logs reach history.csv and the checkpoints).

    Returns:
        The final metrics (also in ``RUN/metrics.json``): the keys of
        ``pspnet.metrics.scores`` on the validation split, plus ``epochs``
        (finished), ``best_epoch`` (1-based), ``model`` and ``run``.

    Raises:
        ConfigError: bad values or paths, or a run folder holding another run.
        DataError: unreadable data.
        TrainingDiverged: the loss became NaN or infinite.
    """
    config = config.resolved()
    run = Path(config.out)
    data_folder = _data_folder(config)
    _prepare_run_folder(run, config)
    metrics_path = run / "metrics.json"
    state = read_backup_state(run / "backup")
    if metrics_path.is_file() and state and (state["stopped"] or state["epoch"] >= config.epochs):
        _say(config, f"pspnet-train: run {run} is already complete; its metrics are in {metrics_path}")
        return json.loads(metrics_path.read_text())
    _say(config, f"pspnet-train: run folder {run.resolve()}")

    from pspnet.data import SegmentationDataset, load_split

    start = time.time()
    keras.utils.set_random_seed(config.seed)
    workers = config.workers or min(4, os.cpu_count() or 1)
    pipeline = {"workers": workers, "use_multiprocessing": False}
    target = "rgb" if config.head == "rgb" else "train_ids"
    progress = config.verbose != 0
    train_photos, train_targets = load_split(
        data_folder / "train", cache_dir=config.cache_dir, target=target, progress=progress
    )
    val_photos, val_targets = load_split(data_folder / "val", cache_dir=config.cache_dir, target=target, progress=progress)
    val_photos_all = val_photos
    if config.head == "rgb":  # the colour head is scored on train ids decoded from its colours
        _, val_ids = load_split(data_folder / "val", cache_dir=config.cache_dir, target="train_ids", progress=False)
    else:
        val_ids = val_targets
    weights = None
    if config.class_weighting != "none":
        weights = class_weights(train_targets, config.class_weighting)

    with distribution(config.distribute) as placement:
        if config.batch_size % placement.replicas:
            raise ConfigError(
                f"--batch-size {config.batch_size} must be a multiple of the {placement.replicas} devices "
                "(it is the global batch)"
            )
        train_data = SegmentationDataset(
            train_photos, train_targets, config.batch_size, image_size=config.image_size, augment=True,
            scale_range=(0.5, 2.0) if config.scale else (1.0, 1.0), flip=config.flip, jitter=config.jitter,
            shuffle=True, seed=config.seed, drop_remainder=True, steps_per_epoch=config.steps_per_epoch,
            **pipeline,
        )
        if train_data.batches_per_pass == 0:
            raise ConfigError(
                f"{data_folder / 'train'} has {len(train_photos)} pairs, fewer than one batch of {config.batch_size}"
            )
        if config.val_images:  # per-epoch validation on a prefix; metrics.json still scores all
            val_photos, val_targets = val_photos[: config.val_images], val_targets[: config.val_images]
        val_data = SegmentationDataset(
            val_photos, val_targets, config.batch_size, image_size=config.image_size, augment=False,
            shuffle=False, drop_remainder=placement.replicas > 1 and config.head == "rgb", **pipeline,
        )
        if placement.replicas > 1 and config.head == "classes":
            val_data = _PaddedBatches(val_data, config.batch_size)  # keeps every val image
        val_scoring = SegmentationDataset(
            val_photos_all, val_ids, config.batch_size, image_size=config.image_size, augment=False, shuffle=False,
        )
        steps_per_epoch = len(train_data)
        model, aux_head = build_and_compile(config, steps_per_epoch, weights)

        # Where this process writes: the run folder, or (a multi-worker
        # non-chief) a scratch folder, restoring from the chief's backup.
        folder = run if placement.is_chief else run / f".worker-{placement.worker_index}"
        folder.mkdir(parents=True, exist_ok=True)
        for place in (folder, folder / "backup"):
            _remove_temporaries(place)
        backup = AtomicBackupAndRestore(folder / "backup", restore_dir=run / "backup")
        history = backup.history
        # history.csv = the committed rows (drops an uncommitted or torn last row).
        if history:
            _atomic_write_text(folder / "history.csv", _history_csv_text(history))
        elif (folder / "history.csv").exists():
            (folder / "history.csv").unlink()
        finished = int(backup.state.get("epoch", 0))
        best_epoch, best_value = best_of(history)
        train_data.set_epoch(finished)  # a resumed epoch sees the batches it would have seen

        extra_callbacks = list(callbacks)
        callbacks = []
        validation = val_data
        if config.head == "rgb":
            epoch_scoring = SegmentationDataset(
                val_photos, val_ids[: len(val_photos)], config.batch_size, image_size=config.image_size,
                augment=False, shuffle=False,
            )
            callbacks.append(ColourScores(epoch_scoring, config.batch_size))
        if aux_head:
            train_data, validation = _DictTargets(train_data), _DictTargets(val_data)
            callbacks.append(RenameOutputLogs("main"))
        # First: the other callbacks' epoch ends see the stop and the time.
        minutes = float(history[-1].get("train_minutes", 0.0)) if history else 0.0
        callbacks.insert(0, TrainingTime(minutes) if config.time_limit is None else TimeLimit(config.time_limit, minutes))
        callbacks += extra_callbacks
        callbacks.append(StopOnNaN(config.learning_rate, lambda: int(backup.state.get("epoch", 0))))
        if config.early_stopping:
            callbacks.append(ResumableEarlyStopping(
                history, monitor=MONITOR, mode="max", patience=config.early_stopping, verbose=1 if progress else 0,
            ))
        callbacks += [
            backup,  # the commit point: before every file derived from it
            keras.callbacks.CSVLogger(str(folder / "history.csv"), append=True),
            AtomicModelCheckpoint(folder / "last.keras", resave_on_train_begin=finished > 0),
            AtomicModelCheckpoint(
                folder / "best.keras", monitor=MONITOR, mode="max", save_best_only=True,
                initial_value_threshold=best_value,
                resave_on_train_begin=best_epoch is not None and best_epoch == finished - 1,
            ),
        ]
        if _has_tensorboard():
            callbacks.append(keras.callbacks.TensorBoard(str(folder / "logs"), write_graph=False))
        else:
            warnings.warn("no TensorBoard logs: install tensorflow and tensorboard for them", PspnetWarning)

        epochs = finished if backup.state.get("stopped") else config.epochs
        if finished:
            _say(config, f"pspnet-train: resuming after epoch {finished} of {config.epochs}")
        try:
            with warnings.catch_warnings():
                # Keras's MeanIoU asks JAX for int64 counts; without x64 it uses int32, enough here.
                warnings.filterwarnings("ignore", message="Explicitly requested dtype int64", category=UserWarning)
                model.fit(
                    train_data,
                    validation_data=validation,
                    epochs=epochs,
                    callbacks=callbacks,
                    verbose="auto" if config.verbose is None else config.verbose,
                )
        except BaseException:
            for callback in callbacks:  # close the CSV file and the TensorBoard writers
                if isinstance(callback, (keras.callbacks.CSVLogger, keras.callbacks.TensorBoard)):
                    with contextlib.suppress(Exception):
                        callback.on_train_end()
            raise
        train_seconds = time.time() - start
    if not placement.is_chief:
        return {}
    return _finish(config, run, model, val_scoring, backup.state, train_seconds)


def _has_tensorboard() -> bool:
    """Whether Keras's TensorBoard callback can write here (it needs TensorFlow and tensorboard)."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("tensorflow", "tensorboard"))


def _finish(config: TrainConfig, run: Path, model, val_scoring, state: dict, train_seconds: float) -> dict[str, Any]:
    """Scores the best model on val, writes curves.png and, last, metrics.json."""
    from pspnet.metrics import to_jsonable
    from pspnet.viz import plot_history

    best_path = run / "best.keras"
    if best_path.is_file():
        import pspnet  # noqa: F401  (registers the custom layers)

        model = keras.saving.load_model(best_path, compile=False)
        source = "best.keras"
    else:  # no epoch was validated (none finished)
        source = "last epoch"
    scores = score_model(model, val_scoring, config.head, config.batch_size)
    best_epoch = state.get("best_epoch")
    results = {
        **scores,
        "epochs": int(state.get("epoch", 0)),
        "best_epoch": None if best_epoch is None else best_epoch + 1,
        "model": source,
        "run": str(run),
    }
    if (run / "history.csv").is_file():
        figure = plot_history(run / "history.csv")
        _atomic_write(run / "curves.png", lambda tmp: figure.savefig(tmp, format="png", dpi=100), suffix=".png")
    _atomic_write_text(run / "metrics.json", json.dumps(to_jsonable(results), indent=2) + "\n")
    _say(
        config,
        f"pspnet-train: val mean IoU {scores['mean_iou']:.3f}, pixel accuracy {scores['pixel_accuracy']:.3f} "
        f"({source}, {results['epochs']} epochs, {train_seconds:.0f} s); run folder {run.resolve()}",
    )
    return to_jsonable(results)
