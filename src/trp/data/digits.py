"""scikit-learn's bundled 8x8 handwritten digits (1797 images): a dataset that needs no files."""

from __future__ import annotations

from pathlib import Path

import torch

from .dataset import ImageDataset, ImageSplit
from .registry import register_dataset

__all__ = ["load_digits", "stratified_split"]

TEST_FRACTION = 0.2
SPLIT_SEED = 0


@register_dataset("digits")
def load_digits(root: Path | None) -> ImageDataset:
    """The UCI handwritten digits shipped inside scikit-learn; ``root`` is ignored.

    Images are ``(N, 1, 8, 8)`` uint8: the 17 gray levels 0..16 scaled by ``value * 255 // 16``.
    The split is a fixed stratified 80 % / 20 % one (see :func:`stratified_split`).
    """
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:
        raise ImportError(
            "dataset 'digits' needs scikit-learn: pip install scikit-learn (or pip install 'trp[quickstart]')."
        ) from None
    bunch = sklearn_digits()
    images = (torch.as_tensor(bunch.images, dtype=torch.int64) * 255 // 16).to(torch.uint8).unsqueeze(1)
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    classes = [str(name) for name in bunch.target_names]
    train, test = stratified_split(labels, TEST_FRACTION, SPLIT_SEED)
    return ImageDataset.from_splits(
        "digits", ImageSplit(images[train], labels[train], classes), ImageSplit(images[test], labels[test], classes)
    )


def stratified_split(labels: torch.Tensor, test_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices of ``(N,)`` int64 ``labels`` into sorted ``(train, test)`` index tensors,
    taking ``round(test_fraction * n_k)`` random items of each class ``k`` for test; the same
    ``seed`` gives the same split."""
    generator = torch.Generator().manual_seed(seed)
    test = []
    for label in labels.unique():
        members = (labels == label).nonzero().squeeze(1)
        chosen = members[torch.randperm(len(members), generator=generator)]
        test.append(chosen[: round(test_fraction * len(members))])
    is_test = torch.zeros(len(labels), dtype=torch.bool)
    is_test[torch.cat(test)] = True
    return (~is_test).nonzero().squeeze(1), is_test.nonzero().squeeze(1)
