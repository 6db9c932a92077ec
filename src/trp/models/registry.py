"""A registry of model constructors, so the CLI and the tests can enumerate them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

__all__ = ["ModelSpec", "register_model", "create_model", "get_model_spec", "list_models"]


@dataclass(frozen=True)
class ModelSpec:
    """A registered model.

    Attributes:
        name: registry key, e.g. ``"resnet20"``.
        builder: ``builder(**kwargs) -> nn.Module``.
        input_size: ``(C, H, W)`` of the input the model was designed for.
        num_classes: default number of classes.
    """

    name: str
    builder: Callable[..., nn.Module]
    input_size: tuple[int, int, int]
    num_classes: int


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    input_size: tuple[int, int, int], num_classes: int
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register ``fn`` under its own name."""

    def decorate(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if fn.__name__ in _REGISTRY:
            raise ValueError(f"model {fn.__name__!r} is registered twice.")
        _REGISTRY[fn.__name__] = ModelSpec(fn.__name__, fn, input_size, num_classes)
        return fn

    return decorate


def get_model_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(list_models())}.") from None


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model; keyword arguments that are ``None`` are dropped, so CLI
    options can default to ``None`` and leave the model's own defaults in place."""
    spec = get_model_spec(name)
    return spec.builder(**{key: value for key, value in kwargs.items() if value is not None})
