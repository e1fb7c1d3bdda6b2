"""The PSPNet builder and its presets: the seed's network, the paper's, a fast one, pretrained lite ones.

Every preset is a functional ``keras.Model`` built from ``keras.layers`` and the
registered layers of ``pspnet.models.layers`` only, so it runs on TensorFlow, JAX and
PyTorch, saves as ``.keras`` and loads back after ``import pspnet``. Models take
photos in the 0-255 range (RGB, float or uint8 values) and normalise inside.

Presets (``PRESETS``):

- ``"fast"`` (``build_pspnet``'s default; ``pspnet-train``'s is ``"lite"``): the seed's
  dilated residual blocks and four-branch pyramid behind a strided stem, at output
  stride 8 (``pspnet.models.fast``).
- ``"seed"``: the Kaggle notebook's network, layer for layer (``pspnet.models.seed``).
- ``"pspnet50"``: the PSPNet paper's dilated ResNet-50 network (``pspnet.models.pspnet50``).
- ``"lite"``: an ImageNet-pretrained EfficientNet-Lite0 with a small pyramid head (``pspnet.models.lite``);
  ``"lite1"`` and ``"lite2"``: the same head on EfficientNet-Lite1 and Lite2.

Example:
    >>> import pspnet
    >>> model = pspnet.build_pspnet("fast", num_classes=19, input_shape=(None, None, 3))
    >>> logits = model.predict(photos)  # (B, H, W, 19) float32
"""

from __future__ import annotations

import functools
import numbers
import os
from collections.abc import Sequence

import keras

from pspnet.errors import ConfigError
from pspnet.models.backbones import load_lite_weights, prefix
from pspnet.models.fast import build_fast
from pspnet.models.lite import build_lite
from pspnet.models.presets import DECODERS, HEADS, LITE_VARIANTS, MIN_SIZE, OUTPUT_STRIDES, PRESETS, PRETRAINED
from pspnet.models.pspnet50 import build_pspnet50
from pspnet.models.resnet_weights import copy_backbone_weights, load_resnet50
from pspnet.models.seed import build_seed

# Layer-name prefixes of each preset's backbone; the layers after it (pyramid,
# classifiers) are the "head" that the paper's SGD trains at 10x the rate.
BACKBONE_PREFIXES = {
    "fast": ("stem_", "block_"),
    "seed": ("block_",),
    "pspnet50": ("conv1_", "conv2_", "conv3_", "conv4_", "conv5_"),
    **{preset: (prefix(variant),) for preset, variant in LITE_VARIANTS.items()},
}

# Each preset's graph builder, called as builder(inputs, channels, head, **options),
# and the options it takes.
_BUILDERS = {
    "fast": (build_fast, ("dropout", "output_stride")),
    "seed": (build_seed, ()),
    "pspnet50": (build_pspnet50, ("dropout", "aux_head")),
    **{
        preset: (functools.partial(build_lite, variant=variant), ("dropout", "output_stride", "decoder"))
        for preset, variant in LITE_VARIANTS.items()
    },
}


def build_pspnet(
    preset: str = "fast",
    num_classes: int = 19,
    input_shape: Sequence[int | None] = (256, 256, 3),
    head: str = "classes",
    backbone_weights: str | os.PathLike | None = None,
    aux_head: bool = False,
    dropout: float = 0.1,
    output_stride: int | None = None,
    decoder: str | None = None,
    name: str | None = None,
) -> keras.Model:
    """Builds a PSPNet segmentation model.

    Args:
        preset: one of ``PRESETS``: ``"fast"``, ``"seed"``, ``"pspnet50"``, ``"lite"``, ``"lite1"``
            or ``"lite2"``.
        num_classes: number of classes of the ``"classes"`` head.
        input_shape: (height, width, 3); height and width may be ``None``.
        head: ``"classes"`` for per-pixel logits (B, H, W, num_classes), or ``"rgb"``
            for the seed's sigmoid colour image (B, H, W, 3). Both float32, also under
            mixed precision.
        backbone_weights: ``"pspnet50"`` and the lite presets: ``None`` (random) or
            ``"imagenet"``; for a lite preset also a ``.pth``/``.npz`` file of its Lite variant
            (``pspnet.models.backbones``); for ``"pspnet50"`` ``"imagenet"`` is Keras'
            ResNet50 weights, downloaded once into ``~/.keras/models``, or the path of a weights file of
            ``keras.applications.ResNet50(include_top=False)`` (Keras' own
            ``resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5``, or
            ``save_weights`` output).
        aux_head: ``"pspnet50"`` only: also return the auxiliary FCN head on conv4;
            the outputs are then a dict ``{"main": ..., "aux": ...}``.
        dropout: dropout rate before the classifier (``"fast"``, ``"pspnet50"``; the
            seed has none).
        output_stride: input size / feature size: ``"fast"`` 8 (default) or 4;
            the lite presets 16 (default), 8 or 32.
        decoder: the lite presets: ``"pyramid"`` (default: the pyramid's output is
            classified at the output stride) or ``"fusion"`` (DeepLabV3+'s decoder: fused
            with the backbone's 1/4 features first, for sharper edges and thin classes).
        name: model name; defaults to ``"pspnet_<preset>"``.

    Returns:
        A functional ``keras.Model`` taking photos (B, H, W, 3) in 0-255.

    Raises:
        ConfigError: an invalid preset, head, size, class count or option.
    """
    input_shape = _check_arguments(preset, num_classes, input_shape, head, dropout)
    output_stride = _check_preset_options(preset, backbone_weights, aux_head, output_stride)
    decoder = _check_decoder(preset, decoder)
    # Load the ResNet-50 weights first: a bad path fails before the slow build.
    source = None if backbone_weights is None or preset != "pspnet50" else load_resnet50(backbone_weights)

    builder, option_names = _BUILDERS[preset]
    options = {"dropout": float(dropout), "output_stride": output_stride, "aux_head": aux_head, "decoder": decoder}
    inputs = keras.Input(shape=input_shape, name="input")
    channels = num_classes if head == "classes" else 3
    outputs = builder(inputs, channels, head, **{option: options[option] for option in option_names})
    model = keras.Model(inputs, outputs, name=name or f"pspnet_{preset}")
    if source is not None:
        copy_backbone_weights(source, model)
    if preset in LITE_VARIANTS and backbone_weights is not None:
        load_lite_weights(model, backbone_weights, LITE_VARIANTS[preset])
    return model


def _check_arguments(preset: str, num_classes, input_shape, head: str, dropout) -> tuple:
    """Validates the arguments every preset takes; returns the input shape as a tuple."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if head not in HEADS:
        raise ConfigError(f"unknown head {head!r}; choose one of {', '.join(HEADS)}")
    if not isinstance(num_classes, numbers.Integral) or isinstance(num_classes, bool) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
    input_shape = _check_input_shape(input_shape, MIN_SIZE[preset], preset)
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0 <= dropout < 1:
        raise ConfigError(f"dropout must be a rate in [0, 1), got {dropout!r}")
    return input_shape


def _check_preset_options(preset: str, backbone_weights, aux_head: bool, output_stride) -> int | None:
    """Validates the options only some presets take; returns the output stride (None: no choice)."""
    if preset not in PRETRAINED and backbone_weights is not None:
        raise ConfigError(f"backbone_weights is for the {', '.join(PRETRAINED)} presets only, not {preset!r}")
    if preset != "pspnet50" and aux_head:
        raise ConfigError(f"aux_head is for the pspnet50 preset only, not {preset!r}")
    if output_stride is not None and preset not in OUTPUT_STRIDES:
        raise ConfigError(f"output_stride is for the {', '.join(OUTPUT_STRIDES)} presets only, not {preset!r}")
    if preset in OUTPUT_STRIDES:
        output_stride = OUTPUT_STRIDES[preset][0] if output_stride is None else output_stride
        if output_stride not in OUTPUT_STRIDES[preset]:
            choices = " or ".join(map(str, sorted(OUTPUT_STRIDES[preset])))
            raise ConfigError(f"output_stride must be {choices} for the {preset} preset, got {output_stride!r}")
    return output_stride


def _check_decoder(preset: str, decoder) -> str | None:
    """Validates the decoder option; returns it (the lite presets' default: "pyramid"), None elsewhere."""
    if preset not in LITE_VARIANTS:
        if decoder is not None:
            raise ConfigError(f"decoder is for the {', '.join(LITE_VARIANTS)} presets only, not {preset!r}")
        return None
    if decoder is None:
        return DECODERS[0]
    if decoder not in DECODERS:
        raise ConfigError(f"decoder must be {' or '.join(DECODERS)}, got {decoder!r}")
    return decoder


def _check_input_shape(input_shape, min_size: int, preset: str) -> tuple:
    """Validates (height, width, 3) with None or int >= min_size sizes."""
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise ConfigError(f"input_shape must be (height, width, 3), got {input_shape!r}") from None
    if len(shape) != 3 or shape[2] != 3:
        raise ConfigError(f"input_shape must be (height, width, 3) for RGB photos, got {shape!r}")
    for size in shape[:2]:
        if size is None:
            continue
        if not isinstance(size, numbers.Integral) or isinstance(size, bool) or size < min_size:
            raise ConfigError(
                f"input_shape {shape!r}: height and width must be None or integers "
                f">= {min_size} for the {preset} preset"
            )
    return tuple(None if s is None else int(s) for s in shape)
