"""A registry of model constructors, so the CLI and the tests can enumerate them."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from torch import nn

__all__ = ["ModelSpec", "register_model", "create_model", "get_model_spec", "list_models", "model_options", "check_model_options"]


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


def model_options(name: str) -> list[str]:
    """The keyword options the registered model ``name`` is built with, e.g. ``num_classes``
    and ``shortcut`` for ``"resnet20"``."""
    return list(inspect.signature(get_model_spec(name).builder).parameters)


def check_model_options(name: str, options: Iterable[str]) -> None:
    """Raise ``ValueError`` naming any of ``options`` that model ``name`` does not take (a
    builder with ``**kwargs`` takes any)."""
    parameters = inspect.signature(get_model_spec(name).builder).parameters
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters.values()):
        return
    unknown = sorted(set(options) - set(parameters))
    if unknown:
        raise ValueError(f"model {name!r} has no option {', '.join(map(repr, unknown))}; "
                         f"its options are: {', '.join(parameters) or 'none'}.")


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model; keyword arguments that are ``None`` are dropped, so CLI
    options can default to ``None`` and leave the model's own defaults in place. An option
    the model does not take raises ``ValueError`` naming the ones it does."""
    given = {key: value for key, value in kwargs.items() if value is not None}
    check_model_options(name, given)
    return get_model_spec(name).builder(**given)
