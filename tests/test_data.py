"""Tests for pspnet.data: listing, strict reading, label decoding, cached loading."""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import make_pairs

from pspnet.data import (
    FAR_DISTANCE,
    cache,
    class_pixel_counts,
    class_pixel_shares,
    decode_labels,
    labels,
    list_images,
    load_split,
    read_pair,
    summarize_split,
)
from pspnet.errors import ConfigError, DataError, PspnetWarning
from pspnet.fileio import TEMPORARY_MARK
from pspnet.palette import IGNORE_INDEX, LABEL_COLORS, LABEL_TRAIN_IDS, NUM_CLASSES


def write_composite(path: Path, photo: np.ndarray, label_rgb: np.ndarray) -> Path:
    """Writes photo|label (RGB) side by side; PNG keeps colours exact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    composite = np.concatenate([photo, label_rgb], axis=1)
    assert cv2.imwrite(str(path), cv2.cvtColor(composite, cv2.COLOR_RGB2BGR))
    return path


def palette_label(train_ids: np.ndarray) -> np.ndarray:
    """Label colours of train ids 0-18 (row i of LABEL_COLORS is train id i)."""
    return LABEL_COLORS[train_ids]


def striped_pair(size: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A photo, its exact palette label and the train ids: vertical stripes of classes."""
    rng = np.random.default_rng(seed)
    ids = np.repeat(rng.integers(0, NUM_CLASSES, size=(1, size)), size, axis=0).astype(np.uint8)
    photo = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    return photo, palette_label(ids), ids


# --- list_images ---------------------------------------------------------------


def test_list_images_natural_order(tmp_path):
    for name in ("10.jpg", "2.jpg", "1.jpg", "100.png", "9.jpeg", "a2.jpg", "a10.jpg"):
        (tmp_path / name).write_bytes(b"")
    names = [path.name for path in list_images(tmp_path)]
    assert names == ["1.jpg", "2.jpg", "9.jpeg", "10.jpg", "100.png", "a2.jpg", "a10.jpg"]


def test_list_images_skips_non_images_with_one_warning(tmp_path):
    for name in ("1.jpg", "notes.txt", "labels.csv", ".DS_Store"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()  # folders are ignored silently
    with pytest.warns(PspnetWarning) as record:
        paths = list_images(tmp_path)
    assert [path.name for path in paths] == ["1.jpg"]
    assert len(record) == 1
    assert "skipped 3 non-image files" in str(record[0].message)
    assert "notes.txt" in str(record[0].message)


def test_list_images_suffix_case_insensitive(tmp_path):
    (tmp_path / "1.JPG").write_bytes(b"")
    (tmp_path / "2.Png").write_bytes(b"")
    assert [path.name for path in list_images(tmp_path)] == ["1.JPG", "2.Png"]


def test_list_images_missing_folder(tmp_path):
    with pytest.raises(DataError, match="data folder not found") as error:
        list_images(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(error.value)


def test_list_images_not_a_folder(tmp_path):
    (tmp_path / "file.jpg").write_bytes(b"x")
    with pytest.raises(DataError, match="not a folder"):
        list_images(tmp_path / "file.jpg")


def test_list_images_empty_folder(tmp_path):
    with pytest.raises(DataError, match="no .jpg/.jpeg/.png images in") as error:
        list_images(tmp_path)
    assert str(tmp_path) in str(error.value)


def test_list_images_hints_at_splits(tiny_pairs):
    with pytest.raises(DataError, match="train/ val/"):
        list_images(tiny_pairs)


# --- read_pair -------------------------------------------------------------------


def test_read_pair_returns_rgb_halves(tmp_path):
    photo, label, _ = striped_pair()
    path = write_composite(tmp_path / "1.png", photo, label)
    got_photo, got_label = read_pair(path)
    assert got_photo.dtype == np.uint8 and got_photo.shape == (16, 16, 3)
    np.testing.assert_array_equal(got_photo, photo)
    np.testing.assert_array_equal(got_label, label)


def test_read_pair_rgba_png_drops_alpha(tmp_path):
    photo, label, _ = striped_pair()
    composite = cv2.cvtColor(np.concatenate([photo, label], axis=1), cv2.COLOR_RGB2BGRA)
    cv2.imwrite(str(tmp_path / "1.png"), composite)
    got_photo, got_label = read_pair(tmp_path / "1.png")
    np.testing.assert_array_equal(got_label, label)


def test_read_pair_jpeg_roundtrip(tiny_pairs):
    photo, label = read_pair(tiny_pairs / "train" / "1.jpg")
    assert photo.shape == label.shape == (32, 32, 3)


def test_read_pair_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_pair(tmp_path / "1.jpg")


def test_read_pair_truncated_jpeg(tiny_pairs, tmp_path):
    content = (tiny_pairs / "train" / "1.jpg").read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(content[: len(content) * 2 // 3])
    with pytest.raises(DataError, match="truncated JPEG") as error:
        read_pair(path)
    assert "cut.jpg" in str(error.value)


def test_read_pair_truncated_png(tmp_path):
    photo, label, _ = striped_pair()
    path = write_composite(tmp_path / "1.png", photo, label)
    content = path.read_bytes()
    path.write_bytes(content[:-20])
    with pytest.raises(DataError, match="truncated PNG") as error:
        read_pair(path)
    assert "1.png" in str(error.value)


def test_read_pair_not_an_image(tmp_path):
    path = tmp_path / "fake.jpg"
    path.write_bytes(b"this is a text file, not a JPEG")
    with pytest.raises(DataError, match="not a JPEG or PNG image") as error:
        read_pair(path)
    assert "fake.jpg" in str(error.value)


def test_read_pair_empty_file(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="empty file"):
        read_pair(tmp_path / "empty.jpg")


def test_read_pair_corrupt_jpeg(tmp_path):
    # A JPEG header and end marker around garbage: nothing cv2 can decode.
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(200) + b"\xff\xd9")
    with pytest.raises(DataError, match="bad.jpg"):
        read_pair(tmp_path / "bad.jpg")


def test_read_pair_greyscale_file(tmp_path):
    grey = np.random.default_rng(0).integers(0, 256, size=(16, 32), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "grey.jpg"), grey)
    with pytest.raises(DataError, match="greyscale") as error:
        read_pair(tmp_path / "grey.jpg")
    assert "grey.jpg" in str(error.value)


def test_read_pair_greyscale_saved_as_colour(tmp_path):
    grey = np.random.default_rng(0).integers(0, 256, size=(16, 32), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "grey.png"), cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR))
    with pytest.raises(DataError, match="greyscale"):
        read_pair(tmp_path / "grey.png")


def test_read_pair_sixteen_bit_png(tmp_path):
    image = np.random.default_rng(0).integers(0, 65536, size=(16, 32, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), image)
    with pytest.raises(DataError, match="8 bits per channel") as error:
        read_pair(tmp_path / "deep.png")
    assert "deep.png" in str(error.value)


def test_read_pair_not_two_to_one(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, size=(32, 40, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "odd.png"), image)
    with pytest.raises(DataError, match="not a 2:1") as error:
        read_pair(tmp_path / "odd.png")
    assert "odd.png" in str(error.value) and "40x32" in str(error.value)


# --- decode_labels ------------------------------------------------------------------


def test_decode_exact_palette_colours():
    colours = LABEL_COLORS[None, :, :]  # (1, 29, 3)
    train_ids, distance = decode_labels(colours, return_distance=True)
    np.testing.assert_array_equal(train_ids[0], LABEL_TRAIN_IDS)
    assert (distance == 0).all()
    assert set(train_ids[0, NUM_CLASSES:]) == {IGNORE_INDEX}


def test_decode_matches_brute_force_nearest():
    rng = np.random.default_rng(1)
    colours = rng.integers(0, 256, size=(200, 100, 3), dtype=np.uint8)
    # Also colours near the palette, where JPEG noise puts real pixels.
    near = np.clip(LABEL_COLORS[rng.integers(0, 29, 5000)].astype(int) + rng.integers(-40, 41, (5000, 3)), 0, 255)
    colours = np.concatenate([colours.reshape(-1, 3), near.astype(np.uint8)]).reshape(-1, 50, 3)
    squared = ((colours[..., None, :].astype(np.int64) - LABEL_COLORS.astype(np.int64)) ** 2).sum(-1)
    nearest = squared.argmin(-1)
    expected_ids = LABEL_TRAIN_IDS[nearest]
    expected_distance = np.minimum(np.rint(np.sqrt(squared.min(-1))), 255).astype(np.uint8)
    train_ids, distance = decode_labels(colours, return_distance=True)
    np.testing.assert_array_equal(train_ids, expected_ids)
    np.testing.assert_array_equal(distance, expected_distance)


def test_lookup_table_stored_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("PSPNET_CACHE", str(tmp_path))
    built = labels._load_or_build_lut()
    stored = tmp_path / f"palette-lut-v{labels.LUT_FORMAT}.npy"
    assert stored.is_file() and not list(tmp_path.glob(".tmp-*"))

    def fail():
        raise AssertionError("rebuilt although a stored table exists")

    monkeypatch.setattr(labels, "_build_lut", fail)
    loaded = labels._load_or_build_lut()
    np.testing.assert_array_equal(loaded, built)
    # A damaged file is not trusted: the table is built again.
    stored.write_bytes(stored.read_bytes()[:1000])
    monkeypatch.undo()
    monkeypatch.setenv("PSPNET_CACHE", str(tmp_path))
    np.testing.assert_array_equal(labels._load_or_build_lut(), built)


def test_decode_batches_and_views():
    _, label, ids = striped_pair(size=12)
    batch = np.stack([label, label[:, ::-1]])
    np.testing.assert_array_equal(decode_labels(batch), np.stack([ids, ids[:, ::-1]]))
    # A non-contiguous view decodes the same as its copy.
    view = np.concatenate([label, label], axis=1)[:, ::2]
    np.testing.assert_array_equal(decode_labels(view), decode_labels(np.ascontiguousarray(view)))
    assert decode_labels(label).dtype == np.uint8


def test_decode_rejects_bad_input():
    with pytest.raises(DataError, match="uint8"):
        decode_labels(np.zeros((4, 4, 3), dtype=np.float32))
    with pytest.raises(DataError, match="uint8"):
        decode_labels(np.zeros((4, 4), dtype=np.uint8))


# --- class shares ----------------------------------------------------------------------


def test_class_pixel_counts_and_shares():
    ids = np.array([[[0, 0, 1, 255]], [[18, 2, 2, 200]]], dtype=np.uint8)  # (2, 1, 4)
    counts = class_pixel_counts(ids, batch=1)
    assert counts.shape == (NUM_CLASSES + 1,)
    assert counts[0] == 2 and counts[1] == 1 and counts[2] == 2 and counts[18] == 1 and counts[-1] == 2
    shares = class_pixel_shares(ids)
    assert shares[0] == pytest.approx(2 / 8) and shares.sum() == pytest.approx(6 / 8)
    assert class_pixel_shares(ids, valid_only=True).sum() == pytest.approx(1.0)
    # int32 maps with negative or large ids count as void.
    assert class_pixel_counts(np.array([[-1, 3, 300]], dtype=np.int32))[-1] == 2


# --- load_split ------------------------------------------------------------------------------


def test_load_split_shapes_and_values(tiny_pairs, cache_dir):
    photos, train_ids = load_split(tiny_pairs / "train", cache_dir=cache_dir, progress=False)
    assert photos.shape == (4, 32, 32, 3) and photos.dtype == np.uint8
    assert train_ids.shape == (4, 32, 32) and train_ids.dtype == np.uint8
    assert isinstance(photos, np.memmap) and not photos.flags.writeable
    for index, path in enumerate(list_images(tiny_pairs / "train")):
        photo, label = read_pair(path)
        np.testing.assert_array_equal(photos[index], photo)
        np.testing.assert_array_equal(train_ids[index], decode_labels(label))


def test_load_split_natural_order(tmp_path, cache_dir):
    # Stripe i of file i+1 has a distinct class: the loaded order must follow 1, 2, ..., 10.
    folder = tmp_path / "split"
    for number in range(1, 12):
        ids = np.full((8, 8), number % NUM_CLASSES, dtype=np.uint8)
        photo = np.zeros((8, 8, 3), np.uint8)
        photo[..., 0], photo[..., 1] = number, 100
        write_composite(folder / f"{number}.png", photo, palette_label(ids))
    photos, train_ids = load_split(folder, cache_dir=cache_dir, progress=False)
    assert [int(photo[0, 0, 0]) for photo in photos] == list(range(1, 12))
    assert [int(ids[0, 0]) for ids in train_ids] == [number % NUM_CLASSES for number in range(1, 12)]


def test_load_split_rgb_target(tiny_pairs, cache_dir):
    photos, targets = load_split(tiny_pairs / "val", cache_dir=cache_dir, target="rgb", progress=False)
    assert targets.dtype == np.float32 and targets.shape == (2, 32, 32, 3)
    _, label = read_pair(tiny_pairs / "val" / "1.jpg")
    np.testing.assert_allclose(targets[0], label / 255.0, atol=1e-6)
    assert 0.0 <= float(targets.min()) and float(targets.max()) <= 1.0


def test_load_split_unknown_target(tiny_pairs, cache_dir):
    with pytest.raises(ConfigError, match="target"):
        load_split(tiny_pairs / "val", cache_dir=cache_dir, target="colours", progress=False)


def test_load_split_without_cache(tiny_pairs, tmp_path):
    cache = Path(os.environ["PSPNET_CACHE"])  # shared with the session's other tests: compare, don't expect empty
    before = sorted(cache.rglob("*"))
    photos, train_ids = load_split(tiny_pairs / "train", cache_dir=False, progress=False)
    assert photos.shape == (4, 32, 32, 3) and not isinstance(photos, np.memmap)
    assert sorted(cache.rglob("*")) == before


def test_load_split_default_cache_dir(tiny_pairs):
    load_split(tiny_pairs / "val", progress=False)
    entries = list((Path(os.environ["PSPNET_CACHE"]) / "splits").glob("val-*"))
    assert entries and (entries[0] / "meta.json").is_file()


def _forbid_decoding(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("decoded although the cache should have been used")

    monkeypatch.setattr(cache, "_decode_chunk", fail)


def test_cache_hit_does_not_decode(tiny_pairs, cache_dir, monkeypatch):
    first = load_split(tiny_pairs / "train", cache_dir=cache_dir, progress=False)
    _forbid_decoding(monkeypatch)
    second = load_split(tiny_pairs / "train", cache_dir=cache_dir, progress=False)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert len([entry for entry in cache_dir.iterdir()]) == 1


def test_cache_invalidated_by_mtime(tiny_pairs, cache_dir, monkeypatch):
    load_split(tiny_pairs / "train", cache_dir=cache_dir, progress=False)
    path = tiny_pairs / "train" / "2.jpg"
    info = path.stat()
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + 5_000_000_000))
    calls = []
    original = cache._decode_chunk
    monkeypatch.setattr(cache, "_decode_chunk", lambda *args: calls.append(1) or original(*args))
    load_split(tiny_pairs / "train", cache_dir=cache_dir, progress=False)
    assert calls, "a changed modification time must trigger decoding"
    # The stale entry of the same folder is replaced, not kept beside the new one.
    assert len([entry for entry in cache_dir.iterdir()]) == 1


def test_cache_invalidated_by_content(tiny_pairs, cache_dir):
    folder = tiny_pairs / "train"
    _, before = load_split(folder, cache_dir=cache_dir, progress=False)
    before = np.array(before)
    # Replace 1.jpg by another scene (different size in bytes), keeping the mtime.
    path = folder / "1.jpg"
    info = path.stat()
    make_pairs(tiny_pairs / "other", 3, size=32, seed=5)
    replacement = max((tiny_pairs / "other").iterdir(), key=lambda p: abs(p.stat().st_size - info.st_size))
    path.write_bytes(replacement.read_bytes())
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert path.stat().st_size != info.st_size
    _, after = load_split(folder, cache_dir=cache_dir, progress=False)
    np.testing.assert_array_equal(after[0], decode_labels(read_pair(path)[1]))
    assert not np.array_equal(after[0], before[0])


@pytest.mark.parametrize("failure", [RuntimeError, KeyboardInterrupt])
def test_interrupted_caching_leaves_no_trusted_cache(tiny_pairs, cache_dir, monkeypatch, failure):
    monkeypatch.setattr(cache, "_CHUNK", 1)
    original = cache._decode_chunk
    calls = []

    def flaky(*args):
        calls.append(1)
        if len(calls) == 3:
            raise failure("simulated crash mid-write")
        return original(*args)

    monkeypatch.setattr(cache, "_decode_chunk", flaky)
    with pytest.raises(failure):
        load_split(tiny_pairs / "train", cache_dir=cache_dir, workers=1, progress=False)
    assert list(cache_dir.iterdir()) == []  # neither an entry nor a temporary folder
    monkeypatch.setattr(cache, "_decode_chunk", original)
    photos, train_ids = load_split(tiny_pairs / "train", cache_dir=cache_dir, progress=False)
    assert photos.shape[0] == 4
    np.testing.assert_array_equal(train_ids[3], decode_labels(read_pair(tiny_pairs / "train" / "4.jpg")[1]))


def test_incomplete_entry_is_not_trusted(tiny_pairs, cache_dir):
    photos, _ = load_split(tiny_pairs / "val", cache_dir=cache_dir, progress=False)
    (entry,) = list(cache_dir.iterdir())
    (entry / "meta.json").unlink()  # as if the run died before finishing the entry
    again, _ = load_split(tiny_pairs / "val", cache_dir=cache_dir, progress=False)
    np.testing.assert_array_equal(again, photos)
    assert (entry / "meta.json").is_file()


def _while_decoding(monkeypatch, other_process):
    """Runs ``other_process()`` once, as if another process ran it while this one decodes a split."""
    original = cache._decode_split

    def decode(*args, **kwargs):
        monkeypatch.setattr(cache, "_decode_split", original)
        other_process()
        return original(*args, **kwargs)

    monkeypatch.setattr(cache, "_decode_split", decode)


def _touch(path: Path) -> None:
    info = path.stat()
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + 5_000_000_000))


def test_clean_up_keeps_the_newer_entry_another_process_just_finished(tiny_pairs, cache_dir, monkeypatch):
    folder = tiny_pairs / "train"

    # This process keys the split, a file changes, another process keys and
    # caches the new files and finishes first; this one then finishes its own
    # (now outdated) entry and cleans up.
    def other_process():
        _touch(folder / "2.jpg")
        load_split(folder, cache_dir=cache_dir, progress=False)

    _while_decoding(monkeypatch, other_process)
    load_split(folder, cache_dir=cache_dir, progress=False)
    _forbid_decoding(monkeypatch)
    photos, _ = load_split(folder, cache_dir=cache_dir, progress=False)  # the other process's entry serves
    assert len(photos) == 4


def test_an_entry_another_process_finished_with_the_same_key_is_kept(tiny_pairs, cache_dir, monkeypatch):
    folder = tiny_pairs / "val"
    theirs = {}

    def other_process():
        photos, _ = load_split(folder, cache_dir=cache_dir, progress=False)
        theirs.update(photos=np.array(photos), inode=os.stat(photos.filename).st_ino)

    _while_decoding(monkeypatch, other_process)
    mine, _ = load_split(folder, cache_dir=cache_dir, progress=False)
    (entry,) = cache_dir.iterdir()
    # The other process's file is still the entry's (removing it would break its
    # memory map wherever open files cannot be removed), and this process reads it too.
    assert (entry / "photos.npy").stat().st_ino == theirs["inode"]
    assert os.stat(mine.filename).st_ino == theirs["inode"]
    np.testing.assert_array_equal(mine, theirs["photos"])


def test_clean_up_keeps_the_temporary_folder_of_a_long_running_writer(tiny_pairs, cache_dir, monkeypatch):
    def other_process():
        # This process has been decoding for two hours; another one caches another split meanwhile.
        (temporary,) = [path for path in cache_dir.iterdir() if TEMPORARY_MARK in path.name]
        os.utime(temporary, (time.time() - 7200, time.time() - 7200))
        load_split(tiny_pairs / "val", cache_dir=cache_dir, progress=False)

    _while_decoding(monkeypatch, other_process)
    photos, _ = load_split(tiny_pairs / "train", cache_dir=cache_dir, progress=False)
    assert len(photos) == 4
    assert len([path for path in cache_dir.iterdir() if TEMPORARY_MARK not in path.name]) == 2


def test_load_split_truncated_file(tiny_pairs, cache_dir):
    path = tiny_pairs / "train" / "3.jpg"
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(DataError, match="truncated JPEG") as error:
        load_split(tiny_pairs / "train", cache_dir=cache_dir, progress=False)
    assert "3.jpg" in str(error.value)
    assert list(cache_dir.iterdir()) == []


def test_load_split_skip_bad(tiny_pairs, cache_dir):
    path = tiny_pairs / "train" / "3.jpg"
    path.write_bytes(path.read_bytes()[:300])
    for _attempt in range(2):  # decoded, then from the cache: the same warning
        with pytest.warns(PspnetWarning, match=r"skipped 1 unusable file .*3\.jpg") as record:
            photos, train_ids = load_split(tiny_pairs / "train", cache_dir=cache_dir, skip_bad=True, progress=False)
        assert len([w for w in record if "unusable" in str(w.message)]) == 1
        assert photos.shape[0] == 3 and train_ids.shape[0] == 3
    np.testing.assert_array_equal(photos[2], read_pair(tiny_pairs / "train" / "4.jpg")[0])
    # Without the flag, the cached entry does not hide the bad file.
    with pytest.raises(DataError, match="3.jpg"):
        load_split(tiny_pairs / "train", cache_dir=cache_dir, progress=False)


def test_load_split_dangling_link_is_a_bad_file(tiny_pairs, cache_dir):
    # A link whose target is gone is listed but cannot be looked at: the cache key
    # must not stop on it, so --skip-bad skips it and the flagless load names it.
    (tiny_pairs / "train" / "9.jpg").symlink_to(tiny_pairs / "gone.jpg")
    with pytest.warns(PspnetWarning, match=r"skipped 1 unusable file .*9\.jpg"):
        photos, _ = load_split(tiny_pairs / "train", cache_dir=cache_dir, skip_bad=True, progress=False)
    assert photos.shape[0] == 4
    with pytest.raises(DataError, match=r"file not found: .*9\.jpg"):
        load_split(tiny_pairs / "train", cache_dir=cache_dir, progress=False)


def test_load_split_differing_sizes(tiny_pairs, cache_dir):
    make_pairs(tiny_pairs / "train_big", 1, size=64)
    (tiny_pairs / "train_big" / "1.jpg").rename(tiny_pairs / "train" / "5.jpg")
    with pytest.raises(DataError, match="one size") as error:
        load_split(tiny_pairs / "train", cache_dir=cache_dir, progress=False)
    assert "5.jpg is 128x64" in str(error.value) and "64x32" in str(error.value)


def test_load_split_not_two_to_one(tiny_pairs, cache_dir):
    image = np.random.default_rng(0).integers(0, 256, size=(32, 48, 3), dtype=np.uint8)
    cv2.imwrite(str(tiny_pairs / "train" / "9.png"), image)
    with pytest.raises(DataError, match=r"not a 2:1 .*9\.png is 48x32"):
        load_split(tiny_pairs / "train", cache_dir=cache_dir, progress=False)


def test_load_split_greyscale(tiny_pairs, cache_dir):
    grey = cv2.imread(str(tiny_pairs / "train" / "1.jpg"), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(tiny_pairs / "train" / "1.jpg"), grey)
    with pytest.raises(DataError, match=r"greyscale .*1\.jpg"):
        load_split(tiny_pairs / "train", cache_dir=cache_dir, progress=False)


def test_load_split_non_images_warned(tiny_pairs, cache_dir):
    (tiny_pairs / "train" / "README.txt").write_text("not an image")
    with pytest.warns(PspnetWarning, match="skipped 1 non-image file"):
        photos, _ = load_split(tiny_pairs / "train", cache_dir=cache_dir, progress=False)
    assert len(photos) == 4


def test_load_split_missing_and_empty(tmp_path, cache_dir):
    with pytest.raises(DataError, match="not found"):
        load_split(tmp_path / "missing", cache_dir=cache_dir)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .jpg"):
        load_split(tmp_path / "empty", cache_dir=cache_dir)


def test_far_from_palette_warning(tmp_path, cache_dir):
    rng = np.random.default_rng(0)
    folder = tmp_path / "split"
    # 1.png: a proper label; 2.png: a photo where the label should be.
    _, label, _ = striped_pair(size=16)
    write_composite(folder / "1.png", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), label)
    noise = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    write_composite(folder / "2.png", noise, noise)
    _, distance = decode_labels(noise, return_distance=True)
    share = float((distance > FAR_DISTANCE).mean())
    assert share > 0.5
    with pytest.warns(PspnetWarning, match=rf"1 of 2 label halves .* mostly far .*2\.png: {share:.0%}"):
        load_split(folder, cache_dir=cache_dir, progress=False)


def test_good_split_gives_no_warning(tiny_pairs, cache_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_split(tiny_pairs / "train", cache_dir=cache_dir, progress=False)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores permissions")
def test_unwritable_cache_falls_back_to_memory(tiny_pairs, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.warns(PspnetWarning, match="cannot write the cache"):
            photos, _ = load_split(tiny_pairs / "val", cache_dir=locked / "cache", progress=False)
        assert photos.shape == (2, 32, 32, 3)
    finally:
        locked.chmod(0o700)


def test_summarize_split(tiny_pairs, cache_dir):
    summary = summarize_split(tiny_pairs / "train", cache_dir=cache_dir, progress=False)
    assert summary.num_images == 4 and summary.image_size == (32, 32)
    assert summary.files == ["1.jpg", "2.jpg", "3.jpg", "4.jpg"]
    assert int(summary.class_pixels.sum()) == 4 * 32 * 32
    assert int(summary.distance_histogram.sum()) == 4 * 32 * 32
    _, train_ids = load_split(tiny_pairs / "train", cache_dir=cache_dir, progress=False)
    np.testing.assert_array_equal(summary.class_pixels, class_pixel_counts(train_ids))
    assert 0 <= summary.far_share() < 0.2
    assert summary.distance_percentile(50) <= summary.distance_percentile(99)
    cached = summarize_split(tiny_pairs / "train", cache_dir=cache_dir, progress=False)
    assert cached.cached and not summary.cached


def test_far_share_counts_beyond_the_threshold_and_refuses_a_negative_one():
    histogram = np.zeros(256, np.int64)
    histogram[[0, 10, 40, 255]] = [5, 3, 1, 1]
    summary = cache.SplitSummary("f", 1, (1, 10), ["1.jpg"], np.zeros(NUM_CLASSES + 1, np.int64), histogram)
    assert summary.far_share(30) == pytest.approx(0.2)
    assert summary.far_share(0) == pytest.approx(0.5)
    assert summary.far_share(300) == 0.0
    # A negative threshold sliced from the end (pspnet-data inspect --far -5 printed 10%).
    with pytest.raises(ConfigError, match="0 or more") as error:
        summary.far_share(-5)
    assert error.value.command_line_message().startswith("--far -5 ")


# --- SegmentationDataset ---------------------------------------------------------------------


def _arrays(count: int = 6, size: int = 16, seed: int = 0):
    """Photos whose colour encodes the class (photo = palette colour of the label)."""
    rng = np.random.default_rng(seed)
    train_ids = np.empty((count, size, size), dtype=np.uint8)
    for index in range(count):
        ids = rng.integers(0, NUM_CLASSES, size=(4, 4))
        train_ids[index] = cv2.resize(ids.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
    photos = LABEL_COLORS[train_ids]
    return photos, train_ids


def _dataset(photos, targets, **kwargs):
    from pspnet.data import SegmentationDataset

    return SegmentationDataset(photos, targets, **kwargs)


def test_dataset_is_a_keras_pydataset():
    import keras

    from pspnet.data.pipeline import SegmentationDataset as Direct

    photos, ids = _arrays()
    dataset = _dataset(photos, ids, batch_size=2)
    assert isinstance(dataset, keras.utils.PyDataset) and isinstance(dataset, Direct)


def test_dataset_length_and_batches():
    photos, ids = _arrays(count=5)
    dataset = _dataset(photos, ids, batch_size=2, image_size=8)
    assert len(dataset) == 3
    assert len(_dataset(photos, ids, batch_size=2, drop_remainder=True)) == 2
    x, y = dataset[0]
    assert x.shape == (2, 8, 8, 3) and x.dtype == np.float32
    assert y.shape == (2, 8, 8) and y.dtype == np.int32
    assert dataset[2][0].shape[0] == 1  # the remainder
    assert 0.0 <= x.min() and x.max() <= 255.0
    with pytest.raises(IndexError):
        dataset[3]


def test_dataset_each_image_once_per_epoch():
    photos, ids = _arrays(count=7)
    photos = photos.copy()
    photos[:, 0, 0, 0] = np.arange(7) * 10  # a tag per image
    dataset = _dataset(photos, ids, batch_size=3, augment=False, image_size=16, seed=4)
    seen = [int(tag) for index in range(len(dataset)) for tag in dataset[index][0][:, 0, 0, 0]]
    assert sorted(seen) == [tag * 10 for tag in range(7)]
    assert seen != sorted(seen)  # shuffled


def test_dataset_deterministic_per_seed_and_epoch():
    photos, ids = _arrays(count=8)
    kwargs = dict(batch_size=4, image_size=12, jitter=True, seed=3)
    first, second = _dataset(photos, ids, **kwargs), _dataset(photos, ids, **kwargs, workers=2)
    for index in range(len(first)):
        for a, b in zip(first[index], second[index]):
            np.testing.assert_array_equal(a, b)
    epoch0 = first[0]
    np.testing.assert_array_equal(first[0][0], epoch0[0])  # repeatable within an epoch
    first.on_epoch_end()
    assert first.epoch == 1
    assert not np.array_equal(first[0][0], epoch0[0])  # another epoch, other batches
    first.set_epoch(0)
    np.testing.assert_array_equal(first[0][0], epoch0[0])
    other_seed = _dataset(photos, ids, **{**kwargs, "seed": 4})
    assert not np.array_equal(other_seed[0][0], epoch0[0])


def test_dataset_parts_make_up_the_whole_batch():
    # Several processes each feed a part of every global batch (pspnet.training.distribute):
    # together the parts must be exactly the batch one process makes, augmented alike.
    photos, ids = _arrays(count=7)
    kwargs = dict(batch_size=4, image_size=12, jitter=True, seed=5, scale_range=(0.5, 2.0))
    whole = _dataset(photos, ids, **kwargs)
    parts = [_dataset(photos, ids, **kwargs, part=(start, start + 2)) for start in (0, 2)]
    for index in range(len(whole)):  # the last batch has 3 images: the second part gets 1
        for got, expected in zip(zip(*(part[index] for part in parts)), whole[index]):
            np.testing.assert_array_equal(np.concatenate(got), expected)
    assert [len(part[1][0]) for part in parts] == [2, 1]
    with pytest.raises(ConfigError, match="part must be rows"):
        _dataset(photos, ids, batch_size=4, part=(2, 6))


def test_dataset_steps_per_epoch_cut_an_endless_stream_of_passes():
    photos, ids = _arrays(count=7)
    photos = photos.copy()
    photos[:, 0, 0, 0] = np.arange(7) * 10  # a tag per image
    kwargs = dict(batch_size=2, augment=False, image_size=16, seed=1, drop_remainder=True)
    plain = _dataset(photos, ids, **kwargs)  # 3 batches per pass
    cut = _dataset(photos, ids, **kwargs, steps_per_epoch=2)
    assert len(plain) == 3 and len(cut) == 2 and cut.batches_per_pass == 3

    def tags(dataset, epochs):
        seen = []
        for _ in range(epochs):
            seen += [dataset[index][0][:, 0, 0, 0].tolist() for index in range(len(dataset))]
            dataset.on_epoch_end()
        return seen

    # Epochs of 2 batches read the same stream as passes of 3: 6 batches either way.
    assert tags(cut, 3) == tags(plain, 2)
    with pytest.raises(IndexError):
        cut[2]


def test_dataset_no_shuffle_keeps_order():
    photos, ids = _arrays(count=4)
    dataset = _dataset(photos, ids, batch_size=4, augment=False, shuffle=False, image_size=16)
    np.testing.assert_array_equal(dataset[0][1], ids.astype(np.int32))
    np.testing.assert_array_equal(dataset[0][0], photos.astype(np.float32))


def test_dataset_resize_without_augment_keeps_the_aspect_ratio():
    photos, ids = _arrays(count=2, size=16)
    dataset = _dataset(photos, ids, batch_size=2, augment=False, shuffle=False, image_size=(8, 12))
    x, y = dataset[0]
    # Fitted into 8x12 keeping the square shape (8x8, top left), the rest padding: never stretched.
    np.testing.assert_array_equal(x[1, :, :8], cv2.resize(photos[1], (8, 8), interpolation=cv2.INTER_LINEAR))
    np.testing.assert_array_equal(y[1, :, :8], cv2.resize(ids[1], (8, 8), interpolation=cv2.INTER_NEAREST_EXACT))
    assert (x[:, :, 8:] == (124, 116, 104)).all() and (y[:, :, 8:] == IGNORE_INDEX).all()


def test_dataset_label_padding_after_downscale():
    photos, ids = _arrays(count=4, size=16)
    dataset = _dataset(photos, ids, batch_size=4, image_size=16, scale_range=(0.5, 0.5), seed=1)
    x, y = dataset[0]
    padded = y == IGNORE_INDEX
    # A scaled 8x8 image in a 16x16 output: three quarters padding.
    assert padded.mean() == pytest.approx(0.75, abs=0.05)
    assert (x[padded] == (124, 116, 104)).all()  # photo padding is the ImageNet mean, as in semseg
    assert (ids != IGNORE_INDEX).all()  # so 255 came from padding only


def test_dataset_flip_moves_photo_and_labels_together():
    photos, ids = _arrays(count=8, size=16)
    dataset = _dataset(photos, ids, batch_size=8, image_size=16, scale_range=(1.0, 1.0), shuffle=False, seed=2)
    flipped_count = 0
    for epoch in range(3):
        dataset.set_epoch(epoch)
        x, y = dataset[0]
        for index in range(8):
            photo_flipped = np.array_equal(x[index], photos[index, :, ::-1].astype(np.float32))
            label_flipped = np.array_equal(y[index], ids[index, :, ::-1])
            photo_same = np.array_equal(x[index], photos[index].astype(np.float32))
            label_same = np.array_equal(y[index], ids[index])
            assert (photo_flipped and label_flipped) or (photo_same and label_same)
            flipped_count += photo_flipped and not photo_same
    assert 0 < flipped_count < 24


def test_dataset_scale_and_crop_keep_photo_and_labels_aligned():
    photos, ids = _arrays(count=6, size=32)
    dataset = _dataset(photos, ids, batch_size=6, image_size=24, scale_range=(0.6, 1.8), seed=5)
    x, y = dataset[0]
    valid = y != IGNORE_INDEX
    expected = LABEL_COLORS[np.where(valid, y, 0)].astype(np.float32)
    # The photo is the label's colour, so away from borders they agree exactly.
    agree = (np.abs(x - expected).max(-1) < 1.0)[valid].mean()
    assert agree > 0.8


def test_dataset_jitter_changes_photos_not_labels():
    photos, ids = _arrays(count=4)
    plain = _dataset(photos, ids, batch_size=4, image_size=16, seed=9)
    jittered = _dataset(photos, ids, batch_size=4, image_size=16, seed=9, jitter=True)
    np.testing.assert_array_equal(plain[0][1], jittered[0][1])
    assert not np.array_equal(plain[0][0], jittered[0][0])


def test_dataset_rgb_targets():
    photos, ids = _arrays(count=3)
    targets = LABEL_COLORS[ids].astype(np.float32) / 255.0
    dataset = _dataset(photos, targets, batch_size=3, image_size=8)
    x, y = dataset[0]
    assert y.shape == (3, 8, 8, 3) and y.dtype == np.float32
    assert 0.0 <= y.min() and y.max() <= 1.0


def test_dataset_rejects_bad_arguments():
    photos, ids = _arrays(count=3)
    with pytest.raises(DataError, match="3 photos but 2 targets"):
        _dataset(photos, ids[:2], batch_size=1)
    with pytest.raises(ConfigError, match="batch size"):
        _dataset(photos, ids, batch_size=0)
    with pytest.raises(ConfigError, match="scale_range"):
        _dataset(photos, ids, batch_size=1, scale_range=(2.0, 1.0))
    with pytest.raises(DataError, match="uint8"):
        _dataset(photos.astype(np.float32), ids, batch_size=1)


def test_dataset_feeds_model_fit(tiny_pairs, cache_dir):
    import keras

    photos, ids = load_split(tiny_pairs / "train", cache_dir=cache_dir, progress=False)
    dataset = _dataset(photos, ids, batch_size=2, image_size=16)
    inputs = keras.Input((16, 16, 3))
    outputs = keras.layers.Conv2D(NUM_CLASSES, 1)(keras.layers.Rescaling(1 / 255)(inputs))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255))
    history = model.fit(dataset, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])
