"""The "lite" presets: an ImageNet-pretrained EfficientNet-Lite (0, 1 or 2) and a small pyramid head."""

from __future__ import annotations

from keras import layers

from pspnet.models.backbones import lite_features
from pspnet.models.blocks import classifier, conv_bn_relu, fcn_head, output_head, pyramid_pooling_module
from pspnet.models.layers import ResizeToMatch

FUSION_STRIDE = 4  # the backbone features that the "fusion" decoder adds: 1/4 of the input
FUSION_CHANNELS = 48  # their width after the 1x1 projection (DeepLabV3+'s)


def build_lite(
    inputs,
    channels: int,
    head: str,
    dropout: float,
    output_stride: int,
    variant: str = "lite0",
    decoder: str = "pyramid",
):
    """EfficientNet-Lite ``variant`` (``pspnet.models.backbones``) at output stride 16 with a small pyramid head.

    The backbone's last block (320 channels; Lite2's 352) at 1/16 of the input (its last
    stride-2 stage dilated instead of strided; 8 and 32 on request), PSPNet's
    pyramid of bins 1, 2, 3 and 6 reduced to 96 channels each (conv-BN-ReLU),
    concatenated with the features, then a 3x3 conv of 128 + BN + ReLU,
    dropout, a 1x1 classifier and bilinear upsampling to the input. Built to
    start from ImageNet weights (``backbone_weights="imagenet"``), which make
    the difference when training is short. The presets "lite", "lite1" and
    "lite2" are this head on Lite0, Lite1 and Lite2 (``presets.LITE_VARIANTS``).

    ``decoder="fusion"`` adds DeepLabV3+'s low-level fusion before the
    classifier: the pyramid's 128 channels, upsampled to 1/4 of the input,
    concatenated with the backbone's 1/4 features projected to 48 channels, then
    a depthwise-separable 3x3 conv of 128 + BN + ReLU; the edges of thin
    classes (poles, signs, riders) come from those 1/4 features.
    """
    endpoints = lite_features(inputs, variant, output_stride)
    x = pyramid_pooling_module(endpoints["last"], (1, 2, 3, 6), 96, name="ppm")  # (B, H/16, W/16, 320 + 384)
    if decoder == "fusion":
        x = conv_bn_relu(x, 128, 3, "head")  # (B, H/16, W/16, 128)
        x = _fuse_low_level(x, endpoints[FUSION_STRIDE], "fusion")  # (B, H/4, W/4, 128)
        x = classifier(x, channels, dropout, "head")
    else:
        x = fcn_head(x, 128, channels, dropout, "head")
    return output_head(x, inputs, head, "logits" if head == "classes" else "rgb")


def _fuse_low_level(x, low, name: str):
    """Upsamples ``x`` to ``low``'s size and fuses them: concat, depthwise 3x3 + BN + ReLU, 1x1 conv-BN-ReLU."""
    low = conv_bn_relu(low, FUSION_CHANNELS, 1, f"{name}_low")
    x = ResizeToMatch(name=f"{name}_upsampling")([x, low])
    x = layers.Concatenate(name=f"{name}_concat")([x, low])
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"{name}_depthwise")(x)
    x = layers.BatchNormalization(name=f"{name}_depthwise_bn")(x)
    x = layers.ReLU(name=f"{name}_depthwise_relu")(x)
    return conv_bn_relu(x, 128, 1, f"{name}_pointwise")
