"""Target mode: decompose to a requested conv-MAC speed-up.

Each layer's SVD is computed once; the speed-up of any setting then follows from the spectra
and the layer shapes alone, so a search costs no further SVD and no retraining. Two ways:

* :func:`criterion_for_speedup` bisects one criterion for every layer (the energy ``e`` or
  the rank fraction), so each layer loses the same share of its energy (or rank).
* :func:`ranks_for_speedup` allocates a rank to each conv layer: it keeps the singular values
  that hold the most energy per MAC they cost, over the whole net, so a layer whose rank is
  cheap keeps more of it.

Use them when a deployment has a compute budget ("2x fewer MACs") rather than an accuracy
budget; check the accuracy of the result afterwards.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from .config import DecomposeConfig
from .counting import count_macs, layer_macs
from .criteria import EnergyCriterion, FractionCriterion, RankCriterion
from .layers import FactorizedLayer
from .lowrank import batched_thin_svd, round_rank, select_rank
from .surgery import FilterFn, factorizable_layers, factorized_class_for

__all__ = ["TargetResult", "AllocationResult", "criterion_for_speedup", "ranks_for_speedup", "FAMILIES"]

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
class AllocationResult:
    """The ranks allocated, and the conv-MAC speed-up decomposing with them gives (predicted;
    :func:`trp.decompose_` with ``config`` reports the same figure).

    Attributes:
        config: the input config with ``ranks`` set for every allocated conv layer (a layer
            given its full rank stays dense, as a factorization at full rank saves nothing).
        ranks: the allocated ranks by layer name (``config.ranks`` as allocated).
        speedup: conv MACs before over after.
        target: the requested speed-up.
        energy_lost: the summed fraction of squared singular-value energy the allocated
            layers drop (a layer that stays dense drops none), the quantity minimized.
        iterations: bisection steps.
    """

    config: DecomposeConfig
    ranks: dict[str, int]
    speedup: float
    target: float
    energy_lost: float
    iterations: int


@dataclass
class _Layer:
    name: str
    cls: type[FactorizedLayer]
    module: nn.Module
    singular_values: torch.Tensor  # (g, p)
    input_shapes: list[tuple[int, ...]]
    dense_macs: int
    is_conv: bool

    def macs_at(self, rank: int) -> int:
        """MACs of the layer factorized at ``rank``."""
        shell = self.cls._architecture(self.module, rank, device="meta")
        return sum(layer_macs(shell, shape) for shape in self.input_shapes)

    def saving(self, criterion: RankCriterion, config: DecomposeConfig) -> int:
        """MACs that decomposing with ``criterion`` saves (0 where the layer stays dense)."""
        return self.saving_at(select_rank(self.singular_values, criterion, config.rank_multiple), config)

    def saving_at(self, rank: int, config: DecomposeConfig) -> int:
        cost = self.macs_at(rank)
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
        _Layer(name, cls, module, s, counts[name].input_shapes,
               sum(layer_macs(module, x) for x in counts[name].input_shapes), isinstance(module, nn.Conv2d))
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
    reaches the target is returned). Layers with a fixed rank in ``config.ranks`` keep it.
    ``model`` is not changed.

    Raises:
        ValueError: a target below 1, an unknown family, or a target the layers cannot reach
            (the message gives the largest reachable speed-up).
    """
    _check_target(target_speedup)
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}.")
    layers, conv_total = _layers(model, config, example_input, filter_fn)

    def speedup(value: float) -> float:
        criterion = _criterion(family, value)
        saved = sum(layer.saving(config.criterion_for(layer.name) if layer.name in config.ranks else criterion, config)
                    for layer in layers if layer.is_conv)
        return conv_total / max(conv_total - saved, 1)

    # "weak" keeps the most, "strong" prunes the most; speed-up grows from weak to strong.
    weak, strong = (0.0, 0.999999) if family == "energy" else (1.0, 1e-6)
    _check_reachable(target_speedup, speedup(strong))
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



def ranks_for_speedup(
    model: nn.Module,
    config: DecomposeConfig,
    example_input: torch.Tensor,
    target_speedup: float,
    tolerance: float = 0.02,
    filter_fn: FilterFn | None = None,
    max_iterations: int = 100,
) -> AllocationResult:
    """Allocate a rank to each conv layer so that decomposing ``model`` gives a conv-MAC
    speed-up of at least ``target_speedup`` while the summed fraction of energy the layers
    drop is as small as the budget allows.

    Each layer ``l`` keeps rank ``r`` minimizing ``lost_l(r) + mu * macs_l(r) / M``, where
    ``lost_l(r)`` is the fraction of its squared singular-value energy beyond ``r`` (summed
    over groups), ``macs_l(r)`` its MACs at rank ``r`` (the dense MACs, and nothing lost, where
    factorizing at ``r`` would not save MACs and ``config.keep_unprofitable`` is off) and ``M``
    the net's conv MACs. That is the Lagrangian of the budgeted problem, solved exactly per
    layer; ``mu`` is bisected (in log space) for the least compression that reaches the
    target, within ``target_speedup * (1 + tolerance)`` when integer ranks allow. Ranks are
    multiples of ``config.rank_multiple``. Linear layers are outside the conv-MAC budget and
    keep ``config.criterion``; layers with a fixed rank in ``config.ranks`` keep it.
    ``model`` is not changed.

    Returns:
        An :class:`AllocationResult` whose ``config`` decomposes at the allocated ranks.

    Raises:
        ValueError: a target below 1, or one the layers cannot reach (the message gives the
            largest reachable speed-up).
    """
    _check_target(target_speedup)
    layers, conv_total = _layers(model, config, example_input, filter_fn)
    fixed_saving = sum(layer.saving(config.criterion_for(layer.name), config)
                       for layer in layers if layer.is_conv and layer.name in config.ranks)
    options = [_RankOptions.of(layer, config, conv_total) for layer in layers
               if layer.is_conv and layer.name not in config.ranks]

    def allocate(mu: float) -> tuple[dict[str, int], float, float]:
        chosen = [option.best(mu) for option in options]
        saved = fixed_saving + sum(saving for _, saving, _ in chosen)
        ranks = {option.name: rank for option, (rank, _, _) in zip(options, chosen)}
        return ranks, conv_total / max(conv_total - saved, 1), sum(lost for _, _, lost in chosen)

    weak, strong = -30.0, 30.0  # log(mu): mu = e^-30 keeps every layer dense, e^30 takes the cheapest ranks
    _check_reachable(target_speedup, allocate(math.exp(strong))[1])
    iterations = 0
    for iterations in range(1, max_iterations + 1):
        middle = (weak + strong) / 2
        if allocate(math.exp(middle))[1] >= target_speedup:
            strong = middle
        else:
            weak = middle
        if allocate(math.exp(strong))[1] <= target_speedup * (1 + tolerance):
            break
    ranks, speedup, lost = allocate(math.exp(strong))
    allocated = dataclasses.replace(config, ranks={**config.ranks, **ranks})
    return AllocationResult(allocated, ranks, speedup, target_speedup, lost, iterations)


@dataclass
class _RankOptions:
    """One layer's choices for :func:`ranks_for_speedup`: each candidate rank (descending),
    the fraction of its energy lost and the MACs saved at that rank."""

    name: str
    ranks: list[int]
    macs_saved: list[int]
    lost: torch.Tensor  # (k,) float64: fraction of the layer's energy dropped
    share_saved: torch.Tensor  # (k,) float64: MACs saved over the net's conv MACs

    @classmethod
    def of(cls, layer: _Layer, config: DecomposeConfig, conv_total: int) -> _RankOptions:
        full_rank = layer.singular_values.shape[-1]
        ranks = sorted({round_rank(r, config.rank_multiple, full_rank) for r in range(1, full_rank + 1)}, reverse=True)
        energy = layer.singular_values.double().square().sum(0)  # (p,), summed over groups
        beyond = torch.cat([energy.flip(0).cumsum(0).flip(0), energy.new_zeros(1)])  # beyond[r]: energy past rank r
        total = max(float(beyond[0]), torch.finfo(torch.float64).tiny)
        # Both factors' MACs grow linearly in the rank, so two counts give every rank's.
        at_one = layer.macs_at(1)
        per_rank = layer.macs_at(2) - at_one if full_rank > 1 else 0
        costs = [at_one + (rank - 1) * per_rank for rank in ranks]
        factorized = [config.keep_unprofitable or cost < layer.dense_macs for cost in costs]
        saved = [layer.dense_macs - cost if kept else 0 for cost, kept in zip(costs, factorized)]
        lost = [float(beyond[rank]) / total if kept else 0.0 for rank, kept in zip(ranks, factorized)]
        return cls(layer.name, ranks, saved, torch.tensor(lost, dtype=torch.float64),
                   torch.tensor(saved, dtype=torch.float64) / conv_total)

    def best(self, mu: float) -> tuple[int, int, float]:
        """The rank minimizing ``lost - mu * share_saved`` (the largest such rank on a tie),
        the MACs it saves and the fraction of energy it loses."""
        index = int(torch.argmin(self.lost - mu * self.share_saved))
        return self.ranks[index], self.macs_saved[index], float(self.lost[index])


def _check_target(target_speedup: float) -> None:
    if not target_speedup >= 1.0:
        raise ValueError(f"target speed-up must be >= 1, got {target_speedup}.")


def _check_reachable(target_speedup: float, most: float) -> None:
    if most < target_speedup:
        raise ValueError(
            f"a {target_speedup:.2f}x conv-MAC speed-up is out of reach: the most these layers give is "
            f"{most:.2f}x (at rank 1); include more layers or choose a smaller target."
        )
