"""Train a PSPNet into a resumable run folder (thin wrapper of ``pspnet-train``).

    python scripts/train.py                       # demo: synthetic data, fast preset, < 3 min on a CPU
    python scripts/train.py --data ../shared/data/cityscapes_data --preset fast --epochs 50
    python scripts/train.py --data ../shared/data/cityscapes_data --preset seed --head rgb \
        --optimizer adam --lr 1e-3 --batch-size 10 --no-flip --no-scale   # the seed's recipe
    python scripts/train.py --data DIR --preset pspnet50 --optimizer sgd --lr 0.01 \
        --weight-decay 1e-4 --distribute            # every visible GPU, data-parallel

Run the same command again to resume after a crash or a kill. Every flag:
``python scripts/train.py --help``.
"""

import sys

from pspnet.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main())
