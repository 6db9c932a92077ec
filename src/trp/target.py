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

__all__ = ["TargetResult", "AllocationResult", "criterion_for_speedup", "ranks_for_speedup", "FAMILIES", "ALLOCATE", "OBJECTIVES",
           "LayerSpectrum", "allocate_ranks"]

FAMILIES = ("energy", "fraction")
ALLOCATE = "allocate"  # the name of ranks_for_speedup where a family is chosen by name (CLI, training configs)
# What ranks_for_speedup minimizes, per layer l at rank r, with kept_l(r) the fraction of its
# squared singular-value energy within rank r: "log_kept" sums -log kept_l(r) (maximizes the
# product of the kept fractions, which charges a deep cut in one layer more than the sum does),
# "lost" sums 1 - kept_l(r). The two agree where every layer keeps most of its energy.
OBJECTIVES = ("log_kept", "lost")


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
            given its full rank stays dense unless ``keep_unprofitable``, as a factorization
            at full rank saves nothing). Decompose with it and the same ``filter_fn``.
        ranks: the allocated ranks by layer name (``config.ranks`` as allocated).
        speedup: conv MACs before over after.
        target: the requested speed-up.
        objective: what was minimized (see :data:`OBJECTIVES`).
        penalty: its value, summed over the allocated layers.
        energy_lost: the summed fraction of squared singular-value energy the allocated
            layers drop (a layer that stays dense drops none).
        iterations: bisection steps.
    """

    config: DecomposeConfig
    ranks: dict[str, int]
    speedup: float
    target: float
    objective: str
    penalty: float
    energy_lost: float
    iterations: int


@dataclass
class LayerSpectrum:
    """What the target searches know of one layer: its singular values in ``cls``'s scheme
    (``(g, p)``, groups by rank) and the input shapes it ran on, for its MACs at any rank."""

    name: str
    cls: type[FactorizedLayer]
    module: nn.Module
    singular_values: torch.Tensor  # (g, p)
    input_shapes: list[tuple[int, ...]]
    dense_macs: int
    is_conv: bool

    @classmethod
    def of(cls, name: str, module: nn.Module, singular_values: torch.Tensor, input_shapes: list[tuple[int, ...]],
           scheme: str) -> LayerSpectrum:
        return cls(name, factorized_class_for(module, scheme), module, singular_values, input_shapes,
                   sum(layer_macs(module, shape) for shape in input_shapes), isinstance(module, nn.Conv2d))

    def macs_at(self, rank: int) -> int:
        """MACs of the layer factorized at ``rank``."""
        shell = self.cls._architecture(self.module, rank, device="meta")
        return sum(layer_macs(shell, shape) for shape in self.input_shapes)

    def saving(self, criterion: RankCriterion, config: DecomposeConfig) -> int:
        """MACs that decomposing with ``criterion`` saves (0 where the layer stays dense)."""
        return self.saving_at(select_rank(self.singular_values, criterion, config.rank_multiple), config)

    def saving_at(self, rank: int, config: DecomposeConfig) -> int:
        return self.saving_for_cost(self.macs_at(rank), config)

    def saving_for_cost(self, cost: int, config: DecomposeConfig) -> int:
        """MACs saved by a factorized form costing ``cost`` MACs: 0 where it would not save
        any and the layer stays dense (as :func:`trp.decompose_` decides)."""
        if cost >= self.dense_macs and not config.keep_unprofitable:
            return 0
        return self.dense_macs - cost


def _layers(model: nn.Module, config: DecomposeConfig, example: torch.Tensor, filter_fn: FilterFn | None) -> tuple[list[LayerSpectrum], int]:
    counted = count_macs(model, example)
    counts = counted.by_name()
    chosen = [(name, module) for name, module in factorizable_layers(model, config, filter_fn) if name in counts]
    matrices = [factorized_class_for(module, config.scheme).dense_matrix(module) for _, module in chosen]
    spectra = [s for _, s, _ in batched_thin_svd(matrices)]
    layers = [LayerSpectrum.of(name, module, s, counts[name].input_shapes, config.scheme)
              for (name, module), s in zip(chosen, spectra)]
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
    _check_target(target_speedup, tolerance)
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
    _check_reachable(target_speedup, speedup(strong), layers, config)
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
    objective: str = "log_kept",
    max_iterations: int = 100,
) -> AllocationResult:
    """Allocate a rank to each conv layer so that decomposing ``model`` gives a conv-MAC
    speed-up of at least ``target_speedup`` while the energy the layers drop, measured by
    ``objective``, is as small as the budget allows.

    Each layer ``l`` keeps rank ``r`` minimizing ``penalty_l(r) + mu * macs_l(r) / M``, where
    ``penalty_l(r)`` is ``-log kept_l(r)`` (``objective="log_kept"``) or ``1 - kept_l(r)``
    (``"lost"``), ``kept_l(r)`` the fraction of its squared singular-value energy (summed over
    groups) within rank ``r``, ``macs_l(r)`` its MACs at rank ``r`` (the dense MACs, and no
    penalty, where factorizing at ``r`` would not save MACs and ``config.keep_unprofitable`` is
    off) and ``M`` the net's conv MACs. That is the Lagrangian of the budgeted problem, solved
    exactly per layer, so the result minimizes the summed penalty among all allocations that
    spend no more MACs; ``mu`` is bisected (in log space) for the least compression that
    reaches the target. Only allocations on the convex hull of each layer's trade-off are
    reachable this way, so the speed-up may overshoot ``target_speedup * (1 + tolerance)``
    (and a knapsack search could find a slightly lower penalty exactly at the target). Ranks are multiples of ``config.rank_multiple``. Linear layers are outside the conv-MAC
    budget and keep ``config.criterion``; layers with a fixed rank in ``config.ranks`` keep it.
    ``model`` is not changed.

    Returns:
        An :class:`AllocationResult` whose ``config`` decomposes at the allocated ranks.

    Raises:
        ValueError: a target below 1, one the layers cannot reach (the message gives the
            largest reachable speed-up), a negative tolerance, a model with no conv layer to
            decompose, or an unknown objective.
    """
    layers, conv_total = _layers(model, config, example_input, filter_fn)
    return allocate_ranks(layers, conv_total, config, target_speedup, tolerance, objective, max_iterations)


def allocate_ranks(
    layers: list[LayerSpectrum],
    conv_total: int,
    config: DecomposeConfig,
    target_speedup: float,
    tolerance: float = 0.02,
    objective: str = "log_kept",
    max_iterations: int = 100,
) -> AllocationResult:
    """:func:`ranks_for_speedup` from spectra already computed: ``layers`` are the candidate
    layers and ``conv_total`` the conv MACs of the whole net."""
    _check_target(target_speedup, tolerance)
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}.")
    fixed_saving = sum(layer.saving(config.criterion_for(layer.name), config)
                       for layer in layers if layer.is_conv and layer.name in config.ranks)
    options = [_RankOptions.of(layer, config, conv_total, objective) for layer in layers
               if layer.is_conv and layer.name not in config.ranks]

    def speedup(chosen: list[_Choice]) -> float:
        return conv_total / max(conv_total - fixed_saving - sum(choice.macs_saved for choice in chosen), 1)

    def allocate(log_mu: float) -> list[_Choice]:
        return [option.best(math.exp(log_mu)) for option in options]

    weak, strong = -30.0, 30.0  # log(mu): mu = e^-30 keeps every layer dense, e^30 takes the cheapest ranks
    chosen = allocate(strong)  # always the allocation at ``strong``
    _check_reachable(target_speedup, speedup(chosen), layers, config)
    iterations = 0
    for iterations in range(1, max_iterations + 1):
        middle = (weak + strong) / 2
        trial = allocate(middle)
        if speedup(trial) >= target_speedup:
            strong, chosen = middle, trial
        else:
            weak = middle
        if speedup(chosen) <= target_speedup * (1 + tolerance):
            break
    ranks = {option.name: choice.rank for option, choice in zip(options, chosen)}
    return AllocationResult(
        dataclasses.replace(config, ranks={**config.ranks, **ranks}), ranks, speedup(chosen), target_speedup, objective,
        sum(choice.penalty for choice in chosen), sum(choice.lost for choice in chosen), iterations,
    )


@dataclass(frozen=True)
class _Choice:
    rank: int
    macs_saved: int
    lost: float  # fraction of the layer's energy dropped
    penalty: float  # what the objective charges for it


@dataclass
class _RankOptions:
    """One layer's choices for :func:`ranks_for_speedup`: each candidate rank (descending),
    the MACs saved, the fraction of its energy lost and the objective's penalty at it."""

    name: str
    ranks: list[int]
    macs_saved: list[int]
    lost: list[float]
    penalty: torch.Tensor  # (k,) float64
    share_saved: torch.Tensor  # (k,) float64: MACs saved over the net's conv MACs

    @classmethod
    def of(cls, layer: LayerSpectrum, config: DecomposeConfig, conv_total: int, objective: str) -> _RankOptions:
        full_rank = layer.singular_values.shape[-1]
        ranks = sorted({round_rank(r, config.rank_multiple, full_rank) for r in range(1, full_rank + 1)}, reverse=True)
        energy = layer.singular_values.double().square().sum(0)  # (p,), summed over groups
        beyond = torch.cat([energy.flip(0).cumsum(0).flip(0), energy.new_zeros(1)])  # beyond[r]: energy past rank r
        total = max(float(beyond[0]), torch.finfo(torch.float64).tiny)
        # Both factors' MACs grow linearly in the rank, so two counts give every rank's.
        at_one = layer.macs_at(1)
        per_rank = layer.macs_at(2) - at_one if full_rank > 1 else 0
        saved = [layer.saving_for_cost(at_one + (rank - 1) * per_rank, config) for rank in ranks]
        factorized = [config.keep_unprofitable or saving > 0 for saving in saved]
        lost = [min(float(beyond[rank]) / total, 1.0) if kept else 0.0 for rank, kept in zip(ranks, factorized)]
        # kept_l(r) > 0 for r >= 1 unless the weight is zero; the floor keeps the log finite then.
        penalty = [-math.log(max(1.0 - x, 1e-300)) if objective == "log_kept" else x for x in lost]
        return cls(layer.name, ranks, saved, lost, torch.tensor(penalty, dtype=torch.float64),
                   torch.tensor(saved, dtype=torch.float64) / conv_total)

    def best(self, mu: float) -> _Choice:
        """The rank minimizing ``penalty - mu * share_saved`` (the largest such rank on a tie)."""
        index = int(torch.argmin(self.penalty - mu * self.share_saved))
        return _Choice(self.ranks[index], self.macs_saved[index], self.lost[index], float(self.penalty[index]))


def _check_target(target_speedup: float, tolerance: float) -> None:
    if not target_speedup >= 1.0:
        raise ValueError(f"target speed-up must be >= 1, got {target_speedup}.")
    if not tolerance >= 0.0:
        raise ValueError(f"tolerance is the fraction the speed-up may exceed the target by, >= 0; got {tolerance}.")


def _check_reachable(target_speedup: float, most: float, layers: list[LayerSpectrum], config: DecomposeConfig) -> None:
    if not any(layer.is_conv for layer in layers):
        raise ValueError("no conv layer to decompose, so no conv-MAC speed-up can be reached: check include, "
                         "exclude and filter_fn, and that the model has nn.Conv2d layers.")
    if most < target_speedup:
        smallest = "at rank 1" if config.rank_multiple == 1 else f"at rank {config.rank_multiple}, the rank multiple"
        raise ValueError(
            f"a {target_speedup:.2f}x conv-MAC speed-up is out of reach: the most these layers give is "
            f"{most:.2f}x ({smallest}); include more layers"
            f"{'' if config.rank_multiple == 1 else ', lower rank_multiple'} or choose a smaller target."
        )
