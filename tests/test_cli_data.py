"""Tests for ``pspnet-data synth`` and ``pspnet-data inspect`` (pspnet.cli.data).

Every bad input of the data layer must end in one line ``pspnet-data: error: ...``
naming the problem and the file, a non-zero exit status, and no traceback.
"""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
from conftest import REPO, make_pairs

from pspnet.cli import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE, data_main
from pspnet.data import cache

COMMAND = [sys.executable, "-c", "from pspnet.cli import data_main; raise SystemExit(data_main())"]


def run(capsys, *argv) -> tuple[int, str, str]:
    """Runs data_main in-process: (exit status, stdout, stderr)."""
    status = data_main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_error_line(err: str, *fragments: str, prog: str = "pspnet-data") -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


# --- synth ----------------------------------------------------------------------


def test_synth_writes_a_set(tmp_path, capsys):
    status, out, err = run(
        capsys, "synth", tmp_path / "d", "--train", 3, "--val", 2, "--seed", 1, "--size", 32, "--quiet"
    )
    assert status == 0, err
    assert sorted(p.name for p in (tmp_path / "d" / "train").iterdir()) == ["1.jpg", "2.jpg", "3.jpg"]
    assert len(list((tmp_path / "d" / "val").iterdir())) == 2
    assert cv2.imread(str(tmp_path / "d" / "val" / "2.jpg")).shape == (32, 64, 3)
    assert "wrote 3 pairs of 32x64" in out


def test_synth_refuses_existing_folder(tmp_path, capsys):
    make_pairs(tmp_path / "d" / "train", 1, size=16)
    status, _, err = run(capsys, "synth", tmp_path / "d", "--train", 1, "--val", 1, "--size", 16, "--quiet")
    assert status == EXIT_ERROR
    assert_one_error_line(err, "already holds files", str(tmp_path / "d" / "train"))


def test_synth_out_is_a_file(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    status, _, err = run(capsys, "synth", tmp_path / "f", "--train", 1, "--val", 1, "--size", 16, "--quiet")
    assert status == EXIT_ERROR
    assert_one_error_line(err, "not a folder", str(tmp_path / "f"))


def test_synth_bad_size_flag(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        data_main(["synth", str(tmp_path / "d"), "--size", "30"])
    assert exit_info.value.code == EXIT_USAGE
    assert_one_error_line(capsys.readouterr().err, "--size", "multiple of 8", prog="pspnet-data synth")


# --- inspect ------------------------------------------------------------------------


def test_inspect_split(tiny_pairs, tmp_path, capsys):
    status, out, err = run(capsys, "inspect", tiny_pairs / "train", "--cache-dir", tmp_path / "c", "--quiet")
    assert status == 0, err
    assert err == ""
    assert "files: 4 composites of 64x32" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    road = float(lines["road"].split()[-1])
    assert 5.0 < road < 80.0
    assert "decode distance to the nearest palette colour: mean" in out
    assert "farther than 30" in out
    # The shares printed add up to 100 %.
    shares = [float(line.split()[-1]) for line in out.splitlines()[3:23]]
    assert sum(shares) == pytest.approx(100.0, abs=0.2)


def test_inspect_negative_far_is_a_usage_error_before_the_report(tiny_pairs, tmp_path, capsys):
    # It was refused after the split was read and half its report printed, with exit status 1.
    with pytest.raises(SystemExit) as exit_info:
        data_main(["inspect", str(tiny_pairs / "val"), "--far", "-5", "--no-cache", "--quiet"])
    assert exit_info.value.code == EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == ""
    assert_one_error_line(err, "--far", "-5", prog="pspnet-data inspect")


def test_inspect_data_folder_shows_both_splits(tiny_pairs, tmp_path, capsys):
    status, out, err = run(capsys, "inspect", tiny_pairs, "--cache-dir", tmp_path / "c", "--quiet")
    assert status == 0, err
    assert f"folder: {tiny_pairs / 'train'}" in out and f"folder: {tiny_pairs / 'val'}" in out
    assert "files: 4 " in out and "files: 2 " in out


def test_inspect_no_cache_writes_nothing(tiny_pairs, tmp_path, capsys):
    status, out, _ = run(capsys, "inspect", tiny_pairs / "val", "--no-cache", "--cache-dir", tmp_path / "c", "--quiet")
    assert status == 0 and "files: 2" in out
    assert not (tmp_path / "c").exists()


def test_inspect_missing_folder(tmp_path, capsys):
    status, _, err = run(capsys, "inspect", tmp_path / "missing")
    assert status == EXIT_ERROR
    assert_one_error_line(err, "data folder not found", str(tmp_path / "missing"))


def test_inspect_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    status, _, err = run(capsys, "inspect", tmp_path / "empty", "--cache-dir", tmp_path / "c")
    assert status == EXIT_ERROR
    assert_one_error_line(err, "no .jpg/.jpeg/.png images", str(tmp_path / "empty"))


def test_inspect_non_image_files_warned(tiny_pairs, tmp_path, capsys):
    (tiny_pairs / "val" / "notes.txt").write_text("x")
    (tiny_pairs / "val" / "labels.csv").write_text("x")
    status, out, err = run(capsys, "inspect", tiny_pairs / "val", "--cache-dir", tmp_path / "c", "--quiet")
    assert status == 0
    assert err.strip().splitlines() == [
        f"pspnet-data: warning: skipped 2 non-image files in {tiny_pairs / 'val'} (labels.csv, notes.txt); "
        "only .jpg/.jpeg/.png are read"
    ]
    assert "files: 2" in out


def test_inspect_truncated_file(tiny_pairs, tmp_path, capsys):
    path = tiny_pairs / "train" / "2.jpg"
    path.write_bytes(path.read_bytes()[:250])
    status, _, err = run(capsys, "inspect", tiny_pairs / "train", "--cache-dir", tmp_path / "c", "--quiet")
    assert status == EXIT_ERROR
    assert_one_error_line(err, "truncated JPEG", str(path))


def test_inspect_unreadable_file(tiny_pairs, tmp_path, capsys):
    path = tiny_pairs / "train" / "2.jpg"
    path.write_bytes(b"not an image at all")
    status, _, err = run(capsys, "inspect", tiny_pairs / "train", "--cache-dir", tmp_path / "c", "--quiet")
    assert status == EXIT_ERROR
    assert_one_error_line(err, "not a JPEG or PNG image", str(path))


def test_inspect_skip_bad(tiny_pairs, tmp_path, capsys):
    path = tiny_pairs / "train" / "2.jpg"
    path.write_bytes(path.read_bytes()[:250])
    status, out, err = run(
        capsys, "inspect", tiny_pairs / "train", "--skip-bad", "--cache-dir", tmp_path / "c", "--quiet"
    )
    assert status == 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pspnet-data: warning: skipped 1 unusable file")
    assert "2.jpg" in lines[0]
    assert "files: 3 composites" in out and "1 skipped" in out


def test_inspect_not_two_to_one(tiny_pairs, tmp_path, capsys):
    image = np.random.default_rng(0).integers(0, 256, size=(32, 50, 3), dtype=np.uint8)
    cv2.imwrite(str(tiny_pairs / "train" / "7.png"), image)
    status, _, err = run(capsys, "inspect", tiny_pairs / "train", "--cache-dir", tmp_path / "c", "--quiet")
    assert status == EXIT_ERROR
    assert_one_error_line(err, "not a 2:1", "7.png is 50x32")


def test_inspect_greyscale(tiny_pairs, tmp_path, capsys):
    path = tiny_pairs / "train" / "1.jpg"
    cv2.imwrite(str(path), cv2.imread(str(path), cv2.IMREAD_GRAYSCALE))
    status, _, err = run(capsys, "inspect", tiny_pairs / "train", "--cache-dir", tmp_path / "c", "--quiet")
    assert status == EXIT_ERROR
    assert_one_error_line(err, "greyscale", str(path))


def test_inspect_differing_sizes(tiny_pairs, tmp_path, capsys):
    make_pairs(tmp_path / "big", 1, size=64)
    (tmp_path / "big" / "1.jpg").rename(tiny_pairs / "train" / "5.jpg")
    status, _, err = run(capsys, "inspect", tiny_pairs / "train", "--cache-dir", tmp_path / "c", "--quiet")
    assert status == EXIT_ERROR
    assert_one_error_line(err, "5.jpg is 128x64", "one size")


def test_inspect_labels_far_from_palette(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for number in (1, 2):  # a photo where the label half should be
        noise = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f"{number}.png"), np.concatenate([noise, noise], axis=1))
    status, out, err = run(capsys, "inspect", folder, "--cache-dir", tmp_path / "c", "--quiet")
    assert status == 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pspnet-data: warning: 2 of 2 label halves")
    assert "mostly far from the Cityscapes palette" in lines[0] and "%" in lines[0]
    assert "label halves mostly far from the palette: 2" in out


def test_inspect_interrupted_leaves_no_cache(tiny_pairs, tmp_path, capsys, monkeypatch):
    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cache, "_decode_chunk", interrupted)
    status, _, err = run(capsys, "inspect", tiny_pairs / "train", "--cache-dir", tmp_path / "c", "--quiet")
    assert status == EXIT_INTERRUPTED
    assert err.strip() == "pspnet-data: interrupted"
    assert list((tmp_path / "c").iterdir()) == []


# --- as a separate process ------------------------------------------------------------

# TensorFlow's C++ start-up chatter (imported through ``import pspnet``), not ours.
_BACKEND_NOISE = ("WARNING: All log messages before absl::InitializeLog()", "I0000 ", "W0000 ", "E0000 ")


def _own_lines(stderr: str) -> str:
    return "\n".join(line for line in stderr.splitlines() if not line.startswith(_BACKEND_NOISE))


def test_command_missing_folder_subprocess(tmp_path):
    result = subprocess.run(
        [*COMMAND, "inspect", str(tmp_path / "nope")], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert result.returncode == EXIT_ERROR
    assert _own_lines(result.stderr).strip() == f"pspnet-data: error: data folder not found: {tmp_path / 'nope'}"
    assert "Traceback" not in result.stderr


def test_command_truncated_file_subprocess(tiny_pairs, tmp_path):
    path = tiny_pairs / "val" / "1.jpg"
    path.write_bytes(path.read_bytes()[:200])
    result = subprocess.run(
        [*COMMAND, "inspect", str(tiny_pairs / "val"), "--cache-dir", str(tmp_path / "c")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == EXIT_ERROR
    assert "Traceback" not in result.stderr
    assert_one_error_line(_own_lines(result.stderr), "truncated JPEG", str(path))
