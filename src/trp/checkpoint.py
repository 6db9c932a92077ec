"""Checkpoints that carry their architecture and never unpickle code.

A trp checkpoint is a ``torch.save`` file holding only plain data (read back with
``torch.load(..., weights_only=True)``)::

    {"format": "trp-checkpoint", "version": 1,
     "model": '{"name": "resnet20", "kwargs": {...}}' or "",   # JSON: registry entry
     "plan": '{"version": 1, "layers": [...]}' or "",           # JSON: RankPlan
     "metadata": '{...}',                                        # JSON: free-form
     "state_dict": {name: tensor}}

Loading a decomposed checkpoint builds the dense model, applies the rank plan (which
creates the factorized layers at the saved ranks), then loads the weights strictly.
Plain state dicts saved by ``torch.save(model.state_dict(), path)`` are read too.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .plan import RankPlan
from .surgery import apply_plan_

__all__ = [
    "CheckpointError",
    "Checkpoint",
    "save_checkpoint",
    "read_checkpoint",
    "load_state_dict_",
    "check_state_dict_fits",
    "load_decomposed",
    "read_rank_plan",
    "read_rank_plan_and_model",
    "atomic_torch_save",
    "torch_load_weights",
]

FORMAT = "trp-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, or does not fit the model."""


@dataclass
class Checkpoint:
    """A checkpoint's contents.

    Attributes:
        state_dict: parameter and buffer tensors by name.
        plan: the rank plan of a decomposed model, ``None`` for a dense one.
        model: the registry entry that builds the dense architecture, e.g.
            ``{"name": "resnet20", "kwargs": {"num_classes": 10}}``, or ``None``.
        metadata: free-form JSON data (e.g. the decomposition report).
    """

    state_dict: dict[str, torch.Tensor]
    plan: RankPlan | None = None
    model: dict[str, Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    plan: RankPlan | None = None,
    model_entry: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``model``'s state dict with its rank plan, atomically (temporary file, then
    rename), so an interrupted save never leaves a truncated checkpoint behind."""
    path = Path(path)
    if not path.parent.is_dir():
        raise CheckpointError(f"cannot write {path}: directory {path.parent} does not exist.")
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model": json.dumps(model_entry) if model_entry else "",
        "plan": plan.to_json() if plan is not None else "",
        "metadata": json.dumps(metadata or {}),
        "state_dict": {name: tensor.detach() for name, tensor in model.state_dict().items()},
    }
    return atomic_torch_save(payload, path)


def atomic_torch_save(payload: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then rename it over ``path``: a
    crash mid-write leaves the previous file intact and no partial file behind."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(payload, stream)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def torch_load_weights(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with one clear error per failure."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (or is not a file); check the path.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL (\S+)", str(error))
        if found is None:
            raise CheckpointError(
                f"cannot read {path} as a PyTorch checkpoint: it is truncated, corrupt or another format."
            ) from None
        raise CheckpointError(
            f"{path} holds pickled Python objects ({found.group(1)}), not only tensors, and trp never "
            "unpickles code. Re-save it as a state dict: torch.save(model.state_dict(), path)."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, LookupError) as error:  # LookupError: a few stray bytes
        raise CheckpointError(
            f"cannot read {path} as a PyTorch checkpoint: it is truncated, corrupt or another format ({error})."
        ) from None


def _strip_wrapper_prefix(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys saved from a DDP/DataParallel model start with ``module.``: drop it."""
    if state_dict and all(key.startswith("module.") for key in state_dict):
        return {key.removeprefix("module."): value for key, value in state_dict.items()}
    return state_dict


def _as_state_dict(data: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(data, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(data.get(key), dict):
                data = data[key]
                break
    if not isinstance(data, dict) or not data or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(
            f"{path} is not a model checkpoint: expected a state dict (names to tensors), "
            "or a dict holding one under 'state_dict' or 'model'."
        )
    return _strip_wrapper_prefix(data)


def _json_field(data: dict, key: str, path: Path) -> Any:
    text = data.get(key, "")
    if not text:
        return None
    try:
        return json.loads(text)
    except (TypeError, json.JSONDecodeError):
        raise CheckpointError(f"{path}: the checkpoint's {key!r} entry is not valid JSON; the file is corrupt.") from None


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a trp checkpoint, or a plain state dict (then ``plan`` and ``model`` are None)."""
    path = Path(path)
    data = torch_load_weights(path)
    if not (isinstance(data, dict) and data.get("format") == FORMAT):
        return Checkpoint(state_dict=_as_state_dict(data, path))
    if data.get("version") != VERSION:
        raise CheckpointError(
            f"{path} is a trp checkpoint of version {data.get('version')!r}; this trp reads version {VERSION}."
        )
    plan_data = _json_field(data, "plan", path)
    try:
        plan = RankPlan.from_dict(plan_data) if plan_data is not None else None
    except ValueError as error:
        raise CheckpointError(f"{path}: {error}") from None
    return Checkpoint(
        state_dict=_as_state_dict(data.get("state_dict"), path),
        plan=plan,
        model=_json_field(data, "model", path),
        metadata=_json_field(data, "metadata", path) or {},
    )


def read_rank_plan(path: str | os.PathLike) -> RankPlan:
    """The rank plan in ``path``: a ``.json`` file as :meth:`RankPlan.to_json` writes it, or
    a trp checkpoint of a decomposed model (e.g. a run's ``decomposed.pt``)."""
    return read_rank_plan_and_model(path)[0]


def read_rank_plan_and_model(path: str | os.PathLike) -> tuple[RankPlan, dict[str, Any] | None]:
    """:func:`read_rank_plan`, and the model entry (name and kwargs) of the checkpoint it came
    from; None for a JSON plan, which names no model."""
    path = Path(path)
    if path.suffix.lower() != ".json":
        checkpoint = read_checkpoint(path)
        if checkpoint.plan is None:
            raise CheckpointError(f"{path} holds no rank plan (it is a dense checkpoint): give a decomposed "
                                  "checkpoint, such as a run's decomposed.pt, or a rank-plan JSON file.")
        return checkpoint.plan, checkpoint.model
    if not path.is_file():
        raise CheckpointError(f"rank plan {path} does not exist (or is not a file); check the path.")
    try:
        return RankPlan.from_json(path.read_text()), None
    except ValueError as error:
        raise CheckpointError(f"{path}: {error}") from None


def load_state_dict_(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str = "checkpoint") -> nn.Module:
    """``model.load_state_dict(state_dict)`` with one readable error naming what differs."""
    check_state_dict_fits(model, state_dict, source)
    model.load_state_dict(state_dict)
    return model


def check_state_dict_fits(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Raise :class:`CheckpointError` naming missing, unexpected and mis-shaped entries."""
    own = model.state_dict()
    missing = [key for key in own if key not in state_dict]
    unexpected = [key for key in state_dict if key not in own]
    mismatched = [
        f"{key} {tuple(state_dict[key].shape)} vs {tuple(own[key].shape)}"
        for key in own
        if key in state_dict and state_dict[key].shape != own[key].shape
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
        if items:
            problems.append(f"{len(items)} {label} (e.g. {', '.join(items[:3])})")
    if problems:
        raise CheckpointError(
            f"{source} does not fit this model: {'; '.join(problems)}. It was saved from another "
            "architecture, another number of classes, or a decomposed model without its rank plan."
        )


def load_decomposed(path: str | os.PathLike, model: nn.Module) -> nn.Module:
    """Load a checkpoint into the dense ``model`` built with the same architecture: apply
    the saved rank plan (if any), then load the weights. Returns ``model``, modified in place;
    on any error the model is left unchanged."""
    checkpoint = read_checkpoint(path)
    if checkpoint.plan is not None:
        try:
            trial = apply_plan_(copy.deepcopy(model), checkpoint.plan)
        except ValueError as error:
            raise CheckpointError(f"{path}: {error}") from None
        check_state_dict_fits(trial, checkpoint.state_dict, source=str(path))  # before touching model
        apply_plan_(model, checkpoint.plan)
    return load_state_dict_(model, checkpoint.state_dict, source=str(path))
