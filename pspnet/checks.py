"""Checks of values that every layer takes from users: choices and image sizes.

Plain Python (no Keras), raising ``ConfigError`` that names the flag.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pspnet.errors import ConfigError


def flag_name(name: str) -> str:
    """The command-line flag of a config field (``learning_rate`` -> ``--lr``)."""
    return {"learning_rate": "--lr", "image_size": "--base-size"}.get(name, "--" + name.replace("_", "-"))


def check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    """Raises ``ConfigError`` naming the flag when ``value`` is not one of ``choices``."""
    if value not in choices:
        raise ConfigError(f"{flag_name(name)} must be one of {', '.join(choices)}; got {value!r}")


def parse_size(value, what: str = "size") -> tuple[int, int] | None:
    """An image size as a (height, width) tuple of positive ints.

    Args:
        value: None, N, "N", "HxW" (or "H,W"), or a sequence of one or two ints.
        what: how an error names the value ("--image-size").

    Returns:
        (height, width), or None for None.

    Raises:
        ConfigError: anything else.
    """
    if value is None:
        return None
    original = value
    if isinstance(value, str):
        try:
            value = [int(part) for part in value.lower().replace(",", "x").split("x")]
        except ValueError:
            raise ConfigError(f"{what} must be N or HxW, got {original!r}") from None
    if hasattr(value, "__index__") and not isinstance(value, bool):  # int or NumPy integer
        value = (int(value), int(value))
    if (
        not isinstance(value, (list, tuple))
        or len(value) not in (1, 2)
        or not all(hasattr(v, "__index__") and not isinstance(v, bool) and int(v) > 0 for v in value)
    ):
        raise ConfigError(f"{what} must be a positive N or HxW, got {original!r}")
    return (int(value[0]), int(value[-1]))


def parse_int(value, minimum: int = 0, what: str = "value") -> int:
    """A whole number of at least ``minimum``; raises ``ConfigError`` naming ``what`` otherwise."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = None
    if number is None or number < minimum:
        raise ConfigError(f"{what} must be a whole number >= {minimum}, got {value!r}")
    return number


def argparse_type(parse: Callable[[str], Any], expected: str) -> Callable[[str], Any]:
    """An argparse type calling ``parse``: its ``ConfigError`` becomes ``expected EXPECTED, got 'TEXT'``."""
    import argparse

    def convert(text: str):
        try:
            return parse(text)
        except ConfigError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None

    return convert
