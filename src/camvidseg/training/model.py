"""torchvision segmentation networks wrapped in an MMEngine ``BaseModel``, for training.

The network itself is ``training.segmenter``'s (what inference loads, without MMEngine); the head
is sized from the palette stage's class count. Backbone weights come from a local file
(``resources/weights/`` for ``imagenet``, fetched by its own rule) and are read with
``weights_only=True``: nothing is downloaded here and no user file is unpickled.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn.functional as F
from mmengine.model import BaseDataPreprocessor, BaseModel

from .. import IGNORE_INDEX
from ..core.device import autocast
from ..core.errors import UserError
from .segmenter import Normalize, build_network, fitting_tensors, read_weights


def load_backbone(net: torch.nn.Module, path: Path) -> int:
    """Load ImageNet classifier weights into ``net.backbone``; returns the tensors loaded."""
    state = read_weights(path, "model.backbone_weights")
    # Classifier keys are "layer1.0..." (ResNet) or "features.0.0..." (MobileNet); the segmentation
    # backbone is an IntermediateLayerGetter over the ResNet itself or over MobileNet's features.
    state = {k.removeprefix("features."): v for k, v in state.items()}
    target = net.backbone.state_dict()
    fitting = fitting_tensors(target, state)
    if len(fitting) < 0.9 * len(target):
        raise UserError(
            f"{path}: only {len(fitting)} of {len(target)} backbone tensors fit this model"
        )
    net.backbone.load_state_dict(fitting, strict=False)
    return len(fitting)


def pools_before_batchnorm(name: str) -> bool:
    """DeepLabV3's image-pooling branch normalises one value per image and channel: BatchNorm
    then needs at least two images per batch (per process, without SyncBN) in training."""
    return name.startswith("deeplabv3_")


class SegDataPreprocessor(BaseDataPreprocessor):
    """Move uint8 batches to the device, then normalise there (cheaper than in the loader)."""

    def __init__(self, channels_last: bool = True):
        super().__init__(non_blocking=True)  # from the loader's pinned memory, without a stall
        self.normalize = Normalize(channels_last)

    def forward(self, data: dict, training: bool = False) -> dict:
        data = self.cast_data(data)
        return {"inputs": self.normalize(data["inputs"]), "data_samples": data["data_samples"]}


class SegmentationModel(BaseModel):
    """``forward`` modes: ``loss`` (losses), ``predict`` (per-image pred/label), ``tensor``.

    ``precision`` is what validation and inference run in (``device.precision``); training's own
    mixed precision is the optimizer wrapper's.
    """

    def __init__(
        self,
        name: str,
        num_classes: int,
        aux_loss_weight: float = 0.4,
        channels_last: bool = True,
        class_weights: torch.Tensor | None = None,
    ):
        super().__init__(data_preprocessor=SegDataPreprocessor(channels_last))
        # Not in the state dict: a training choice, not part of the trained model.
        self.register_buffer("class_weights", class_weights, persistent=False)
        self.name = name
        self.num_classes = num_classes
        self.aux_loss_weight = aux_loss_weight
        self.net = build_network(name, num_classes, aux_loss_weight > 0, channels_last)
        self.precision = "fp32"

    def val_step(self, data) -> list:
        with autocast(next(self.parameters()).device.type, self.precision):
            return super().val_step(data)

    test_step = val_step

    def forward(self, inputs: torch.Tensor, data_samples: dict | None = None, mode: str = "tensor"):
        out = self.net(inputs)
        if mode == "tensor":
            return out["out"]
        if mode == "loss":
            labels = data_samples["labels"].long()
            loss = functools.partial(
                F.cross_entropy, weight=self.class_weights, ignore_index=IGNORE_INDEX
            )
            losses = {"loss": loss(out["out"], labels)}
            if "aux" in out:
                aux = loss(out["aux"], labels)
                losses["loss_aux"] = self.aux_loss_weight * aux
            return losses
        if mode == "predict":
            preds = out["out"].argmax(1)
            labels = data_samples["labels"]
            return [{"pred": p, "label": lab} for p, lab in zip(preds, labels, strict=True)]
        raise ValueError(f"unknown mode {mode!r}")


def load_initial_weights(model: torch.nn.Module, path: Path) -> list[str]:
    """Start training from a user's weights for the whole model (``train.load_from``).

    Tensors whose shape differs (the head of a model trained for another class count) are left
    as initialised; returns their names.
    """
    own = model.state_dict()
    state = read_weights(path, "train.load_from")
    fitting = fitting_tensors(own, state)
    skipped = sorted(own.keys() & state.keys() - fitting.keys())
    result = model.load_state_dict(fitting, strict=False)
    if len(result.missing_keys) > len(own) // 2:
        raise UserError(f"{path}: most model weights are missing from this file (train.load_from)")
    return skipped
