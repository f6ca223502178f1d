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

INPUT_NAME = "image"
OUTPUT_NAME = "logits"


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
        session = ort.InferenceSession(str(path), options, providers=providers(device))
    except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph/... types
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{path}: not a usable ONNX model ({first})") from None
    check_interface(session, path)
    return session


def check_interface(session, path: Path) -> None:
    """Refuse a valid ONNX model that is not this project's export before any image is read:
    one uint8 input ``image`` (N, 3, H, W), an output ``logits``, class names in its metadata."""
    inputs = {i.name: (i.type, len(i.shape)) for i in session.get_inputs()}
    outputs = {o.name for o in session.get_outputs()}
    classes = session_classes(session)
    if inputs != {INPUT_NAME: ("tensor(uint8)", 4)} or OUTPUT_NAME not in outputs or not classes:
        found = ", ".join(f"{name} {kind}" for name, (kind, _) in inputs.items())
        raise UserError(
            f"{path}: not a segmentation model exported by camvidseg (it takes {found or 'none'}; "
            f"expected one input {INPUT_NAME!r} tensor(uint8) (N, 3, H, W), an output "
            f"{OUTPUT_NAME!r} and the class names in its metadata)"
        )


def session_classes(session) -> list[str] | None:
    """The class names an exported model's metadata holds (None: absent, or not a JSON list of
    names)."""
    text = session.get_modelmeta().custom_metadata_map.get("classes")
    try:
        classes = json.loads(text) if text else None
    except json.JSONDecodeError:
        return None
    names = isinstance(classes, list) and all(isinstance(name, str) for name in classes)
    return classes if names else None


def onnx_logits(session, batch: np.ndarray) -> np.ndarray:
    """uint8 (N, 3, H, W) -> float32 (N, K, H, W)."""
    return session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(batch, np.uint8)})[0]


def onnx_predict(session, image: np.ndarray) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> (H, W) uint8 class ids."""
    return onnx_logits(session, image.transpose(2, 0, 1)[None])[0].argmax(0).astype(np.uint8)
