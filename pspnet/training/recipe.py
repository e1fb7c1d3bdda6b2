"""The compiled model of a training config: network, loss, metrics and optimizer.

``pspnet-train`` and ``pspnet-bench train`` both build their model here, so the
benchmark times exactly what training runs.
"""

from __future__ import annotations

import keras
import numpy as np

from pspnet.data.classes import CITYSCAPES, ClassTable
from pspnet.models.builder import BACKBONE_PREFIXES, build_pspnet
from pspnet.models.modelfile import ModelInfo
from pspnet.models.precision import policy_scope, resolve_policy
from pspnet.palette import IGNORE_INDEX
from pspnet.training.config import TrainConfig
from pspnet.training.losses import OHEM_THRESHOLD, WeightedSparseCrossentropy
from pspnet.training.optimizers import add_l2_penalty, build_optimizer
from pspnet.training.pixel_accuracy import PixelAccuracy


def model_info(config: TrainConfig, classes: ClassTable = CITYSCAPES) -> ModelInfo:
    """What the model of a resolved config is (stored in every model file it saves).

    Args:
        config: a resolved TrainConfig.
        classes: the class table of the data it trains on; stored in the
            file, so that evaluation, prediction and export name and colour
            the classes the model learned.
    """
    return ModelInfo(
        head=config.head,
        num_classes=classes.num_classes if config.head == "classes" else 3,
        preset=config.preset,
        image_size=tuple(config.image_size),
        classes=classes.to_json(),
        layout=config.layout,
    )


def build_and_compile(
    config: TrainConfig,
    weights: np.ndarray | None,
    aux_head: bool | None = None,
    any_size: bool = False,
    classes: ClassTable = CITYSCAPES,
):
    """Builds and compiles the model of a resolved config (call it inside the distribution scope).

    The targets are train ids 0 to C-1 with 255 for every ignored pixel (a
    data set's own ignore index is mapped to 255 when its masks are read).

    Args:
        config: a resolved TrainConfig.
        weights: per-class loss weights (C,), or None.
        aux_head: give pspnet50 its auxiliary head; None: when the config's
            ``aux_loss_weight`` is positive (and the head is "classes").
        any_size: build the input as (None, None, 3), so that the saved model
            runs at any size (the batches fix the traced size, so training is
            as fast); else at the config's image size.
        classes: the class table: C = ``classes.num_classes`` logits, and the
            mean IoU over those C classes.

    Returns:
        (compiled model, whether it has the auxiliary head).
    """
    if aux_head is None:
        aux_head = config.preset == "pspnet50" and config.head == "classes" and config.aux_loss_weight > 0
    # "auto" is settled by pspnet.training.loop before the run is written; a
    # config that reaches here unsettled (a benchmark's) is settled the same way.
    with policy_scope(resolve_policy(config.precision, config.preset)):
        model = build_pspnet(
            preset=config.preset,
            num_classes=classes.num_classes,
            input_shape=(None, None, 3) if any_size else (*config.image_size, 3),
            head=config.head,
            backbone_weights=None if config.backbone_weights == "none" else config.backbone_weights,
            aux_head=aux_head,
            dropout=config.dropout,
            **({} if config.output_stride is None else {"output_stride": config.output_stride}),
            **({} if config.decoder is None else {"decoder": config.decoder}),
        )

    loss, metrics = _loss_and_metrics(config.head, weights, classes.num_classes, config.ohem)
    if config.optimizer == "sgd":
        add_l2_penalty(model, config.weight_decay)
    loss_weights = None
    if aux_head:
        loss = {"main": loss, "aux": keras.losses.deserialize(keras.losses.serialize(loss))}
        loss_weights = {"main": 1.0, "aux": config.aux_loss_weight}
        metrics = {"main": metrics}
    model.compile(
        optimizer=build_optimizer(config, BACKBONE_PREFIXES[config.preset]),
        loss=loss,
        loss_weights=loss_weights,
        metrics=metrics,
        jit_compile="auto" if config.jit_compile is None else config.jit_compile,
        steps_per_execution=config.steps_per_execution,
    )
    # Create the optimizer's slots now, eagerly: created during the first traced
    # train step instead, they cost TensorFlow about 15 s more for the fast preset.
    model.optimizer.build(model.trainable_variables)
    return model, aux_head


def _loss_and_metrics(head: str, weights: np.ndarray | None, num_classes: int, ohem: bool = False) -> tuple:
    """The loss and per-epoch metrics of a head: cross-entropy (weighted, OHEM) and mean IoU over C classes, or MSE."""
    if head == "rgb":
        return keras.losses.MeanSquaredError(), []
    if weights is not None and len(weights) != num_classes:
        raise ValueError(f"{len(weights)} class weights for {num_classes} classes")
    if weights is None and not ohem:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=IGNORE_INDEX)
    else:
        weights = np.ones(num_classes) if weights is None else np.asarray(weights)
        loss = WeightedSparseCrossentropy(weights.tolist(), ohem_threshold=OHEM_THRESHOLD if ohem else None)
    metrics = [
        keras.metrics.MeanIoU(num_classes, ignore_class=IGNORE_INDEX, sparse_y_pred=False, name="mean_iou"),
        PixelAccuracy(name="pixel_accuracy"),
    ]
    return loss, metrics
