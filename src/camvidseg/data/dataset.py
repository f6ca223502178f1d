"""Training/evaluation dataset over the converted masks (stage 3b's ``index.json``).

Masks are already class indices; with the convert stage's cache, images and masks are read from
memory-mapped uint8 arrays (no decode at all), else from PNG. ``__getitem__`` returns uint8 CHW
tensors, normalised on the device by the model's data preprocessor.
"""

from __future__ import annotations

import random
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .. import IGNORE_INDEX
from ..core.errors import UserError
from ..core.fileio import read_json
from .images import checked_size

cv2.setNumThreads(1)  # loader workers are the parallelism; OpenCV's own threads only contend


def read_image(path: str) -> np.ndarray:
    """RGB uint8 array; the size is checked from the header first (OpenCV would decode a bomb)."""
    checked_size(path, "image")
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise UserError(f"{path}: cannot read image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_mask(path: Path) -> np.ndarray:
    return np.array(Image.open(path))  # a writable copy: torch refuses read-only arrays


class RandomScaleCropFlip:
    """Random scale, random crop to ``crop_size`` (padded with ignore), horizontal flip."""

    def __init__(self, crop_size: tuple[int, int], scale_range: tuple[float, float]):
        self.crop_h, self.crop_w = crop_size
        self.scale_range = scale_range

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scale = random.uniform(*self.scale_range)
        h, w = mask.shape
        size = (max(int(w * scale + 0.5), 1), max(int(h * scale + 0.5), 1))
        image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
        pad_h, pad_w = max(self.crop_h - size[1], 0), max(self.crop_w - size[0], 0)
        if pad_h or pad_w:
            image = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=0)
            mask = cv2.copyMakeBorder(
                mask, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=IGNORE_INDEX
            )
        h, w = mask.shape
        top, left = random.randint(0, h - self.crop_h), random.randint(0, w - self.crop_w)
        image = image[top : top + self.crop_h, left : left + self.crop_w]
        mask = mask[top : top + self.crop_h, left : left + self.crop_w]
        if random.random() < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]
        return image, mask


class SegmentationDataset(Dataset):
    """One split of the prepared dataset; items are ``dict(inputs=uint8 CHW, data_samples=...)``."""

    def __init__(self, prepared_dir: str | Path, split: str, transform=None):
        self.prepared_dir = Path(prepared_dir)
        index = read_json(self.prepared_dir / "index.json")
        if split not in index["splits"]:
            raise UserError(f"{self.prepared_dir}/index.json: no split {split!r}")
        self.items = index["splits"][split]
        self.split = split
        self.transform = transform
        self.cache = index.get("cache", {}).get(split)
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None

    def cached_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The split's decoded images and masks, memory-mapped (opened lazily, per process)."""
        if self._arrays is None:
            self._arrays = tuple(
                np.load(self.prepared_dir / self.cache[k], mmap_mode="r")
                for k in ("images", "masks")
            )
        return self._arrays

    def __len__(self) -> int:
        return len(self.items)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        item = self.items[i]
        if self.cache:
            images, masks = self.cached_arrays()
            return np.array(images[i]), np.array(masks[i])
        image = read_image(str(self.prepared_dir / item["image"]))
        mask = read_mask(self.prepared_dir / item["mask"])
        if image.shape[:2] != mask.shape:
            raise UserError(f"{item['image']}: image and mask {item['mask']} sizes differ")
        return image, mask

    def __getitem__(self, i: int) -> dict:
        image, mask = self.load(i)
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        inputs = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        labels = torch.from_numpy(np.ascontiguousarray(mask))
        return {"inputs": inputs, "data_samples": {"labels": labels, "index": i}}
