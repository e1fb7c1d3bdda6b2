"""Score a saved model on a labelled split (thin wrapper of ``pspnet-evaluate``).

    python scripts/evaluate.py --model runs/demo-fast-classes/best.keras \
        --data ../shared/data/cityscapes_data/val
    python scripts/evaluate.py --model runs/demo-fast-classes/best.keras --data demo --tta --out results/

Writes metrics.json, confusion_matrix.png and per_class_iou.png to --out
(default: the model's folder) and prints the per-class table.
"""

import sys

from pspnet.cli import evaluate_main

if __name__ == "__main__":
    sys.exit(evaluate_main())
