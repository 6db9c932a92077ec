"""Measured mode: factorize only the layers whose factorized form is actually faster.

Fewer MACs is not less time: a thin ``1 x 1`` conv or a ``kh x 1`` conv on a small feature
map can run slower than the dense conv it replaces. This mode times, for every layer that
the MAC rule would factorize, the dense layer against its factorized pair on the layer's own
input shape (PyTorch eager, CPU, this machine's threads), and keeps the dense layer where the
pair is not faster. Use it when deploying with PyTorch on the machine you measure on; for
another runtime or device, measure there (``trp bench``) and exclude layers by name.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .config import DecomposeConfig
from .counting import count_macs
from .latency import time_callable
from .report import DecompositionReport
from .surgery import FilterFn, decompose_

__all__ = ["decompose_measured_", "best_ms"]


def best_ms(module: nn.Module, shape: tuple[int, ...], warmup: int, repeats: int) -> float:
    example = torch.randn(shape, dtype=next(module.parameters()).dtype)
    module = module.eval()

    def run() -> object:
        with torch.inference_mode():
            return module(example)

    return time_callable(run, warmup, repeats).min_ms


def decompose_measured_(
    model: nn.Module,
    config: DecomposeConfig,
    example_input: torch.Tensor,
    filter_fn: FilterFn | None = None,
    warmup: int = 3,
    repeats: int = 15,
) -> DecompositionReport:
    """Like :func:`trp.decompose_`, but a layer stays dense unless its factorized form is
    measured faster: the fastest of ``repeats`` eager calls on the layer's recorded input
    shapes (the minimum, not the median, resists other processes on a busy machine). Layers
    kept dense this way are reported with the two timings as the reason."""
    trial = copy.deepcopy(model)
    trial_report = decompose_(trial, config, example_input, filter_fn)
    shapes = {layer.name: layer.input_shapes for layer in count_macs(model, example_input).layers}
    slower: dict[str, str] = {}
    for layer in trial_report.decomposed:
        dense_ms = sum(best_ms(model.get_submodule(layer.name), s, warmup, repeats) for s in shapes[layer.name])
        pair_ms = sum(best_ms(trial.get_submodule(layer.name), s, warmup, repeats) for s in shapes[layer.name])
        if pair_ms >= dense_ms:
            slower[layer.name] = f"measured slower factorized: {pair_ms:.3f} ms vs {dense_ms:.3f} ms dense (eager)"

    def measured_filter(module: nn.Module, name: str) -> bool:
        return name not in slower and (filter_fn is None or filter_fn(module, name))

    report = decompose_(model, config, example_input, measured_filter)
    for layer in trial_report.layers:
        if layer.name in slower:
            layer.decomposed, layer.reason = False, slower[layer.name]
            layer.macs_after, layer.params_after = layer.macs_before, layer.params_before
            report.layers.append(layer)
    return report
