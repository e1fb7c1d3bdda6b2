"""The GPU check's scripts: the carry bundle's subset and size check, and the check's shell syntax.

The check itself needs a lent GPU (docs/BENCHMARKS.md, "GPU check"); these
tests cover what can go wrong before a call: the wrong files, or a bundle over
the 64 MiB a call may carry.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess

import pytest
from conftest import REPO

_spec = importlib.util.spec_from_file_location("gpu_bundle", REPO / "scripts" / "gpu_bundle.py")
gpu_bundle = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_bundle)


def test_spread_picks_evenly_spaced_distinct_indices():
    assert gpu_bundle.spread(500, 250) == list(range(0, 500, 2))
    picked = gpu_bundle.spread(2975, 800)
    assert len(set(picked)) == 800 and picked == sorted(picked) and picked[0] == 0 and picked[-1] < 2975
    assert gpu_bundle.spread(5, 10) == [0, 1, 2, 3, 4]


def test_build_bundle_copies_a_subset_in_natural_order_with_a_manifest(tmp_path):
    data = tmp_path / "cityscapes_data"
    for split, count in (("train", 12), ("val", 4)):
        (data / split).mkdir(parents=True)
        for number in range(1, count + 1):
            (data / split / f"{number}.jpg").write_bytes(bytes(number))
    (data / "train" / "notes.txt").write_text("not an image")

    def download(target, versions):
        target.mkdir(parents=True)
        (target / "keras-3.15.1-py3-none-any.whl").write_bytes(b"wheel")

    out = tmp_path / "bundle"
    (out / "stale").mkdir(parents=True)  # replaced, not merged
    lines = gpu_bundle.build_bundle(out, data, 4, 2, ["3.12"], download=download)
    copied = {split: sorted(p.name for p in (out / "cityscapes_data" / split).iterdir()) for split in ("train", "val")}
    assert copied == {"train": ["1.jpg", "10.jpg", "4.jpg", "7.jpg"], "val": ["1.jpg", "3.jpg"]}
    assert not (out / "stale").exists()
    manifest = (out / "MANIFEST.txt").read_text()
    assert manifest.splitlines() == lines
    assert "cityscapes_data/train: 4 pairs" in manifest and "wheels/keras-3.15.1-py3-none-any.whl" in manifest


def test_size_check_fails_clearly_over_the_limit():
    fits, line = gpu_bundle.size_check(1 << 20, 50 << 20, 64)
    assert fits and "51.0 MiB" in line and "13.0 MiB to spare" in line
    fits, line = gpu_bundle.size_check(2 << 20, 70 << 20, 64)
    assert not fits and line.startswith("gpu_bundle: error:") and "over the 64 MiB limit by 8.0 MiB" in line


def test_bundle_folder_is_git_ignored():
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = subprocess.run(["git", "check-ignore", "-q", ".gpu-bundle/cityscapes_data/train/1.jpg"], cwd=REPO)
    assert ignored.returncode == 0


def test_gpu_check_script_parses():
    result = subprocess.run(["bash", "-n", str(REPO / "scripts" / "gpu_check.sh")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
