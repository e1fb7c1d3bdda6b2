"""pspnet.training.loop on the cityscapes and folders layouts: crops of rectangular images, the data set's classes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import make_cityscapes, make_folders

from pspnet.cli import train_main
from pspnet.data.classes import CITYSCAPES
from pspnet.errors import ConfigError
from pspnet.models.modelfile import load_model
from pspnet.training.config import TrainConfig
from pspnet.training.loop import train

# One short epoch: 32 px crops of images fit into a 32x64 base, batch 2, 3 steps.
TINY = dict(
    preset="fast", image_size=(32, 64), crop_size=32, batch_size=2, epochs=1, steps_per_epoch=3, workers=1, verbose=0
)


@pytest.fixture(scope="module")
def folders_run(tmp_path_factory):
    """A one-epoch run on a 5-class folders set of 48x80 images: (data root, run folder, metrics)."""
    root = make_folders(tmp_path_factory.mktemp("folders") / "set", train=4, val=2, height=48, width=80)
    out = tmp_path_factory.mktemp("runs") / "folders"
    return root, out, train(TrainConfig(data=str(root), out=str(out), **TINY))


def _names(root: Path) -> list[str]:
    return [entry["name"] for entry in json.loads((root / "dataset.json").read_text())["classes"]]


def test_a_folders_run_trains_and_saves_the_data_sets_own_classes(folders_run):
    root, out, metrics = folders_run
    names = _names(root)
    assert len(names) == 5
    config = json.loads((out / "config.json").read_text())
    # What was detected and defaulted is recorded, so that a rerun resumes the same run.
    assert (config["layout"], config["image_size"], config["crop_size"]) == ("folders", [32, 64], [32, 32])
    for name in ("best.keras", "last.keras"):
        model, info = load_model(out / name)
        assert list(info.class_table().names) == names and info.num_classes == 5
        assert model.output_shape[-1] == 5
    saved = json.loads((out / "metrics.json").read_text())
    assert list(saved["per_class_iou"]) == names and saved == metrics
    assert saved["epochs"] == 1 and np.isfinite(saved["pixel_accuracy"])


def test_a_folders_run_resumes_as_the_same_run(folders_run):
    root, out, metrics = folders_run
    # Detected again from the folder: the same layout and sizes, so the finished run is found.
    assert train(TrainConfig(data=str(root), out=str(out), **TINY)) == metrics


def test_a_cityscapes_run_trains_on_crops_of_frames_larger_than_the_crop(tmp_path):
    root = make_cityscapes(tmp_path / "cs", train=3, val=2, height=64, width=128)
    out = tmp_path / "run"
    metrics = train(TrainConfig(data=str(root), out=str(out), **TINY))
    config = json.loads((out / "config.json").read_text())
    assert config["layout"] == "cityscapes"
    _, info = load_model(out / "best.keras")
    assert info.class_table().names == CITYSCAPES.names and tuple(info.image_size) == (32, 64)
    assert tuple(metrics["per_class_iou"]) == CITYSCAPES.names
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 1


def test_the_layout_and_its_defaults_are_detected_from_the_data_folder(tmp_path):
    from pspnet.training.loop import _resolved

    city = _resolved(TrainConfig(data=str(make_cityscapes(tmp_path / "cs", train=1, val=1))))
    assert (city.layout, city.image_size, city.crop_size) == ("cityscapes", (512, 1024), (512, 512))
    folders = _resolved(TrainConfig(data=str(make_folders(tmp_path / "set", train=1, val=1))))
    assert (folders.layout, folders.image_size, folders.crop_size) == ("folders", (256, 256), (256, 256))
    forced = _resolved(TrainConfig(data=str(tmp_path / "set"), layout="pairs"))  # --layout wins, unchecked here
    assert forced.layout == "pairs"


def test_a_split_smaller_than_a_batch_is_one_error(tmp_path):
    root = make_cityscapes(tmp_path / "cs", train=1, val=1)
    with pytest.raises(ConfigError, match=r"leftImg8bit/train has 1 images, fewer than one batch of 2"):
        train(TrainConfig(data=str(root), out=str(tmp_path / "run"), **TINY))
    assert not (tmp_path / "run").exists()


def test_the_rgb_head_is_refused_on_a_folders_set_in_one_line(tmp_path, capsys):
    root = make_folders(tmp_path / "set", train=2, val=1)
    assert train_main(["--data", str(root), "--head", "rgb", "--out", str(tmp_path / "run")]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--head rgb needs the pairs layout" in err and "folders" in err, err
    assert not (tmp_path / "run").exists()


def test_a_layout_forced_on_the_wrong_folder_is_one_error(tmp_path, capsys):
    root = make_folders(tmp_path / "set", train=2, val=1)
    assert train_main(["--data", str(root), "--layout", "cityscapes", "--out", str(tmp_path / "run")]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "leftImg8bit" in err, err
    assert not (tmp_path / "run").exists()


def test_a_pairs_run_feeds_the_batches_it_fed_before_layouts(tmp_path):
    # The pairs' (and the demo's) numbers must not move: train and val batches of the
    # wired pipeline equal the old pipeline's (test_pipeline keeps a copy of it).
    from conftest import make_pairs
    from test_pipeline import _old_batch

    from pspnet.training.loop import _batches, _data_folder, _load_splits, _resolved

    make_pairs(tmp_path / "pairs" / "train", 4, size=32, split="train")
    make_pairs(tmp_path / "pairs" / "val", 2, size=32, split="val")
    config = _resolved(
        TrainConfig(
            data=str(tmp_path / "pairs"),
            preset="fast",
            image_size=24,
            batch_size=2,
            workers=1,
            verbose=0,
            cache_dir=str(tmp_path / "cache"),
        )
    )
    assert (config.layout, config.crop_size) == ("pairs", (24, 24))
    splits = _load_splits(config, _data_folder(config))
    assert isinstance(splits.train_photos, np.ndarray) and splits.classes == CITYSCAPES
    train_data, val_data = _batches(config, splits, replicas=1, part=(0, 2))
    for dataset, photos, targets in (
        (train_data, splits.train_photos, splits.train_targets),
        (val_data, splits.val_photos, splits.val_targets),
    ):
        for got, expected in zip(dataset[0], _old_batch(photos, targets, dataset, 0, 0)):
            np.testing.assert_array_equal(got, expected)


def test_a_small_lazy_split_is_decoded_once_and_a_large_one_every_time(tmp_path):
    from pspnet.data.layouts import open_split
    from pspnet.data.samples import kept_in_memory, load_arrays

    root = make_folders(tmp_path / "set", train=2, val=1, height=48, width=80)
    photos, labels, summary = load_arrays(
        open_split(root, "train"), cache_dir=tmp_path / "cache", progress=False, cache_limit=0
    )  # not cached decoded: lazy sequences
    needed = 2 * 48 * 80 * 4
    budget = [needed]
    kept_photos, kept_labels = kept_in_memory(photos, labels, summary, budget)
    assert budget == [0] and kept_photos[1] is kept_photos[1] and kept_labels[0] is kept_labels[0]
    np.testing.assert_array_equal(kept_photos[0], photos[0])
    # Over the budget the split stays lazy: every read decodes the file again.
    lazy_photos, _ = kept_in_memory(photos, labels, summary, [needed - 1])
    assert lazy_photos is photos and photos[0] is not photos[0]


def test_a_folders_set_of_mixed_sizes_trains_from_lazy_sequences(tmp_path, monkeypatch):
    import cv2

    import pspnet.training.loop as training

    root = make_folders(tmp_path / "set", train=4, val=2, height=48, width=80, suffix=".png")
    for split, name in (("train", "scene_001"), ("val", "scene_001")):  # one image (and mask) of another size
        for folder, interpolation in (("images", cv2.INTER_LINEAR), ("masks", cv2.INTER_NEAREST)):
            path = next((root / folder / split).glob(f"{name}.*"))
            image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            cv2.imwrite(str(path), cv2.resize(image, (40, 60), interpolation=interpolation))
    seen = []
    real = training.kept_in_memory
    monkeypatch.setattr(training, "kept_in_memory", lambda *args: seen.append(args[0]) or real(*args))
    out = tmp_path / "run"
    metrics = train(TrainConfig(data=str(root), out=str(out), **TINY))
    assert seen and not any(isinstance(photos, np.ndarray) for photos in seen)  # mixed sizes: not cached decoded
    assert list(metrics["per_class_iou"]) == _names(root) and np.isfinite(metrics["pixel_accuracy"])


@pytest.mark.parametrize(
    "spoil, problem",
    [("value", "neither a class (0-4) nor the ignore index 255"), ("size", "mask"), ("orphan", "without its image")],
)
def test_bad_input_stops_pspnet_train_in_one_line_before_anything_is_written(tmp_path, capsys, spoil, problem):
    import cv2

    root = make_folders(tmp_path / "set", train=4, val=2, height=48, width=80)
    mask_path = root / "masks" / "train" / "scene_002.png"
    mask = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED)
    if spoil == "value":
        mask[0, :4] = 7
        cv2.imwrite(str(mask_path), mask)
    elif spoil == "size":
        cv2.imwrite(str(mask_path), mask[:40])
    else:
        cv2.imwrite(str(root / "masks" / "train" / "stray.png"), mask)
    out = tmp_path / "run"
    flags = [
        "--preset",
        "fast",
        "--base-size",
        "32",
        "64",
        "--crop-size",
        "32",
        "--batch-size",
        "2",
        "--epochs",
        "1",
        "--steps-per-epoch",
        "2",
        "--verbose",
        "0",
    ]
    capsys.readouterr()
    status = train_main(["--data", str(root), "--out", str(out), *flags])
    lines = capsys.readouterr().err.strip().splitlines()
    assert status != 0 and len(lines) == 1, lines
    assert problem in lines[0] and ("scene_002.png" in lines[0] or "stray.png" in lines[0])
    assert not out.exists()


def test_a_rerun_after_the_classes_changed_is_refused_naming_them_not_a_damaged_file(tmp_path):
    data, run = make_folders(tmp_path / "set", train=2, val=1, height=32, width=32), tmp_path / "run"
    one_epoch = {**TINY, "image_size": 32, "steps_per_epoch": 1}
    train(TrainConfig(data=str(data), out=str(run), **one_epoch))
    described = json.loads((data / "dataset.json").read_text())
    described["classes"][0]["name"] = "renamed"  # same count: the weights would even load
    (data / "dataset.json").write_text(json.dumps(described))
    committed = sorted(p.name for p in (run / "backup").iterdir())
    with pytest.raises(ConfigError, match="classes changed") as caught:
        train(TrainConfig(data=str(data), out=str(run), **{**one_epoch, "epochs": 2}))
    assert "damaged" not in str(caught.value) and "-> renamed" in str(caught.value)
    assert sorted(p.name for p in (run / "backup").iterdir()) == committed
