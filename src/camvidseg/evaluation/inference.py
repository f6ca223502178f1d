"""Inference shared by evaluate, visualize, predict and export: whole-image, sliding-window and
test-time augmentation (multi-scale + flip), all at full resolution.

An inference setting is a dict with the ``eval`` section's keys ``mode`` (``whole``/``slide``),
``crop_size`` and ``stride`` (slide windows, ``[height, width]``), ``tta`` (``flip``, ``scales``).
Logits are averaged: over overlapping windows per pixel, and over scales and flips after being
resized back to the image's size (as MMSegmentation's ``slide`` mode and ``SegTTAModel`` do).
``model`` is a ``training.segmenter.Segmenter``: what ``load_trained`` gives.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from ..core.device import autocast

WHOLE = {
    "mode": "whole",
    "crop_size": None,
    "stride": None,
    "tta": {"flip": False, "scales": [1.0]},
}



def is_whole(setting: dict) -> bool:
    tta = setting["tta"]
    return setting["mode"] == "whole" and not tta["flip"] and list(tta["scales"]) == [1.0]


def mode_label(setting: dict) -> str:
    """Short readable name of an inference setting, e.g. ``slide 64x64/32x32 + flip``."""
    label = setting["mode"]
    if setting["mode"] == "slide":
        (ch, cw), (sh, sw) = setting["crop_size"], setting["stride"]
        label += f" {ch}x{cw}/{sh}x{sw}"
    scales = [float(s) for s in setting["tta"]["scales"]]
    if scales != [1.0]:
        label += " + scales " + ",".join(f"{s:g}" for s in scales)
    if setting["tta"]["flip"]:
        label += " + flip"
    return label


def window_starts(size: int, crop: int, stride: int) -> list[int]:
    """Window offsets along one axis: every ``stride``, the last one flush with the far edge."""
    if size <= crop:
        return [0]
    return sorted({*range(0, size - crop, stride), size - crop})


def slide_logits(model, inputs: torch.Tensor, crop_size, stride) -> torch.Tensor:
    """Logits of a normalised (N, 3, H, W) batch from overlapping windows, averaged per pixel."""
    n, _, height, width = inputs.shape
    crop_h, crop_w = crop_size
    total = count = None
    for top in window_starts(height, crop_h, stride[0]):
        for left in window_starts(width, crop_w, stride[1]):
            window = inputs[:, :, top : top + crop_h, left : left + crop_w]
            logits = model(window).float()
            if total is None:
                total = logits.new_zeros((n, logits.shape[1], height, width))
                count = logits.new_zeros((1, 1, height, width))
            total[:, :, top : top + crop_h, left : left + crop_w] += logits
            count[:, :, top : top + crop_h, left : left + crop_w] += 1
    return total / count


def single_pass(model, inputs: torch.Tensor, setting: dict) -> torch.Tensor:
    if setting["mode"] == "slide":
        return slide_logits(model, inputs, setting["crop_size"], setting["stride"])
    return model(inputs).float()


def scaled_pass(model, inputs: torch.Tensor, setting: dict, scale: float) -> torch.Tensor:
    """Logits of the image resized by ``scale``, resized back to the image's size."""
    size = inputs.shape[-2:]
    if scale == 1.0:
        return single_pass(model, inputs, setting)
    scaled_size = [max(round(side * scale), 1) for side in size]
    scaled = F.interpolate(inputs, size=scaled_size, mode="bilinear", align_corners=False)
    logits = single_pass(model, scaled, setting)
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def tta_logits(model, inputs: torch.Tensor, setting: dict) -> torch.Tensor:
    """Mean logits over scales (and horizontal flips) at the original size. A flip's pair is
    summed before it joins the total, so a mirror-symmetric image gets exactly mirror-symmetric
    logits (floating-point sums in any other order could break that by rounding)."""
    total = None
    for scale in setting["tta"]["scales"]:
        logits = scaled_pass(model, inputs, setting, float(scale))
        if setting["tta"]["flip"]:
            mirrored = scaled_pass(model, inputs.flip(-1), setting, float(scale))
            logits = logits + mirrored.flip(-1)
        total = logits if total is None else total + logits
    passes = len(setting["tta"]["scales"]) * (2 if setting["tta"]["flip"] else 1)
    return total / passes


@torch.no_grad()
def predict_logits(model, inputs: torch.Tensor, device: str, setting: dict | None = None):
    """uint8 (N, 3, H, W) -> float (N, K, H, W) logits, on the model's device."""
    setting = setting or WHOLE
    inputs = model.normalize(inputs)
    with autocast(device, model.precision):  # the precision training validated in
        if is_whole(setting):
            return model(inputs).float()
        return tta_logits(model, inputs, setting)


def predict_batch(model, inputs: torch.Tensor, device: str, setting: dict | None = None):
    """uint8 (N, 3, H, W) -> (N, H, W) class ids, on the model's device."""
    return predict_logits(model, inputs, device, setting).argmax(1)


def predict_image(model, image: np.ndarray, device: str, setting: dict | None = None) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> (H, W) uint8 class ids."""
    inputs = torch.from_numpy(np.array(image.transpose(2, 0, 1), order="C"))[None]  # writable
    return predict_batch(model, inputs, device, setting)[0].cpu().numpy().astype(np.uint8)


class DeployedNetwork(torch.nn.Module):
    """uint8 RGB (N, 3, H, W) -> logits (N, K, H, W): normalisation, then the network without its
    auxiliary head (a training-only branch). The module ``export`` writes to ONNX, and what
    ``cost`` times as eager PyTorch."""

    def __init__(self, model):
        super().__init__()
        # Plain NCHW weights: ONNX has no memory formats, and torch.export's dynamic shapes fail
        # on channels_last ones (the training model's format).
        self.net = copy.deepcopy(model.net).to(memory_format=torch.contiguous_format)
        if getattr(self.net, "aux_classifier", None) is not None:
            self.net.aux_classifier = None
        # Activations out of place: in place saves training memory only, and torch.export
        # rewrites each in-place hardswish into arithmetic on symbolic sizes (a third of an
        # export's time); the ONNX graph and its outputs are the same either way.
        for module in self.net.modules():
            if getattr(module, "inplace", False):
                module.inplace = False
        self.register_buffer("mean", model.normalize.mean.clone(), False)
        self.register_buffer("std", model.normalize.std.clone(), False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net((image.float() - self.mean) / self.std)["out"]
