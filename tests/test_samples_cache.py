"""Tests for the decoded cache of cityscapes and folders splits (pspnet.data.samples.load_arrays).

A split of one image size whose decoded arrays fit under the limit is decoded
once into the split cache and memory-mapped after; any other stays lazy.
Tiny generated sets (conftest ``make_folders``, ``make_cityscapes``).
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from conftest import make_cityscapes, make_folders

from pspnet.data import cache, samples
from pspnet.data.layouts import Split, open_split
from pspnet.data.samples import SplitLabels, SplitPhotos, load_arrays
from pspnet.errors import DataError


def _load(root, cache_dir, split="train", **options):
    return load_arrays(open_split(root, split), cache_dir=cache_dir, progress=False, **options)


def _entries(cache_dir) -> list:
    """The decoded-split entries of a cache folder (the scans are JSON files beside them)."""
    return sorted(path for path in cache_dir.iterdir() if path.is_dir()) if cache_dir.exists() else []


def _count_reads(monkeypatch) -> list:
    calls = []
    original = samples._read_sample
    monkeypatch.setattr(samples, "_read_sample", lambda *args: calls.append(args[1]) or original(*args))
    return calls


def _assert_equal_to_lazy(root, photos, labels, split="train"):
    lazy_photos, lazy_labels, _ = _load(root, False, split)
    assert isinstance(lazy_photos, SplitPhotos) and len(lazy_photos) == len(photos)
    for index in range(len(photos)):
        np.testing.assert_array_equal(photos[index], lazy_photos[index])
        np.testing.assert_array_equal(labels[index], lazy_labels[index])


@pytest.mark.parametrize("layout", ["folders", "folders_rgb", "cityscapes"])
def test_split_that_fits_comes_back_as_memmaps_equal_to_lazy_decoding(tmp_path, layout):
    if layout == "cityscapes":
        root = make_cityscapes(tmp_path / "data", train=3, val=1, height=32, width=64)
    else:
        root = make_folders(tmp_path / "data", train=3, val=1, rgb_masks=layout == "folders_rgb")
    photos, labels, summary = _load(root, tmp_path / "c")
    assert isinstance(photos, np.memmap) and isinstance(labels, np.memmap)
    assert not photos.flags.writeable and not labels.flags.writeable
    height, width = summary.image_size
    assert photos.shape == (3, height, width, 3) and labels.shape == (3, height, width) and height != width
    assert photos.dtype == labels.dtype == np.uint8
    _assert_equal_to_lazy(root, photos, labels)
    assert len(_entries(tmp_path / "c")) == 1


def test_second_load_reads_the_cache_without_decoding(tmp_path, monkeypatch):
    root = make_folders(tmp_path / "data", train=3, val=1)
    first_photos, first_labels, _ = _load(root, tmp_path / "c")

    def fail(*args, **kwargs):
        raise AssertionError("decoded although the cache should have been used")

    for module, name in ((samples, "_read_sample"), (cache, "_decode_chunk"), (samples, "read_label_file")):
        monkeypatch.setattr(module, name, fail)
    monkeypatch.setattr(Split, "read_photo", fail)
    monkeypatch.setattr(Split, "read_label", fail)
    photos, labels, summary = _load(root, tmp_path / "c")
    assert photos.filename == first_photos.filename and summary.cached
    np.testing.assert_array_equal(photos, first_photos)
    np.testing.assert_array_equal(labels, first_labels)


def test_a_changed_mask_invalidates_the_entry(tmp_path, monkeypatch):
    root = make_folders(tmp_path / "data", train=3, val=1)
    _, before, _ = _load(root, tmp_path / "c")
    (old_entry,) = _entries(tmp_path / "c")
    before = np.array(before)
    assert not (before[1] == 3).all()
    assert cv2.imwrite(str(root / "masks" / "train" / "scene_002.png"), np.full((48, 80), 3, np.uint8))
    calls = _count_reads(monkeypatch)
    photos, labels, _ = _load(root, tmp_path / "c")
    assert sorted(calls) == [0, 1, 2]  # decoded again, every sample
    assert (labels[1] == 3).all()
    np.testing.assert_array_equal(labels[0], before[0])
    _assert_equal_to_lazy(root, photos, labels)
    # The stale entry of the split is replaced, not kept beside the new one.
    assert [entry.name for entry in _entries(tmp_path / "c")] != [old_entry.name]
    assert len(_entries(tmp_path / "c")) == 1


def test_a_changed_class_table_invalidates_the_entry(tmp_path, monkeypatch):
    root = make_folders(tmp_path / "data", train=2, val=1)
    _load(root, tmp_path / "c")
    described = json.loads((root / "dataset.json").read_text())
    described["classes"][0]["name"] = "tarmac"
    (root / "dataset.json").write_text(json.dumps(described))
    calls = _count_reads(monkeypatch)
    _load(root, tmp_path / "c")
    assert sorted(calls) == [0, 1]


def test_scans_and_entries_of_an_older_label_reader_are_not_reused(tmp_path, monkeypatch):
    # A change in how label files read (say, 1-bit masks) bumps LABELS_FORMAT:
    # the train ids and pixel counts an older reader cached must not stay in use.
    root = make_folders(tmp_path / "data", train=2, val=1)
    with monkeypatch.context() as older:
        older.setattr(samples, "LABELS_FORMAT", samples.LABELS_FORMAT - 1)
        older.setattr(
            samples, "read_label_file", lambda path, *args: np.full(cv2.imread(str(path)).shape[:2], 255, np.uint8)
        )
        older.setattr(Split, "read_label", lambda self, index: samples.read_label_file(self.samples[index].label))
        _, stale, _ = _load(root, tmp_path / "c")
        assert (np.asarray(stale) == 255).all()
    photos, labels, summary = _load(root, tmp_path / "c")
    assert summary.class_pixels[:-1].sum() > 0
    _assert_equal_to_lazy(root, photos, labels)


def test_split_over_the_limit_stays_lazy(tmp_path, monkeypatch):
    root = make_folders(tmp_path / "data", train=3, val=1)  # 3 x 48 x 80 pixels, 4 bytes each
    size = 3 * 48 * 80 * 4
    photos, labels, summary = _load(root, tmp_path / "c", cache_limit=size - 1)
    assert isinstance(photos, SplitPhotos) and isinstance(labels, SplitLabels) and summary.num_images == 3
    assert _entries(tmp_path / "c") == []
    monkeypatch.setattr(samples, "CACHE_LIMIT", size - 1)  # the default limit is the module's constant
    assert isinstance(_load(root, tmp_path / "c")[0], SplitPhotos)
    assert isinstance(_load(root, tmp_path / "c", cache_limit=size)[0], np.memmap)


def test_mixed_image_sizes_stay_lazy(tmp_path):
    root = make_folders(tmp_path / "data", train=3, val=1)
    for folder, name, channels in (("images", "scene_002.jpg", 3), ("masks", "scene_002.png", 1)):
        path = root / folder / "train" / name
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert image.ndim == (3 if channels == 3 else 2)
        assert cv2.imwrite(str(path), cv2.resize(image, (64, 40), interpolation=cv2.INTER_NEAREST))
    photos, labels, summary = _load(root, tmp_path / "c")
    assert isinstance(photos, SplitPhotos) and summary.sizes == {(48, 80): 2, (40, 64): 1}
    assert photos[1].shape == (40, 64, 3) and labels[0].shape == (48, 80)
    assert _entries(tmp_path / "c") == []


def test_no_cache_stays_lazy(tmp_path):
    root = make_cityscapes(tmp_path / "data", train=2, val=1, height=32, width=64)
    photos, labels, _ = _load(root, False)
    assert isinstance(photos, SplitPhotos) and isinstance(labels, SplitLabels)


@pytest.mark.parametrize("problem", ["value", "size"])
def test_bad_input_raises_one_line_before_anything_is_cached(tmp_path, problem):
    root = make_folders(tmp_path / "data", train=3, val=1)
    mask = root / "masks" / "train" / "scene_003.png"
    if problem == "value":
        assert cv2.imwrite(str(mask), np.full((48, 80), 9, np.uint8))
        message = r"^mask values 9 are neither a class \(0-4\) nor the ignore index 255: .*scene_003.png$"
    else:
        assert cv2.imwrite(str(mask), np.zeros((48, 81), np.uint8))
        message = r"^mask is 81x48 but its image scene_003.jpg is 80x48: .*masks/train/scene_003.png$"
    with pytest.raises(DataError, match=message) as info:
        _load(root, tmp_path / "c")
    assert "\n" not in str(info.value)
    assert _entries(tmp_path / "c") == []


def test_a_file_changed_after_the_scan_raises_and_leaves_no_entry(tmp_path, monkeypatch):
    root = make_folders(tmp_path / "data", train=3, val=1)
    original = samples._read_sample

    def changed(split, index, *rest):
        if index == 2:  # as if scene_003 were replaced by a larger photo and mask between the scan and the decoding
            assert cv2.imwrite(str(split.samples[index].image), np.zeros((50, 80, 3), np.uint8))
            assert cv2.imwrite(str(split.samples[index].label), np.zeros((50, 80), np.uint8))
        return original(split, index, *rest)

    monkeypatch.setattr(samples, "_read_sample", changed)
    with pytest.raises(
        DataError,
        match=r"^scene_003.jpg is 80x50 pixels but the other images of the split are "
        r"80x48 .*: .*images/train/scene_003.jpg$",
    ):
        _load(root, tmp_path / "c")
    assert _entries(tmp_path / "c") == []  # neither an entry nor a temporary folder


def test_a_full_disk_while_caching_leaves_the_split_lazy(tmp_path, monkeypatch):
    import errno

    from pspnet.data import cache_entries
    from pspnet.errors import PspnetWarning

    root = make_folders(tmp_path / "data", train=3, val=1)

    def full(self, photos, targets):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_entries.FileSink, "write", full)
    with pytest.warns(
        PspnetWarning,
        match=r"cannot write the cache in .*c \(No space left on device\); reading "
        r".*images/train on the fly",
    ):
        photos, labels, _ = _load(root, tmp_path / "c")
    assert isinstance(photos, SplitPhotos) and isinstance(labels, SplitLabels)
    assert _entries(tmp_path / "c") == []  # neither an entry nor a temporary folder
