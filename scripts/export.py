"""Export a trained model to ONNX, LiteRT or SavedModel (thin wrapper of ``pspnet-export``).

    python scripts/export.py --model runs/demo-fast-classes/best.keras --format onnx --out exports/pspnet.onnx

The artefact is checked against the Keras model in its own runtime before it
is written, with PATH.json (classes, colours, input and output) beside it.
"""

import sys

from pspnet.cli import export_main

if __name__ == "__main__":
    sys.exit(export_main())
