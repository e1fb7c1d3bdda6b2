"""Tests of benchmarks/bench_layouts.py at a tiny size: frames, the pipeline and the evaluation measurements."""

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from pspnet.data.synth import write_pairs
from pspnet.palette import LABEL_IDS

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_layouts.py"
TINY = {"train": 3, "val": 2, "height": 64, "width": 128}


def _load():
    spec = importlib.util.spec_from_file_location("bench_layouts", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _load()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A work folder holding tiny synthetic frames."""
    folder = tmp_path_factory.mktemp("bench-layouts")
    bench.write_frames(folder, **TINY, workers=1)
    return folder


def test_frames_in_the_official_layout(work):
    described = json.loads((work / bench.FRAMES_JSON).read_text())
    assert {key: described[key] for key in TINY} == TINY
    photos = sorted((work / "frames" / "leftImg8bit" / "train").rglob("*_leftImg8bit.png"))
    labels = sorted((work / "frames" / "gtFine" / "val").rglob("*_gtFine_labelIds.png"))
    assert len(photos) == 3 and len(labels) == 2
    assert cv2.imread(str(photos[0])).shape == (64, 128, 3)
    assert described["megabytes"] > 0 and described["seconds"] > 0


def test_frames_from_pairs_are_upscaled_label_ids(tmp_path):
    pairs = tmp_path / "pairs"
    write_pairs(pairs / "train", 2, size=32, split="train")
    write_pairs(pairs / "val", 1, size=32, split="val")
    described = bench.write_frames(tmp_path / "work", train=5, val=1, height=40, width=80, from_pairs=pairs)
    assert (described["train"], described["val"]) == (2, 1)  # as many as there are pairs
    label = cv2.imread(
        str(next((tmp_path / "work" / "frames" / "gtFine").rglob("*_labelIds.png"))), cv2.IMREAD_UNCHANGED
    )
    assert label.shape == (40, 80)
    assert set(np.unique(label)) <= set(LABEL_IDS) | {0}  # official ids; void -> 0
    assert len(np.unique(label)) > 2


def test_work_folder_inside_the_repository_is_refused():
    with pytest.raises(SystemExit, match="outside the repository"):
        bench.check_work(SCRIPT.parent / "work")


def test_pipeline_measure(work):
    settings = {
        "root": str(work / "frames"),
        "batches": 2,
        "batch_size": 2,
        "crop": [32, 64],
        "base_size": [64, 128],
        "workers": 2,
        "cache_dir": str(work / "cache"),
    }
    row = bench.measure_pipeline(settings)
    assert row["images"] == 4 and row["frames"] == 3
    assert row["batch_shapes"] == [[[32, 64], [32, 64]]]
    for key in ("images_per_s", "cpu_s_per_image", "peak_rss_mib", "rss_after_imports_mib", "seconds"):
        assert row[key] > 0, key
    assert 0 < row["decode_share"] < 1


def test_evaluation_measure_of_each_mode(work):
    model = bench.build_model(work / "models" / "tiny.keras", "fast", (64, 128))
    modes = bench.eval_modes(slide=((32, 64), (24, 48)), scales=(0.75, 1.0))
    rows = {}
    for mode, (slide, scales) in modes.items():
        settings = {
            "model": str(model),
            "root": str(work / "frames"),
            "out": str(work / f"eval-{mode}"),
            "mode": mode,
            "slide": slide,
            "scales": scales,
            "base_size": None,
            "batch_size": 2,
            "repeat": 1,
            "cache_dir": str(work / "cache"),
        }
        rows[mode] = bench.measure_evaluation(settings)
    assert rows["whole"]["inference"]["mode"] == "whole" and rows["whole"]["inference"]["base_size"] == [64, 128]
    assert rows["slide"]["inference"]["crop"] == [32, 64]
    assert rows["multiscale"]["inference"]["scales"] == [0.75, 1.0]
    for row in rows.values():
        assert row["images"] == 2
        assert row["seconds_per_image"] > 0 and row["peak_rss_mib"] > 0
        assert 0 <= row["mean_iou"] <= 1


@pytest.mark.slow  # a fresh process imports Keras and its backend (several seconds)
def test_pipeline_step_in_a_subprocess(work, tmp_path, capsys):
    output = tmp_path / "layouts.json"
    results = bench.main(
        [
            "pipeline",
            "--work",
            str(work),
            "--batches",
            "1",
            "--batch-size",
            "2",
            "--crop",
            "32",
            "64",
            "--base-size",
            "64",
            "128",
            "--json",
            str(output),
        ]
    )
    assert json.loads(output.read_text())["pipeline"] == results["pipeline"]
    assert results["pipeline"]["images"] == 2 and results["pipeline"]["images_per_s"] > 0
    assert results["pipeline"]["frame_size"] == [64, 128]
    assert {"date", "cpus", "python", "versions"} <= set(results["machine"])
    assert "pipeline: " in capsys.readouterr().out
