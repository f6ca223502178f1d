"""The trained network without MMEngine: what evaluate, visualize, predict and export load.

Importing MMEngine's model package costs every process ~1 s of CPU (it imports torch's FSDP and
DTensor, and with them sympy); the inference stages need none of it. This module builds the
torchvision network, normalises its input and reads the train stage's model file; ``training.model``
wraps the same network in an MMEngine ``BaseModel`` for training. Both hold it as ``net``, so a
state dict of one loads into the other.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from ..core.device import PRECISIONS
from ..core.errors import UserError
from .networks import IMAGENET_MEAN, IMAGENET_STD, MODELS
from .torchvision_import import import_torchvision

models = import_torchvision().models


def backbone_weights_url(name: str) -> str:
    """Where torchvision publishes the ImageNet weights of this model's backbone."""
    return getattr(models, MODELS[name].backbone_weights).IMAGENET1K_V1.url


def read_plain(path: Path, key: str) -> object:
    """A file read with ``weights_only=True``: one that needs code to unpickle is refused in
    one line. ``key`` names the setting or option the file came from, for the error."""
    if not path.is_file():
        raise UserError(f"{path}: file not found ({key})")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # what the weights-only loader raises for a pickle of code
        raise UserError(
            f"{path}: refused: not a plain weights file; only tensors and plain containers are "
            f"loaded from user files ({key})"
        ) from None
    except Exception as err:  # a cut copy or download, or no checkpoint at all
        raise UserError(
            f"{path}: truncated, or not a PyTorch weights file ({type(err).__name__}) ({key})"
        ) from None


def read_weights(path: Path, key: str) -> dict:
    """A weights file's state dict, read weights-only (see ``read_plain``)."""
    state = read_plain(path, key)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"{path}: holds no state dict ({key})")
    return state


def fitting_tensors(own: dict, state: dict) -> dict:
    """The tensors of ``state`` a network with the state dict ``own`` has, key and shape alike."""

    def fits(key, value) -> bool:
        return key in own and isinstance(value, torch.Tensor) and value.shape == own[key].shape

    return {key: value for key, value in state.items() if fits(key, value)}


def build_network(
    name: str, num_classes: int, aux_loss: bool, channels_last: bool = False
) -> torch.nn.Module:
    if name not in MODELS:
        raise UserError(f"model.name: unknown model {name!r} (choose from {', '.join(MODELS)})")
    builder, has_aux = MODELS[name].builder, MODELS[name].has_aux
    kwargs = {"weights": None, "weights_backbone": None, "num_classes": num_classes}
    if has_aux:
        kwargs["aux_loss"] = aux_loss
    net = getattr(models.segmentation, builder)(**kwargs)
    # torchvision's MobileNetV3 uses BatchNorm momentum 0.01, tuned for ImageNet-length schedules;
    # on CamVid-length runs the running statistics then lag far behind the weights.
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = 0.1
    if channels_last:  # faster convolutions on CUDA and in oneDNN on the CPU alike
        net = net.to(memory_format=torch.channels_last)
    return net


class Normalize(torch.nn.Module):
    """uint8 (N, 3, H, W) -> float, ImageNet-normalised, on the device of its buffers."""

    def __init__(self, channels_last: bool = True):
        super().__init__()
        self.channels_last = channels_last
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), False)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        inputs = inputs.to(self.mean.device, non_blocking=True)
        if self.channels_last:  # on the uint8 batch: a quarter of the bytes of the float one
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        return (inputs.float() - self.mean) / self.std  # keeps the memory format


class Segmenter(torch.nn.Module):
    """A trained network for inference: ``normalize`` takes uint8 batches, ``forward`` takes
    normalised ones and returns the main head's logits. ``precision`` is what it runs in: the
    one training validated in (``device.precision``)."""

    def __init__(self, name: str, num_classes: int, aux_loss: bool, channels_last: bool = True):
        super().__init__()
        self.name = name
        self.normalize = Normalize(channels_last)
        self.net = build_network(name, num_classes, aux_loss, channels_last)
        self.precision = "fp32"

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.net(inputs)["out"]


def load_trained(path: Path, device: str = "cpu") -> tuple[Segmenter, dict]:
    """The weights-only model file the train stage exports (read with weights_only=True)."""
    if not path.is_file():
        raise UserError(f"{path}: trained model not found")
    checkpoint = read_plain(path, "--model")
    if not (isinstance(checkpoint, dict) and {"meta", "state_dict"} <= checkpoint.keys()):
        raise UserError(f"{path}: not a model file exported by the train stage (--model)")
    meta = checkpoint["meta"]
    if wrong := malformed_meta(meta):
        raise UserError(
            f"{path}: not a model file exported by the train stage ({', '.join(wrong)}: missing "
            "or of another kind) (--model)"
        )
    if meta.get("precision") not in PRECISIONS:
        raise UserError(
            f"{path}: records no precision of its validation (meta.precision: "
            f"{meta.get('precision')!r}; expected one of {', '.join(PRECISIONS)}): export it "
            "again with the train stage (--model)"
        )
    model = Segmenter(meta["model"], meta["num_classes"], aux_loss=meta["aux_loss_weight"] > 0)
    load_fitting(model, checkpoint["state_dict"], path, meta)
    # Exactly the precision training validated in, on any device (autocast has bf16 and fp16 on
    # the CPU too): one checkpoint, one score.
    model.precision = meta["precision"]
    return model.to(device).eval(), meta


def trained_classes(meta: dict) -> list[str] | int:
    """The class names a model file's meta records, or their number where it has no names."""
    classes = meta.get("classes")
    return classes if isinstance(classes, list) else meta["num_classes"]


# What the train stage writes into a model file's meta, and of what kind.
META_KINDS = {"model": str, "num_classes": int, "aux_loss_weight": (int, float)}


def malformed_meta(meta: object) -> list[str]:
    """What of a model file's meta is missing or of another kind than the train stage writes
    (``meta`` itself, or its keys as ``meta.KEY``)."""
    if not isinstance(meta, dict):
        return ["meta"]
    wrong = [key for key, kind in META_KINDS.items()
             if isinstance(meta.get(key), bool) or not isinstance(meta.get(key), kind)]  # fmt: skip
    if "num_classes" not in wrong and meta["num_classes"] < 1:
        wrong.append("num_classes")
    return [f"meta.{key}" for key in wrong]


def load_fitting(model: Segmenter, state: object, path: Path, meta: dict) -> None:
    """``state`` loaded into ``model`` when it is the weights of the network ``meta`` names;
    otherwise one line saying how they differ (a hand-edited or mixed-up file)."""
    if not isinstance(state, dict):
        raise UserError(f"{path}: holds no state dict (--model)")
    own = model.state_dict()
    missing, unexpected = own.keys() - state.keys(), state.keys() - own.keys()
    reshaped = own.keys() & state.keys() - fitting_tensors(own, state).keys()
    if missing or unexpected or reshaped:
        raise UserError(
            f"{path}: its weights are not those of the {meta['model']} with "
            f"{meta['num_classes']} classes its meta names ({len(missing)} tensors missing, "
            f"{len(unexpected)} unexpected, {len(reshaped)} of another shape) (--model)"
        )
    model.load_state_dict(state)


def precision_line(path: Path, meta: dict) -> str:
    """What the inference stages print: the precision they run in and where it comes from."""
    return f"precision: {meta['precision']}, as {path.name} records for its validation"
