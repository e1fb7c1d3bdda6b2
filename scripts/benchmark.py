"""Speed benchmarks (thin wrapper of ``pspnet-bench``).

    python scripts/benchmark.py train                                    # the seed's recipe against every preset
    python scripts/benchmark.py train --presets fast --no-seed-recipe --jit-compile --steps-per-execution 4
    python scripts/benchmark.py models                                   # all presets, 256x256, CPU
    python scripts/benchmark.py models --presets fast seed --batch-size 2 --steps 3
    KERAS_BACKEND=jax python scripts/benchmark.py models --dtype-policy mixed_bfloat16

``train`` prints one table: training images/s of the seed notebook's recipe and of
each preset trained the package's way, the speed-up, inference images/s, the input
pipeline alone, achieved TFLOP/s and share of peak. ``models`` prints, per preset:
parameters, forward GFLOPs per image, training and inference images/s. The results
are recorded in docs/BENCHMARKS.md.
"""

import sys

from pspnet.cli import bench_main

if __name__ == "__main__":
    sys.exit(bench_main())
