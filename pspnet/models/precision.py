"""The dtype policy a model is built in: ``"auto"`` picks it from the machine and the preset.

``auto_precision`` chooses mixed bfloat16 where the machine has bfloat16
matrix instructions (``pspnet.hardware.fast_bfloat16``) and the preset
gains from it, float32 elsewhere. ``policy_scope`` builds layers under a policy
and puts the previous global policy back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras

from pspnet.errors import ConfigError

__all__ = ["AUTO", "CPU_BFLOAT16_PRESETS", "auto_precision", "check_policy", "policy_scope", "resolve_policy"]

AUTO = "auto"
# The presets that train faster in mixed_bfloat16 than in float32 on a CPU with
# bfloat16 instructions (docs/BENCHMARKS.md, "Precision"). The lite preset is not
# one: in bfloat16 it trained at 0.83x its float32 rate, and at 0.99x with its
# depthwise convolutions (and their batch norm) kept in float32, as the casts
# around them cost what its pointwise convolutions gain.
CPU_BFLOAT16_PRESETS = ("fast", "seed", "pspnet50")


def auto_precision(machine: dict, preset: str) -> tuple[str, str]:
    """The dtype policy ``--precision auto`` picks, and why, in a few words.

    Args:
        machine: ``pspnet.hardware.describe_machine()`` (its ``kind`` and ``bfloat16``).
        preset: the model preset.

    Returns:
        (``"mixed_bfloat16"`` or ``"float32"``, the reason).
    """
    where = "GPU" if machine["kind"] == "gpu" else "CPU"
    if not machine["bfloat16"]:
        return "float32", f"this {where} has no bfloat16 matrix instructions"
    if where == "CPU" and preset not in CPU_BFLOAT16_PRESETS:
        return "float32", f"the {preset} preset trains faster in float32 on this CPU"
    return "mixed_bfloat16", f"this {where} has bfloat16 matrix instructions"


def resolve_policy(policy: str | None, preset: str, machine: dict | None = None) -> str | None:
    """A Keras dtype policy name, with ``"auto"`` chosen for ``preset`` on this machine.

    Args:
        policy: a Keras dtype policy name, ``"auto"``, or None (the global one).
        preset: the model preset, which ``"auto"`` depends on.
        machine: ``describe_machine()``; None: described when needed.
    """
    if policy != AUTO:
        return policy
    if machine is None:
        from pspnet.hardware import describe_machine

        machine = describe_machine()
    return auto_precision(machine, preset)[0]


def check_policy(policy: str | None) -> None:
    """Raises ConfigError unless ``policy`` is None, "auto" or a dtype policy Keras knows."""
    if policy in (None, AUTO):
        return
    try:
        keras.dtype_policies.get(policy)
    except ValueError as error:
        raise ConfigError(f"invalid dtype policy {policy!r}: {error}") from None


@contextlib.contextmanager
def policy_scope(policy: str | None) -> Iterator[None]:
    """Sets the global dtype policy (None: leaves it) for the block, then restores the previous one.

    Raises:
        ConfigError: a name Keras does not know.
    """
    check_policy(policy)
    previous = keras.config.dtype_policy()
    if policy is not None:
        keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
