"""In-memory image datasets: one split as tensors, and a train/test pair with statistics."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .augment import normalize

__all__ = ["ImageSplit", "ImageDataset", "calibration_batches", "channel_stats"]


@dataclass
class ImageSplit:
    """One split of an image classification dataset, decoded into memory.

    Attributes:
        images: ``(N, C, H, W)`` uint8 tensor, pixel values 0..255.
        labels: ``(N,)`` int64 tensor, class indices in ``[0, len(classes))``.
        classes: class names; ``classes[k]`` names label ``k``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]

    def __post_init__(self) -> None:
        if self.images.dim() != 4 or self.images.dtype != torch.uint8:
            raise ValueError(
                f"images must be an (N, C, H, W) uint8 tensor, got {self.images.dtype} "
                f"of shape {tuple(self.images.shape)}; convert with images.to(torch.uint8)."
            )
        if self.labels.dim() != 1 or self.labels.dtype != torch.int64:
            raise ValueError(
                f"labels must be an ({len(self.images)},) int64 tensor matching the images, got "
                f"{self.labels.dtype} of shape {tuple(self.labels.shape)}."
            )
        if len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels.")
        if len(self.labels) and not 0 <= int(self.labels.min()) <= int(self.labels.max()) < len(self.classes):
            raise ValueError(
                f"labels range over [{int(self.labels.min())}, {int(self.labels.max())}] but there are "
                f"{len(self.classes)} classes; the label file does not match the class list."
            )

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class ImageDataset:
    """A train/test pair of :class:`ImageSplit` sharing classes and image size.

    Attributes:
        name: registry name, e.g. ``"cifar10"``.
        train, test: the two splits.
        mean, std: per-channel mean and (population) standard deviation of the train
            images in [0, 1] units, one float per channel, for :func:`trp.data.normalize`.
    """

    name: str
    train: ImageSplit
    test: ImageSplit
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.train.classes != self.test.classes:
            raise ValueError(f"dataset {self.name!r}: train and test splits have different class lists.")
        if self.train.images.shape[1:] != self.test.images.shape[1:]:
            raise ValueError(
                f"dataset {self.name!r}: train images are {tuple(self.train.images.shape[1:])} but test images "
                f"are {tuple(self.test.images.shape[1:])} (C, H, W); both splits need one size."
            )

    @classmethod
    def from_splits(cls, name: str, train: ImageSplit, test: ImageSplit) -> ImageDataset:
        """Build a dataset, computing ``mean`` and ``std`` from ``train.images``."""
        mean, std = channel_stats(train.images)
        return cls(name, train, test, mean, std)

    @property
    def num_classes(self) -> int:
        return len(self.train.classes)

    @property
    def input_size(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        channels, height, width = self.train.images.shape[1:]
        return channels, height, width


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and population std of ``(N, C, H, W)`` uint8 ``images`` in
    [0, 1] units, from a 256-bin histogram per channel (no float copy of the images)."""
    if len(images) == 0:
        raise ValueError("cannot compute channel statistics of an empty split; the train split has no images.")
    values = torch.arange(256, dtype=torch.float64) / 255
    means, stds = [], []
    for channel in range(images.shape[1]):
        counts = torch.bincount(images[:, channel].reshape(-1), minlength=256).double()
        probs = counts / counts.sum()
        mean = float((probs * values).sum())
        variance = float((probs * (values - mean) ** 2).sum())
        means.append(mean)
        stds.append(variance**0.5)
    return tuple(means), tuple(stds)


def calibration_batches(dataset: ImageDataset, images: int, batch_size: int = 256, seed: int = 0) -> list[torch.Tensor]:
    """``images`` training images drawn at random (seeded, without replacement; no
    augmentation), normalized, in CPU batches: calibration data for :func:`trp.decompose_on_data_`."""
    if not 0 < images <= len(dataset.train):
        raise ValueError(f"calibration needs 1 to {len(dataset.train)} training images, got {images}.")
    chosen = torch.randperm(len(dataset.train), generator=torch.Generator().manual_seed(seed))[:images]
    return [normalize(dataset.train.images[chosen[first : first + batch_size]], dataset.mean, dataset.std)
            for first in range(0, images, batch_size)]
