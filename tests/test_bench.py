"""Tests of pspnet.bench (models, training, timing) and ``pspnet-bench``: one tiny measurement, flags, output."""

import dataclasses
import json

import keras
import pytest

import pspnet.bench.models
import pspnet.bench.peaks
import pspnet.bench.training
import pspnet.errors
import pspnet.hardware
from pspnet.bench.models import benchmark_model, format_models_table
from pspnet.cli import bench_main
from pspnet.models.builder import build_pspnet
from pspnet.models.flops import count_flops

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
    assert len(table) == 3 and table[2].startswith(f"| seed | mixed_bfloat16 | {row.parameters:,} | ")


def test_bench_models_command(row, tmp_path, capsys, monkeypatch):
    calls = []

    def fake_benchmark(preset, **kwargs):  # the measurement itself is tested above
        calls.append((preset, kwargs))
        return dataclasses.replace(row, preset=preset, image_size=kwargs["image_size"])

    monkeypatch.setattr(pspnet.bench.models, "benchmark_model", fake_benchmark)
    out = tmp_path / "rows.json"
    argv = ["models", "--presets", "fast", "seed", "--image-size", "32x48", "--batch-size", "4"]
    assert bench_main(argv + ["--steps", "5", "--num-classes", "3", "--json", str(out)]) == 0
    assert [preset for preset, _ in calls] == ["fast", "seed"]
    assert calls[0][1] == dict(image_size=(32, 48), batch_size=4, steps=5, warmup=1, num_classes=3, dtype_policy=None)
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].startswith("| preset | policy | parameters |")
    assert lines[2].startswith("| fast |") and lines[3].startswith("| seed |")
    assert "| 32x48 |" in lines[2]
    assert "fast, " in captured.err and "images/s" in captured.err
    rows = json.loads(out.read_text())
    assert [r["preset"] for r in rows] == ["fast", "seed"] and rows[0]["image_size"] == [32, 48]


def test_each_row_is_shared_against_the_peak_of_its_own_precision(row, capsys, monkeypatch):
    from pspnet.models.precision import auto_precision

    calls = []

    def fake_benchmark(preset, dtype_policy=None, **kwargs):
        calls.append((preset, dtype_policy))
        return dataclasses.replace(row, preset=preset, dtype_policy=dtype_policy or "float32")

    peaks = {"float32": (1.0, "fake float32"), "bfloat16": (4.0, "fake bfloat16")}
    monkeypatch.setattr(pspnet.bench.models, "benchmark_model", fake_benchmark)
    monkeypatch.setattr(pspnet.bench.peaks, "peak_tflops", lambda machine, dtype: peaks[dtype])
    machine = {"kind": "cpu", "bfloat16": True, "device": "a CPU with AMX"}
    monkeypatch.setattr(pspnet.hardware, "describe_machine", lambda: machine)
    argv = ["models", "--presets", "fast", "lite", "--dtype-policy", "float32", "mixed_bfloat16", "auto"]
    assert bench_main(argv) == 0
    auto = {preset: auto_precision(machine, preset)[0] for preset in ("fast", "lite")}
    policies = {preset: ("float32", "mixed_bfloat16", auto[preset]) for preset in ("fast", "lite")}
    assert calls == [(preset, policy) for preset in ("fast", "lite") for policy in policies[preset]]
    captured = capsys.readouterr()
    table = [line.split(" | ") for line in captured.out.splitlines()[2:]]
    assert [(cells[0], cells[1]) for cells in table] == [
        ("| fast", "float32"),
        ("| fast", "mixed_bfloat16"),
        ("| fast", f"auto: {auto['fast']}"),
        ("| lite", "float32"),
        ("| lite", "mixed_bfloat16"),
        ("| lite", f"auto: {auto['lite']}"),
    ]
    tflops = 3 * row.gflops * row.train_images_per_s / 1e3
    for cells in table:
        peak = 4.0 if cells[1].endswith("bfloat16") else 1.0
        assert cells[7] == f"{100 * tflops / peak:.1f} %"
    assert "peak bfloat16 4.00 TFLOP/s (fake bfloat16), float32 1.00 TFLOP/s (fake float32)" in captured.err


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


# --- the training-speed table ------------------------------------------------------------


@pytest.fixture(scope="module")
def speed():
    """A real tiny table: the seed recipe, fast trained the package's way, the pipeline."""
    from pspnet.bench.training import speed_table

    seen = []
    machine, peaks, rows = speed_table(
        ["fast"],
        image_size=32,
        steps=1,
        warmup=1,
        pipeline_batches=2,
        workers=1,
        overrides={"batch_size": 2},
        progress=seen.append,
    )
    assert seen == rows
    return machine, peaks, rows


def test_speed_table_rows_and_ratios(speed):
    from pspnet.bench.peaks import compute_dtype
    from pspnet.models.precision import auto_precision

    machine, peaks, rows = speed
    assert [row.name for row in rows] == ["seed recipe", "fast", "input pipeline"]
    recipe, fast, pipeline = rows
    assert (recipe.batch_size, recipe.precision, recipe.speedup) == (10, "float32", 1.0)
    # On a CPU the machine's settings train in --precision auto's policy, which the row names.
    policy = auto_precision(machine, "fast")[0] if machine["kind"] == "cpu" else "mixed_bfloat16"
    assert (fast.batch_size, fast.precision, fast.jit_compile) == (
        2,
        policy,
        "on" if keras.backend.backend() == "jax" else "off",
    )
    assert sorted(peaks) == sorted({"float32", compute_dtype(policy)})
    from pspnet.training.seed_recipe import notebook_model

    assert recipe.gflops == pytest.approx(count_flops(notebook_model(32)) / 1e9)
    assert fast.gflops == pytest.approx(count_flops(build_pspnet("fast", input_shape=(32, 32, 3))) / 1e9)
    for row in (recipe, fast):
        assert row.train_images_per_s > 0 and row.infer_images_per_s > 0
        assert row.train_tflops == pytest.approx(3 * row.gflops * row.train_images_per_s / 1e3)
        assert row.share_of_peak == pytest.approx(row.train_tflops / peaks[compute_dtype(row.precision)][0])
    assert fast.speedup == pytest.approx(fast.train_images_per_s / recipe.train_images_per_s)
    assert pipeline.train_images_per_s > 0 and pipeline.speedup is None and pipeline.gflops is None
    assert machine["kind"] in ("cpu", "gpu") and machine["backend"] == keras.backend.backend()
    for dtype, (peak, source) in peaks.items():
        assert peak > 0 and source in ("nominal", f"measured {dtype} matmul")


def test_rate_counts_the_images_after_warmup():
    from pspnet.bench.timing import marks_rate

    marks = [(0, 10.0), (1, 11.0), (3, 12.0)]  # the last execution ran 2 steps
    assert marks_rate(marks, 4, warmup=1) == pytest.approx(4 * 3 / 2.0)
    assert marks_rate(marks, 4, warmup=2) == pytest.approx(4 * 2 / 1.0)
    with pytest.raises(pspnet.errors.ConfigError):
        marks_rate(marks, 4, warmup=3)


def test_nominal_peaks_of_known_gpus():
    from pspnet.hardware import nominal_peak_tflops

    assert nominal_peak_tflops("NVIDIA H100 80GB HBM3", "bfloat16") == 989.4
    assert nominal_peak_tflops("NVIDIA H100 PCIe", "bfloat16") == 756.0
    assert nominal_peak_tflops("NVIDIA H200", "float32") == 66.9
    assert nominal_peak_tflops("AMD EPYC", "float32") is None


def test_the_peak_is_one_devices_as_the_benchmark_trains_on_one():
    # pspnet-bench trains without --distribute: Keras computes on the first GPU only,
    # so eight GPUs' peak would make the share of peak eight times too small.
    from pspnet.hardware import peak_tflops

    machine = {"device": "NVIDIA H100 80GB HBM3", "kind": "gpu", "devices": 8}
    assert peak_tflops(machine, "bfloat16") == (989.4, "nominal")


def test_bench_train_command_prints_one_table(speed, tmp_path, capsys, monkeypatch):
    calls = {}

    def fake_speed_table(presets, image_size, **kwargs):  # measured for real above
        calls.update(presets=presets, image_size=image_size, **kwargs)
        return speed

    monkeypatch.setattr(pspnet.bench.training, "speed_table", fake_speed_table)
    out = tmp_path / "speed.json"
    argv = ["train", "--presets", "fast", "--image-size", "32", "--batch-size", "2", "--no-jit-compile"]
    assert bench_main(argv + ["--json", str(out)]) == 0
    assert calls["presets"] == ["fast"] and calls["image_size"] == 32
    assert calls["overrides"] == {"batch_size": 2, "jit_compile": False}
    printed = capsys.readouterr().out
    assert "| seed recipe | 10 | float32 |" in printed and "| fast | 2 |" in printed
    assert "TFLOP/s" in printed
    saved = json.loads(out.read_text())
    assert [row["name"] for row in saved["rows"]] == ["seed recipe", "fast", "input pipeline"]


def test_bench_train_bad_flag_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench_main(["train", "--presets", "nope"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err


# --- a class count of one's own ---------------------------------------------------------


def test_bench_classes_are_cityscapes_for_19_and_numbered_otherwise():
    from pspnet.bench.training import bench_classes
    from pspnet.data.classes import CITYSCAPES

    assert bench_classes(19) is CITYSCAPES
    five = bench_classes(5)
    assert five.names == ("class 0", "class 1", "class 2", "class 3", "class 4")
    assert len(set(bench_classes(255).colors)) == 255
    with pytest.raises(pspnet.errors.ConfigError, match="^--num-classes must be 2 to 255, got 1$"):
        bench_classes(1)


def test_package_training_of_five_classes_builds_and_feeds_five():
    from pspnet.bench.training import benchmark_package_training

    row = benchmark_package_training(
        "fast", image_size=32, steps=1, warmup=1, batch_size=2, workers=1, source_size=32, num_classes=5
    )
    assert row.train_images_per_s > 0 and row.infer_images_per_s > 0
    five = count_flops(build_pspnet("fast", num_classes=5, input_shape=(32, 32, 3))) / 1e9
    assert row.gflops == pytest.approx(five)
    assert five != pytest.approx(count_flops(build_pspnet("fast", input_shape=(32, 32, 3))) / 1e9)


def test_bench_train_passes_the_class_count(speed, capsys, monkeypatch):
    calls = {}

    def fake_speed_table(presets, image_size, **kwargs):
        calls.update(kwargs)
        return speed

    monkeypatch.setattr(pspnet.bench.training, "speed_table", fake_speed_table)
    assert bench_main(["train", "--presets", "fast", "--image-size", "32", "--num-classes", "5"]) == 0
    assert calls["num_classes"] == 5 and "32x32 images of 5 classes" in capsys.readouterr().out
    assert bench_main(["train", "--presets", "fast", "--image-size", "32"]) == 0
    assert calls["num_classes"] == 19


def test_bench_train_refuses_one_class_in_one_line(capsys):
    assert bench_main(["train", "--presets", "fast", "--num-classes", "1"]) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert error == ["pspnet-bench: error: --num-classes must be 2 to 255, got 1"]
