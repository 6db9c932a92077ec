"""Target mode: find the rank criterion that reaches a requested conv-MAC speed-up.

Each layer's SVD is computed once; the speed-up of any energy ``e`` (or rank fraction) then
follows from the spectra and the layer shapes alone, so the bisection costs no further SVD
and no retraining. Use it when a deployment has a compute budget ("2x fewer MACs") rather
than an accuracy budget; check the accuracy of the result afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .config import DecomposeConfig
from .counting import count_macs, layer_macs
from .criteria import EnergyCriterion, FractionCriterion, RankCriterion
from .layers import FactorizedLayer
from .lowrank import batched_thin_svd, select_rank
from .surgery import FilterFn, factorizable_layers, factorized_class_for

__all__ = ["TargetResult", "criterion_for_speedup", "FAMILIES"]

FAMILIES = ("energy", "fraction")


@dataclass
class TargetResult:
    """The criterion found and the conv-MAC speed-up it gives (predicted from the spectra;
    :func:`trp.decompose_` with it reports the same figure)."""

    criterion: RankCriterion
    speedup: float
    target: float
    iterations: int


@dataclass
class _Layer:
    cls: type[FactorizedLayer]
    module: nn.Module
    singular_values: torch.Tensor  # (g, p)
    input_shapes: list[tuple[int, ...]]
    dense_macs: int
    is_conv: bool

    def saving(self, criterion: RankCriterion, config: DecomposeConfig) -> int:
        rank = select_rank(self.singular_values, criterion, config.rank_multiple)
        shell = self.cls._architecture(self.module, rank, device="meta")
        cost = sum(layer_macs(shell, shape) for shape in self.input_shapes)
        if cost >= self.dense_macs and not config.keep_unprofitable:
            return 0
        return self.dense_macs - cost


def _layers(model: nn.Module, config: DecomposeConfig, example: torch.Tensor, filter_fn: FilterFn | None) -> tuple[list[_Layer], int]:
    counted = count_macs(model, example)
    counts = counted.by_name()
    chosen = [(name, module) for name, module in factorizable_layers(model, config, filter_fn) if name in counts]
    classes = [factorized_class_for(module, config.scheme) for _, module in chosen]
    matrices = [cls.dense_matrix(module) for cls, (_, module) in zip(classes, chosen)]
    spectra = [s for _, s, _ in batched_thin_svd(matrices)]
    layers = [
        _Layer(cls, module, s, counts[name].input_shapes, sum(layer_macs(module, x) for x in counts[name].input_shapes),
               isinstance(module, nn.Conv2d))
        for cls, (name, module), s in zip(classes, chosen, spectra)
    ]
    return layers, counted.conv_macs


def _criterion(family: str, value: float) -> RankCriterion:
    return EnergyCriterion(value) if family == "energy" else FractionCriterion(value)


def criterion_for_speedup(
    model: nn.Module,
    config: DecomposeConfig,
    example_input: torch.Tensor,
    target_speedup: float,
    family: str = "energy",
    tolerance: float = 0.02,
    filter_fn: FilterFn | None = None,
    max_iterations: int = 40,
) -> TargetResult:
    """Bisect the energy ``e`` (or the rank fraction) so that decomposing ``model`` with
    ``config`` (its criterion replaced) gives a conv-MAC speed-up of at least
    ``target_speedup`` and at most ``target_speedup * (1 + tolerance)`` when the ranks allow
    it (ranks are integers, so the speed-up moves in steps: the least compression that
    reaches the target is returned). ``model`` is not changed.

    Raises:
        ValueError: a target below 1, an unknown family, or a target the layers cannot reach
            (the message gives the largest reachable speed-up).
    """
    if not target_speedup >= 1.0:
        raise ValueError(f"target speed-up must be >= 1, got {target_speedup}.")
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}.")
    layers, conv_total = _layers(model, config, example_input, filter_fn)

    def speedup(value: float) -> float:
        criterion = _criterion(family, value)
        saved = sum(layer.saving(criterion, config) for layer in layers if layer.is_conv)
        return conv_total / max(conv_total - saved, 1)

    # "weak" keeps the most, "strong" prunes the most; speed-up grows from weak to strong.
    weak, strong = (0.0, 0.999999) if family == "energy" else (1.0, 1e-6)
    best = speedup(strong)
    if best < target_speedup:
        raise ValueError(
            f"a {target_speedup:.2f}x conv-MAC speed-up is out of reach: the most these layers give is "
            f"{best:.2f}x (at rank 1); include more layers or choose a smaller target."
        )
    iterations = 0
    for iterations in range(1, max_iterations + 1):
        middle = (weak + strong) / 2
        if speedup(middle) >= target_speedup:
            strong = middle
        else:
            weak = middle
        if speedup(strong) <= target_speedup * (1 + tolerance):
            break
    return TargetResult(_criterion(family, strong), speedup(strong), target_speedup, iterations)

