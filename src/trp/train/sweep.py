"""Decompose one trained model at several rank criteria and evaluate each, no retraining."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..config import DecomposeConfig
from ..criteria import RankCriterion
from ..surgery import decompose_

__all__ = ["SweepPoint", "sweep_criteria"]


@dataclass
class SweepPoint:
    """One decomposition of the sweep: ``accuracy`` as returned by the evaluation (a
    fraction), ``conv_speedup`` the paper's conv-MAC ratio."""

    criterion: dict
    conv_speedup: float
    accuracy: float
    params: int
    layers_decomposed: int


def sweep_criteria(
    model: nn.Module,
    config: DecomposeConfig,
    criteria: Sequence[RankCriterion],
    evaluate_accuracy: Callable[[nn.Module], float],
    example_input: torch.Tensor,
) -> list[SweepPoint]:
    """For each criterion: decompose a copy of ``model`` with ``config`` (its criterion
    replaced) and evaluate it. ``model`` itself is not changed."""
    points = []
    for criterion in criteria:
        candidate = copy.deepcopy(model)
        report = decompose_(candidate, dataclasses.replace(config, criterion=criterion), example_input)
        points.append(
            SweepPoint(criterion.to_dict(), report.conv_speedup, evaluate_accuracy(candidate), report.params_after, len(report.decomposed))
        )
    return points
