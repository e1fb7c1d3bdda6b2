"""pspnet.inference.export and pspnet-export on tiny untrained models (32x48), each artefact run in its own runtime."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")
tf = pytest.importorskip("tensorflow")

import keras  # noqa: E402
from conftest import make_pairs  # noqa: E402

import pspnet  # noqa: E402
from pspnet.cli import evaluate_main, export_main  # noqa: E402
from pspnet.errors import ConfigError  # noqa: E402
from pspnet.inference.evaluate import EvalConfig, evaluate  # noqa: E402
from pspnet.inference.export import TOLERANCE, export  # noqa: E402
from pspnet.inference.runtimes import description_path, load_exported  # noqa: E402
from pspnet.models.modelfile import ModelInfo, save_model  # noqa: E402

SIZE = (32, 48)
pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="export runs on TensorFlow")


def _model_file(folder: Path, preset: str, head: str = "classes") -> Path:
    keras.utils.set_random_seed(1)
    model = pspnet.build_pspnet(preset, input_shape=(None, None, 3), head=head)
    path = folder / f"{preset}-{head}.keras"
    save_model(
        model, path, ModelInfo(head=head, num_classes=19 if head == "classes" else 3, preset=preset, image_size=SIZE)
    )
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    return {preset: _model_file(folder, preset) for preset in ("fast", "seed")}


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    """Photos the export's own check never saw: random noise over a gradient."""
    rng = np.random.default_rng(3)
    ramp = np.linspace(0, 255, SIZE[1], dtype=np.float32)[None, :, None]
    return np.clip(rng.normal(0, 60, (3, *SIZE, 3)) + ramp, 0, 255).astype(np.float32)


def _keras_scores(path: Path, photos: np.ndarray) -> np.ndarray:
    from pspnet.models.modelfile import load_model

    model, _ = load_model(path)
    return np.asarray(model.predict_on_batch(photos), np.float32)


@pytest.mark.parametrize("preset", ["fast", "seed"])
@pytest.mark.parametrize("format, name", [("onnx", "m.onnx"), ("saved_model", "m_savedmodel")])
def test_onnx_and_saved_model_match_keras_within_1e4(models, photos, tmp_path, preset, format, name):
    out = tmp_path / name
    result = export(models[preset], format, out, verbose=False)
    runtime, info = load_exported(out)
    got = np.asarray(runtime.predict_on_batch(photos), np.float32)  # a batch of 3: the batch is dynamic
    np.testing.assert_allclose(got, _keras_scores(models[preset], photos), atol=1e-4, rtol=0)
    assert (info.head, info.preset, tuple(info.image_size)) == ("classes", preset, SIZE)
    description = json.loads(description_path(out).read_text())
    assert description["input"]["shape"] == [None, *SIZE, 3] and description["output"]["shape"][-1] == 19
    assert len(description["classes"]) == len(description["colors"]) == 19
    assert description["check"]["max_abs_difference"] <= TOLERANCE[format] * description["check"]["score_scale"]
    assert result["path"] == str(out)


def test_litert_matches_keras_within_its_stated_tolerance(models, photos, tmp_path):
    out = tmp_path / "m.tflite"
    export(models["fast"], "litert", out, verbose=False)
    runtime, _ = load_exported(out)
    expected = _keras_scores(models["fast"], photos)
    got = runtime.predict_on_batch(photos)  # fed one image at a time
    scale = max(1.0, float(np.abs(expected).max()))
    assert np.abs(got - expected).max() <= TOLERANCE["litert"] * scale
    assert json.loads(description_path(out).read_text())["input"]["shape"] == [1, *SIZE, 3]


def test_another_fixed_size_and_the_cli_line(models, tmp_path, capsys):
    out = tmp_path / "m40.onnx"
    assert (
        export_main(["--model", str(models["fast"]), "--format", "onnx", "--out", str(out), "--image-size", "40", "56"])
        == 0
    )
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(
        f"pspnet-export: wrote {out} and m40.onnx.json (onnx, 40x56); checked on 4 generated street scenes"
    )
    runtime, _ = load_exported(out)
    assert runtime.input_shape == (None, 40, 56, 3)


def test_an_exported_model_scores_like_the_keras_model(models, tmp_path):
    split = make_pairs(tmp_path / "val", 4, size=32, seed=5, split="val")
    out = tmp_path / "m.onnx"
    export(models["fast"], "onnx", out, verbose=False)
    keras_scores = evaluate(
        EvalConfig(model=models["fast"], data=split, out=tmp_path / "k", batch_size=2, verbose=False)
    )
    assert (
        evaluate_main(
            ["--model", str(out), "--data", str(split), "--out", str(tmp_path / "o"), "--batch-size", "2", "--quiet"]
        )
        == 0
    )
    onnx_scores = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert onnx_scores["mean_iou"] == pytest.approx(keras_scores["mean_iou"], abs=1e-6)
    assert onnx_scores["pixel_accuracy"] == pytest.approx(keras_scores["pixel_accuracy"], abs=1e-6)


def _no_generated_scenes(*args, **kwargs):
    raise AssertionError("checked on generated scenes, not the photos given")


def test_int8_litert_is_checked_against_the_float_model_on_its_calibration_photos(
    models, tmp_path, monkeypatch, capsys
):
    photos = make_pairs(tmp_path / "calibration", 4, size=32, seed=2, split="train")
    monkeypatch.setattr("pspnet.inference.export.check_photos", _no_generated_scenes)
    result = export(models["fast"], "litert", tmp_path / "int8.tflite", quantize=True, calibration=photos)
    assert result["quantized"] == "int8" and result["check"]["class_agreement"] >= 0.9  # 96.8% measured
    assert (result["check"]["images"], result["check"]["photos"]) == (f"calibration photos of {photos}", 4)
    assert f"; checked on 4 calibration photos of {photos}: " in capsys.readouterr().out
    # An int8 model that agrees too little is refused, and nothing is written.
    monkeypatch.setattr("pspnet.inference.export.INT8_AGREEMENT", 1.01)
    with pytest.raises(ConfigError, match="agrees with the float model on"):
        export(models["fast"], "litert", tmp_path / "refused.tflite", quantize=True, calibration=photos, verbose=False)
    assert not (tmp_path / "refused.tflite").exists() and not description_path(tmp_path / "refused.tflite").exists()


def test_check_data_photos_are_what_an_export_is_checked_on(models, tmp_path, monkeypatch, capsys):
    folder = make_pairs(tmp_path / "streets", 3, size=32, seed=4, split="val")
    monkeypatch.setattr("pspnet.inference.export.check_photos", _no_generated_scenes)
    out = tmp_path / "m.onnx"
    assert (
        export_main(
            ["--model", str(models["fast"]), "--format", "onnx", "--out", str(out), "--check-data", str(folder)]
        )
        == 0
    )
    assert f"; checked on 3 photos of {folder}: max |difference| " in capsys.readouterr().out
    check = json.loads(description_path(out).read_text())["check"]
    assert (check["images"], check["photos"]) == (f"photos of {folder}", 3)


def test_a_missing_check_data_folder_is_one_line_before_anything_is_written(models, tmp_path, capsys):
    out = tmp_path / "exports" / "m.onnx"
    assert (
        export_main(
            [
                "--model",
                str(models["fast"]),
                "--format",
                "onnx",
                "--out",
                str(out),
                "--check-data",
                str(tmp_path / "absent"),
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--check-data folder not found: {tmp_path / 'absent'}" in err, err
    assert not (tmp_path / "exports").exists()


def test_a_missing_calibration_folder_is_named_with_its_flag(models, tmp_path, capsys):
    out = tmp_path / "m.tflite"
    assert (
        export_main(
            [
                "--model",
                str(models["fast"]),
                "--format",
                "litert",
                "--quantize",
                "--out",
                str(out),
                "--calibration",
                str(tmp_path / "absent"),
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--calibration folder not found: {tmp_path / 'absent'}" in err, err
    assert not out.exists()


def _memory_gib() -> float:
    """This machine's memory (Linux; 0 where it cannot be read)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return 0.0


# tf2onnx's conversion of pspnet50 (the dilated ResNet-50) peaked at 21.6 GB of
# resident memory at 48x64 (100 s, 2-core CPU, TensorFlow 2.21, tf2onnx 1.16):
# beside the suite on a 24 GB machine it is killed for memory (docs/BENCHMARKS.md, "Export").
NEEDS_MEMORY = pytest.mark.skipif(_memory_gib() < 48, reason="pspnet50's ONNX conversion needs about 22 GB")


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["lite", pytest.param("pspnet50", marks=NEEDS_MEMORY)])
def test_the_imagenet_presets_export_to_onnx_and_match_keras(photos, tmp_path, preset):
    # Random backbones (backbone_weights None): the graph, not the weights, is what converts.
    path = _model_file(tmp_path, preset)
    out = tmp_path / f"{preset}.onnx"
    export(path, "onnx", out, verbose=False)
    runtime, info = load_exported(out)
    expected = _keras_scores(path, photos)
    scale = max(1.0, float(np.abs(expected).max()))
    assert np.abs(runtime.predict_on_batch(photos) - expected).max() <= TOLERANCE["onnx"] * scale
    assert info.preset == preset


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--format", "onnx", "--out", "x.tflite"], "--out for --format onnx must end in .onnx"),
        (["--format", "onnx", "--out", "m.onnx", "--quantize"], "--quantize is for --format litert only"),
        (["--format", "litert", "--out", "m.tflite", "--quantize"], "--quantize needs --calibration"),
        (["--format", "saved_model", "--out", "m.onnx"], "--out for --format saved_model is a folder"),
    ],
)
def test_bad_options_end_in_one_line_and_write_nothing(models, tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert export_main(["--model", str(models["fast"]), *argv]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pspnet-export: error: ") and message in err, err
    assert sorted(path.name for path in tmp_path.iterdir()) == []


def test_an_existing_output_is_never_replaced(models, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"someone else's")
    assert export_main(["--model", str(models["fast"]), "--format", "onnx", "--out", str(out)]) == 1
    assert f"{out} exists" in capsys.readouterr().err and out.read_bytes() == b"someone else's"
    assert not description_path(out).exists()


def test_an_output_made_during_the_conversion_is_not_replaced(models, tmp_path, monkeypatch, capsys):
    # Checked only at the start, it was renamed over after minutes of conversion (another export, a user's copy).
    import pspnet.inference.export as module

    out, convert = tmp_path / "m.onnx", module._convert

    def convert_while_another_writes(*args):
        built = convert(*args)
        out.write_bytes(b"someone else's")
        return built

    monkeypatch.setattr(module, "_convert", convert_while_another_writes)
    assert export_main(["--model", str(models["fast"]), "--format", "onnx", "--out", str(out)]) == 1
    assert f"{out} exists" in capsys.readouterr().err and out.read_bytes() == b"someone else's"
    assert not description_path(out).exists()


@keras.saving.register_keras_serializable("pspnet_test")
class Spectrum(keras.layers.Layer):
    """The magnitude of a 2-D FFT: an op no ONNX or LiteRT converter knows."""

    def call(self, inputs):
        real, imag = keras.ops.fft2((inputs, keras.ops.zeros_like(inputs)))
        return keras.ops.sqrt(real * real + imag * imag)


def test_a_model_the_converter_cannot_handle_is_one_line_and_leaves_nothing(tmp_path, capsys):
    inputs = keras.Input((None, None, 3))
    features = Spectrum()(keras.ops.transpose(inputs, (0, 3, 1, 2)))
    model = keras.Model(inputs, keras.layers.Conv2D(19, 1)(keras.ops.transpose(features, (0, 2, 3, 1))))
    path = tmp_path / "fft.keras"
    save_model(model, path, ModelInfo(head="classes", num_classes=19, image_size=SIZE))
    out = tmp_path / "exports"
    out.mkdir()
    assert export_main(["--model", str(path), "--format", "litert", "--out", str(out / "fft.tflite")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pspnet-export: error: cannot convert the model to litert"), err
    assert list(out.iterdir()) == []  # no artefact, no description, no temporary folder
    # Into folders that do not exist yet: made for the export, removed again when it fails.
    assert export_main(["--model", str(path), "--format", "litert", "--out", str(out / "a" / "b" / "fft.tflite")]) == 1
    assert "cannot convert the model to litert" in capsys.readouterr().err and list(out.iterdir()) == []


def test_out_under_a_file_is_one_line(models, tmp_path, capsys):
    (tmp_path / "exports").write_text("not a folder")
    assert (
        export_main(["--model", str(models["fast"]), "--format", "onnx", "--out", str(tmp_path / "exports" / "m.onnx")])
        == 1
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"the output folder {tmp_path / 'exports'} is a file" in err, err


def test_the_readme_onnx_example_runs_on_an_export(models, tmp_path, monkeypatch):
    import re

    import cv2
    from conftest import REPO

    readme = (REPO / "README.md").read_text()
    deploy = readme[readme.index("## Deploy") : readme.index("## Video")]
    snippet = re.search(r"```python\n(.*?)```", deploy, re.S).group(1)
    assert len(snippet.strip().splitlines()) <= 11  # "a ten-line example" (plus its import line)
    onnx_path = re.search(r'InferenceSession\("([^"]+)"\)', snippet).group(1)  # where the README's export put it
    export(models["fast"], "onnx", tmp_path / onnx_path, verbose=False)
    cv2.imwrite(str(tmp_path / "street.jpg"), np.full((60, 90, 3), 128, np.uint8))
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, "README.md", "exec"), {})
    colours = cv2.imread(str(tmp_path / "street_color.png"))
    assert colours.shape == (*SIZE, 3)


def test_bench_runtimes_times_and_scores_every_runtime(models, tmp_path, capsys):
    from pspnet.cli import bench_main

    split = make_pairs(tmp_path / "val", 2, size=32, seed=5, split="val")
    assert (
        bench_main(
            [
                "runtimes",
                "--model",
                str(models["fast"]),
                "--data",
                str(split),
                "--steps",
                "1",
                "--calibration",
                str(split),
            ]
        )
        == 0
    )
    table = capsys.readouterr().out.strip().splitlines()
    assert table[0].startswith("| runtime | images/s, batch 1 | images/s, batch 8 | val mIoU")
    assert [line.split(" | ")[0] for line in table[2:]] == [
        "| keras (tensorflow)",
        "| onnxruntime",
        "| litert",
        "| litert int8",
    ]
    float_scores = {line.split(" | ")[4] for line in table[2:5]}
    assert len(float_scores) == 1  # the float runtimes give one model one number


# --- a model of five classes of its own -------------------------------------------------

FARM = {
    "classes": [
        {"name": name, "color": color}
        for name, color in (
            ("soil", [120, 80, 40]),
            ("crop", [0, 200, 0]),
            ("weed", [200, 0, 200]),
            ("water", [0, 0, 255]),
            ("stone", [128, 128, 128]),
        )
    ],
    "ignore_index": 7,
}


def _five_class_file(folder: Path, classes: dict | None) -> Path:
    keras.utils.set_random_seed(1)
    model = pspnet.build_pspnet("fast", num_classes=5, input_shape=(None, None, 3))
    path = folder / ("farm.keras" if classes else "nameless.keras")
    save_model(model, path, ModelInfo(head="classes", num_classes=5, preset="fast", image_size=SIZE, classes=classes))
    return path


def test_a_five_class_export_describes_its_table_and_loads_back_with_it(photos, tmp_path):
    from pspnet.data.classes import ClassTable

    path, out = _five_class_file(tmp_path, FARM), tmp_path / "farm.onnx"
    export(path, "onnx", out, verbose=False)
    description = json.loads(description_path(out).read_text())
    assert description["num_classes"] == 5 and description["output"]["shape"][-1] == 5
    assert description["classes"] == ["soil", "crop", "weed", "water", "stone"]
    assert description["colors"] == [entry["color"] for entry in FARM["classes"]]
    assert description["ignore_index"] == 7
    runtime, info = load_exported(out)
    assert info.class_table() == ClassTable.from_json(FARM)
    np.testing.assert_allclose(runtime.predict_on_batch(photos), _keras_scores(path, photos), atol=1e-4, rtol=0)


def test_a_five_class_model_without_its_table_is_refused_in_one_line(tmp_path, capsys):
    out = tmp_path / "nameless.onnx"
    assert export_main(["--model", str(_five_class_file(tmp_path, None)), "--format", "onnx", "--out", str(out)]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "predicts 5 classes but does not say which" in lines[0]
    assert lines[0].endswith("nameless.keras") and not out.exists() and not description_path(out).exists()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"colors": [[0, 0, 0]] * 4}, r"garbles its class table \(5 names but 4 colours\)"),
        ({"num_classes": 6}, "has 6 classes but a table of 5"),
    ],
)
def test_an_export_description_with_a_bad_table_is_one_line(change, message):
    from pspnet.inference.runtimes import info_of

    description = {
        "head": "classes",
        "num_classes": 5,
        "classes": ["a", "b", "c", "d", "e"],
        "colors": [[index, 0, 0] for index in range(5)],
        **change,
    }
    with pytest.raises(ConfigError, match=f"{message}: m.onnx.json$"):
        info_of(description, "m.onnx.json")


def test_an_old_description_without_ignore_index_is_cityscapes():
    from pspnet.data.classes import CITYSCAPES
    from pspnet.inference.runtimes import info_of
    from pspnet.palette import palette

    old = {"head": "classes", "num_classes": 19, "classes": list(CITYSCAPES.names), "colors": palette()[:19].tolist()}
    assert info_of(old).class_table() == CITYSCAPES


def test_check_data_may_be_a_data_set_root_of_any_layout(tmp_path, monkeypatch, capsys):
    from conftest import make_cityscapes, make_folders

    model = _five_class_file(tmp_path, FARM)
    monkeypatch.setattr("pspnet.inference.export.check_photos", _no_generated_scenes)
    for root in (make_folders(tmp_path / "farm", val=2), make_cityscapes(tmp_path / "official", val=3)):
        out = tmp_path / f"{root.name}.onnx"
        assert (
            export_main(["--model", str(model), "--format", "onnx", "--out", str(out), "--check-data", str(root)]) == 0
        )
        check = json.loads(description_path(out).read_text())["check"]
        assert check["images"] == f"photos of {root}" and check["photos"] == (2 if root.name == "farm" else 3)
    capsys.readouterr()
    (tmp_path / "empty").mkdir()
    assert (
        export_main(
            [
                "--model",
                str(model),
                "--format",
                "onnx",
                "--out",
                str(tmp_path / "e.onnx"),
                "--check-data",
                str(tmp_path / "empty"),
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot tell the layout" in err and not (tmp_path / "e.onnx").exists()


def test_bench_runtimes_scores_a_folders_root_and_refuses_other_classes(tmp_path, capsys):
    from conftest import make_cityscapes, make_folders

    from pspnet.cli import bench_main
    from pspnet.data.synth_layouts import FOLDERS_CLASSES

    keras.utils.set_random_seed(2)
    model = tmp_path / "folders.keras"
    save_model(
        pspnet.build_pspnet("fast", num_classes=5, input_shape=(None, None, 3)),
        model,
        ModelInfo(head="classes", num_classes=5, preset="fast", image_size=SIZE, classes=FOLDERS_CLASSES.to_json()),
    )
    official = make_cityscapes(tmp_path / "official", val=1)
    assert bench_main(["runtimes", "--model", str(model), "--data", str(official), "--steps", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trained on other classes than the data set's (5 classes against 19" in err[0]
    root = make_folders(tmp_path / "farm", val=2)
    assert bench_main(["runtimes", "--model", str(model), "--data", str(root), "--steps", "1"]) == 0
    table = capsys.readouterr().out.strip().splitlines()
    scores = [line.split(" | ")[3] for line in table[2:]]
    assert len(table) == 5 and all(float(score) >= 0 for score in scores)  # keras, onnx, litert: a val mIoU each
    assert scores[1] == scores[2]  # the two exports run at one fixed size: one number


def test_an_export_of_a_pairs_model_keeps_its_layout_so_it_is_run_as_the_keras_model():
    # A pairs model's photos are stretched to its size (Segmenter keep_aspect follows info.layout);
    # an export that forgot the layout would letterbox them instead: other ids for the same photo.
    from pspnet.data.classes import CITYSCAPES
    from pspnet.inference.export import _description
    from pspnet.inference.runtimes import info_of

    info = ModelInfo(head="classes", num_classes=19, preset="fast", image_size=SIZE, layout="pairs")
    description = json.loads(json.dumps(_description(info, CITYSCAPES, "onnx", False, SIZE, "m.keras", 19, {})))
    assert info_of(description).layout == "pairs"
    assert info_of({**description, "layout": None}).layout is None  # older descriptions: as before
