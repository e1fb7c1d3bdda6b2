"""Registers pspnet's Keras objects (layers, losses, metrics, optimizer) so saved models load.

Keras finds the custom classes of a saved model only in its registry, which
fills when the module defining each class is imported. ``import pspnet`` must
not import Keras (the command line answers ``--help`` without loading a
backend), so it calls ``register_when_keras_loads()``: the modules are imported
at once if Keras is loaded already, or right after Keras finishes loading
(a post-import hook on ``keras``, as ``wrapt.register_post_import_hook``
does). Either way ``import pspnet; keras.saving.load_model("RUN/best.keras")``
works, whichever of the two is imported first.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

# Every module that defines a registered Keras class.
SERIALIZABLE_MODULES = (
    "pspnet.models.layers",
    "pspnet.training.losses",
    "pspnet.training.pixel_accuracy",
    "pspnet.training.optimizers",
)


def register_all() -> None:
    """Imports every module with registered Keras classes (imports Keras)."""
    for name in SERIALIZABLE_MODULES:
        importlib.import_module(name)


class _RegisteringLoader(importlib.abc.Loader):
    """Keras's own loader, followed by ``register_all`` once Keras has loaded."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        register_all()

    def __getattr__(self, name):  # resource readers and the like: the real loader's
        return getattr(self._loader, name)


class _KerasImportHook(importlib.abc.MetaPathFinder):
    """Finds ``keras`` as usual, once, and wraps its loader."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "keras":
            return None
        sys.meta_path.remove(self)  # one import of keras is all it waits for
        spec = importlib.util.find_spec("keras")
        if spec is not None and spec.loader is not None:
            spec.loader = _RegisteringLoader(spec.loader)
        return spec


def register_when_keras_loads() -> None:
    """Registers pspnet's Keras classes now if Keras is loaded, else when it loads."""
    if "keras" in sys.modules:
        register_all()
    elif not any(isinstance(finder, _KerasImportHook) for finder in sys.meta_path):
        sys.meta_path.insert(0, _KerasImportHook())
