"""Importing pspnet defines things and does nothing else: no backend, no op, no allocator change.

Each check runs in a fresh interpreter, since this test process has long
imported Keras.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO, free_ports

HEAVY = ("tensorflow", "keras", "jax", "torch")


def _python(script: str, *args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, env=environment, timeout=timeout
    )


def _loaded(statement: str) -> list[str]:
    result = _python(f"import sys\n{statement}\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    assert result.returncode == 0, result.stderr[-2000:]
    return eval(result.stdout.strip().splitlines()[-1])


def test_importing_the_package_and_its_cli_loads_no_backend():
    assert _loaded("import pspnet, pspnet.cli, pspnet.training.config, pspnet.errors, pspnet.fileio") == []


@pytest.mark.parametrize(
    "command, argv",
    [
        ("data_main", ["--help"]),
        ("train_main", ["--help"]),
        ("train_main", ["--epochs", "0"]),
        ("evaluate_main", ["--help"]),
        ("predict_main", ["--help"]),
    ],
)
def test_help_and_flag_errors_answer_without_loading_a_backend(command, argv):
    statement = (
        f"from pspnet.cli import {command}\n"
        f"try:\n    code = {command}({argv!r})\nexcept SystemExit as exit:\n    code = exit.code\n"
        "assert code in (0, 2), code"
    )
    assert _loaded(statement) == []


def test_importing_every_module_runs_no_op_and_leaves_the_heap_alone():
    # The heap padding is the entry points' job; the runtime must stay unstarted,
    # or TensorFlow refuses new virtual devices (and a multi-worker strategy).
    script = (
        "import pkgutil, importlib, pspnet, pspnet.allocator as allocator\n"
        "allocator.pad_heap = lambda *args: (_ for _ in ()).throw(AssertionError('pad_heap called on import'))\n"
        "for module in pkgutil.iter_modules(pspnet.__path__):\n"
        "    importlib.import_module('pspnet.' + module.name)\n"
        "import tensorflow as tf\n"
        "cpu = tf.config.list_physical_devices('CPU')[0]\n"
        "tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)\n"
        "print(len(tf.config.list_logical_devices('CPU')))\n"
    )
    result = _python(script, env={"KERAS_BACKEND": "tensorflow"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "2"


def test_keras_loaded_after_pspnet_knows_its_layers():
    script = (
        "import pspnet, keras\n"
        "print(keras.saving.get_registered_object('pspnet>ResizeToMatch').__name__,"
        " keras.saving.get_registered_object('pspnet>PixelAccuracy').__name__)\n"
    )
    result = _python(script)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["ResizeToMatch", "PixelAccuracy"]


def test_two_tensorflow_workers_get_past_strategy_creation():
    # TF_CONFIG as a user on two machines would set it; the strategy must be made
    # before TensorFlow's first op, which importing pspnet used to run.
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    script = (
        "import pspnet, pspnet.training.loop\n"
        "from pspnet.training.config import TrainConfig\n"
        "from pspnet.training.distribute import distribution, join_processes\n"
        "placement = join_processes(TrainConfig(distribute=True))\n"
        "with distribution(True, placement) as replicas:\n"
        "    print(replicas, placement.is_chief, placement.index)\n"
    )
    processes = []
    for index in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        environment = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "KERAS_BACKEND": "tensorflow",
            "TF_CONFIG": json.dumps(config),
        }
        processes.append(
            subprocess.Popen(
                [sys.executable, "-c", script],
                env=environment,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        )
    outputs = []
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=180)
            assert process.returncode == 0, stderr[-3000:]
            outputs.append(stdout.strip().splitlines()[-1])
    finally:
        for process in processes:
            process.kill()
    assert outputs == ["2 True 0", "2 False 1"]
