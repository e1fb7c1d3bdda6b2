"""Command-line entry points: pspnet-data, -train, -evaluate, -predict, -export, -bench.

The only package that parses arguments and prints errors for people: one module a
command (``pspnet.cli.train`` ...), each with its ``main``, all sharing
``pspnet.cli.common``'s error wrapper. Importing it loads no backend.
"""

from pspnet.cli.bench import main as bench_main
from pspnet.cli.common import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE, _run
from pspnet.cli.data import main as data_main
from pspnet.cli.evaluate import main as evaluate_main
from pspnet.cli.export import main as export_main
from pspnet.cli.predict import main as predict_main
from pspnet.cli.train import main as train_main

__all__ = [
    "bench_main",
    "data_main",
    "evaluate_main",
    "export_main",
    "predict_main",
    "train_main",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "_run",
]
