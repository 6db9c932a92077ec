"""Image folders in the ImageNet layout (``root/train/<class>/*.jpg``), decoded with Pillow."""

from __future__ import annotations

import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .dataset import ImageDataset, ImageSplit, channel_stats
from .paths import require_root
from .registry import register_dataset

__all__ = ["IMAGE_EXTENSIONS", "LazyImages", "load_imagefolder"]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff"})
_LAYOUT = "expected layout: root/train/<class>/*.jpg and root/val/<class>/*.jpg (or root/test/<class>/*.jpg)"
_CHUNK = 256  # images decoded per worker task


@register_dataset("imagefolder")
def load_imagefolder(
    root: Path | None,
    *,
    image_size: int | tuple[int, int] | None = None,
    max_bytes: int = 8 << 30,
    workers: int | None = None,
    stream: bool = False,
) -> ImageDataset:
    """Decode ``root/train`` and ``root/val`` (else ``root/test``) into RGB uint8 splits.

    Classes are the sorted subdirectory names of ``root/train``; every test class must be
    one of them.

    Args:
        image_size: resize every image to ``(image_size, image_size)`` or ``(H, W)`` pixels,
            ignoring aspect ratio; ``None`` keeps the files' size, which must then be shared.
        max_bytes: refuse datasets whose decoded images would take more bytes than this.
        workers: decoding processes (default: the CPU count); small folders decode in-process.
            Pillow spends most of a small JPEG's time in Python, so threads would not help.
        stream: do not decode up front: each batch is decoded when it is indexed (for folders
            too large for memory, such as ImageNet; needs ``image_size``). The normalization
            statistics then come from an evenly spaced sample of 2,000 training images.
    """
    root = require_root(root, "imagefolder", _LAYOUT + ".")
    train_dir = root / "train"
    test_dir = next((root / name for name in ("val", "test") if (root / name).is_dir()), None)
    if not train_dir.is_dir() or test_dir is None:
        missing = train_dir if not train_dir.is_dir() else f"{root / 'val'} or {root / 'test'}"
        raise FileNotFoundError(f"dataset 'imagefolder': directory {missing} does not exist; {_LAYOUT}.")
    classes = [class_dir.name for class_dir in _class_dirs(train_dir)]
    train_files, train_labels = _scan(train_dir, classes)
    test_files, test_labels = _scan(test_dir, classes)
    height, width = _target_size(image_size, train_files[0])
    processes = workers or os.cpu_count() or 1
    resize = image_size is not None
    if stream:
        if not resize:
            raise ValueError("imagefolder with stream=True needs image_size=... (one size for every batch).")
        train_images = LazyImages(train_files, height, width, processes)
        sample = torch.linspace(0, len(train_files) - 1, min(len(train_files), 2000)).long()
        mean, std = channel_stats(train_images[sample])
        train = ImageSplit(train_images, train_labels, classes)  # type: ignore[arg-type]
        test = ImageSplit(LazyImages(test_files, height, width, processes), test_labels, classes)  # type: ignore[arg-type]
        return ImageDataset("imagefolder", train, test, mean, std)
    needed = (len(train_files) + len(test_files)) * 3 * height * width
    if needed > max_bytes:
        raise ValueError(
            f"dataset 'imagefolder' at {root} would take {needed / 2**30:.2f} GiB decoded "
            f"({len(train_files) + len(test_files)} images of 3x{height}x{width}), above max_bytes={max_bytes} "
            f"({max_bytes / 2**30:.2f} GiB); pass a smaller image_size=..., a larger max_bytes=..., "
            "or stream=True to decode batch by batch."
        )
    train = ImageSplit(_decode_all(train_files, height, width, resize, processes), train_labels, classes)
    test = ImageSplit(_decode_all(test_files, height, width, resize, processes), test_labels, classes)
    return ImageDataset.from_splits("imagefolder", train, test)


class LazyImages:
    """``(N, 3, H, W)`` uint8 images decoded only when indexed: ``images[index_tensor]``
    decodes those files (in ``processes`` forked workers) into a tensor. Quacks like the
    tensor an :class:`ImageSplit` holds for ``len``, ``shape``, ``dtype``, ``dim()`` and
    integer-tensor indexing, which is all the loader and the evaluation use."""

    dtype = torch.uint8

    def __init__(self, files: list[str], height: int, width: int, processes: int) -> None:
        self.files, self.height, self.width, self.processes = files, height, width, processes

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.files), 3, self.height, self.width))

    def dim(self) -> int:
        return 4

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        if not isinstance(index, torch.Tensor) or index.dim() != 1:
            raise TypeError("streamed images are indexed by a 1-D tensor of indices (a batch).")
        files = [self.files[i] for i in index.tolist()]
        return _decode_all(files, self.height, self.width, True, self.processes)


def _class_dirs(split_dir: Path) -> list[Path]:
    """The non-hidden subdirectories of ``split_dir``, sorted by name."""
    return sorted(entry for entry in split_dir.iterdir() if entry.is_dir() and not entry.name.startswith("."))


def _scan(split_dir: Path, classes: list[str]) -> tuple[list[str], torch.Tensor]:
    """Paths of the image files under ``split_dir/<class>/`` (recursively, sorted) and their
    ``(N,)`` int64 labels."""
    index = {name: label for label, name in enumerate(classes)}
    files, labels = [], []
    for class_dir in _class_dirs(split_dir):
        if class_dir.name not in index:
            raise ValueError(
                f"dataset 'imagefolder': class folder {class_dir} has no counterpart in {split_dir.parent / 'train'}; "
                "rename or remove it, or add the class to train."
            )
        found = sorted(
            os.path.join(folder, name)
            for folder, _, names in os.walk(class_dir)
            for name in names
            if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
        )
        files += found
        labels += [index[class_dir.name]] * len(found)
    if not files:
        raise FileNotFoundError(
            f"dataset 'imagefolder': no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) under "
            f"{split_dir}/<class>/; {_LAYOUT}."
        )
    return files, torch.tensor(labels, dtype=torch.int64)


def _target_size(image_size: int | tuple[int, int] | None, probe: str) -> tuple[int, int]:
    """``(H, W)`` of the decoded images: ``image_size``, else the size of image ``probe``."""
    if image_size is None:
        first = _read_rgb(probe)
        return first.height, first.width
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    if height <= 0 or width <= 0:
        raise ValueError(f"image_size must be a positive int or (H, W) pair, got {image_size!r}.")
    return height, width


def _decode_all(files: list[str], height: int, width: int, resize: bool, processes: int) -> torch.Tensor:
    """Decode ``files`` into an ``(N, 3, height, width)`` uint8 tensor, in chunks spread over
    ``processes`` worker processes (forked on Linux, so workers start in milliseconds)."""
    out = np.empty((len(files), 3, height, width), dtype=np.uint8)
    starts = range(0, len(files), _CHUNK)
    chunks = [files[start : start + _CHUNK] for start in starts]
    decode = partial(_decode_chunk, height=height, width=width, resize=resize)
    pool = None
    if processes > 1 and len(chunks) > 1:
        context = multiprocessing.get_context("fork" if sys.platform == "linux" else None)
        pool = ProcessPoolExecutor(min(processes, len(chunks)), mp_context=context)
    try:
        for start, block in zip(starts, (pool.map if pool else map)(decode, chunks), strict=True):
            out[start : start + len(block)] = block
    except ValueError as err:  # possibly re-raised from a worker: keep its message, drop the remote traceback
        raise ValueError(*err.args) from None
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    return torch.from_numpy(out)


def _decode_chunk(files: list[str], height: int, width: int, resize: bool) -> np.ndarray:
    """Decode ``files`` into an ``(len(files), 3, height, width)`` uint8 array."""
    out = np.empty((len(files), 3, height, width), dtype=np.uint8)
    for i, path in enumerate(files):
        out[i] = _decode(path, height, width, resize).transpose(2, 0, 1)
    return out


def _decode(path: str, height: int, width: int, resize: bool) -> np.ndarray:
    """One image as ``(height, width, 3)`` uint8 RGB, resized (bilinear) if ``resize``."""
    rgb = _read_rgb(path, (width, height) if resize else None)
    if rgb.size != (width, height):
        if not resize:
            raise ValueError(
                f"image {path} is {rgb.width}x{rgb.height} but other images are {width}x{height} (W x H); "
                f"pass image_size={height} (or image_size=(H, W)) to resize all images to one size."
            )
        rgb = rgb.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(rgb)


def _read_rgb(path: str, draft: tuple[int, int] | None = None) -> Image.Image:
    """Open and decode ``path`` as RGB; JPEGs decode at a reduced scale no smaller than ``draft`` (W, H)."""
    try:
        with Image.open(path) as img:
            if draft is not None:
                img.draft("RGB", draft)
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"cannot decode image {path} ({err}); delete or replace the file.") from None
