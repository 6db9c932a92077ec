"""Locating a dataset's files on disk, with errors that say what to put where."""

from __future__ import annotations

from pathlib import Path

__all__ = ["require_root", "find_file"]


def require_root(root: Path | None, dataset: str, hint: str) -> Path:
    """Return ``root`` if it is an existing directory, else raise with ``hint`` on how to get it."""
    if root is None:
        raise ValueError(f"dataset {dataset!r} needs a root directory, e.g. load_dataset({dataset!r}, 'data/'); {hint}")
    if not root.is_dir():
        raise FileNotFoundError(f"dataset {dataset!r}: root directory {root} does not exist; {hint}")
    return root


def find_file(candidates: list[Path], dataset: str, hint: str) -> Path:
    """Return the first existing path in ``candidates``, else raise naming the first one."""
    for path in candidates:
        if path.is_file():
            return path
    others = f" (or {', '.join(str(p) for p in candidates[1:])})" if len(candidates) > 1 else ""
    raise FileNotFoundError(f"dataset {dataset!r}: expected file {candidates[0]}{others} is missing; {hint}")
