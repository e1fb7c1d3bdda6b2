"""Data-parallel training over every visible device, and over several processes.

One process: TensorFlow trains with ``tf.distribute.MirroredStrategy`` over the
visible GPUs (or the CPUs when there is none), JAX with
``keras.distribution.DataParallel`` over ``keras.distribution.list_devices()``.

Several processes (one per machine, or one per GPU), started the way each
backend's own tools start them:

- TensorFlow: ``TF_CONFIG`` in each process's environment names the cluster and
  the process's task; the strategy is ``MultiWorkerMirroredStrategy``.
- JAX: ``--coordinator HOST:PORT --num-processes N --process-id I`` (or
  ``JAX_COORDINATOR_ADDRESS``, ``KERAS_DISTRIBUTION_NUM_PROCESSES`` and
  ``KERAS_DISTRIBUTION_PROCESS_ID``; under Slurm, ``srun`` sets all three
  through ``SLURM_*``) start ``jax.distributed``, and every process feeds its
  own part of each global batch.

The batch size is always the global batch, split evenly over every device of
every process. Process 0 (TensorFlow: the chief, or worker 0 when there is
none) writes the run folder; the others write nothing there.

Batch norm: under TensorFlow each replica would normalise over its own part of
the batch, so ``synchronize_batch_norm`` makes every BatchNormalization layer
all-reduce its statistics (Keras's ``synchronized=True``); under JAX the whole
step is one program over the global batch, whose statistics are already global.

A multi-worker strategy must be created before TensorFlow runs its first op
and ``jax.distributed`` started before JAX's first computation, which is why
nothing in the package runs one at import and ``train()`` calls
``join_processes`` before it touches the backend.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import keras

from pspnet.errors import ConfigError, PspnetError, first_line
from pspnet.models.modelfile import all_layers


class ProcessStopped(PspnetError, RuntimeError):
    """Another process of a multi-process job stopped; starting the job again resumes it."""


@dataclass(frozen=True)
class Placement:
    """Where this process trains: its index among the job's processes, and whether it writes the run folder."""

    processes: int = 1  # processes in the job (1: a single-process run)
    index: int = 0  # this process's index (0: the one that writes the run folder)
    is_chief: bool = True

    def part(self, batch_size: int) -> tuple[int, int]:
        """The rows ``[start, stop)`` of each global batch that this process feeds.

        TensorFlow's strategy cuts global batches itself; only multi-process
        JAX feeds per-process parts.
        """
        if self.processes == 1 or keras.backend.backend() != "jax":
            return 0, batch_size
        share = batch_size // self.processes
        return self.index * share, (self.index + 1) * share


def join_processes(config, environ: Mapping[str, str] | None = None) -> Placement:
    """Finds this process's place in the job and, on JAX, joins the other processes.

    Call it before the backend's first op. Nothing is written.

    Args:
        config: the TrainConfig: ``distribute``, ``sync_batch_norm`` and JAX's
            ``coordinator``, ``num_processes`` and ``process_id`` (None: from
            the environment, see the module docstring).
        environ: the environment (default ``os.environ``).

    Raises:
        ConfigError: the backend cannot do what the flags ask, or the job's
            description is incomplete or contradictory.
    """
    environ = os.environ if environ is None else environ
    backend = keras.backend.backend()
    flags = {
        "--coordinator": config.coordinator,
        "--num-processes": config.num_processes,
        "--process-id": config.process_id,
    }
    given = [flag for flag, value in flags.items() if value is not None]
    if not config.distribute:
        if given:
            raise ConfigError(f"{given[0]} needs --distribute")
        return Placement()
    if backend not in ("tensorflow", "jax"):
        raise ConfigError(
            f"--distribute needs the tensorflow or jax backend, not {backend} (set KERAS_BACKEND=tensorflow or jax)"
        )
    if backend == "tensorflow":
        if given:
            raise ConfigError(f"{given[0]} is for the jax backend; on tensorflow, TF_CONFIG describes the workers")
        placement = _tf_config_placement(environ.get("TF_CONFIG"))
    else:
        if not config.sync_batch_norm:
            raise ConfigError(
                "--no-sync-batch-norm is for the tensorflow backend: on jax, --distribute runs one "
                "program over the global batch, whose batch norm always sees every replica"
            )
        placement = _join_jax(config.coordinator, config.num_processes, config.process_id, environ)
    if placement.processes > 1 and config.head == "rgb":
        raise ConfigError("--head rgb trains in one process; several processes need --head classes")
    if placement.processes > 1 and config.time_limit is not None:
        # Each process would stop by its own clock, at a different step, and the rest would wait forever.
        raise ConfigError(
            "--time-limit needs one process (each would stop by its own clock, at a different "
            "step); bound a multi-process run with --epochs"
        )
    return placement


def _tf_config_placement(text: str | None) -> Placement:
    """This worker's place from ``TF_CONFIG`` (a chief, when there is one, is process 0)."""
    if not text:
        return Placement()
    try:
        spec = json.loads(text)
        cluster, task = spec["cluster"], spec.get("task", {})
        kind, index = task.get("type", "worker"), int(task.get("index", 0))
        chiefs, workers = len(cluster.get("chief", [])), len(cluster.get("worker", []))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ConfigError(f"TF_CONFIG is not a cluster description ({error!r}): {text[:200]}") from None
    if kind not in ("chief", "worker"):
        raise ConfigError(f"TF_CONFIG task type {kind!r}: pspnet-train runs chief and worker tasks only")
    position = index if kind == "chief" else chiefs + index
    return Placement(processes=chiefs + workers, index=position, is_chief=position == 0)


def _join_jax(coordinator, num_processes, process_id, environ) -> Placement:
    """Starts ``jax.distributed`` when the job has several processes."""
    coordinator = (
        coordinator or environ.get("JAX_COORDINATOR_ADDRESS") or environ.get("KERAS_DISTRIBUTION_JOB_ADDRESSES")
    )
    count = num_processes if num_processes is not None else _int_env(environ, "KERAS_DISTRIBUTION_NUM_PROCESSES")
    index = process_id if process_id is not None else _int_env(environ, "KERAS_DISTRIBUTION_PROCESS_ID")
    slurm = _int_env(environ, "SLURM_NTASKS") or 1
    # Errors name where a value came from: its flag, else its variable.
    count_name = "--num-processes" if num_processes is not None else "KERAS_DISTRIBUTION_NUM_PROCESSES"
    index_name = "--process-id" if process_id is not None else "KERAS_DISTRIBUTION_PROCESS_ID"
    if count is not None and count < 1:
        raise ConfigError(f"{count_name} must be 1 or more, got {count}")
    if count is None and index is None and coordinator is None and slurm == 1:
        return Placement()  # one process: every local device
    if count is None and slurm == 1:
        raise ConfigError("a multi-process jax run needs --num-processes N (or KERAS_DISTRIBUTION_NUM_PROCESSES)")
    if count is not None and count > 1 and (index is None or coordinator is None) and slurm == 1:
        missing = "--process-id I" if index is None else "--coordinator HOST:PORT"
        raise ConfigError(f"--num-processes {count} needs {missing} in every process")
    if count is not None and index is not None and not 0 <= index < count:
        raise ConfigError(f"{index_name} must lie in [0, {count - 1}] for {count} processes, got {index}")
    if count == 1:
        return Placement()
    import jax  # only on this backend

    try:  # unset values come from the cluster's environment (Slurm, Open MPI, ...)
        keras.distribution.initialize(coordinator, count, index)
    except (RuntimeError, ValueError) as error:
        if "only be called once" not in str(error):  # joined already, by an earlier run in this process
            raise ConfigError(f"cannot join the other jax processes at {coordinator}: {first_line(error)}") from None

    processes, position = jax.process_count(), jax.process_index()
    return Placement(processes=processes, index=position, is_chief=position == 0)


def _int_env(environ: Mapping[str, str], name: str) -> int | None:
    value = environ.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {value!r}") from None


@contextlib.contextmanager
def distribution(enabled: bool, placement: Placement = Placement()) -> Iterator[int]:
    """Data-parallel training over every device of every process, on the current backend.

    TensorFlow: a ``MirroredStrategy`` over the GPUs (the CPUs when there is
    no GPU), or ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` is set;
    the model must be built and compiled inside this context. JAX: a
    ``keras.distribution.DataParallel`` over ``keras.distribution.list_devices()``
    (every process's devices), set globally while the context lasts. Build,
    restore and fit inside it; load and score a saved model outside it (a
    model made inside it runs only with every process taking part).

    Args:
        enabled: False: a no-op context on the default device.
        placement: ``join_processes``'s answer.

    Yields:
        The number of replicas: devices over all processes.

    Raises:
        ConfigError: the backend has no data-parallel support here.
    """
    if not enabled:
        yield 1
        return
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf  # only on this backend: model code stays keras-only

        if os.environ.get("TF_CONFIG"):
            strategy = _multi_worker_strategy(tf)
        else:
            devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
            strategy = tf.distribute.MirroredStrategy(devices=[device.name for device in devices])
        with strategy.scope():
            yield strategy.num_replicas_in_sync
    elif backend == "jax":
        devices = keras.distribution.list_devices()
        previous = keras.distribution.distribution()
        # Several processes: each feeds its own part of the batch (SegmentationDataset's part).
        keras.distribution.set_distribution(
            keras.distribution.DataParallel(devices=devices, auto_shard_dataset=placement.processes == 1)
        )
        try:
            yield len(devices)
        finally:
            keras.distribution.set_distribution(previous)
    else:
        raise ConfigError(f"--distribute needs the tensorflow or jax backend, not {backend}")


def check_same_start(placement: Placement, epochs_done: int, backup: os.PathLike | str) -> None:
    """Refuses to train when the processes would resume from different epochs.

    Each process restores the chief's ``RUN/backup``; a process that cannot
    see it (``--out`` not on a file system they all share) would start over
    while the others resume, and the job would hang in its last collective.
    Call it inside ``distribution``: every process takes part.

    Raises:
        ConfigError: the processes found different numbers of finished epochs.
    """
    if placement.processes == 1:
        return
    found = _gather(epochs_done)
    if len(set(found)) > 1:
        raise ConfigError(
            f"the processes found different numbers of finished epochs in {backup} ({', '.join(map(str, found))}): "
            "every process must see the same run folder (--out on a file system they all share)"
        )


def _gather(value: int) -> list[int]:
    """``value`` from every process (TensorFlow: every replica), in order."""
    import numpy as np

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        strategy = tf.distribute.get_strategy()
        local = strategy.experimental_distribute_values_from_function(lambda _: tf.constant([value]))
        return [int(v) for v in strategy.gather(local, axis=0).numpy()]
    from jax.experimental import multihost_utils

    return [int(v) for v in np.ravel(multihost_utils.process_allgather(np.int32(value)))]


@contextlib.contextmanager
def peers_watched(placement: Placement) -> Iterator[None]:
    """Turns "a peer stopped" from the backend's collectives into one ``ProcessStopped`` line.

    When one process of a job dies, the others fail in their next collective
    (TensorFlow: UnavailableError; JAX: an UNAVAILABLE or DEADLINE_EXCEEDED
    runtime error, after its heartbeat timeout) with pages of C++ context.
    """
    try:
        yield
    except Exception as error:
        if placement.processes == 1 or not _is_peer_failure(error):
            raise
        raise ProcessStopped(
            f"another process of this {placement.processes}-process job stopped ({type(error).__name__}); start "
            "every process again with the same command to resume from the last finished epoch"
        ) from None


def _is_peer_failure(error: BaseException) -> bool:
    if type(error).__name__ in ("UnavailableError", "AbortedError", "DeadlineExceededError"):  # TensorFlow's
        return True
    # JAX's: its runtime errors, or a ValueError from a host all-gather, naming the transport's failure.
    text = str(error)[:2000]
    return type(error).__name__ in ("XlaRuntimeError", "JaxRuntimeError", "ValueError", "RuntimeError") and any(
        code in text for code in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "Gloo", "gloo")
    )


def _multi_worker_strategy(tf):
    """``MultiWorkerMirroredStrategy`` whose ``reduce`` takes what Keras 3's ``fit`` gives it.

    Keras 3 (up to 3.15 at least, keras-team/keras#20585) calls
    ``strategy.reduce`` with a nested (x, y) batch before the first step, and
    with ``axis=0`` on scalar logs after every step; ``MirroredStrategy``
    accepts both, the multi-worker strategy refuses them. This one reduces each
    leaf on its own, along axis 0 only where there is one. Everything else is
    TensorFlow's.
    """

    class Strategy(tf.distribute.MultiWorkerMirroredStrategy):
        def reduce(self, reduce_op, value, axis):
            def reduce_leaf(leaf):
                rank = self.experimental_local_results(leaf)[0].shape.rank
                return super(Strategy, self).reduce(reduce_op, leaf, axis if rank else None)

            return tf.nest.map_structure(reduce_leaf, value)

    return Strategy()


def synchronize_batch_norm(model, replicas: int) -> int:
    """Makes every BatchNormalization layer of ``model`` normalise over the global batch.

    Only TensorFlow needs it (see the module docstring); saved models keep
    plain batch norm (``pspnet.models.modelfile.save_model``), so they load on
    every backend. Call it before ``fit`` traces the training step.

    Returns:
        The number of layers changed (0 on one replica and on JAX).
    """
    if replicas == 1 or keras.backend.backend() != "tensorflow":
        return 0
    layers = [layer for layer in all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in layers:
        layer.synchronized = True
    return len(layers)
