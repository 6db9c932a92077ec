"""MNIST and Fashion-MNIST from their IDX files (no download)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from .dataset import ImageDataset, ImageSplit
from .idx import read_idx
from .paths import find_file, require_root
from .registry import register_dataset

__all__ = ["IdxFormat", "MNIST", "FASHION_MNIST", "load_idx_dataset"]

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True)
class IdxFormat:
    """An MNIST-style dataset: registry ``name``, ``classes``, and the ``torchvision_folder``
    under which torchvision keeps the files (``root/<torchvision_folder>/raw``)."""

    name: str
    classes: tuple[str, ...]
    torchvision_folder: str


MNIST = IdxFormat("mnist", tuple(str(digit) for digit in range(10)), "MNIST")
FASHION_MNIST = IdxFormat(
    "fashion_mnist",
    ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    "FashionMNIST",
)


def load_idx_dataset(fmt: IdxFormat, root: Path | None) -> ImageDataset:
    """Decode the four IDX files (each optionally ``.gz``) found in ``root`` or
    ``root/<fmt.torchvision_folder>/raw`` into ``(N, 1, 28, 28)`` uint8 splits."""
    hint = f"put {', '.join(f for pair in _FILES.values() for f in pair)} (each optionally .gz) in the root directory."
    root = require_root(root, fmt.name, hint)
    folders = [root, root / fmt.torchvision_folder / "raw"]

    def read(filename: str, ndim: int) -> torch.Tensor:
        candidates = [folder / (filename + ext) for folder in folders for ext in ("", ".gz")]
        return read_idx(find_file(candidates, fmt.name, hint), ndim)

    splits = {}
    for split, (images_file, labels_file) in _FILES.items():
        images, labels = read(images_file, 3), read(labels_file, 1)
        if len(images) != len(labels):
            raise ValueError(
                f"dataset {fmt.name!r}: the {split} split has {len(images)} images but {len(labels)} labels; "
                "the IDX files come from different releases, re-download them."
            )
        splits[split] = ImageSplit(images.unsqueeze(1), labels.long(), list(fmt.classes))
    return ImageDataset.from_splits(fmt.name, splits["train"], splits["test"])


for _fmt in (MNIST, FASHION_MNIST):
    register_dataset(_fmt.name)(partial(load_idx_dataset, _fmt))
