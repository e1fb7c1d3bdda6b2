"""Data-layer benchmark on the real train split: cold and warm load, peak memory, pipeline speed.

    python benchmarks/bench_data.py                      # ../shared/data/cityscapes_data/train
    python benchmarks/bench_data.py PATH/TO/train --batches 60 --json bench.json

Each load runs in a fresh subprocess, so its peak resident memory
(``resource.getrusage(...).ru_maxrss``) is its own:

- cold: ``load_split`` into an empty cache folder (read, decode, write the cache);
  the time includes building the colour lookup table (which is then stored in
  $PSPNET_CACHE, so that later cold loads skip it), not the imports. The
  CPU seconds (user + system, all threads) do not depend on how busy the
  machine is; the wall time does.
- warm: ``load_split`` again, from the cache (memory-mapped).

Both run twice: importing ``pspnet.data`` as a user does (``pspnet/__init__``
imports Keras and its backend, which dominates the memory), and with the data
layer alone (the package's ``__init__`` bypassed), which is what the loader
itself costs. "Cold" means no decoded cache; the JPEG files may sit in the OS
file cache from earlier runs.

The pipeline figure is ``SegmentationDataset`` batches of 16 augmented
256x256 images (random scale 0.5-2.0, crop, flip; then also with jitter),
produced one after another in this process from the cached arrays.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TRAIN = REPO.parent / "shared" / "data" / "cityscapes_data" / "train"

# Runs in the subprocess: prints one JSON line.
_CHILD = r"""
import json, resource, sys, time, types
repo, folder, cache, isolated = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
started = time.perf_counter()
if isolated:  # the data layer alone: skip pspnet/__init__ (Keras, backend)
    package = types.ModuleType("pspnet")
    package.__path__ = [repo + "/pspnet"]
    sys.modules["pspnet"] = package
from pspnet.data import load_split
imported = time.perf_counter()
usage = resource.getrusage(resource.RUSAGE_SELF)
rss_imports, cpu_imports = usage.ru_maxrss, usage.ru_utime + usage.ru_stime
photos, train_ids = load_split(folder, cache_dir=cache, progress=False)
loaded = time.perf_counter()
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({
    "load_cpu_s": usage.ru_utime + usage.ru_stime - cpu_imports,
    "import_s": imported - started, "load_s": loaded - imported, "count": len(photos),
    "shape": list(photos.shape), "bytes": int(photos.nbytes + train_ids.nbytes),
    "rss_after_imports_mib": rss_imports / 1024,
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
"""


def _child(folder: Path, cache: Path, isolated: bool) -> dict:
    # Its own $PSPNET_CACHE: the cold run also builds (and stores) the colour table.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PSPNET_CACHE": str(cache.parent / f"{cache.name}-home")}
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, str(REPO), str(folder), str(cache), "1" if isolated else "0"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )
    if result.returncode:
        raise SystemExit(f"bench_data: the loading subprocess failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _pipeline(folder: Path, cache: Path, batches: int, jitter: bool) -> float:
    """Augmented 256x256 images per second from SegmentationDataset."""
    from pspnet.data import SegmentationDataset, load_split

    photos, train_ids = load_split(folder, cache_dir=cache, progress=False)
    dataset = SegmentationDataset(photos, train_ids, batch_size=16, image_size=256, jitter=jitter, seed=0)
    dataset[0]  # warm-up
    started = time.perf_counter()
    count = 0
    for index in range(1, batches + 1):
        photos_batch, _ = dataset[index % len(dataset)]
        count += len(photos_batch)
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", default=str(DEFAULT_TRAIN), help="split folder (default: real train)")
    parser.add_argument("--batches", type=int, default=60, help="pipeline batches of 16 to time (60)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args()
    folder = Path(args.folder)
    if not folder.is_dir():
        raise SystemExit(f"bench_data: folder not found: {folder}")

    root = Path(tempfile.mkdtemp(prefix="pspnet-bench-"))
    results: dict = {
        "folder": str(folder),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_before": os.getloadavg()[0],  # other processes competing for the CPUs
    }
    try:
        for label, isolated in (("package", False), ("data_layer_only", True)):
            cache = root / label
            results[f"cold_{label}"] = _child(folder, cache, isolated)
            results[f"warm_{label}"] = _child(folder, cache, isolated)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        results["pipeline_images_per_s"] = _pipeline(folder, root / "package", args.batches, jitter=False)
        results["pipeline_jitter_images_per_s"] = _pipeline(folder, root / "package", args.batches, jitter=True)
        results["cache_mib"] = sum(f.stat().st_size for f in (root / "package").rglob("*") if f.is_file()) / 2**20
    finally:
        shutil.rmtree(root, ignore_errors=True)
    results["load_average_after"] = os.getloadavg()[0]

    cold, warm = results["cold_package"], results["warm_package"]
    alone_cold, alone_warm = results["cold_data_layer_only"], results["warm_data_layer_only"]
    print(
        f"{cold['count']} pairs from {folder}; arrays {cold['bytes'] / 2**20:.0f} MiB, "
        f"cache {results['cache_mib']:.0f} MiB"
    )
    print(f"{'':28}{'load s':>8}{'CPU s':>7}{'peak RSS MiB':>14}{'RSS after imports':>19}")
    for name, row in (
        ("cold, import pspnet.data", cold),
        ("warm, import pspnet.data", warm),
        ("cold, data layer alone", alone_cold),
        ("warm, data layer alone", alone_warm),
    ):
        print(
            f"{name:28}{row['load_s']:>8.2f}{row['load_cpu_s']:>7.2f}{row['peak_rss_mib']:>14.0f}"
            f"{row['rss_after_imports_mib']:>19.0f}"
        )
    print(
        f"pipeline: {results['pipeline_images_per_s']:.0f} augmented 256x256 images/s "
        f"({results['pipeline_jitter_images_per_s']:.0f} with jitter)"
    )
    print(
        f"1-minute load average: {results['load_average_before']:.1f} before, "
        f"{results['load_average_after']:.1f} after ({results['cpus']} CPUs)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
