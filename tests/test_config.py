"""Tests of pspnet.training.config: TrainConfig, its validation, its defaults and its flags."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pspnet.checks import flag_name, parse_size
from pspnet.cli import train_main
from pspnet.errors import ConfigError
from pspnet.models.presets import PRESETS
from pspnet.training.config import CHOICES, TrainConfig, config_field_help


def test_every_config_field_has_a_flag_with_help(capsys):
    with pytest.raises(SystemExit):
        train_main(["--help"])
    text = capsys.readouterr().out
    help_texts = config_field_help()
    for field in dataclasses.fields(TrainConfig):
        assert flag_name(field.name) in text, field.name
        assert help_texts.get(field.name), field.name  # every field has its comment
    for flag in (
        "--lr",
        "--no-flip",
        "--no-scale",
        "--jitter",
        "--jit-compile",
        "--no-jit-compile",
        "--distribute",
        "--early-stopping",
        "--steps-per-execution",
        "--cache-dir",
    ):
        assert flag in text, flag
    assert CHOICES["preset"] == PRESETS


def test_config_json_round_trip_and_resolved_defaults():
    config = TrainConfig(data="demo", image_size="48x64", optimizer="sgd", early_stopping=3)
    assert config.image_size == (48, 64)
    assert TrainConfig.from_json(config.to_json()) == config
    resolved = config.resolved()
    assert resolved.out == str(Path("runs") / "demo-fast-classes")
    assert (resolved.learning_rate, resolved.schedule) == (1e-2, "poly")
    demo = TrainConfig().resolved()
    assert (demo.image_size, demo.scale, demo.output_stride, demo.learning_rate) == ((64, 64), False, 4, 4e-3)
    assert (demo.batch_size, demo.epochs, demo.steps_per_epoch) == (2, 8, 300)
    assert (demo.schedule, demo.class_weighting) == ("poly", "none")
    assert TrainConfig(epochs=3, steps_per_epoch=5, schedule="constant").resolved().steps_per_epoch == 5
    data = TrainConfig(data="somewhere", preset="seed").resolved()
    assert (data.image_size, data.scale, data.output_stride, data.class_weighting) == ((256, 256), True, None, "none")
    assert (data.steps_per_epoch, data.schedule, data.learning_rate) == (None, "poly", 1e-3)
    assert data.out == str(Path("runs") / "somewhere-seed-classes") and Path(data.data).is_absolute()
    with pytest.raises(ConfigError, match="unknown config fields: colour"):
        TrainConfig.from_json('{"colour": 1}')


def test_a_home_relative_out_and_cache_folder_are_expanded_like_the_data_folder():
    # --out=~/runs/a: the shell leaves the ~ after "=" alone; a folder named "~" would appear here.
    resolved = TrainConfig(data="~/data", out="~/runs/a", cache_dir="~/cache").resolved()
    assert resolved.data == str(Path("~/data").expanduser().resolve())
    assert (resolved.out, resolved.cache_dir) == (str(Path.home() / "runs" / "a"), str(Path.home() / "cache"))


def test_real_data_defaults_to_the_pretrained_lite_recipe_and_the_demo_to_fast():
    data = TrainConfig(data="somewhere").resolved()
    assert (data.preset, data.backbone_weights, data.output_stride) == ("lite", "imagenet", 16)
    assert (data.optimizer, data.learning_rate, data.schedule, data.weight_decay) == ("adam", 1e-3, "poly", 1e-4)
    assert data.out == str(Path("runs") / "somewhere-lite-classes")
    demo = TrainConfig().resolved()
    assert (demo.preset, demo.backbone_weights, demo.weight_decay) == ("fast", None, 0.0)
    # Explicit choices win; "none" asks for a random backbone (and is harmless elsewhere).
    assert TrainConfig(data="somewhere", preset="lite", backbone_weights="none").resolved().backbone_weights == "none"
    assert TrainConfig(data="somewhere", preset="fast", backbone_weights="none").resolved().backbone_weights == "none"
    assert TrainConfig(data="somewhere", preset="pspnet50").resolved().backbone_weights is None
    assert TrainConfig(data="somewhere", weight_decay=0.0).resolved().weight_decay == 0.0


def test_resolved_config_records_the_papers_sgd_recipe():
    sgd = TrainConfig(data="somewhere", preset="pspnet50", optimizer="sgd", weight_decay=1e-4).resolved()
    assert (sgd.learning_rate, sgd.schedule, sgd.head_lr_multiplier) == (1e-2, "poly", 10.0)
    assert TrainConfig(data="somewhere").resolved().head_lr_multiplier == 1.0
    with pytest.raises(ConfigError, match="--head-lr-multiplier needs --optimizer sgd"):
        TrainConfig(head_lr_multiplier=10)


def test_progress_is_one_line_per_epoch_when_output_is_not_a_terminal():
    assert TrainConfig().resolved().verbose == 2  # pytest captures stdout: not a terminal
    assert TrainConfig(verbose=1).resolved().verbose == 1


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"seed": -1}, "--seed must be an integer from 0"),
        ({"verbose": 3}, "--verbose must be 0, 1 or 2"),
        ({"preset": "pspnet50", "image_size": 16}, "--base-size must be at least 32 for the pspnet50 preset"),
        ({"preset": "pspnet50", "crop_size": (16, 64)}, "--crop-size must be at least 32 for the pspnet50 preset"),
        ({"layout": "coco"}, "--layout must be one of pairs, cityscapes, folders"),
        ({"data": "somewhere", "layout": "folders", "head": "rgb"}, "--head rgb needs the pairs layout"),
        ({"layout": "cityscapes"}, "--layout cityscapes: the demo set is pairs"),
        ({"backbone_weights": "imagenet"}, "--backbone-weights needs --preset pspnet50"),
        ({"data": "somewhere", "preset": "seed", "backbone_weights": "x.h5"}, "--backbone-weights needs --preset"),
        ({"weight_decay": -1}, "--weight-decay must be >= 0"),
        ({"optimizer": "sgd", "momentum": 1.5}, "--momentum must lie in [0, 1]"),  # Keras's SGD refuses it
        ({"time_limit": 0}, "--time-limit must be a positive number"),
        ({"steps_per_execution": 0}, "--steps-per-execution must be a positive integer"),
        ({"dropout": 1.0}, "--dropout must lie in [0, 1)"),
        ({"num_processes": 0}, "--num-processes must be a positive integer"),
        ({"process_id": -1}, "--process-id must be an integer 0 or more"),
        ({"coordinator": "host0"}, "--coordinator must be HOST:PORT, got 'host0'"),
        ({"coordinator": "host0:99999"}, "--coordinator must be HOST:PORT"),
        ({"decoder": "fusion"}, "--decoder needs --preset lite or lite1 or lite2, not fast"),
        ({"data": "somewhere", "decoder": "unet"}, "--decoder must be one of pyramid, fusion"),
        ({"head": "rgb", "ohem": True}, "--ohem needs --head classes"),
    ],
)
def test_every_field_is_checked_when_the_config_is_made(fields, message):
    with pytest.raises(ConfigError) as error:
        TrainConfig(**fields)
    assert message in str(error.value)


def test_a_rerun_may_change_how_long_and_how_fast_not_what():
    saved = TrainConfig(data="somewhere", epochs=5).resolved()
    longer = dataclasses.replace(saved, epochs=9, time_limit=30.0, workers=1, verbose=0, val_images=10)
    assert longer.changes_from(saved) == []
    # Each process of a job has its own index; the chief's config.json holds 0.
    elsewhere = dataclasses.replace(
        saved, distribute=True, process_id=1, num_processes=2, coordinator="h:1", sync_batch_norm=False
    )
    assert elsewhere.changes_from(saved) == []
    other = dataclasses.replace(saved, image_size=(128, 128), optimizer="sgd")
    assert other.changes_from(saved) == ["--base-size [256, 256] -> [128, 128]", "--optimizer 'adam' -> 'sgd'"]


@pytest.mark.parametrize("value, size", [(32, (32, 32)), ("48x64", (48, 64)), ("40", (40, 40)), ([8, 16], (8, 16))])
def test_parse_size(value, size):
    assert parse_size(value) == size


@pytest.mark.parametrize("value", ["big", "0x8", -3, True, [1, 2, 3], 2.5])
def test_parse_size_rejects(value):
    with pytest.raises(ConfigError):
        parse_size(value, "--image-size")


def test_layouts_are_the_data_packages():
    from pspnet.data.layouts import LAYOUTS as DATA_LAYOUTS
    from pspnet.training.config import LAYOUTS

    assert LAYOUTS == DATA_LAYOUTS and CHOICES["layout"] == LAYOUTS


def test_the_layout_decides_the_default_base_and_crop_sizes():
    pairs = TrainConfig(data="somewhere").resolved(layout="pairs")
    assert (pairs.layout, pairs.image_size, pairs.crop_size) == ("pairs", (256, 256), (256, 256))
    assert TrainConfig(data="somewhere").resolved().layout == "pairs"  # nothing detected: the pairs
    city = TrainConfig(data="somewhere").resolved(layout="cityscapes")
    assert (city.layout, city.image_size, city.crop_size) == ("cityscapes", (512, 1024), (512, 512))
    folders = TrainConfig(data="somewhere").resolved(layout="folders")
    assert (folders.image_size, folders.crop_size) == ((256, 256), (256, 256))
    demo = TrainConfig().resolved(layout="folders")  # the demo is pairs, whatever is passed
    assert (demo.layout, demo.image_size, demo.crop_size) == ("pairs", (64, 64), (64, 64))
    # Explicit values win: --layout over the detected one, a --base-size keeps crop = base.
    forced = TrainConfig(data="somewhere", layout="folders").resolved(layout="cityscapes")
    assert forced.layout == "folders"
    based = TrainConfig(data="somewhere", image_size=(128, 256)).resolved(layout="cityscapes")
    assert (based.image_size, based.crop_size) == ((128, 256), (128, 256))
    cropped = TrainConfig(data="somewhere", crop_size=96).resolved(layout="cityscapes")
    assert (cropped.image_size, cropped.crop_size) == ((512, 1024), (96, 96))
    assert TrainConfig.from_json(city.to_json()) == city  # config.json keeps what was resolved
    with pytest.raises(ConfigError, match="--head rgb needs the pairs layout"):
        TrainConfig(data="somewhere", head="rgb").resolved(layout="cityscapes")


def test_a_config_json_from_before_layouts_resumes_as_the_same_pairs_run():
    now = TrainConfig(data="somewhere", image_size=128).resolved(layout="pairs")
    values = now.to_dict()
    del values["layout"], values["crop_size"], values["decoder"]  # what config.json held before the fields existed
    import json

    saved = TrainConfig.from_json(json.dumps(values))
    assert now.changes_from(saved) == []
    assert dataclasses.replace(now, crop_size=(64, 64)).changes_from(saved) == ["--crop-size [128, 128] -> [64, 64]"]
    assert dataclasses.replace(now, layout="folders").changes_from(saved) == ["--layout 'pairs' -> 'folders'"]
    assert now.decoder == "pyramid"
    assert dataclasses.replace(now, decoder="fusion").changes_from(saved) == ["--decoder 'pyramid' -> 'fusion'"]


@pytest.mark.parametrize(
    "argv, base, crop",
    [
        (["--base-size", "512", "1024"], (512, 1024), None),
        (["--image-size", "48x64"], (48, 64), None),  # the old name and form
        (["--base-size", "40", "--crop-size", "24", "32"], (40, 40), (24, 32)),
    ],
)
def test_base_and_crop_size_flags(monkeypatch, argv, base, crop):
    import pspnet.training.loop

    seen = []
    monkeypatch.setattr(pspnet.training.loop, "train", lambda config: seen.append(config) or {})
    assert train_main(argv + ["--verbose", "0"]) == 0
    assert (seen[0].image_size, seen[0].crop_size) == (base, crop)
