"""Training over several devices and several processes (pspnet.training.distribute).

Processes are started the way a user on several machines starts them: one
``pspnet-train`` per process, with ``TF_CONFIG`` (TensorFlow) or
``--coordinator --num-processes --process-id`` (JAX), on 127.0.0.1. Each
compares the chief's losses with one process training on the same global batch.

Why the comparisons can be tight: SGD without momentum, a constant rate, no
dropout, no weight decay, no random scaling, and labels without ignored pixels
(the loss normalises by each replica's valid pixels, which would otherwise make
a replica's mean differ from the global one), with batch norm synchronised.
Then the only difference from one process is the order of float32 sums in the
gradient all-reduce: about 1e-7 relative per step, measured at most 2e-7 after 4
steps here. An all-reduce that summed instead of averaged would double every
step: the second epoch's loss then moves by several percent (see
``test_a_doubled_step_is_far_outside_the_tolerance``), so 1e-4 tells them apart.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
from conftest import REPO, free_ports

from pspnet.errors import ConfigError
from pspnet.palette import LABEL_COLORS
from pspnet.training.config import TrainConfig
from pspnet.training.distribute import Placement, join_processes, synchronize_batch_norm

TRAIN = REPO / "scripts" / "train.py"
TOLERANCE = 1e-4  # relative; see the module docstring
EXACT = [
    "--preset",
    "fast",
    "--image-size",
    "32",
    "--batch-size",
    "2",
    "--optimizer",
    "sgd",
    "--momentum",
    "0",
    "--lr",
    "0.05",
    "--schedule",
    "constant",
    "--weight-decay",
    "0",
    "--dropout",
    "0",
    "--no-scale",
    "--workers",
    "1",
    "--verbose",
    "0",
]
needs_jax = pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO), **extra}


def _write_clean_pairs(folder: Path, count: int, seed: int) -> None:
    """32x64 composites whose labels are two 16-px-wide class bands: no void, exact after JPEG."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    classes = [0, 2, 8, 10, 13]  # road, building, vegetation, sky, car: far from black and each other
    for number in range(1, count + 1):
        photo = cv2.GaussianBlur(rng.integers(0, 256, (32, 32, 3)).astype(np.uint8), (5, 5), 0)
        label = np.empty((32, 32, 3), np.uint8)
        left, right = rng.choice(classes, 2, replace=False)
        label[:, :16], label[:, 16:] = LABEL_COLORS[left], LABEL_COLORS[right]
        composite = np.concatenate([photo, label], axis=1)[..., ::-1]  # RGB -> BGR for OpenCV
        cv2.imwrite(str(folder / f"{number}.jpg"), composite, [cv2.IMWRITE_JPEG_QUALITY, 100])


@pytest.fixture(scope="module", autouse=True)
def _own_cache(tmp_path_factory):
    """The processes' decoded splits go to a cache of this module's (tests elsewhere inspect the shared one)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PSPNET_CACHE", str(tmp_path_factory.mktemp("distribute-cache")))
        yield


@pytest.fixture(scope="module")
def clean_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clean")
    _write_clean_pairs(root / "train", 4, seed=1)
    _write_clean_pairs(root / "val", 2, seed=2)
    return root


class Job:
    """``pspnet-train`` processes started together, their output in files (no pipe to fill)."""

    def __init__(self, folder: Path, commands: list[tuple[list[str], dict[str, str]]], program: list[str] = ()):
        """``commands``: (arguments, environment) of each process; ``program``: default ``scripts/train.py``."""
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.processes = []
        for index, (args, env) in enumerate(commands):
            log = open(folder / f"process{index}.log", "w")
            self.processes.append(
                subprocess.Popen(
                    [sys.executable, *(program or [str(TRAIN)]), *args],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
            log.close()

    def wait(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        try:
            for index, process in enumerate(self.processes):
                code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
                assert code == 0, f"process {index} exited {code}:\n{self.log(index)[-3000:]}"
        finally:
            self.kill()

    def kill(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()

    def log(self, index: int) -> str:
        return (self.folder / f"process{index}.log").read_text()


def _tf_workers(args: list[str], count: int, **env: str) -> list[tuple[list[str], dict[str, str]]]:
    workers = [f"127.0.0.1:{port}" for port in free_ports(count)]
    return [
        (
            args + ["--distribute"],
            _env(
                KERAS_BACKEND="tensorflow",
                **env,
                TF_CONFIG=json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}),
            ),
        )
        for i in range(count)
    ]


def _jax_processes(args: list[str], count: int, **env: str) -> list[tuple[list[str], dict[str, str]]]:
    coordinator = f"127.0.0.1:{free_ports(1)[0]}"
    return [
        (
            args
            + ["--distribute", "--coordinator", coordinator, "--num-processes", str(count), "--process-id", str(i)],
            _env(KERAS_BACKEND="jax", **env),
        )
        for i in range(count)
    ]


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "history.csv") as handle:
        return list(csv.DictReader(handle))


def _losses(run: Path) -> list[float]:
    return [float(row["loss"]) for row in _rows(run)]


# pspnet-train in one process that TensorFlow sees as two CPU devices (a one-machine multi-GPU box).
_TWO_TF_DEVICES = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from pspnet.cli import train_main
sys.exit(train_main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def two_process_runs(clean_data, tmp_path_factory):
    """Two epochs each, all started at once: one device; two processes; one process with two devices.

    On TensorFlow, and on JAX when it is installed.
    """
    root = tmp_path_factory.mktemp("two-process")
    args = ["--data", str(clean_data), *EXACT, "--epochs", "2"]
    scratch = {name: root / f"tmp-{name}" for name in ("tf", "jax")}
    for folder in scratch.values():
        folder.mkdir()
    jobs = {
        "tf-one": Job(
            root / "tf-one-logs", [(args + ["--out", str(root / "tf-one")], _env(KERAS_BACKEND="tensorflow"))]
        ),
        "tf-two": Job(
            root / "tf-two-logs", _tf_workers(args + ["--out", str(root / "tf-two")], 2, TMPDIR=str(scratch["tf"]))
        ),
        # What a sum-instead-of-mean all-reduce would do: every step twice as long.
        "tf-doubled": Job(
            root / "tf-doubled-logs",
            [
                (
                    [v if v != "0.05" else "0.1" for v in args] + ["--out", str(root / "tf-doubled")],
                    _env(KERAS_BACKEND="tensorflow"),
                )
            ],
        ),
        "tf-devices": Job(
            root / "tf-devices-logs",
            [(args + ["--distribute", "--out", str(root / "tf-devices")], _env(KERAS_BACKEND="tensorflow"))],
            program=["-c", _TWO_TF_DEVICES],
        ),
    }
    if importlib.util.find_spec("jax") is not None:
        jobs["jax-one"] = Job(
            root / "jax-one-logs", [(args + ["--out", str(root / "jax-one")], _env(KERAS_BACKEND="jax"))]
        )
        jobs["jax-two"] = Job(
            root / "jax-two-logs",
            _jax_processes(args + ["--out", str(root / "jax-two")], 2, TMPDIR=str(scratch["jax"])),
        )
        jobs["jax-devices"] = Job(
            root / "jax-devices-logs",
            [
                (
                    args + ["--distribute", "--out", str(root / "jax-devices")],
                    _env(KERAS_BACKEND="jax", XLA_FLAGS="--xla_force_host_platform_device_count=2"),
                )
            ],
        )
    try:
        for job in jobs.values():
            job.wait()
    finally:
        for job in jobs.values():
            job.kill()
    return root, scratch


def test_two_tensorflow_workers_match_one_process(two_process_runs):
    root, _ = two_process_runs
    one, two = _losses(root / "tf-one"), _losses(root / "tf-two")
    print("tensorflow losses, one process:", one, "two workers:", two)
    assert len(one) == len(two) == 2
    assert two == pytest.approx(one, rel=TOLERANCE)


@needs_jax
def test_two_jax_processes_match_one_process(two_process_runs):
    root, _ = two_process_runs
    one, two = _losses(root / "jax-one"), _losses(root / "jax-two")
    print("jax losses, one process:", one, "two processes:", two)
    assert len(one) == len(two) == 2
    assert two == pytest.approx(one, rel=TOLERANCE)


@pytest.mark.parametrize("backend", ["tf", pytest.param("jax", marks=needs_jax)])
def test_two_devices_in_one_process_match_one_device(two_process_runs, backend):
    root, _ = two_process_runs
    one, two = _losses(root / f"{backend}-one"), _losses(root / f"{backend}-devices")
    print(backend, "losses, one device:", one, "two devices:", two)
    assert two == pytest.approx(one, rel=TOLERANCE)


@pytest.mark.parametrize("backend", ["tf", pytest.param("jax", marks=needs_jax)])
def test_only_the_chief_writes_the_run_folder(two_process_runs, backend):
    root, scratch = two_process_runs
    single, multi = root / f"{backend}-one", root / f"{backend}-two"
    names = lambda run: sorted(
        path.relative_to(run).as_posix() for path in run.rglob("*") if "logs" not in path.relative_to(run).parts
    )  # TensorBoard names files by host and time
    assert names(multi) == names(single)
    assert json.loads((multi / "metrics.json").read_text())["epochs"] == 2
    assert list(scratch[backend].iterdir()) == []  # the other process's scratch folder is gone


def test_a_doubled_step_is_far_outside_the_tolerance(two_process_runs):
    root, _ = two_process_runs
    plain, twice = _losses(root / "tf-one"), _losses(root / "tf-doubled")
    print("tensorflow losses, rate 0.05:", plain, "rate 0.1:", twice)
    assert abs(twice[1] - plain[1]) > 100 * TOLERANCE * plain[1], (plain, twice)


def _assert_stops_in_one_line(chief: subprocess.Popen, log, seconds: float = 30) -> None:
    """Fails unless the chief, whose peer was killed, ends within ``seconds`` on the one line of a
    stopped peer; a chief that hangs instead is killed, and the test fails."""
    try:
        code = chief.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        chief.kill()
        chief.wait()
        pytest.fail(
            f"the chief still ran {seconds:g} s after its peer was killed (it hangs in a collective):\n{log()[-3000:]}"
        )
    text = log()
    assert code != 0, f"the chief exited {code} without its peer:\n{text[-3000:]}"
    assert (
        text.strip().splitlines()[-1].startswith("pspnet-train: error: another process of this 2-process job stopped")
    ), text[-3000:]
    assert "Traceback" not in text


def test_a_chief_that_hangs_fails_the_check():
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    with pytest.raises(pytest.fail.Exception, match="hangs in a collective"):
        _assert_stops_in_one_line(sleeper, lambda: "", seconds=1)
    assert sleeper.poll() is not None  # killed, not left running
    quitter = subprocess.Popen([sys.executable, "-c", "print('pspnet-train: done')"], stdout=subprocess.DEVNULL)
    quitter.wait()
    with pytest.raises(AssertionError, match="exited 0 without its peer"):
        _assert_stops_in_one_line(quitter, lambda: "pspnet-train: done\n", seconds=5)


@pytest.mark.parametrize("backend", ["tf", pytest.param("jax", marks=needs_jax)])
def test_a_killed_worker_resumes_when_the_job_is_started_again(clean_data, tmp_path, backend):
    run = tmp_path / "run"
    args = [
        "--data",
        str(clean_data),
        *EXACT,
        "--epochs",
        "4",
        "--steps-per-epoch",
        "4",
        "--out",
        str(run),
        "--verbose",
        "2",
    ]
    launch = {"tf": _tf_workers, "jax": _jax_processes}[backend]  # fresh ports for each start
    job = Job(tmp_path / "first", launch(args, 2))
    try:
        deadline = time.monotonic() + 300
        while not (run / "history.csv").is_file() or len(_rows(run)) < 1:
            assert all(process.poll() is None for process in job.processes), job.log(0)[-3000:] + job.log(1)[-3000:]
            assert time.monotonic() < deadline, "no epoch finished in 5 minutes"
            time.sleep(0.2)
        job.processes[1].send_signal(signal.SIGKILL)  # the other worker dies mid-run
        before = _rows(run)
        assert len(before) < 4, "the run ended before the kill"
        _assert_stops_in_one_line(job.processes[0], lambda: job.log(0))  # in its next collective
    finally:
        job.kill()  # as a user (or Slurm) would end the rest of the job
    # Process 1 started with another --out sees no finished epoch: both refuse, in one line.
    elsewhere = [
        ([str(tmp_path / "elsewhere") if arg == str(run) else arg for arg in args] if index else args, env)
        for index, (args, env) in enumerate(launch(args, 2))
    ]
    refused = Job(tmp_path / "elsewhere-logs", elsewhere)
    codes = [process.wait(timeout=300) for process in refused.processes]
    assert codes == [1, 1], refused.log(0)[-3000:]
    for index in range(2):
        assert (
            refused.log(index)
            .strip()
            .splitlines()[-1]
            .startswith("pspnet-train: error: the processes found different numbers of finished epochs")
        ), refused.log(index)
    assert _rows(run) == before and not (tmp_path / "elsewhere").exists()
    Job(tmp_path / "second", launch(args, 2)).wait()  # the same commands again
    rows = _rows(run)
    assert [int(row["epoch"]) for row in rows] == list(range(4))
    assert all(np.isfinite(float(row["loss"])) for row in rows)
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 4
    second = Path(tmp_path / "second" / "process0.log").read_text()
    resumed = int(second.split("resuming after epoch ")[1].split()[0])  # not from scratch
    assert len(before) <= resumed < 4
    assert rows[: len(before)] == before


# --- batch norm over replicas ------------------------------------------------------------

# One training step (learning rate 0, so only the batch-norm statistics move) on a
# batch of 4 with batch-norm momentum 0: the moving mean and variance become the
# statistics of the batch the layer normalised over. Prints them as JSON.
_BATCH_NORM_STEP = """
import json, sys
{setup}
import keras, numpy as np
from pspnet.training.distribute import distribution, synchronize_batch_norm
from pspnet.models.modelfile import all_layers

def step(replicas, sync):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.Conv2D(2, 1, use_bias=False, kernel_initializer="ones")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.0)(x)
    model = keras.Model(inputs, keras.layers.Conv2D(3, 1)(x))
    model.compile(keras.optimizers.SGD(0.0), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    if sync:
        synchronize_batch_norm(model, replicas)
    x = np.arange(4 * 4 * 4 * 3, dtype="float32").reshape(4, 4, 4, 3) ** 1.5 / 100
    y = np.zeros((4, 4, 4), "int32")
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False)
    norm = [layer for layer in all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)][0]
    return [keras.ops.convert_to_numpy(v).tolist() for v in (norm.moving_mean, norm.moving_variance)]

results = {{"one": step(1, False)}}
with distribution(True) as replicas:  # one strategy for both: a second one in a process confuses collectives
    results.update(replicas=replicas, synced=step(replicas, True), unsynced=step(replicas, False))
print(json.dumps(results))
"""
_TWO_TF_CPUS = """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
"""


@pytest.mark.parametrize("backend", ["tensorflow", pytest.param("jax", marks=needs_jax)])
def test_synchronised_batch_norm_gives_the_single_device_statistics(backend):
    setup, env = (
        (_TWO_TF_CPUS, {})
        if backend == "tensorflow"
        else ("", {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    )
    result = subprocess.run(
        [sys.executable, "-c", _BATCH_NORM_STEP.format(setup=setup)],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(KERAS_BACKEND=backend, **env),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(result.stdout.strip().splitlines()[-1])
    one, synced = results["one"], results["synced"]
    assert results["replicas"] == 2
    np.testing.assert_allclose(synced, one, rtol=1e-5, atol=1e-6)
    if backend == "tensorflow":  # each replica alone normalises over its own two images
        assert not np.allclose(results["unsynced"], one, rtol=1e-3)


def test_saved_models_keep_plain_batch_norm(tmp_path):
    from pspnet.models.modelfile import ModelInfo, all_layers, save_model

    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.BatchNormalization()(keras.layers.Conv2D(2, 1)(inputs)))
    norms = [layer for layer in all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms:
        layer.synchronized = True  # as synchronize_batch_norm leaves them on TensorFlow
    save_model(model, tmp_path / "m.keras", ModelInfo(head="classes", num_classes=2))
    import zipfile

    config = json.loads(zipfile.ZipFile(tmp_path / "m.keras").read("config.json"))
    saved = [layer for layer in config["config"]["layers"] if layer["class_name"] == "BatchNormalization"]
    assert [layer["config"]["synchronized"] for layer in saved] == [False]
    assert all(layer.synchronized for layer in norms)  # training goes on synchronised


def test_synchronize_batch_norm_leaves_one_replica_alone():
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.BatchNormalization()(inputs))
    assert synchronize_batch_norm(model, 1) == 0
    assert synchronize_batch_norm(model, 2) == (1 if keras.backend.backend() == "tensorflow" else 0)


# --- who is who ------------------------------------------------------------------------


def _config(**fields) -> TrainConfig:
    return TrainConfig(**{"distribute": True, **fields})


def test_tf_config_places_the_chief_first(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "tensorflow")
    cluster = {"chief": ["a:1"], "worker": ["b:1", "c:1"]}
    placements = [
        join_processes(_config(), {"TF_CONFIG": json.dumps({"cluster": cluster, "task": task})})
        for task in ({"type": "chief", "index": 0}, {"type": "worker", "index": 0}, {"type": "worker", "index": 1})
    ]
    assert placements == [Placement(3, 0, True), Placement(3, 1, False), Placement(3, 2, False)]
    assert join_processes(_config(), {}) == Placement()
    with pytest.raises(ConfigError, match="TF_CONFIG is not a cluster description"):
        join_processes(_config(), {"TF_CONFIG": "{not json"})


@pytest.mark.parametrize(
    "fields, environ, message",
    [
        ({"distribute": False, "num_processes": 2}, {}, "--num-processes needs --distribute"),
        ({"num_processes": 2}, {}, "--num-processes 2 needs --process-id I"),
        ({"num_processes": 2, "process_id": 0}, {}, "--num-processes 2 needs --coordinator HOST:PORT"),
        ({"num_processes": 2, "process_id": 2, "coordinator": "h:1"}, {}, r"--process-id must lie in \[0, 1\]"),
        ({"process_id": 1}, {}, "needs --num-processes N"),
        ({}, {"KERAS_DISTRIBUTION_NUM_PROCESSES": "two"}, "KERAS_DISTRIBUTION_NUM_PROCESSES must be an integer"),
        ({}, {"KERAS_DISTRIBUTION_NUM_PROCESSES": "0"}, "KERAS_DISTRIBUTION_NUM_PROCESSES must be 1 or more, got 0"),
        (
            {},
            {
                "KERAS_DISTRIBUTION_NUM_PROCESSES": "-2",
                "KERAS_DISTRIBUTION_PROCESS_ID": "0",
                "JAX_COORDINATOR_ADDRESS": "h:1",
            },
            "KERAS_DISTRIBUTION_NUM_PROCESSES must be 1 or more, got -2",
        ),
        (
            {},
            {
                "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
                "KERAS_DISTRIBUTION_PROCESS_ID": "-1",
                "JAX_COORDINATOR_ADDRESS": "h:1",
            },
            r"KERAS_DISTRIBUTION_PROCESS_ID must lie in \[0, 1\] for 2 processes, got -1",
        ),
        ({"sync_batch_norm": False}, {}, "--no-sync-batch-norm is for the tensorflow backend"),
        ({"num_processes": 2, "process_id": 0, "coordinator": "h:1", "head": "rgb"}, {}, "--head rgb trains in one"),
    ],
)
def test_bad_jax_job_descriptions_are_one_line(monkeypatch, fields, environ, message):
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    monkeypatch.setattr(keras.distribution, "initialize", lambda *a: pytest.fail("must not join"))
    if "head" in fields:  # the job is valid up to the head: let it "join"
        monkeypatch.setattr(keras.distribution, "initialize", lambda *a: None)
        jax = pytest.importorskip("jax")
        monkeypatch.setattr(jax, "process_count", lambda: 2)
        monkeypatch.setattr(jax, "process_index", lambda: 0)
    with pytest.raises(ConfigError, match=message):
        join_processes(_config(**fields), environ)


def test_jax_reads_the_job_from_the_environment(monkeypatch):
    jax = pytest.importorskip("jax")
    calls = []
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    monkeypatch.setattr(keras.distribution, "initialize", lambda *args: calls.append(args))
    monkeypatch.setattr(jax, "process_count", lambda: 4)
    monkeypatch.setattr(jax, "process_index", lambda: 3)
    environ = {
        "JAX_COORDINATOR_ADDRESS": "node0:1234",
        "KERAS_DISTRIBUTION_NUM_PROCESSES": "4",
        "KERAS_DISTRIBUTION_PROCESS_ID": "3",
    }
    assert join_processes(_config(), environ) == Placement(4, 3, False)
    assert calls == [("node0:1234", 4, 3)]
    calls.clear()  # Slurm: jax finds everything itself
    join_processes(_config(), {"SLURM_NTASKS": "4", "SLURM_PROCID": "3"})
    assert calls == [(None, None, None)]
    calls.clear()  # one process: nothing to join
    assert join_processes(_config(), {}) == Placement() and calls == []


def test_several_processes_refuse_a_time_limit(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "tensorflow")
    two = json.dumps({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}})
    with pytest.raises(ConfigError, match="--time-limit needs one process"):
        join_processes(_config(time_limit=20), {"TF_CONFIG": two})
    assert join_processes(_config(time_limit=20), {}) == Placement()  # one process, several devices: one clock


def test_tensorflow_refuses_the_jax_flags(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "tensorflow")
    with pytest.raises(ConfigError, match="--coordinator is for the jax backend"):
        join_processes(_config(coordinator="h:1"), {})


def test_distribute_on_torch_is_one_clear_line(monkeypatch, capsys, tmp_path):
    from pspnet.cli import train_main

    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    with pytest.raises(ConfigError, match="--distribute needs the tensorflow or jax backend, not torch"):
        join_processes(_config(), {})
    assert train_main(["--distribute", "--out", str(tmp_path / "run")]) != 0
    assert not (tmp_path / "run").exists()
    error = capsys.readouterr().err.strip().splitlines()
    assert error == [
        "pspnet-train: error: --distribute needs the tensorflow or jax backend, not torch "
        "(set KERAS_BACKEND=tensorflow or jax)"
    ]


@pytest.mark.parametrize(
    "error",
    [
        ValueError(
            "UNKNOWN: Gloo AllGather failed: [pair.cc:538] Read error [127.0.0.1]:52359: Connection reset by peer"
        ),
        type("XlaRuntimeError", (RuntimeError,), {})("UNAVAILABLE: task 1 heartbeat timeout"),
        type("UnavailableError", (Exception,), {})("Collective ops is aborted by: ... The tasks have crashed."),
    ],
)
def test_a_stopped_peer_is_one_line(error):
    # As seen when the other process was killed: TensorFlow's UnavailableError, JAX's gloo ValueError.
    from pspnet.training.distribute import ProcessStopped, peers_watched

    with pytest.raises(ProcessStopped, match="another process of this 2-process job stopped"):
        with peers_watched(Placement(2, 0, True)):
            raise error
    with pytest.raises(type(error)):  # one process: nothing to blame on a peer
        with peers_watched(Placement()):
            raise error
    with pytest.raises(ValueError, match="shapes"):  # a bug stays a bug
        with peers_watched(Placement(2, 0, True)):
            raise ValueError("shapes (2, 3) and (4,) do not match")


def test_placement_parts_split_the_global_batch(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    assert [Placement(4, index, index == 0).part(8) for index in range(4)] == [(0, 2), (2, 4), (4, 6), (6, 8)]
    assert Placement().part(8) == (0, 8)
    monkeypatch.setattr(keras.backend, "backend", lambda: "tensorflow")  # its strategy cuts batches itself
    assert Placement(4, 1, False).part(8) == (0, 8)
