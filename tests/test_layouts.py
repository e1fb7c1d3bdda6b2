"""Tests for pspnet.data.layouts and pspnet.data.samples (and the header/mask readers of pspnet.data.files).

Every bad input of the issue ends in one DataError naming the file and the
problem, on tiny generated sets (conftest ``make_cityscapes``, ``make_folders``).
"""

from __future__ import annotations

import json
import struct
import warnings
import zlib

import cv2
import numpy as np
import pytest
from conftest import make_cityscapes, make_folders, make_pairs

from pspnet.data import load_split
from pspnet.data.classes import CITYSCAPES
from pspnet.data.files import image_size, read_mask
from pspnet.data.layouts import detect_layout, open_split, read_label_file, resolve_split
from pspnet.data.samples import LayoutSummary, SplitLabels, SplitPhotos, load_arrays, scan_split
from pspnet.data.synth_layouts import FOLDERS_CLASSES
from pspnet.errors import ConfigError, DataError, PspnetWarning

VAL_MASK = ("masks", "val", "scene_001.png")


def _write(path, image) -> None:
    assert cv2.imwrite(str(path), image)


def _mask(root, *parts):
    return cv2.imread(str(root.joinpath(*parts)), cv2.IMREAD_UNCHANGED)


# --- detection and reading ------------------------------------------------------------


def test_detect_layout_of_each(tmp_path):
    make_cityscapes(tmp_path / "cs", train=1, val=1)
    make_folders(tmp_path / "f", train=1, val=1)
    make_pairs(tmp_path / "p" / "train", 1, size=16)
    assert [detect_layout(tmp_path / name) for name in ("cs", "f", "p")] == ["cityscapes", "folders", "pairs"]


def test_layout_that_cannot_be_told(tmp_path):
    (tmp_path / "odd" / "pictures").mkdir(parents=True)
    with pytest.raises(DataError, match=r"cannot tell the layout of .*odd: no leftImg8bit/.*layout=") as info:
        open_split(tmp_path / "odd", "val")
    assert "--layout" in info.value.command_line_message()


def test_cityscapes_label_ids_read_as_train_ids(tmp_path):
    make_cityscapes(tmp_path / "ids", train=0, val=2, height=32, width=64)
    make_cityscapes(tmp_path / "both", train=0, val=2, height=32, width=64, train_ids_files=True)
    by_ids, by_train_ids = open_split(tmp_path / "ids", "val"), open_split(tmp_path / "both", "val")
    assert by_ids.samples[0].label.name == "aachen_000000_000001_gtFine_labelIds.png"
    assert by_train_ids.samples[0].label.name == "aachen_000000_000001_gtFine_labelTrainIds.png"
    assert [s.name for s in by_ids.samples] == ["aachen_000000_000001", "bochum_000000_000002"]
    for index in range(2):
        photo, ids = by_ids.read(index)
        assert photo.shape == (32, 64, 3) and ids.shape == (32, 64)
        np.testing.assert_array_equal(ids, by_train_ids.read_label(index))
        assert set(np.unique(ids)) <= set(range(19)) | {255}
    assert by_ids.classes == CITYSCAPES and by_ids.folder == tmp_path / "ids" / "leftImg8bit" / "val"


def test_label_ids_map_by_the_official_table(tmp_path):
    path = tmp_path / "x_gtFine_labelIds.png"
    _write(path, np.array([[7, 26, 0, 33]], np.uint8))  # road, car, unlabeled, bicycle
    np.testing.assert_array_equal(read_label_file(path, "labelIds", CITYSCAPES), [[0, 13, 255, 18]])


def test_cityscapes_test_split_without_labels(tmp_path):
    make_cityscapes(tmp_path, train=1, val=1, test=2, height=16, width=32)
    split = open_split(tmp_path, "test")
    assert len(split) == 2 and all(sample.label is None for sample in split.samples) and not split.labelled
    assert split.read_photo(1).shape == (16, 32, 3)
    with pytest.raises(DataError, match="no label"):
        split.read_label(0)
    with pytest.raises(DataError, match="has no labels"):
        load_arrays(split, cache_dir=False, progress=False)


def test_folders_index_masks_and_ignore_index(tmp_path):
    make_folders(tmp_path, train=1, val=2, ignore_index=9)
    split = open_split(tmp_path, "val")
    assert split.classes.names == FOLDERS_CLASSES.names and split.classes.ignore_index == 9
    stored = _mask(tmp_path, *VAL_MASK)
    stored[0, :4] = 9  # void pixels, in the data set's own ignore index
    _write(tmp_path.joinpath(*VAL_MASK), stored)
    ids = split.read_label(0)
    np.testing.assert_array_equal(ids, np.where(stored == 9, 255, stored))
    assert (ids[0, :4] == 255).all() and set(np.unique(ids)) == {0, 1, 2, 3, 4, 255}
    assert split.read_photo(0).shape == (48, 80, 3)


def test_folders_colour_masks_decode_exactly(tmp_path):
    make_folders(tmp_path / "index", train=0, val=2, suffix=".png")
    make_folders(tmp_path / "rgb", train=0, val=2, rgb_masks=True, suffix=".png")
    index, rgb = open_split(tmp_path / "index", "val"), open_split(tmp_path / "rgb", "val")
    assert read_mask(rgb.samples[0].label).ndim == 3
    for number in range(2):
        by_index, by_colour = index.read_label(number), rgb.read_label(number)
        labelled = by_index != 255  # colour masks have no ignore colour: void became "mover"
        np.testing.assert_array_equal(by_colour[labelled], by_index[labelled])
        assert (by_colour[~labelled] == FOLDERS_CLASSES.names.index("mover")).all()


def test_indexed_png_masks_give_their_indices(tmp_path):
    indices = np.random.default_rng(0).integers(0, 4, (5, 7)).astype(np.uint8)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    rows = b"".join(b"\x00" + row.tobytes() for row in indices)
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 7, 5, 8, 3, 0, 0, 0))
        + chunk(b"PLTE", bytes([10, 20, 30, 200, 0, 0, 0, 200, 0, 0, 0, 200]))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
    (tmp_path / "m.png").write_bytes(png)
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), indices)


def _grey_png(samples: np.ndarray, depth: int, alpha: bool = False) -> bytes:
    """A greyscale PNG (colour type 0, or 4 with alpha) of ``samples`` stored with ``depth`` bits each."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    height, width = samples.shape
    if alpha:  # 8-bit grey, alpha pairs
        rows = b"".join(b"\x00" + np.stack([row, np.full_like(row, 200)], -1).tobytes() for row in samples)
    else:  # samples packed big-endian into bytes, each row padded to a whole byte
        bits = np.unpackbits(samples[..., None], axis=-1)[..., 8 - depth :].reshape(height, -1)
        rows = b"".join(b"\x00" + np.packbits(row).tobytes() for row in bits)
    header = struct.pack(">IIBBBBB", width, height, depth, 4 if alpha else 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_low_bit_depth_grey_masks_give_their_stored_values(tmp_path, depth):
    # A binary mask saved as a 1-bit PNG (PIL's mode "1") holds 0 and 1; OpenCV
    # scales the samples to 0-255, which made class 1 read as 255 (ignored).
    indices = np.random.default_rng(0).integers(0, 2 if depth == 1 else 3, (5, 7)).astype(np.uint8)
    (tmp_path / "m.png").write_bytes(_grey_png(indices, depth))
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), indices)


def test_grey_and_alpha_masks_give_their_indices(tmp_path):
    indices = np.random.default_rng(0).integers(0, 4, (5, 7)).astype(np.uint8)
    (tmp_path / "m.png").write_bytes(_grey_png(indices, 8, alpha=True))
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), indices)


def test_image_size_from_the_header(tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (37, 53, 3)).astype(np.uint8)
    for name in ("a.jpg", "a.png"):
        _write(tmp_path / name, image)
        assert image_size(tmp_path / name) == (37, 53)
    (tmp_path / "b.gif").write_bytes(b"GIF89a....")
    with pytest.raises(DataError, match="not a JPEG or PNG image: .*b.gif"):
        image_size(tmp_path / "b.gif")


def test_resolve_split_forms(tmp_path):
    make_pairs(tmp_path / "p" / "val", 2, size=16, split="val")
    make_folders(tmp_path / "f", train=1, val=1)
    assert resolve_split(tmp_path / "p").folder == tmp_path / "p" / "val"
    composites = resolve_split(tmp_path / "p" / "val")
    assert composites.layout == "pairs" and [s.name for s in composites.samples] == ["1", "2"]
    assert composites.read(1)[1].shape == (16, 16)
    assert resolve_split(tmp_path / "f", "train").layout == "folders"
    with pytest.raises(ConfigError, match="layout='coco' must be one of pairs, cityscapes, folders"):
        resolve_split(tmp_path / "f", layout="coco")


def test_lazy_sequences(tmp_path):
    make_folders(tmp_path, train=3, val=1, height=24, width=40)
    split = open_split(tmp_path, "train")
    photos, labels = SplitPhotos(split), SplitLabels(split)
    assert len(photos) == len(labels) == 3
    assert photos[np.int64(2)].shape == (24, 40, 3) and labels[-1].shape == (24, 40)
    np.testing.assert_array_equal(labels[2], labels[-1])
    with pytest.raises(IndexError):
        photos[3]


# --- scanning and loading -------------------------------------------------------------------


def test_scan_counts_pixels_and_caches(tmp_path):
    make_folders(tmp_path / "f", train=2, val=1, ignore_index=7)
    split = open_split(tmp_path / "f", "train")
    kept, summary = scan_split(split, cache_dir=tmp_path / "c", progress=False)
    assert isinstance(summary, LayoutSummary) and not summary.cached and len(kept) == 2
    expected = np.zeros(6, np.int64)
    for number in range(2):
        counts = np.bincount(split.read_label(number).ravel(), minlength=256)
        expected += np.r_[counts[:5], counts[255]]
    np.testing.assert_array_equal(summary.class_pixels, expected)
    assert summary.image_size == (48, 80) and summary.sizes == {(48, 80): 2}
    assert scan_split(split, cache_dir=tmp_path / "c", progress=False)[1].cached
    # A changed mask is read again: the cache is keyed by each file's size and time.
    _write(tmp_path / "f" / "masks" / "train" / "scene_002.png", np.full((48, 80), 6, np.uint8))
    with pytest.raises(DataError, match=r"mask values 6 are neither a class \(0-4\) nor the ignore index 7"):
        scan_split(split, cache_dir=tmp_path / "c", progress=False)


def test_scan_skip_bad_leaves_the_bad_sample_out(tmp_path):
    make_folders(tmp_path, train=3, val=1)
    _write(tmp_path / "masks" / "train" / "scene_002.png", np.zeros((10, 10), np.uint8))
    with pytest.warns(PspnetWarning, match="skipped 1 of 3 samples"):
        kept, summary = scan_split(open_split(tmp_path, "train"), cache_dir=False, skip_bad=True, progress=False)
    assert [s.name for s in kept.samples] == ["scene_001", "scene_003"] and summary.num_images == 2
    assert "scene_002.png" in summary.skipped[0][1]


def test_load_arrays_pairs_unchanged(tmp_path):
    make_pairs(tmp_path / "val", 3, size=16, split="val")
    photos, targets, summary = load_arrays(open_split(tmp_path, "val"), cache_dir=tmp_path / "c", progress=False)
    expected_photos, expected_targets = load_split(tmp_path / "val", cache_dir=False, progress=False)
    np.testing.assert_array_equal(photos, expected_photos)
    np.testing.assert_array_equal(targets, expected_targets)
    assert summary.num_images == 3


def test_load_arrays_lazy_for_layouts(tmp_path):
    make_cityscapes(tmp_path, train=2, val=0, height=32, width=64)
    photos, labels, summary = load_arrays(open_split(tmp_path, "train"), cache_dir=False, progress=False)
    assert isinstance(photos, SplitPhotos) and len(labels) == 2 and summary.class_pixels.shape == (20,)
    assert summary.class_pixels.sum() == 2 * 32 * 64
    with pytest.raises(ConfigError, match="colour target"):
        load_arrays(open_split(tmp_path, "train"), target="rgb", cache_dir=False, progress=False)


# --- bad input: one line naming the file and the problem -----------------------------------------


def test_image_without_its_mask(tmp_path):
    make_folders(tmp_path / "f", train=1, val=2)
    (tmp_path / "f" / "masks" / "val" / "scene_002.png").unlink()
    with pytest.raises(
        DataError,
        match=r"image without its mask: no scene_002.png in .*masks/val for .*"
        r"images/val/scene_002.jpg$",
    ):
        open_split(tmp_path / "f", "val")
    make_cityscapes(tmp_path / "cs", train=1, val=1)
    next((tmp_path / "cs" / "gtFine" / "val").rglob("*_labelIds.png")).unlink()
    with pytest.raises(DataError, match=r"image without its mask: no aachen_000000_000001_gtFine_labelIds.png"):
        open_split(tmp_path / "cs", "val")


def test_mask_without_its_image(tmp_path):
    make_folders(tmp_path / "f", train=1, val=2)
    (tmp_path / "f" / "images" / "val" / "scene_001.jpg").unlink()
    with pytest.raises(
        DataError,
        match=r"mask without its image: no scene_001.jpg/.jpeg/.png in .*"
        r"masks/val/scene_001.png$",
    ):
        open_split(tmp_path / "f", "val")
    make_cityscapes(tmp_path / "cs", train=2, val=1)
    (tmp_path / "cs" / "leftImg8bit" / "train" / "bochum" / "bochum_000000_000002_leftImg8bit.png").unlink()
    with pytest.raises(DataError, match=r"mask without its image: no bochum_000000_000002_leftImg8bit.png"):
        open_split(tmp_path / "cs", "train")


def test_mask_size_differs_from_its_image(tmp_path):
    make_folders(tmp_path, train=1, val=1)
    _write(tmp_path.joinpath(*VAL_MASK), np.zeros((48, 81), np.uint8))
    split = open_split(tmp_path, "val")
    message = r"mask is 81x48 but its image scene_001.jpg is 80x48: .*masks/val/scene_001.png$"
    with pytest.raises(DataError, match=message):
        split.read(0)
    with pytest.raises(DataError, match=message):
        scan_split(split, cache_dir=False, progress=False)


def test_mask_value_neither_class_nor_ignore(tmp_path):
    make_folders(tmp_path / "f", train=1, val=1)
    mask = _mask(tmp_path / "f", *VAL_MASK)
    mask[0, :3] = (5, 200, 5)
    _write(tmp_path.joinpath("f", *VAL_MASK), mask)
    with pytest.raises(
        DataError,
        match=r"mask values 5, 200 are neither a class \(0-4\) nor the ignore index "
        r"255: .*scene_001.png$",
    ):
        open_split(tmp_path / "f", "val").read_label(0)
    make_cityscapes(tmp_path / "cs", train=0, val=1, height=16, width=32)
    label = next((tmp_path / "cs" / "gtFine").rglob("*_labelIds.png"))
    _write(label, np.full((16, 32), 40, np.uint8))
    with pytest.raises(DataError, match=r"values 40 are not Cityscapes label ids \(0-33\): .*_labelIds.png$"):
        scan_split(open_split(tmp_path / "cs", "val"), cache_dir=False, progress=False)


def test_colour_not_in_dataset_json(tmp_path):
    make_folders(tmp_path, train=1, val=1, rgb_masks=True)
    mask = _mask(tmp_path, *VAL_MASK)
    mask[3, 2] = (1, 2, 3)  # BGR: RGB (3, 2, 1)
    _write(tmp_path.joinpath(*VAL_MASK), mask)
    with pytest.raises(
        DataError,
        match=r"mask colour \[3, 2, 1\] \(at x=2, y=3\) is not a class colour of "
        r"dataset.json, which has no ignore colour: .*scene_001.png$",
    ):
        open_split(tmp_path, "val").read_label(0)


@pytest.mark.parametrize(
    "text, problem",
    [
        (None, r"no dataset.json \(the class names and colours"),
        ("{classes: [", "dataset.json is not valid JSON"),
        (
            json.dumps({"classes": [{"name": "a", "color": [1, 2, 3]}, {"name": "a", "color": [4, 5, 6]}]}),
            "the name 'a' is given to two classes",
        ),
        (
            json.dumps({"classes": [{"name": "a", "color": [1, 2, 3]}, {"name": "b", "color": [1, 2, 3]}]}),
            r"the colour \[1, 2, 3\] is given to two classes",
        ),
    ],
)
def test_bad_dataset_json(tmp_path, text, problem):
    make_folders(tmp_path, train=1, val=1)
    if text is None:
        (tmp_path / "dataset.json").unlink()
    else:
        (tmp_path / "dataset.json").write_text(text)
    with pytest.raises(DataError, match=f"{problem}.*: .*dataset.json$"):
        open_split(tmp_path, "val")


def test_cityscapes_root_without_gtfine(tmp_path):
    make_cityscapes(tmp_path, train=1, val=1, height=16, width=32)
    for label in (tmp_path / "gtFine").rglob("*.png"):
        label.unlink()
    for folder in sorted((tmp_path / "gtFine").rglob("*"), reverse=True):
        folder.rmdir()
    (tmp_path / "gtFine").rmdir()
    with pytest.raises(DataError, match=r"cityscapes root without its labels: .*gtFine not found"):
        open_split(tmp_path, "train")


def test_two_images_of_one_name(tmp_path):
    make_folders(tmp_path, train=1, val=1)
    _write(tmp_path / "images" / "val" / "scene_001.png", np.zeros((48, 80, 3), np.uint8))
    with pytest.raises(DataError, match=r"two images named 'scene_001' \(scene_001.jpg, scene_001.png\)"):
        open_split(tmp_path, "val")


def test_jpeg_mask_refused(tmp_path):
    _write(tmp_path / "m.png", np.zeros((8, 8), np.uint8))
    (tmp_path / "m.png").write_bytes(cv2.imencode(".jpg", np.zeros((8, 8), np.uint8))[1].tobytes())
    with pytest.raises(DataError, match="mask is not a PNG"):
        read_mask(tmp_path / "m.png")


def test_missing_split_folder(tmp_path):
    make_folders(tmp_path, train=1, val=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError, match=r"no test split: .*images/test not found$"):
            open_split(tmp_path, "test")


# --- through the command line: pspnet-data synth --layout, pspnet-data inspect ROOT ---------------------------


def _cli(capsys, *argv) -> tuple[int, str, str]:
    from pspnet.cli import data_main

    status = data_main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return status, out, err


def _one_error_line(err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pspnet-data: error: ") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def test_cli_synth_and_inspect_cityscapes(tmp_path, capsys):
    status, out, err = _cli(
        capsys, "synth", tmp_path / "cs", "--layout", "cityscapes", "--train", 2, "--val", 1, "--size", 16, "--quiet"
    )
    assert status == 0, err
    assert "wrote 2 cityscapes images of 32x16" in out
    assert len(open_split(tmp_path / "cs", "train")) == 2
    assert open_split(tmp_path / "cs", "val").read(0)[1].shape == (16, 32)
    status, out, err = _cli(
        capsys, "inspect", tmp_path / "cs", "--split", "val", "--cache-dir", tmp_path / "c", "--quiet"
    )
    assert status == 0 and err == "", err
    assert out.startswith(f"layout: cityscapes ({tmp_path / 'cs'})")
    assert "split: val" in out and "split: train" not in out
    assert "files: 1 image (32x16: 1)" in out and "classes: 19, ignore index 255" in out
    road = next(line for line in out.splitlines() if line.startswith("road"))
    assert road.split()[1:3] == ["0", "128,64,128"] and 5.0 < float(road.split()[-1]) < 80.0
    assert "problems: none" in out


def test_cli_synth_and_inspect_folders(tmp_path, capsys):
    status, out, err = _cli(
        capsys, "synth", tmp_path / "f", "--layout", "folders", "--train", 1, "--val", 2, "--size", 24, "--quiet"
    )
    assert status == 0, err
    assert json.loads((tmp_path / "f" / "dataset.json").read_text()) == FOLDERS_CLASSES.to_json()
    assert cv2.imread(str(tmp_path / "f" / "images" / "val" / "scene_002.jpg")).shape == (24, 40, 3)
    status, out, err = _cli(capsys, "inspect", tmp_path / "f", "--no-cache", "--quiet")
    assert status == 0, err
    assert "layout: folders" in out and "split: train" in out and "split: val" in out
    shares = [
        float(line.split()[-1])
        for line in out.splitlines()
        if line.split() and line.split()[0] in FOLDERS_CLASSES.names + ("(ignored)",)
    ]
    assert len(shares) == 12 and sum(shares) == pytest.approx(200.0, abs=0.2)
    status, _, err = _cli(capsys, "synth", tmp_path / "f", "--layout", "folders", "--size", 24, "--quiet")
    assert status == 1
    _one_error_line(err, "already exists; pass --overwrite", str(tmp_path / "f" / "images"))


def test_cli_inspect_skip_bad_lists_problems(tmp_path, capsys):
    make_folders(tmp_path, train=2, val=1)
    _write(tmp_path / "masks" / "train" / "scene_001.png", np.full((48, 80), 17, np.uint8))
    status, out, err = _cli(capsys, "inspect", tmp_path, "--split", "train", "--skip-bad", "--no-cache", "--quiet")
    assert status == 0
    assert err.strip().startswith("pspnet-data: warning: skipped 1 of 2 samples") and len(err.strip().splitlines()) == 1
    assert "files: 1 image (80x48: 1), 1 skipped" in out and "problems: 1" in out
    assert "mask values 17 are neither a class (0-4) nor the ignore index 255" in out


@pytest.mark.parametrize(
    "spoil, fragments",
    [
        (lambda root: (root / "masks" / "val" / "scene_001.png").unlink(), ("image without its mask", "scene_001.jpg")),
        (
            lambda root: (root / "images" / "val" / "scene_001.jpg").unlink(),
            ("mask without its image", "scene_001.png"),
        ),
        (lambda root: _write(root.joinpath(*VAL_MASK), np.zeros((8, 8), np.uint8)), ("mask is 8x8 but its image",)),
        (lambda root: _write(root.joinpath(*VAL_MASK), np.full((48, 80), 9, np.uint8)), ("mask values 9 are neither",)),
        (
            lambda root: _write(root.joinpath(*VAL_MASK), np.full((48, 80, 3), 7, np.uint8)),
            ("mask colour [7, 7, 7]", "(an index mask saved as RGB?)", "scene_001.png"),
        ),
        (lambda root: (root / "dataset.json").write_text("[]"), ("dataset.json describes no usable class table",)),
        (lambda root: (root / "dataset.json").unlink(), ("no dataset.json",)),
    ],
)
def test_cli_inspect_bad_folders_input(tmp_path, capsys, spoil, fragments):
    make_folders(tmp_path / "f", train=1, val=1)
    spoil(tmp_path / "f")
    status, _, err = _cli(capsys, "inspect", tmp_path / "f", "--split", "val", "--no-cache", "--quiet")
    assert status == 1
    _one_error_line(err, *fragments)


def test_cli_inspect_cityscapes_without_gtfine(tmp_path, capsys):
    make_cityscapes(tmp_path, train=1, val=0, height=16, width=32)
    import shutil

    shutil.rmtree(tmp_path / "gtFine")
    status, _, err = _cli(capsys, "inspect", tmp_path, "--no-cache", "--quiet")
    assert status == 1
    _one_error_line(err, "cityscapes root without its labels", str(tmp_path / "gtFine"))


def test_cli_inspect_layout_cannot_be_told_subprocess(tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    (tmp_path / "root" / "pictures").mkdir(parents=True)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from pspnet.cli import data_main; raise SystemExit(data_main())",
            "inspect",
            str(tmp_path / "root"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        check=False,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("pspnet-data")]
    assert len(lines) == 1 and lines[0].startswith(f"pspnet-data: error: cannot tell the layout of {tmp_path / 'root'}")
    assert "--layout pairs|cityscapes|folders" in lines[0]


# --- the synthetic sets themselves ---------------------------------------------------------


def test_synthetic_frames_repeat_by_seed_and_differ_by_split(tmp_path):
    make_folders(tmp_path / "a", train=1, val=1, seed=3)
    make_folders(tmp_path / "b", train=1, val=1, seed=3)
    make_folders(tmp_path / "c", train=1, val=1, seed=4)
    mask = ("masks", "train", "scene_001.png")
    assert (tmp_path / "a").joinpath(*mask).read_bytes() == (tmp_path / "b").joinpath(*mask).read_bytes()
    assert not np.array_equal(_mask(tmp_path / "a", *mask), _mask(tmp_path / "c", *mask))
    assert not np.array_equal(_mask(tmp_path / "a", *mask), _mask(tmp_path / "a", *VAL_MASK))


def test_write_layout_overwrite_replaces_only_the_layout(tmp_path):
    from pspnet.data.synth_layouts import write_layout

    (tmp_path / "notes.txt").write_text("keep")
    write_layout(tmp_path, "cityscapes", train=2, val=1, size=8, workers=1)
    out, size = write_layout(tmp_path, "cityscapes", train=1, val=1, size=16, overwrite=True, workers=1)
    assert size == (16, 32) and len(open_split(out, "train")) == 1
    assert (tmp_path / "notes.txt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gtFine", "leftImg8bit", "notes.txt"]  # no temporaries


def test_cli_inspect_pairs_names_the_layout(tiny_pairs, capsys):
    status, out, err = _cli(capsys, "inspect", tiny_pairs, "--split", "val", "--no-cache", "--quiet")
    assert status == 0, err
    assert f"folder: {tiny_pairs / 'val'}" in out and f"folder: {tiny_pairs / 'train'}" not in out
    assert out.strip().splitlines()[-1] == "layout: pairs (photo|label composites, the 19 Cityscapes classes)"
