"""Speed benchmarks of the model presets (thin wrapper of ``pspnet-bench``).

    python scripts/benchmark.py models                                   # all presets, 256x256, CPU
    python scripts/benchmark.py models --presets fast seed --batch-size 2 --steps 3
    KERAS_BACKEND=jax python scripts/benchmark.py models --dtype-policy mixed_bfloat16

Prints, per preset: parameters, forward GFLOPs per image, training and inference
images/s; the results are recorded in docs/BENCHMARKS.md.
"""

import sys

from pspnet.cli import bench_main

if __name__ == "__main__":
    sys.exit(bench_main())
