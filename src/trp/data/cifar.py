"""CIFAR-10 and CIFAR-100 in the canonical python-pickle format, with optional download."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from .dataset import ImageDataset, ImageSplit
from .download import download_file, extract_tar
from .paths import find_file, require_root
from .registry import register_dataset
from .safe_pickle import load_numpy_pickle

__all__ = ["CifarFormat", "CIFAR10", "CIFAR100", "load_cifar"]


@dataclass(frozen=True)
class CifarFormat:
    """Where one CIFAR variant keeps its files and labels.

    Attributes:
        name: registry name.
        folder: directory the archive extracts to, under ``root``.
        train_files, test_file, meta_file: batch files inside ``folder``.
        label_key, names_key: keys of the labels in a batch and of the class names in the meta file.
        url, md5: the official archive and its checksum.
        url_env: environment variable that overrides ``url`` (e.g. a local mirror).
    """

    name: str
    folder: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: bytes
    names_key: bytes
    url: str
    md5: str
    url_env: str


CIFAR10 = CifarFormat(
    name="cifar10",
    folder="cifar-10-batches-py",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_file="test_batch",
    meta_file="batches.meta",
    label_key=b"labels",
    names_key=b"label_names",
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    md5="c58f30108f718f92721af3b95e74349a",
    url_env="TRP_CIFAR10_URL",
)
CIFAR100 = CifarFormat(
    name="cifar100",
    folder="cifar-100-python",
    train_files=("train",),
    test_file="test",
    meta_file="meta",
    label_key=b"fine_labels",
    names_key=b"fine_label_names",
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    md5="eb9058c3a382ffc7106e4002c42a8d85",
    url_env="TRP_CIFAR100_URL",
)


def load_cifar(
    fmt: CifarFormat, root: Path | None, *, download: bool = False, url: str | None = None, md5: str | None = None
) -> ImageDataset:
    """Decode CIFAR batches under ``root/fmt.folder`` into 32x32 RGB uint8 splits.

    With ``download=True`` missing files are fetched from ``url`` (default: the environment
    variable ``fmt.url_env``, else the official archive), checked against ``md5`` (default: the
    official archive's checksum) and extracted into ``root``; the archive is kept there.
    """
    url = url or os.environ.get(fmt.url_env) or fmt.url
    hint = (
        f"pass download=True to fetch {url}, or extract {url.rsplit('/', 1)[-1]} into the root directory "
        f"so that it holds {fmt.folder}/."
    )
    if download and root is not None:
        root.mkdir(parents=True, exist_ok=True)
    root = require_root(root, fmt.name, hint)
    folder = root / fmt.folder
    names = (*fmt.train_files, fmt.test_file, fmt.meta_file)
    if download and not all((folder / name).is_file() for name in names):
        archive = download_file(url, root / url.rsplit("/", 1)[-1], md5 or fmt.md5)
        extract_tar(archive, root)
    paths = {name: find_file([folder / name], fmt.name, hint) for name in names}
    meta = _read_dict(paths[fmt.meta_file], [fmt.names_key])
    classes = [name.decode() if isinstance(name, bytes) else str(name) for name in meta[fmt.names_key]]
    train = _read_split([paths[name] for name in fmt.train_files], fmt.label_key, classes)
    test = _read_split([paths[fmt.test_file]], fmt.label_key, classes)
    return ImageDataset.from_splits(fmt.name, train, test)


def _read_dict(path: Path, keys: list[bytes]) -> dict:
    """Unpickle ``path`` and check that it is a dict holding ``keys``."""
    batch = load_numpy_pickle(path)
    missing = [key for key in keys if not isinstance(batch, dict) or key not in batch]
    if missing:
        raise ValueError(f"{path} is not a CIFAR file: it lacks the key(s) {missing}; re-download the dataset.")
    return batch


def _read_split(paths: list[Path], label_key: bytes, classes: list[str]) -> ImageSplit:
    """Concatenate CIFAR batches, each ``{b"data": (n, 3072) uint8, label_key: [n ints]}``."""
    images, labels = [], []
    for path in paths:
        batch = _read_dict(path, [b"data", label_key])
        data = np.asarray(batch[b"data"])
        if (
            data.dtype != np.uint8
            or data.ndim != 2
            or data.shape[1] != 3 * 32 * 32
            or len(batch[label_key]) != len(data)
        ):
            raise ValueError(
                f"{path}: expected {b'data'!r} as (n, 3072) uint8 with n labels, got {data.dtype} {data.shape} "
                f"and {len(batch[label_key])} labels; re-download the dataset."
            )
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    return ImageSplit(torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)), classes)


for _fmt in (CIFAR10, CIFAR100):
    register_dataset(_fmt.name)(partial(load_cifar, _fmt))
