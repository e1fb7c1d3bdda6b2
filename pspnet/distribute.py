"""Data-parallel training over every visible device, on the current backend.

TensorFlow trains with ``tf.distribute.MirroredStrategy`` over the visible GPUs
(or the CPUs when there is none), or ``MultiWorkerMirroredStrategy`` when
``TF_CONFIG`` is set; JAX with ``keras.distribution.DataParallel`` over
``keras.distribution.list_devices()``. The batch size is the global batch,
split evenly over the devices.

A multi-worker strategy must be created before TensorFlow runs its first op,
which is why nothing in the package runs one at import and ``train()`` enters
``distribution`` before it touches the backend.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator

import keras

from pspnet.errors import ConfigError


@dataclass
class Placement:
    """Where this process trains: how many replicas, and whether it writes the run folder."""

    replicas: int = 1
    is_chief: bool = True  # the worker that writes the run folder
    worker_index: int = 0


@contextlib.contextmanager
def distribution(enabled: bool) -> Iterator[Placement]:
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
        yield Placement()
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
            info = Placement(strategy.num_replicas_in_sync, is_chief, task_id)
        else:
            devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
            strategy = tf.distribute.MirroredStrategy(devices=[device.name for device in devices])
            info = Placement(strategy.num_replicas_in_sync)
        with strategy.scope():
            yield info
    elif backend == "jax":
        devices = keras.distribution.list_devices()
        previous = keras.distribution.distribution()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        try:
            yield Placement(len(devices))
        finally:
            keras.distribution.set_distribution(previous)
    else:
        raise ConfigError(f"--distribute needs the tensorflow or jax backend, not {backend}")
