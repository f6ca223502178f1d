"""Inference with the exported ONNX model through onnxruntime: needs only onnxruntime, numpy and
pillow (``requirements-deploy.txt``), never torch, so it runs in a slim deployment environment.

The graph (``export.py``) takes an RGB uint8 batch ``image`` (N, 3, H, W) of any size and returns
float ``logits`` (N, K, H, W); normalisation is inside it. Its metadata names the classes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..core.errors import UserError
from ..data.images import open_checked

INPUT_NAME = "image"
OUTPUT_NAME = "logits"


def read_rgb(path: Path | str) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file (PIL: no OpenCV in the deploy environment)."""
    with open_checked(path) as image:
        return np.asarray(image.convert("RGB"))


def providers(device: str) -> list[str]:
    """onnxruntime execution providers for ``cpu`` or ``cuda`` (CUDA only if this onnxruntime
    build has it; the pinned CPU wheel does not)."""
    import onnxruntime as ort

    if device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def open_session(path: Path | str, threads: int = 0, device: str = "cpu"):
    """An onnxruntime session of the exported model; ``threads`` 0 lets onnxruntime choose."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: ONNX model not found")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), options, providers=providers(device))
    except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph/... types
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{path}: not a usable ONNX model ({first})") from None


def session_classes(session) -> list[str]:
    """Class names stored in the model's metadata by the export stage."""
    return json.loads(session.get_modelmeta().custom_metadata_map["classes"])


def onnx_logits(session, batch: np.ndarray) -> np.ndarray:
    """uint8 (N, 3, H, W) -> float32 (N, K, H, W)."""
    return session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(batch, np.uint8)})[0]


def onnx_predict(session, image: np.ndarray) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> (H, W) uint8 class ids."""
    return onnx_logits(session, image.transpose(2, 0, 1)[None])[0].argmax(0).astype(np.uint8)
