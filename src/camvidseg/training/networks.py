"""The networks the project builds, one record each, and the input normalisation they share.

Torch-free on purpose: the model card reads these records without loading torch and torchvision
(seconds per process); ``training.segmenter`` builds the networks from them.
"""

from __future__ import annotations

from typing import NamedTuple

# torchvision's ImageNet normalisation, on 0-255 pixels: every backbone was trained with it
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


class Network(NamedTuple):
    """One record per model: all the project builds or states from a ``model.name`` (the
    schema's ``model.name`` enum lists the same names; a test holds them together)."""

    builder: str  # the torchvision.models.segmentation function
    has_aux: bool  # it has an auxiliary head (model.aux_loss_weight applies)
    backbone_weights: str  # torchvision's ImageNet weights enum of its backbone
    architecture: str  # what the model card calls it


MODELS = {
    "deeplabv3_resnet50": Network(
        "deeplabv3_resnet50", True, "ResNet50_Weights",
        "DeepLabV3 (ASPP) head on a ResNet-50 backbone",
    ),
    "deeplabv3_resnet101": Network(
        "deeplabv3_resnet101", True, "ResNet101_Weights",
        "DeepLabV3 (ASPP) head on a ResNet-101 backbone",
    ),
    "deeplabv3_mobilenet_v3_large": Network(
        "deeplabv3_mobilenet_v3_large", True, "MobileNet_V3_Large_Weights",
        "DeepLabV3 (ASPP) head on a MobileNetV3-Large backbone",
    ),
    "lraspp_mobilenet_v3_large": Network(
        "lraspp_mobilenet_v3_large", False, "MobileNet_V3_Large_Weights",
        "LR-ASPP head on a MobileNetV3-Large backbone",
    ),
    "fcn_resnet50": Network(
        "fcn_resnet50", True, "ResNet50_Weights", "FCN head on a ResNet-50 backbone"
    ),
}  # fmt: skip
