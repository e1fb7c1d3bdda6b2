"""Trains a PSPNet into a run folder that survives being killed at any moment.

    pspnet-train                                  # the demo: synthetic data, fast preset, CPU, < 3 min
    pspnet-train --data ../shared/data/cityscapes_data --preset fast --epochs 50
    pspnet-train --data DIR --preset seed --head rgb --no-flip --no-scale --batch-size 10
    pspnet-train --data DIR --preset pspnet50 --optimizer sgd --lr 0.01 --weight-decay 1e-4 --distribute
    pspnet-train --data CITYSCAPES_ROOT --base-size 1024 2048 --crop-size 512 1024   # leftImg8bit/ + gtFine/
    pspnet-train --data MY_SET                # images/ + masks/ + dataset.json: its own classes

``train(config)`` reads top to bottom: layout and defaults, data,
distribution, run folder, seed, batches, model, resume, callbacks, fit, final
scoring. The data layouts (pairs, cityscapes, folders): ``pspnet.data.layouts``;
the pairs train from the decoded cache, the others decode each image when its
batch is made (``pspnet.data.samples``). The run folder's
layout and how a rerun resumes or extends it: ``pspnet.training.runfolder``; the
resume state that makes every epoch a commit: ``pspnet.training.resume``, and the
callbacks: ``pspnet.training.callbacks``; the model,
loss and optimizer: ``pspnet.training.recipe``; distribution: ``pspnet.training.distribute``.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np

from pspnet.allocator import pad_heap
from pspnet.data.classes import ClassTable
from pspnet.data.layouts import detect_layout, open_split
from pspnet.data.pipeline import DictTargets, PaddedBatches, SegmentationDataset
from pspnet.data.samples import MEMORY_BYTES, kept_in_memory, load_arrays, prefix
from pspnet.errors import ConfigError, DataError, PspnetWarning
from pspnet.fileio import atomic_write, atomic_write_text
from pspnet.hardware import describe_machine
from pspnet.inference.segmenter import Segmenter
from pspnet.metrics import to_jsonable
from pspnet.models.modelfile import load_model
from pspnet.models.precision import AUTO, auto_precision
from pspnet.training import callbacks as cb
from pspnet.training.config import TrainConfig
from pspnet.training.distribute import (
    check_same_start,
    distribution,
    join_processes,
    peers_watched,
    synchronize_batch_norm,
)
from pspnet.training.losses import class_weights, class_weights_from_counts
from pspnet.training.recipe import build_and_compile, model_info
from pspnet.training.resume import MONITOR, ResumeState, best_of
from pspnet.training.runfolder import Run, is_complete, open_run

__all__ = ["TrainConfig", "train"]


def train(config: TrainConfig, callbacks: Sequence[keras.callbacks.Callback] = ()) -> dict[str, Any]:
    """Trains (or resumes, or extends) a run and scores its best model on the validation split.

    Args:
        config: the run's TrainConfig (``None`` fields get their defaults).
        callbacks: extra Keras callbacks, called before the built-in ones
            (their epoch-end logs reach history.csv and the checkpoints).

    Returns:
        The final metrics (also in ``RUN/metrics.json``): the keys of
        ``pspnet.metrics.scores`` on the validation split, plus ``epochs``
        (finished), ``best_epoch`` (1-based), ``model`` and ``run``.

    Raises:
        ConfigError: bad values or paths, a run folder holding another run, or in use.
        DataError: unreadable data.
        TrainingDiverged: the loss became NaN or infinite.
        ProcessStopped: another process of a multi-process run stopped.
    """
    config = _resolved(config)  # the layout from the data folder, then every default
    pad_heap()  # before the backend's first op, or it does nothing (pspnet.allocator)
    placement = join_processes(config)  # also before the first op: it may start jax.distributed
    data_folder = _data_folder(config)  # before anything is written
    with open_run(config, placement.is_chief, placement.index) as run:
        complete = is_complete(run.state, config)
        finished_metrics = run.metrics() if complete else None
        if finished_metrics is not None:
            _say(
                config,
                f"pspnet-train: run {run.path} is already complete; its metrics are in {run.path / 'metrics.json'}",
            )
            return finished_metrics
        config = _settled_precision(config, run.saved)  # "auto" -> a dtype policy, before it is written
        start = time.time()
        splits = _load_splits(config, data_folder)
        resume = ResumeState(run.folder / "backup", restore_dir=run.path / "backup", class_names=splits.classes.names)
        with peers_watched(placement), distribution(config.distribute, placement) as replicas:
            keras.utils.set_random_seed(config.seed)
            if config.batch_size % replicas:
                raise ConfigError(
                    f"--batch-size {config.batch_size} must be a multiple of the "
                    f"{replicas} devices (it is the global batch)"
                )
            train_data, val_data = _batches(config, splits, replicas, placement.part(config.batch_size))
            model, aux_head = build_and_compile(config, splits.class_weights, any_size=True, classes=splits.classes)
            if config.sync_batch_norm:
                synchronize_batch_norm(model, replicas)
            run.write_config(config)  # every flag has now proved itself
            _say(config, f"pspnet-train: run folder {run.path.resolve()}")  # now it stays
            check_same_start(placement, resume.epochs_done, run.path / "backup")  # before restore's collectives
            finished = resume.restore(model)
            run.rebuild_history(resume.history)
            train_data.set_epoch(finished)  # a resumed epoch sees the batches it would have seen
            if aux_head:
                train_data, val_data = DictTargets(train_data), DictTargets(val_data)
            fit_callbacks = _callbacks(config, run, resume, splits, len(train_data), aux_head, extra=callbacks)
            if finished:
                _say(config, f"pspnet-train: resuming after epoch {finished} of {config.epochs}")
            _fit(
                model,
                train_data,
                val_data,
                fit_callbacks,
                config,
                initial_epoch=finished,
                epochs=finished if complete else config.epochs,
            )
        if not placement.is_chief:
            return {}
        # Scored outside the distribution (from best.keras): the other processes have finished.
        return _finish(config, run, model, splits, resume.state, time.time() - start)  # still locked


@dataclass
class _Splits:
    """The train and val data of a run: the pairs' arrays (memory-mapped from the cache), or lazy
    sequences of images of any size (``pspnet.data.samples``) for the other layouts."""

    train_photos: Any  # (N, H, W, 3) uint8, or a sequence of (H, W, 3) uint8
    train_targets: Any  # (N, H, W) uint8 train ids, or (N, H, W, 3) colours for the rgb head; or (H, W) maps
    val_photos: Any
    val_targets: Any
    val_ids: Any  # (M, H, W) uint8 train ids (or (H, W) maps at full resolution): what every head is scored on
    class_weights: np.ndarray | None  # per-class loss weights, or None
    classes: ClassTable  # the data set's classes (pspnet.data.classes), stored in the model


def _resolved(config: TrainConfig) -> TrainConfig:
    """The resolved config, its layout (when not given) detected from the data folder."""
    if config.is_demo or config.layout is not None:
        return config.resolved()
    folder = Path(config.data).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"data folder not found: {folder}" if not folder.exists() else f"not a folder: {folder}")
    try:
        layout = detect_layout(folder)
    except DataError:
        if not any((folder / name).is_dir() for name in ("train", "val")):
            raise
        layout = "pairs"  # a pairs folder that lacks a split or its images: _data_folder names what is missing
    return config.resolved(layout=layout)


def _settled_precision(config: TrainConfig, saved: TrainConfig | None) -> TrainConfig:
    """``--precision auto`` settled: the run's own policy when it resumes, else this machine's choice."""
    if config.precision != AUTO:
        return config
    if saved is not None and saved.precision != AUTO:
        policy, reason = saved.precision, "the run's own"
    else:
        policy, reason = auto_precision(describe_machine(), config.preset)
    _say(config, f"pspnet-train: precision {policy} (auto: {reason})")
    return replace(config, precision=policy)


def _data_folder(config: TrainConfig) -> Path:
    """The data set root (writing the demo set first when asked); a pairs root must hold train/ and val/."""
    if config.is_demo:
        from pspnet.data.synth import demo_data

        return demo_data()
    folder = Path(config.data)
    if not folder.is_dir():
        raise ConfigError(f"data folder not found: {folder}" if not folder.exists() else f"not a folder: {folder}")
    if config.layout != "pairs":
        return folder  # open_split names what a cityscapes or folders root lacks
    missing = [name for name in ("train", "val") if not (folder / name).is_dir()]
    if missing:
        raise ConfigError(
            f"data folder {folder} has no {' or '.join(s + '/' for s in missing)} (it needs train/ and val/)"
        )
    return folder


def _load_splits(config: TrainConfig, folder: Path) -> _Splits:
    """Checks and loads both splits (pairs: decoded into the cache; other layouts: scanned, decoded later)."""
    target = "rgb" if config.head == "rgb" else "train_ids"
    progress = config.verbose != 0
    train_split, val_split = (open_split(folder, name, config.layout) for name in ("train", "val"))

    def load(split, target: str, progress: bool = progress):
        return load_arrays(
            split, cache_dir=config.cache_dir, target=target, skip_bad=config.skip_bad, progress=progress
        )

    train_photos, train_targets, train_summary = load(train_split, target)
    val_photos, val_targets, val_summary = load(val_split, target)
    budget = [MEMORY_BYTES]  # what is left of it: the train split first, then val
    train_photos, train_targets = kept_in_memory(train_photos, train_targets, train_summary, budget)
    val_photos, val_targets = kept_in_memory(val_photos, val_targets, val_summary, budget)
    val_ids = load(val_split, "train_ids", progress=False)[1] if config.head == "rgb" else val_targets
    classes = train_split.classes
    if config.class_weighting == "none":
        weights = None
    elif isinstance(train_targets, np.ndarray):  # cached arrays (the pairs: as before layouts)
        weights = class_weights(train_targets, config.class_weighting, classes.num_classes)
    else:  # counted once by the scan (pspnet.data.samples): no second decoding pass
        weights = class_weights_from_counts(train_summary.class_pixels[: classes.num_classes], config.class_weighting)
    if len(train_photos) < config.batch_size:
        noun = "pairs" if config.layout == "pairs" else "images"
        raise ConfigError(
            f"{train_split.folder} has {len(train_photos)} {noun}, fewer than one batch of {config.batch_size}"
        )
    return _Splits(train_photos, train_targets, val_photos, val_targets, val_ids, weights, classes)


def _batches(config: TrainConfig, splits: _Splits, replicas: int, part: tuple[int, int]):
    """The augmented training batches and the per-epoch validation batches.

    ``part``: the rows of each global batch this process feeds (pspnet.training.distribute.Placement.part).
    """
    # Threads, not processes: a lazy split decodes its images in them (cv2 releases the GIL).
    pipeline = {"workers": config.workers or min(4, os.cpu_count() or 1), "use_multiprocessing": False}
    train_data = SegmentationDataset(
        splits.train_photos,
        splits.train_targets,
        config.batch_size,
        image_size=config.crop_size,
        base_size=config.image_size,
        augment=True,
        scale_range=(0.5, 2.0) if config.scale else (1.0, 1.0),
        flip=config.flip,
        jitter=config.jitter,
        shuffle=True,
        seed=config.seed,
        drop_remainder=True,
        steps_per_epoch=config.steps_per_epoch,
        part=part,
        **pipeline,
    )
    count = config.val_images or len(splits.val_photos)  # per-epoch validation on a prefix; metrics.json uses all
    val_data = SegmentationDataset(  # each image fit into the base size and padded to it
        prefix(splits.val_photos, count),
        prefix(splits.val_targets, count),
        config.batch_size,
        image_size=config.crop_size,
        base_size=config.image_size,
        augment=False,
        shuffle=False,
        drop_remainder=replicas > 1 and config.head == "rgb",
        part=part,
        **pipeline,
    )
    if replicas > 1 and config.head == "classes":
        val_data = PaddedBatches(val_data, part[1] - part[0])  # keeps every val image
    return train_data, val_data


def _callbacks(
    config: TrainConfig,
    run: Run,
    resume: ResumeState,
    splits: _Splits,
    steps_per_epoch: int,
    aux_head: bool,
    extra: Sequence[keras.callbacks.Callback],
) -> list[keras.callbacks.Callback]:
    """fit's callbacks, in the order that keeps every file behind the epoch's commit."""
    history = resume.history
    best_epoch, best_value = best_of(history)
    minutes = float(history[-1].get("train_minutes", 0.0)) if history else 0.0
    info = model_info(config, splits.classes)
    clock = (
        cb.TrainingTime(minutes)
        if config.time_limit is None
        else cb.TimeLimit(config.time_limit, minutes, verbose=config.verbose)
    )
    callbacks: list[keras.callbacks.Callback] = [clock]  # first: the epoch ends after it see the stop and the time
    if config.schedule == "poly":  # before the extra callbacks: they see each step's rate
        callbacks.append(
            cb.PolyLearningRate(
                config.learning_rate,
                config.epochs * steps_per_epoch,
                clock=clock if isinstance(clock, cb.TimeLimit) else None,
            )
        )
    if config.head == "rgb":
        count = config.val_images or len(splits.val_photos)
        callbacks.append(
            cb.ColourScores(prefix(splits.val_photos, count), prefix(splits.val_ids, count), info, config.batch_size)
        )
    if aux_head:
        callbacks.append(cb.RenameOutputLogs("main"))
    callbacks += list(extra)
    callbacks.append(cb.StopOnNaN(config.learning_rate, lambda: resume.epochs_done))
    if config.early_stopping:
        callbacks.append(cb.ResumableEarlyStopping(history, config.early_stopping, verbose=config.verbose))
    callbacks += [
        resume,  # the commit point: before every file derived from it
        keras.callbacks.CSVLogger(str(run.folder / "history.csv"), append=True),
        cb.Checkpoint(run.folder / "last.keras", info, save_on_train_begin=resume.epochs_done > 0),
        cb.Checkpoint(
            run.folder / "best.keras",
            info,
            monitor=MONITOR,
            best=best_value,
            save_on_train_begin=best_epoch is not None and best_epoch == resume.epochs_done - 1,
        ),
    ]
    if _has_tensorboard():
        callbacks.append(keras.callbacks.TensorBoard(str(run.folder / "logs"), write_graph=False))
    else:
        warnings.warn("no TensorBoard logs: install tensorflow and tensorboard for them", PspnetWarning)
    return callbacks


def _has_tensorboard() -> bool:
    """Whether Keras's TensorBoard callback can write here (it needs TensorFlow and tensorboard)."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("tensorflow", "tensorboard"))


def _fit(model, train_data, val_data, callbacks, config: TrainConfig, initial_epoch: int, epochs: int) -> None:
    """``model.fit``, closing the log files when it is interrupted."""
    try:
        with warnings.catch_warnings():
            # Keras's MeanIoU asks JAX for int64 counts; without x64 it uses int32, enough here.
            warnings.filterwarnings("ignore", message="Explicitly requested dtype int64", category=UserWarning)
            model.fit(
                train_data,
                validation_data=val_data,
                epochs=epochs,
                initial_epoch=initial_epoch,
                callbacks=callbacks,
                verbose=config.verbose,
                shuffle=False,  # the dataset shuffles itself from (seed, epoch): resumable
            )
    except BaseException:
        for callback in callbacks:  # close the CSV file and the TensorBoard writers
            if isinstance(callback, (keras.callbacks.CSVLogger, keras.callbacks.TensorBoard)):
                with contextlib.suppress(Exception):
                    callback.on_train_end()
        raise


def _finish(config: TrainConfig, run: Run, model, splits: _Splits, state: dict, train_seconds: float):
    """Scores the best model on every val image (at its label's resolution), writes curves.png and, last,
    metrics.json."""
    from pspnet.inference.viz import plot_history

    best_path = run.path / "best.keras"
    if best_path.is_file():
        model, info = load_model(best_path)
        source = "best.keras"
    else:  # no epoch was validated (none finished)
        info, source = model_info(config, splits.classes), "last epoch"
    segmenter = Segmenter(model, info, info.image_size, batch_size=config.batch_size)
    scores = segmenter.confusion(splits.val_photos, splits.val_ids).result(info.class_table().names)
    best_epoch = state.get("best_epoch")
    results = to_jsonable(
        {
            **scores,
            "epochs": int(state.get("epoch", 0)),
            "best_epoch": None if best_epoch is None else best_epoch + 1,
            "model": source,
            "run": str(run.path),
        }
    )
    if (run.path / "history.csv").is_file():
        figure = plot_history(run.path / "history.csv")
        atomic_write(run.path / "curves.png", lambda tmp: figure.savefig(tmp, format="png", dpi=100), suffix=".png")
    atomic_write_text(run.path / "metrics.json", json.dumps(results, indent=2) + "\n")
    epochs = _count(results["epochs"], "epoch")
    _say(
        config,
        f"pspnet-train: val mean IoU {scores['mean_iou']:.3f}, pixel accuracy "
        f"{scores['pixel_accuracy']:.3f} ({source}, {epochs}, {train_seconds:.0f} s); "
        f"run folder {run.path.resolve()}",
    )
    return results


def _count(number: int, noun: str) -> str:
    """``1 epoch``, ``2 epochs``."""
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _say(config: TrainConfig, message: str) -> None:
    if config.verbose != 0:
        print(message, flush=True)
