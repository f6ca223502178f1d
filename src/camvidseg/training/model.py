"""torchvision segmentation networks wrapped in an MMEngine ``BaseModel``.

The head is sized from the palette stage's class count. Backbone weights come from a local file
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
from ..core.device import PRECISIONS, autocast
from ..core.errors import UserError
from .networks import IMAGENET_MEAN, IMAGENET_STD, MODELS
from .torchvision_import import import_torchvision

segmentation = import_torchvision().models.segmentation


def backbone_weights_url(name: str) -> str:
    """Where torchvision publishes the ImageNet weights of this model's backbone."""
    import torchvision.models as tvm

    return getattr(tvm, MODELS[name].backbone_weights).IMAGENET1K_V1.url


def read_plain(path: Path, key: str) -> object:
    """A file read with ``weights_only=True``: one that needs code to unpickle is refused in
    one line. ``key`` names the setting or option the file came from, for the error."""
    if not path.is_file():
        raise UserError(f"{path}: file not found ({key})")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a pickle that needs code, or not a checkpoint at all
        raise UserError(
            f"{path}: refused: not a plain weights file ({type(err).__name__}); only tensors "
            f"and plain containers are loaded from user files ({key})"
        ) from None


def read_weights(path: Path, key: str) -> dict:
    """A weights file's state dict, read weights-only (see ``read_plain``)."""
    state = read_plain(path, key)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"{path}: holds no state dict ({key})")
    return state


def load_backbone(net: torch.nn.Module, path: Path) -> int:
    """Load ImageNet classifier weights into ``net.backbone``; returns the tensors loaded."""
    state = read_weights(path, "model.backbone_weights")
    # Classifier keys are "layer1.0..." (ResNet) or "features.0.0..." (MobileNet); the segmentation
    # backbone is an IntermediateLayerGetter over the ResNet itself or over MobileNet's features.
    state = {k.removeprefix("features."): v for k, v in state.items()}
    target = net.backbone.state_dict()
    fitting = {k: v for k, v in state.items() if k in target and target[k].shape == v.shape}
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


def build_network(name: str, num_classes: int, aux_loss: bool) -> torch.nn.Module:
    if name not in MODELS:
        raise UserError(f"model.name: unknown model {name!r} (choose from {', '.join(MODELS)})")
    builder, has_aux = MODELS[name].builder, MODELS[name].has_aux
    kwargs = {"weights": None, "weights_backbone": None, "num_classes": num_classes}
    if has_aux:
        kwargs["aux_loss"] = aux_loss
    net = getattr(segmentation, builder)(**kwargs)
    # torchvision's MobileNetV3 uses BatchNorm momentum 0.01, tuned for ImageNet-length schedules;
    # on CamVid-length runs the running statistics then lag far behind the weights.
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = 0.1
    return net


class SegDataPreprocessor(BaseDataPreprocessor):
    """Move uint8 batches to the device, then normalise there (cheaper than in the loader)."""

    def __init__(self, channels_last: bool = True):
        super().__init__(non_blocking=True)  # from the loader's pinned memory, without a stall
        self.channels_last = channels_last
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), False)

    def forward(self, data: dict, training: bool = False) -> dict:
        data = self.cast_data(data)
        inputs = data["inputs"]
        if self.channels_last:  # on the uint8 batch: a quarter of the bytes of the float one
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        inputs = (inputs.float() - self.mean) / self.std  # keeps the memory format
        return {"inputs": inputs, "data_samples": data["data_samples"]}


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
        self.net = build_network(name, num_classes, aux_loss=aux_loss_weight > 0)
        if channels_last:  # faster convolutions on CUDA and in oneDNN on the CPU alike
            self.net = self.net.to(memory_format=torch.channels_last)
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
    skipped = sorted(k for k, v in state.items() if k in own and own[k].shape != v.shape)
    fitting = {k: v for k, v in state.items() if k not in skipped}
    result = model.load_state_dict(fitting, strict=False)
    if len(result.missing_keys) > len(own) // 2:
        raise UserError(f"{path}: most model weights are missing from this file (train.load_from)")
    return skipped


def load_trained(path: Path, device: str = "cpu") -> tuple[SegmentationModel, dict]:
    """The weights-only model file the train stage exports (read with weights_only=True)."""
    if not path.is_file():
        raise UserError(f"{path}: trained model not found")
    checkpoint = read_plain(path, "--model")
    if not (isinstance(checkpoint, dict) and {"meta", "state_dict"} <= checkpoint.keys()):
        raise UserError(f"{path}: not a model file exported by the train stage (--model)")
    meta = checkpoint["meta"]
    if meta.get("precision") not in PRECISIONS:
        raise UserError(
            f"{path}: records no precision of its validation (meta.precision: "
            f"{meta.get('precision')!r}; expected one of {', '.join(PRECISIONS)}): export it "
            "again with the train stage (--model)"
        )
    model = SegmentationModel(meta["model"], meta["num_classes"], meta["aux_loss_weight"])
    model.load_state_dict(checkpoint["state_dict"])
    # Exactly the precision training validated in, on any device (autocast has bf16 and fp16 on
    # the CPU too): one checkpoint, one score.
    model.precision = meta["precision"]
    return model.to(device).eval(), meta


def precision_line(path: Path, meta: dict) -> str:
    """What the inference stages print: the precision they run in and where it comes from."""
    return f"precision: {meta['precision']}, as {path.name} records for its validation"
