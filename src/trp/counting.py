"""Counting multiply-accumulates (MACs) and parameters by a real forward pass.

A MAC is one multiply-accumulate, ``a += w * x``; one MAC is two FLOPs. Counts are *per
example*: the leading (batch) axis is divided out; a layer called on an unbatched input
(a conv on ``(C, H, W)``, a linear on ``(in,)``) counts as one example.

* conv MACs: every ``nn.Conv1d/2d/3d`` call, ``output elements * (c_in / groups) * kernel
  volume``. Their ratio dense/decomposed is the speed-up convention of the TRP paper.
* model MACs: conv MACs plus ``nn.Linear`` (``output elements * in_features``). BatchNorm,
  activations, pooling and additions are not counted: BN folds into the preceding conv at
  deployment, and the rest are not multiply-accumulates of weights.

A module called several times (shared, or applied at several resolutions) is counted at
every call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .layers import FactorizedConv2d, LowRankLinear
from .modes import eval_mode

__all__ = ["LayerCount", "MacCount", "count_macs", "conv2d_macs", "conv2d_output_size", "layer_macs"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass
class LayerCount:
    """One counted leaf layer (a conv or linear), summed over its calls.

    Attributes:
        name: qualified name in the model (the first one, if the module is shared).
        kind: ``"conv"`` or ``"linear"``.
        macs: MACs per example, over all calls.
        params: parameters of the layer (counted once, however often it is called).
        calls: times the layer ran in the forward pass.
        input_shapes: the input shape of each call, batch axis included.
    """

    name: str
    kind: str
    macs: int = 0
    params: int = 0
    calls: int = 0
    input_shapes: list[tuple[int, ...]] = field(default_factory=list)


@dataclass
class MacCount:
    """MACs and parameters of a model for one input size.

    Attributes:
        layers: per conv/linear layer, in the order they first ran.
        params: all distinct parameters of the model.
    """

    layers: list[LayerCount]
    params: int

    @property
    def conv_macs(self) -> int:
        return sum(layer.macs for layer in self.layers if layer.kind == "conv")

    @property
    def model_macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    def by_name(self) -> dict[str, LayerCount]:
        return {layer.name: layer for layer in self.layers}


def conv2d_output_size(conv: nn.Conv2d, input_size: Sequence[int]) -> tuple[int, int]:
    """Output ``(H_out, W_out)`` of ``conv`` for an input of spatial size ``(H, W)``."""
    if conv.padding == "same":
        return int(input_size[0]), int(input_size[1])
    padding = (0, 0) if conv.padding == "valid" else conv.padding
    return tuple(  # type: ignore[return-value]
        (size + 2 * pad - dil * (k - 1) - 1) // stride + 1
        for size, pad, dil, k, stride in zip(input_size, padding, conv.dilation, conv.kernel_size, conv.stride)
    )


def conv2d_macs(conv: nn.Conv2d, input_size: Sequence[int]) -> int:
    """MACs per example of ``conv`` on an input of spatial size ``(H, W)``."""
    h_out, w_out = conv2d_output_size(conv, input_size)
    kh, kw = conv.kernel_size
    return h_out * w_out * conv.out_channels * (conv.in_channels // conv.groups) * kh * kw


def layer_macs(module: nn.Module, input_shape: Sequence[int]) -> int:
    """MACs per example of a ``Conv2d``, ``Linear`` or factorized layer for one input of
    ``input_shape`` (batch axis first), computed from the shapes without running it."""
    if isinstance(module, FactorizedConv2d):
        size = input_shape[-2:]
        return conv2d_macs(module.first, size) + conv2d_macs(module.second, conv2d_output_size(module.first, size))
    if isinstance(module, nn.Conv2d):
        return conv2d_macs(module, input_shape[-2:])
    rows = 1
    for extent in input_shape[1:-1]:
        rows *= extent
    if isinstance(module, LowRankLinear):
        return rows * module.rank * (module.in_features + module.out_features)
    if isinstance(module, nn.Linear):
        return rows * module.in_features * module.out_features
    raise TypeError(f"no MAC formula for {type(module).__name__}.")


def _examples(module: nn.Module, output: torch.Tensor) -> int:
    """Examples in one call: the leading axis, unless the layer was called unbatched
    (a conv on ``(C, *spatial)``, a linear on ``(in,)``)."""
    unbatched_dim = len(module.kernel_size) + 1 if isinstance(module, _CONVS) else 1
    return 1 if output.dim() == unbatched_dim else max(output.shape[0], 1)


def _measured_macs(module: nn.Module, output: torch.Tensor) -> int:
    per_example = output.numel() // _examples(module, output)
    if isinstance(module, _CONVS):
        kernel = 1
        for k in module.kernel_size:
            kernel *= k
        return per_example * (module.in_channels // module.groups) * kernel
    return per_example * module.in_features


def _first_tensor(value: object) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    return None


def count_macs(model: nn.Module, example_input: torch.Tensor | tuple[torch.Tensor, ...]) -> MacCount:
    """Count MACs per example and parameters of ``model`` by running ``example_input``.

    The forward pass runs under ``torch.no_grad()`` in eval mode (so BatchNorm statistics
    are not touched); every module's train/eval mode is restored afterwards.

    Args:
        model: any ``nn.Module``.
        example_input: a tensor, or a tuple of positional inputs, batch axis first.
    """
    names: dict[int, str] = {}
    for name, module in model.named_modules():
        names.setdefault(id(module), name)
    counts: dict[int, LayerCount] = {}

    def hook(module: nn.Module, inputs: tuple, output: object) -> None:
        tensor = _first_tensor(output)
        if tensor is None:
            return
        count = counts.get(id(module))
        if count is None:
            kind = "conv" if isinstance(module, _CONVS) else "linear"
            params = sum(p.numel() for p in module.parameters(recurse=False))
            count = counts[id(module)] = LayerCount(names.get(id(module), "?"), kind, params=params)
        count.macs += _measured_macs(module, tensor)
        count.calls += 1
        first_input = _first_tensor(inputs)
        if first_input is not None:
            count.input_shapes.append(tuple(first_input.shape))

    handles = [
        module.register_forward_hook(hook)
        for module in model.modules()
        if isinstance(module, (*_CONVS, nn.Linear))
    ]
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    try:
        with torch.no_grad(), eval_mode(model):
            model(*inputs)
    except RuntimeError as error:
        shapes = ", ".join(str(tuple(x.shape)) for x in inputs if isinstance(x, torch.Tensor))
        raise ValueError(
            f"the example input {shapes} does not run through the model ({str(error).splitlines()[0]}); "
            "pass an input of the shape the model expects, batch axis first, e.g. (1, 3, 32, 32)."
        ) from None
    finally:
        for handle in handles:
            handle.remove()
    params = sum(p.numel() for p in model.parameters())
    return MacCount(layers=list(counts.values()), params=params)
