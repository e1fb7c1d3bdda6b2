"""ImageNet weights for the "pspnet50" backbone: Keras's ResNet50, loaded and copied by layer name."""

from __future__ import annotations

import os

import keras

from pspnet.errors import ConfigError, first_line


def load_resnet50(backbone_weights) -> keras.Model:
    """Builds ``keras.applications.ResNet50`` holding the requested weights.

    Raises:
        ConfigError: the ImageNet weights cannot be had (offline, say), or the
            file is missing or holds other weights. A requested backbone is
            never silently replaced by random weights.
    """
    if backbone_weights == "imagenet":
        try:
            return keras.applications.ResNet50(include_top=False, weights="imagenet")
        except Exception as error:  # offline: urllib/HTTP errors, wrapped by Keras
            raise ConfigError(
                "backbone_weights 'imagenet': could not download Keras's ResNet50 ImageNet weights "
                f'({first_line(error)}); on a machine with a network, run python -c "import keras; '
                'keras.applications.ResNet50(include_top=False)" to fetch them into ~/.keras/models, '
                "or pass the downloaded file "
                "(resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5) as --backbone-weights FILE"
            ) from None
    path = os.fspath(backbone_weights)
    if not os.path.isfile(path):
        raise ConfigError(f"backbone_weights: no such weights file (expected 'imagenet' or a file): {path}")
    try:
        return keras.applications.ResNet50(include_top=False, weights=path)
    except Exception as error:  # Keras raises ValueError, KeyError or OSError here
        raise ConfigError(f"backbone_weights: not weights of ResNet50(include_top=False) ({error}): {path}") from None


def copy_backbone_weights(source: keras.Model, target: keras.Model) -> int:
    """Copies the weights of every layer of ``source`` into ``target``'s layer of that name.

    Args:
        source: a ``keras.applications.ResNet50`` (with ``include_top=True`` its
            ImageNet classifier ``predictions`` is skipped).
        target: a ``"pspnet50"`` model.

    Returns:
        The number of layers copied.

    Raises:
        ConfigError: a backbone layer is missing or its weight shapes differ.
    """
    target_layers = {layer.name: layer for layer in target.layers}
    copied = 0
    for layer in source.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        if layer.name in ("predictions",) and layer.name not in target_layers:
            continue  # the ImageNet classifier of an include_top model
        destination = target_layers.get(layer.name)
        if destination is None:
            raise ConfigError(f"backbone layer {layer.name!r} is missing from model {target.name!r}")
        shapes = [tuple(w.shape) for w in destination.get_weights()]
        if shapes != [tuple(w.shape) for w in weights]:
            raise ConfigError(
                f"backbone layer {layer.name!r}: weight shapes {shapes} differ from {[tuple(w.shape) for w in weights]}"
            )
        destination.set_weights(weights)
        copied += 1
    return copied
