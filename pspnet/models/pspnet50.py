"""The "pspnet50" preset: the PSPNet paper's network, a dilated ResNet-50 and pyramid pooling.

The backbone's layer names and weight shapes are ``keras.applications.ResNet50``'s,
so its ImageNet weights copy over (``pspnet.models.resnet_weights``).
"""

from __future__ import annotations

from keras import layers

from pspnet.models.blocks import fcn_head, output_head, pyramid_pooling_module
from pspnet.models.layers import InputNormalization

# Keras' ImageNet ResNet50 weights expect caffe-style input: BGR minus the BGR mean.
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

# ResNet-50 stages after the stem: (name, bottleneck filters, blocks, stride, dilation).
# Output stride 8 as in the PSPNet paper: conv4 and conv5 keep the resolution and
# dilate their 3x3 convolutions by 2 and 4 instead of striding.
_RESNET50_STAGES = (("conv2", 64, 3, 1, 1), ("conv3", 128, 4, 2, 1), ("conv4", 256, 6, 1, 2), ("conv5", 512, 3, 1, 4))


def bottleneck(x, filters: int, stride: int, dilation: int, shortcut_conv: bool, name: str):
    """A ResNet-50 v1 bottleneck with ``keras.applications.ResNet50``'s layer names.

    As Keras' ``residual_block_v1``: the stride sits on the first 1x1 conv and on
    the 1x1 shortcut conv; the 3x3 conv may be dilated (same weight shapes).
    """
    bn = dict(epsilon=1.001e-5)
    conv = dict(kernel_initializer="he_normal")
    if shortcut_conv:
        shortcut = layers.Conv2D(4 * filters, 1, strides=stride, name=f"{name}_0_conv", **conv)(x)
        shortcut = layers.BatchNormalization(name=f"{name}_0_bn", **bn)(shortcut)
    else:
        shortcut = x
    x = layers.Conv2D(filters, 1, strides=stride, name=f"{name}_1_conv", **conv)(x)
    x = layers.BatchNormalization(name=f"{name}_1_bn", **bn)(x)
    x = layers.Activation("relu", name=f"{name}_1_relu")(x)
    x = layers.Conv2D(filters, 3, padding="same", dilation_rate=dilation, name=f"{name}_2_conv", **conv)(x)
    x = layers.BatchNormalization(name=f"{name}_2_bn", **bn)(x)
    x = layers.Activation("relu", name=f"{name}_2_relu")(x)
    x = layers.Conv2D(4 * filters, 1, name=f"{name}_3_conv", **conv)(x)
    x = layers.BatchNormalization(name=f"{name}_3_bn", **bn)(x)
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.Activation("relu", name=f"{name}_out")(x)


def dilated_resnet50(x):
    """ResNet-50 at output stride 8; returns (conv4 output, conv5 output).

    Layer names and weight shapes are those of ``keras.applications.ResNet50``
    (``conv1_pad`` ... ``conv5_block3_out``), so its ImageNet weights copy over.
    Every 3x3 conv of conv4 is dilated by 2 and of conv5 by 4, with stride 1
    (as hszhao/semseg's PSPNet; the paper's deep 3x3 stem is replaced by Keras'
    7x7 one so that the weights fit).
    """
    x = layers.ZeroPadding2D(3, name="conv1_pad")(x)
    x = layers.Conv2D(64, 7, strides=2, kernel_initializer="he_normal", name="conv1_conv")(x)
    x = layers.BatchNormalization(epsilon=1.001e-5, name="conv1_bn")(x)
    x = layers.Activation("relu", name="conv1_relu")(x)
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)  # (B, H/4, W/4, 64)
    stage_outputs = {}
    for stage, filters, blocks, stride, dilation in _RESNET50_STAGES:
        for block in range(1, blocks + 1):
            x = bottleneck(
                x,
                filters,
                stride=stride if block == 1 else 1,
                dilation=dilation,
                shortcut_conv=block == 1,
                name=f"{stage}_block{block}",
            )
        stage_outputs[stage] = x
    # conv4: (B, H/8, W/8, 1024), conv5: (B, H/8, W/8, 2048)
    return stage_outputs["conv4"], stage_outputs["conv5"]


def build_pspnet50(inputs, channels: int, head: str, dropout: float, aux_head: bool):
    """The PSPNet paper's network: dilated ResNet-50 + pyramid pooling, output stride 8.

    Source: Zhao et al., "Pyramid Scene Parsing Network", CVPR 2017
    (arXiv:1612.01105), and its reference implementation hszhao/semseg
    ``model/pspnet.py``: ResNet-50 with conv4/conv5 dilated by 2/4 instead of
    strided, pyramid bins (1, 2, 3, 6) each reduced to 512 channels with
    conv-BN-ReLU, concatenation with the 2048 backbone channels, 3x3 conv 512 +
    BN + ReLU + dropout + 1x1 classifier, bilinear upsampling to the input. The
    auxiliary head (``aux_head=True``) is a 3x3 conv 256 + BN + ReLU + dropout +
    1x1 classifier on conv4, upsampled the same way; training weights its loss
    by 0.4. Backbone layer names and shapes are ``keras.applications.ResNet50``'s,
    and photos are normalised caffe-style (RGB -> BGR minus the ImageNet mean)
    as its ImageNet weights expect.
    """
    x = InputNormalization(mean=_CAFFE_MEAN_BGR, std=1.0, to_bgr=True, name="normalization")(inputs)
    conv4, conv5 = dilated_resnet50(x)
    x = pyramid_pooling_module(conv5, (1, 2, 3, 6), 512, name="ppm")  # (B, H/8, W/8, 4096)
    x = fcn_head(x, 512, channels, dropout, "head")
    if not aux_head:
        return output_head(x, inputs, head, "logits" if head == "classes" else "rgb")
    aux = fcn_head(conv4, 256, channels, dropout, "aux_head")
    return {"main": output_head(x, inputs, head, "main"), "aux": output_head(aux, inputs, head, "aux")}
