"""Tests for pspnet.data.synth: synthetic scenes in the real on-disk format."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from pspnet.data import class_pixel_counts, decode_labels, list_images, load_split, read_pair, synth
from pspnet.data.synth import SYNTH_CLASSES, ensure_demo_set, render_scene, write_pairs, write_synthetic_set
from pspnet.errors import ConfigError, DataError
from pspnet.palette import CLASS_NAMES, LABEL_COLORS

DRAWN_IDS = {CLASS_NAMES.index(name) for name in SYNTH_CLASSES}


def test_render_scene_shapes_and_determinism():
    photo, label_rgb, train_ids = render_scene(3, size=64)
    assert photo.shape == label_rgb.shape == (64, 64, 3)
    assert photo.dtype == label_rgb.dtype == train_ids.dtype == np.uint8
    assert train_ids.shape == (64, 64)
    again = render_scene(3, size=64)
    for a, b in zip((photo, label_rgb, train_ids), again):
        np.testing.assert_array_equal(a, b)
    other = render_scene(4, size=64)
    assert not np.array_equal(other[0], photo)


def test_render_scene_classes_and_layout():
    photo, label_rgb, train_ids = render_scene([0, 0, 1], size=64)
    present = set(np.unique(train_ids)) - {255}
    assert present <= DRAWN_IDS
    sky, road = CLASS_NAMES.index("sky"), CLASS_NAMES.index("road")
    # Street layout: sky above, road below.
    assert (train_ids[:8] == sky).mean() > 0.3
    assert (train_ids[-8:] == road).mean() > 0.3


def test_thickness_widens_poles_persons_and_grass_strips_in_the_same_scenes():
    thin_ids = [CLASS_NAMES.index(name) for name in ("pole", "person", "terrain")]
    thin = np.zeros(3)
    thick = np.zeros(3)
    for number in range(12):
        plain, wide = render_scene([0, 0, number], 64)[2], render_scene([0, 0, number], 64, thickness=2.0)[2]
        sky = CLASS_NAMES.index("sky")
        assert abs((plain == sky).mean() - (wide == sky).mean()) < 0.1  # the same layout
        thin += [(plain == i).sum() for i in thin_ids]
        thick += [(wide == i).sum() for i in thin_ids]
    assert (thick > 1.3 * thin).all(), (thin, thick)  # less than 2x: occlusion, minimum widths
    with pytest.raises(ConfigError, match="thickness"):
        render_scene(0, 64, thickness=0.5)


def test_labels_are_palette_colours_blended_at_borders():
    _, label_rgb, train_ids = render_scene([0, 0, 2], size=64)
    exact = (label_rgb[:, :, None, :] == LABEL_COLORS[None, None]).all(-1).any(-1)
    assert exact.mean() > 0.85  # flat regions: exact palette colours
    assert (~exact).sum() > 0  # borders: bilinear blends
    # Blends never snap to a class that is not drawn.
    assert set(np.unique(decode_labels(label_rgb))) - {255} <= DRAWN_IDS


def test_photo_colours_are_not_label_colours():
    photo, label_rgb, train_ids = render_scene([0, 0, 3], size=64)
    difference = np.abs(photo.astype(int) - label_rgb.astype(int)).mean()
    assert difference > 30
    # Each class is textured: its photo pixels vary.
    road = train_ids == CLASS_NAMES.index("road")
    assert photo[road].std(axis=0).mean() > 3


def test_write_synthetic_set_real_format(tmp_path):
    out = write_synthetic_set(tmp_path / "demo", train=5, val=3, seed=1, size=32)
    assert out == tmp_path / "demo"
    assert [p.name for p in list_images(out / "train")] == [f"{n}.jpg" for n in range(1, 6)]
    assert len(list_images(out / "val")) == 3
    raw = cv2.imread(str(out / "train" / "1.jpg"), cv2.IMREAD_UNCHANGED)
    assert raw.shape == (32, 64, 3)
    assert (out / "train" / "1.jpg").read_bytes()[:3] == b"\xff\xd8\xff"  # a JPEG
    info = json.loads((out / "synth.json").read_text())
    assert info["train"] == 5 and info["size"] == 32 and info["synth_version"] == synth.SYNTH_VERSION
    # train and val hold different scenes
    assert not np.array_equal(read_pair(out / "train" / "1.jpg")[0], read_pair(out / "val" / "1.jpg")[0])
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_written_labels_decode_to_drawn_classes(tmp_path):
    folder = write_pairs(tmp_path / "train", 12, seed=7, size=64)
    agreements = []
    for number, path in enumerate(list_images(folder), start=1):
        _, label_rgb = read_pair(path)
        decoded, distance = decode_labels(label_rgb, return_distance=True)
        assert set(np.unique(decoded)) - {255} <= DRAWN_IDS, path.name
        _, _, drawn = render_scene([7, 0, number], size=64)
        valid = (drawn != 255) & (decoded != 255)
        agreements.append((decoded[valid] == drawn[valid]).mean())
        assert (distance > 30).mean() < 0.1  # JPEG noise and blends stay near the palette
    assert np.mean(agreements) > 0.95


def test_write_pairs_matches_write_synthetic_set(tmp_path):
    write_pairs(tmp_path / "a", 2, seed=4, size=32, split="val")
    write_synthetic_set(tmp_path / "b", train=0, val=2, seed=4, size=32)
    for number in (1, 2):
        written = (tmp_path / "b" / "val" / f"{number}.jpg").read_bytes()
        assert (tmp_path / "a" / f"{number}.jpg").read_bytes() == written


def test_scenes_are_varied_and_cover_main_classes(tmp_path):
    folder = write_pairs(tmp_path / "train", 16, seed=0, size=64)
    _, train_ids = load_split(folder, cache_dir=False, progress=False)
    shares = class_pixel_counts(train_ids) / train_ids.size
    for name in ("road", "sidewalk", "building", "sky", "car"):
        assert shares[CLASS_NAMES.index(name)] > 0.03, name
    for name in ("vegetation", "pole", "person", "traffic sign"):
        assert shares[CLASS_NAMES.index(name)] > 0.001, name
    # Per-image class sets differ: layouts are random.
    sets = {tuple(np.unique(ids)) for ids in train_ids}
    assert len(sets) > 4


def test_write_refuses_to_overwrite(tmp_path):
    write_synthetic_set(tmp_path / "d", train=1, val=1, size=16)
    with pytest.raises(DataError, match="already holds files"):
        write_synthetic_set(tmp_path / "d", train=2, val=1, size=16)
    write_synthetic_set(tmp_path / "d", train=2, val=1, size=16, overwrite=True)
    assert len(list_images(tmp_path / "d" / "train")) == 2


def test_write_rejects_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match="multiple of 8"):
        write_synthetic_set(tmp_path / "d", train=1, val=1, size=30)
    with pytest.raises(ConfigError, match="negative"):
        write_synthetic_set(tmp_path / "d", train=-1, val=1, size=16)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        write_synthetic_set(tmp_path / "file", train=1, val=1, size=16)


def test_overwrite_that_fails_keeps_the_old_set_whole(tmp_path, monkeypatch):
    # The new train/ used to replace the old one before val/ was drawn: a failure
    # then left a new train/, the old val/ and a synth.json describing neither.
    write_synthetic_set(tmp_path / "d", train=2, val=1, size=16, seed=1)
    before = {path.relative_to(tmp_path): path.read_bytes() for path in (tmp_path / "d").rglob("*") if path.is_file()}
    original = synth.composite_jpeg

    def fails_on_val(seed, *args):
        if seed[1] == 1:  # the val split's code
            raise OSError(28, "No space left on device")
        return original(seed, *args)

    monkeypatch.setattr(synth, "composite_jpeg", fails_on_val)
    with pytest.raises(OSError):
        write_synthetic_set(tmp_path / "d", train=3, val=1, size=16, seed=2, overwrite=True)
    after = {path.relative_to(tmp_path): path.read_bytes() for path in (tmp_path / "d").rglob("*") if path.is_file()}
    assert after == before
    assert sorted(path.name for path in (tmp_path / "d").iterdir()) == ["synth.json", "train", "val"]


@pytest.mark.parametrize("seed", [-1, -7])
def test_write_rejects_a_negative_seed(tmp_path, seed):
    # pspnet-data synth --seed -1 ended in NumPy's ValueError traceback, an empty folder left.
    with pytest.raises(ConfigError, match="seed") as error:
        write_synthetic_set(tmp_path / "d", train=1, val=1, size=16, seed=seed)
    assert error.value.command_line_message().startswith(f"--seed {seed} ")
    assert not (tmp_path / "d").exists()


def test_ensure_demo_set_writes_once(tmp_path, monkeypatch):
    folder = ensure_demo_set(tmp_path, train=3, val=2, seed=0, size=16)
    assert (folder / "train" / "3.jpg").is_file() and (folder / "val" / "2.jpg").is_file()
    assert folder.parent == tmp_path and "s16" in folder.name

    def fail(*args, **kwargs):
        raise AssertionError("the demo set was written again")

    monkeypatch.setattr(synth, "write_synthetic_set", fail)
    assert ensure_demo_set(tmp_path, train=3, val=2, seed=0, size=16) == folder


def test_ensure_demo_set_default_root(monkeypatch, tmp_path):
    monkeypatch.setenv("PSPNET_CACHE", str(tmp_path / "cache"))
    folder = ensure_demo_set(train=1, val=1, size=16)
    assert folder.parent == tmp_path / "cache"


def test_ensure_demo_set_interrupted_leaves_nothing(tmp_path, monkeypatch):
    original = synth.composite_jpeg
    calls = []

    def flaky(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(*args)

    monkeypatch.setattr(synth, "composite_jpeg", flaky)
    with pytest.raises(KeyboardInterrupt):
        ensure_demo_set(tmp_path, train=4, val=2, size=16)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(synth, "composite_jpeg", original)
    folder = ensure_demo_set(tmp_path, train=4, val=2, size=16)
    assert len(list_images(folder / "train")) == 4


def test_ensure_demo_set_ignores_incomplete_folder(tmp_path):
    name = f"demo-v{synth.SYNTH_VERSION}-s16-n2-1-seed0"
    (tmp_path / name / "train").mkdir(parents=True)  # left by a crash: no synth.json
    folder = ensure_demo_set(tmp_path, train=2, val=1, size=16)
    assert folder.name == name and (folder / "synth.json").is_file()
    assert len(list_images(folder / "train")) == 2
