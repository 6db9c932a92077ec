"""A registry of dataset loaders, so a training script can name its dataset by a string."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .dataset import ImageDataset

__all__ = ["register_dataset", "load_dataset", "list_datasets"]

Loader = Callable[..., ImageDataset]
_REGISTRY: dict[str, Loader] = {}


def register_dataset(name: str) -> Callable[[Loader], Loader]:
    """Decorator: register ``fn(root: Path | None, **options) -> ImageDataset`` under ``name``.

    The keyword-only parameters of ``fn`` are the dataset's options; ``download`` is one of
    them for datasets that can fetch their files.
    """

    def decorate(fn: Loader) -> Loader:
        if name in _REGISTRY:
            raise ValueError(f"dataset {name!r} is registered twice.")
        _REGISTRY[name] = fn
        return fn

    return decorate


def list_datasets() -> list[str]:
    """Registered dataset names, sorted."""
    return sorted(_REGISTRY)


def load_dataset(name: str, root: str | Path | None, *, download: bool = False, **options: Any) -> ImageDataset:
    """Decode dataset ``name`` found under directory ``root`` into memory.

    Args:
        name: one of :func:`list_datasets`.
        root: directory holding the dataset's files (ignored by ``"digits"``).
        download: fetch missing files (only datasets that have a ``download`` option).
        options: dataset-specific keyword options, e.g. ``image_size=64`` for ``"imagefolder"``.

    Raises:
        ValueError: unknown name or option. FileNotFoundError: missing directory or file.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; registered datasets: {', '.join(list_datasets())}.")
    loader = _REGISTRY[name]
    if download:
        options["download"] = True
    accepted = [p.name for p in inspect.signature(loader).parameters.values() if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"dataset {name!r} has no option {', '.join(map(repr, unknown))}; "
            f"its options are: {', '.join(accepted) or 'none'}."
        )
    return loader(None if root is None else Path(root).expanduser(), **options)
