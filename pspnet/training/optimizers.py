"""The optimizer of a training run: Adam(W), or SGD with momentum as the PSPNet paper trains.

The paper's recipe (hszhao/semseg ``tool/train.py``, PyTorch) differs from
Keras's ``SGD(weight_decay=...)`` in two ways restored here: weight decay is
an L2 penalty whose gradient is added to every gradient (PyTorch's
``weight_decay``; ``add_l2_penalty``), not a decoupled shrink of the weights;
and the layers after the backbone (pyramid and classifiers) learn 10 times
faster than the backbone (``PaperSGD``).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

from pspnet.training.config import TrainConfig


@keras.saving.register_keras_serializable(package="pspnet")
class PaperSGD(keras.optimizers.SGD):
    """SGD with momentum whose layers after the backbone learn ``head_lr_multiplier`` times faster.

    The gradient of every variable of a layer whose name does not start with
    one of ``backbone_prefixes`` is multiplied by ``head_lr_multiplier``
    before the step: with momentum SGD that is exactly PyTorch's parameter
    groups with that many times the learning rate (hszhao/semseg: 10). The L2
    penalty of the paper's weight decay is added to the loss by
    ``add_l2_penalty``, so it is scaled with the rest of the head's gradient,
    as in PyTorch.

    Args:
        learning_rate: the backbone's learning rate (a float or a schedule).
        momentum: SGD momentum.
        head_lr_multiplier: learning-rate factor of the non-backbone layers.
        backbone_prefixes: layer-name prefixes of the backbone's variables
            (empty: every variable is the head's).
        **kwargs: ``keras.optimizers.SGD``'s.
    """

    def __init__(
        self,
        learning_rate=0.01,
        momentum: float = 0.9,
        head_lr_multiplier: float = 1.0,
        backbone_prefixes: Sequence[str] = (),
        name="paper_sgd",
        **kwargs,
    ):
        super().__init__(learning_rate=learning_rate, momentum=momentum, name=name, **kwargs)
        self.head_lr_multiplier = float(head_lr_multiplier)
        self.backbone_prefixes = tuple(backbone_prefixes)
        self._factors = None

    def factor(self, variable) -> float:
        """The learning-rate factor of a model variable (its path starts with its layer's name)."""
        if self.backbone_prefixes and str(variable.path).startswith(self.backbone_prefixes):
            return 1.0
        return self.head_lr_multiplier

    def build(self, variables):
        super().build(variables)
        # In the order of the gradients that apply() receives without variables (JAX's stateless step).
        self._factors = [self.factor(variable) for variable in variables]

    def apply(self, grads, trainable_variables=None):
        factors = self._factors if trainable_variables is None else [self.factor(v) for v in trainable_variables]
        if factors is not None and self.head_lr_multiplier != 1.0:
            grads = [
                grad if grad is None or factor == 1.0 else ops.multiply(grad, ops.cast(factor, grad.dtype))
                for grad, factor in zip(grads, factors)
            ]
        return super().apply(grads, trainable_variables)

    def get_config(self):
        return {
            **super().get_config(),
            "head_lr_multiplier": self.head_lr_multiplier,
            "backbone_prefixes": list(self.backbone_prefixes),
        }


def add_l2_penalty(model, weight_decay: float) -> None:
    """Adds ``weight_decay / 2 * sum(w ** 2)`` over every trainable variable to the model's loss.

    Its gradient is ``weight_decay * w``: PyTorch's ``SGD(weight_decay=...)``,
    the paper's weight decay, applied to every parameter as hszhao/semseg
    does. The logged loss includes the penalty, as with any Keras regularizer.
    """
    if weight_decay:
        for variable in model.trainable_variables:
            variable.regularizer = keras.regularizers.L2(weight_decay / 2)


def build_optimizer(config: TrainConfig, backbone_prefixes: Sequence[str] = ()):
    """The optimizer of a resolved config.

    Adam: Keras's Adam, with decoupled weight decay (AdamW-style) that spares
    norms and biases, and the same learning rate everywhere. SGD:
    ``PaperSGD`` (its weight decay is ``add_l2_penalty`` on the model). Either
    holds a plain learning-rate variable at the base rate, whatever the
    schedule and whatever bounds the run, so that its variables are the same
    on every rerun; the poly rate is set before each step from the
    optimizer's step by ``pspnet.training.callbacks.PolyLearningRate`` (nanoGPT's
    ``get_lr(iter)``).

    Args:
        config: a resolved TrainConfig.
        backbone_prefixes: layer-name prefixes of the backbone (for the head's
            learning-rate factor).

    Returns:
        A keras optimizer.
    """
    learning_rate = config.learning_rate  # the base rate (a poly run's callback lowers it)
    if config.optimizer == "sgd":
        return PaperSGD(
            learning_rate,
            momentum=float(config.momentum),  # Keras's SGD refuses an int (momentum=0 from Python)
            head_lr_multiplier=config.head_lr_multiplier,
            backbone_prefixes=backbone_prefixes,
        )
    optimizer = keras.optimizers.Adam(learning_rate, weight_decay=config.weight_decay or None)
    if config.weight_decay:
        optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    return optimizer
