"""Command-line entry points: pspnet-data, -train, -evaluate, -predict, -bench.

The only module that parses arguments and prints errors for people: every
known failure (``PspnetError``, a missing file, a bad flag) ends in one line
``<prog>: error: <what> (<file>)`` and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Callable, Sequence

from pspnet.errors import PspnetError

EXIT_ERROR = 1  # a known failure (bad file, bad data)
EXIT_USAGE = 2  # a bad flag (argparse's own convention)
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line, without the usage block."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _one_line_warnings(prog: str) -> None:
    """Shows warnings as ``prog: warning: message`` without source lines."""

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"{prog}: warning: {message}", file=file or sys.stderr)

    warnings.showwarning = show


def _run(prog: str, body: Callable[[], int | None]) -> int:
    """Runs a command body, turning known failures into one line and an exit code."""
    _one_line_warnings(prog)
    try:
        return int(body() or 0)
    except PspnetError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as error:
        name = error.filename or ""
        print(f"{prog}: error: {error.strerror or error}: {name}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


# --- pspnet-data ------------------------------------------------------------


def data_main(argv: Sequence[str] | None = None) -> int:
    """``pspnet-data synth OUT ...`` and ``pspnet-data inspect DIR``."""
    raise SystemExit(EXIT_ERROR)  # filled in by the data layer


# --- pspnet-train -----------------------------------------------------------


def train_main(argv: Sequence[str] | None = None) -> int:
    """``pspnet-train``: every TrainConfig field as a flag."""
    raise SystemExit(EXIT_ERROR)  # filled in with training


# --- pspnet-evaluate --------------------------------------------------------


def evaluate_main(argv: Sequence[str] | None = None) -> int:
    """``pspnet-evaluate --model RUN/best.keras --data DIR [--out DIR]``."""
    raise SystemExit(EXIT_ERROR)  # filled in with evaluation


# --- pspnet-predict ---------------------------------------------------------


def predict_main(argv: Sequence[str] | None = None) -> int:
    """``pspnet-predict --model RUN/best.keras --input PATH --out DIR``."""
    raise SystemExit(EXIT_ERROR)  # filled in with prediction


# --- pspnet-bench -----------------------------------------------------------


def bench_main(argv: Sequence[str] | None = None) -> int:
    """``pspnet-bench``: the speed table of docs/BENCHMARKS.md."""
    raise SystemExit(EXIT_ERROR)  # filled in with the benchmarks
