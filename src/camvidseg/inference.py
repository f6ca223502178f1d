"""Whole-image inference at full resolution, shared by evaluate, visualize and predict."""

from __future__ import annotations

import contextlib

import numpy as np
import torch


def pick_device(requested: str = "auto") -> str:
    if requested == "cpu" or not torch.cuda.is_available():
        return "cpu"
    return "cuda"


def autocast(device: str):
    if device == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


@torch.no_grad()
def predict_batch(model, inputs: torch.Tensor, device: str) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> (N, H, W) class ids, on the model's device."""
    data = model.data_preprocessor({"inputs": inputs, "data_samples": None})
    with autocast(device):
        logits = model(data["inputs"], mode="tensor")
    return logits.argmax(1)


def predict_image(model, image: np.ndarray, device: str) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> (H, W) uint8 class ids."""
    inputs = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]
    return predict_batch(model, inputs, device)[0].cpu().numpy().astype(np.uint8)
