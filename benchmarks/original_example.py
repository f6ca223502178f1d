"""A faithful re-implementation of the original MMEngine CamVid example's data path: the baseline.

RGB masks decoded with PIL on every access and mapped to class ids with one ``mask == color`` pass
per class; ``ToTensor`` + ``Normalize`` in the loader; ``num_workers=0``; no channels_last.
"""

from __future__ import annotations

import csv
import os

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image
from torchvision.datasets import VisionDataset

NORM = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def create_palette(csv_filepath):
    color_to_class = {}
    with open(csv_filepath, newline="") as csvfile:
        reader = csv.DictReader(csvfile)
        for idx, row in enumerate(reader):
            r, g, b = int(row["r"]), int(row["g"]), int(row["b"])
            color_to_class[(r, g, b)] = idx
    return color_to_class


class CamVid(VisionDataset):
    def __init__(self, root, img_folder, mask_folder, transform=None, target_transform=None):
        super().__init__(root, transform=transform, target_transform=target_transform)
        self.img_folder = img_folder
        self.mask_folder = mask_folder
        self.images = sorted(os.listdir(os.path.join(self.root, img_folder)))
        self.masks = sorted(os.listdir(os.path.join(self.root, mask_folder)))
        self.color_to_class = create_palette(os.path.join(self.root, "class_dict.csv"))

    def __getitem__(self, index):
        img_path = os.path.join(self.root, self.img_folder, self.images[index])
        mask_path = os.path.join(self.root, self.mask_folder, self.masks[index])
        img = Image.open(img_path).convert("RGB")
        mask = Image.open(mask_path).convert("RGB")
        if self.transform is not None:
            img = self.transform(img)
        # NumPy 1 promoted uint8 * 65536 to int32 by value; NumPy 2 raises, so promote explicitly.
        mask = np.array(mask, dtype=np.int32)
        mask = mask[:, :, 0] * 65536 + mask[:, :, 1] * 256 + mask[:, :, 2]
        labels = np.zeros_like(mask, dtype=np.int64)
        for color, class_index in self.color_to_class.items():
            rgb = color[0] * 65536 + color[1] * 256 + color[2]
            labels[mask == rgb] = class_index
        if self.target_transform is not None:
            labels = self.target_transform(labels)
        return img, {"labels": labels, "img_path": img_path, "mask_path": mask_path}

    def __len__(self):
        return len(self.images)


def original_dataset(root, split):
    return CamVid(
        root,
        split,
        f"{split}_labels",
        transform=T.Compose([T.ToTensor(), T.Normalize(**NORM)]),
        target_transform=T.Lambda(lambda x: torch.tensor(np.array(x), dtype=torch.long)),
    )


def mask_only(dataset, index):
    """The original's mask path alone: decode + the per-color loop."""
    mask_path = os.path.join(dataset.root, dataset.mask_folder, dataset.masks[index])
    mask = np.array(Image.open(mask_path).convert("RGB"), dtype=np.int32)
    mask = mask[:, :, 0] * 65536 + mask[:, :, 1] * 256 + mask[:, :, 2]
    labels = np.zeros_like(mask, dtype=np.int64)
    for color, class_index in dataset.color_to_class.items():
        labels[mask == color[0] * 65536 + color[1] * 256 + color[2]] = class_index
    return labels
