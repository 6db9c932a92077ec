"""The training state saved every epoch, so a run resumes exactly where it stopped.

Plain data only (tensors, numbers, strings, lists, dicts): it loads with
``torch.load(weights_only=True)``. Written atomically by :func:`trp.checkpoint.atomic_torch_save`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoint import CheckpointError, atomic_torch_save, load_state_dict_, torch_load_weights
from ..rank_training import TRPHandle

__all__ = ["save_training_state", "restore_training_state", "saved_epoch"]

FORMAT = "trp-train-state"
VERSION = 1


def save_training_state(
    path: Path,
    *,
    epoch: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    trp_handle: TRPHandle | None,
    generators: dict[str, torch.Generator],
    config: dict[str, Any],
    elapsed_seconds: float,
) -> None:
    """Everything needed to continue after ``epoch`` (1-based, completed)."""
    atomic_torch_save(
        {
            "format": FORMAT,
            "version": VERSION,
            "epoch": epoch,
            "config": json.dumps(config),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "trp": trp_handle.state_dict() if trp_handle is not None else {},
            "generators": {name: generator.get_state() for name, generator in generators.items()},
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "elapsed_seconds": elapsed_seconds,
        },
        path,
    )


def _with_options_added_since(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved config with each option added to trp since, at the value it implicitly had:
    speed-up caps allocated with tolerance 0.02 before ``trp.max_speedup_tolerance`` existed
    (its default is 0), so resuming such a run at the default is refused, not silently changed."""
    trp = saved.get("trp", {})
    if "max_speedup_tolerance" not in trp:
        trp["max_speedup_tolerance"] = 0.02 if trp.get("max_speedup") else 0.0
    return saved


def restore_training_state(
    path: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    trp_handle: TRPHandle | None,
    generators: dict[str, torch.Generator],
    config: dict[str, Any],
    changeable: tuple[str, ...] = (),
) -> tuple[int, float]:
    """Restore in place; returns ``(epochs completed, training seconds so far)``.

    Raises:
        CheckpointError: not a training state, or saved with another config (other than the
            ``section.key`` options in ``changeable``).
    """
    state = _load_state(path)
    saved = _with_options_added_since(json.loads(state["config"]))
    differences = [
        f"{section}.{key}: {value!r} -> {config.get(section, {}).get(key)!r}"
        for section, values in saved.items()
        for key, value in values.items()
        if f"{section}.{key}" not in changeable and config.get(section, {}).get(key) != value
    ]
    if differences:
        raise CheckpointError(
            f"{path} was saved with another config, so resuming would not continue the same run "
            f"({'; '.join(differences[:4])}): resume with the original config, or start a new run.out_dir."
        )
    load_state_dict_(model, state["model"], source=str(path))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if trp_handle is not None and state["trp"]:
        trp_handle.load_state_dict(state["trp"])
    for name, generator in generators.items():
        generator.set_state(state["generators"][name])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return int(state["epoch"]), float(state["elapsed_seconds"])


def saved_epoch(path: Path) -> int:
    """The epoch (1-based, completed) that the training state at ``path`` continues after.

    Raises:
        CheckpointError: not a training state.
    """
    return int(_load_state(path)["epoch"])


def _load_state(path: Path) -> dict[str, Any]:
    state = torch_load_weights(path)
    if not (isinstance(state, dict) and state.get("format") == FORMAT and state.get("version") == VERSION):
        raise CheckpointError(f"{path} is not a trp training state (version {VERSION}); cannot resume from it.")
    return state
