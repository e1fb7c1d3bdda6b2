"""Tests of pspnet.bench and ``pspnet-bench``: one tiny measurement, flags, output."""

import dataclasses
import json

import keras
import pytest

import pspnet.bench
from pspnet.bench import benchmark_model, format_models_table
from pspnet.cli import bench_main
from pspnet.flops import count_flops
from pspnet.model import build_pspnet

TINY = dict(image_size=(32, 32), batch_size=1, steps=1, warmup=1, num_classes=3)


@pytest.fixture(scope="module")
def row():
    """One real measurement (tracing a training step takes a while on a CPU)."""
    before = keras.config.dtype_policy().name
    measured = benchmark_model("seed", dtype_policy="mixed_bfloat16", **TINY)
    assert keras.config.dtype_policy().name == before  # restored
    return measured


def test_benchmark_model_row(row):
    model = build_pspnet("seed", num_classes=3, input_shape=(32, 32, 3))
    assert row.parameters == model.count_params()
    assert row.gflops == pytest.approx(count_flops(model) / 1e9)
    assert row.train_images_per_s > 0 and row.infer_images_per_s > 0
    assert (row.image_size, row.batch_size, row.steps) == ((32, 32), 1, 1)
    assert (row.backend, row.dtype_policy) == (keras.backend.backend(), "mixed_bfloat16")
    table = format_models_table([row]).splitlines()
    assert len(table) == 3 and table[2].startswith(f"| seed | {row.parameters:,} | ")


def test_bench_models_command(row, tmp_path, capsys, monkeypatch):
    calls = []

    def fake_benchmark(preset, **kwargs):  # the measurement itself is tested above
        calls.append((preset, kwargs))
        return dataclasses.replace(row, preset=preset, image_size=kwargs["image_size"])

    monkeypatch.setattr(pspnet.bench, "benchmark_model", fake_benchmark)
    out = tmp_path / "rows.json"
    argv = ["models", "--presets", "fast", "seed", "--image-size", "32x48", "--batch-size", "4"]
    assert bench_main(argv + ["--steps", "5", "--num-classes", "3", "--json", str(out)]) == 0
    assert [preset for preset, _ in calls] == ["fast", "seed"]
    assert calls[0][1] == dict(
        image_size=(32, 48), batch_size=4, steps=5, warmup=1, num_classes=3, dtype_policy=None
    )
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].startswith("| preset | parameters |")
    assert lines[2].startswith("| fast |") and lines[3].startswith("| seed |")
    assert "| 32x48 |" in lines[2]
    assert "fast: " in captured.err and "images/s" in captured.err
    rows = json.loads(out.read_text())
    assert [r["preset"] for r in rows] == ["fast", "seed"] and rows[0]["image_size"] == [32, 48]


def test_bad_values_exit_1_with_one_line(capsys):
    assert bench_main(["models", "--dtype-policy", "float8", "--presets", "fast"]) == 1
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.startswith("pspnet-bench: error: invalid dtype policy 'float8'")
    assert bench_main(["models", "--image-size", "4", "--presets", "fast"]) == 1
    assert "integers >= 8 for the fast preset" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["models", "--presets", "resnet"], "invalid choice: 'resnet'"),
        (["models", "--image-size", "0"], "expected SIZE or HEIGHTxWIDTH"),
        (["models", "--image-size", "32xx"], "expected SIZE or HEIGHTxWIDTH"),
        (["models", "--steps", "0"], "expected a positive integer"),
        ([], "required: SECTION"),
    ],
)
def test_bad_flags_exit_2_with_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as raised:
        bench_main(argv)
    assert raised.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("pspnet-bench") and message in error and error.count("\n") == 1
