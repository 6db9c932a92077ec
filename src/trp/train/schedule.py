"""Learning-rate schedules as a factor of the base rate, per optimizer step."""

from __future__ import annotations

import math
from collections.abc import Callable

from .config import OptimSection

__all__ = ["lr_factor_fn"]


def lr_factor_fn(optim: OptimSection, steps_per_epoch: int) -> Callable[[int], float]:
    """``factor(step)``: multiply the base lr by this at optimizer step ``step`` (0-based).

    multistep: ``gamma ** (milestones passed)``; cosine: ``(1 + cos(pi * t)) / 2`` over the
    whole run; onecycle: linear warm-up from 0 over ``warmup_epochs``, then cosine to 0;
    constant: 1. Any schedule but onecycle also honours ``warmup_epochs`` (linear warm-up).
    """
    total = max(optim.epochs * steps_per_epoch, 1)
    warmup = optim.warmup_epochs * steps_per_epoch
    milestones = sorted(m * steps_per_epoch for m in optim.milestones)

    def decay(step: int) -> float:
        if optim.schedule == "multistep":
            return optim.gamma ** sum(step >= m for m in milestones)
        if optim.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(step / total, 1.0)))
        if optim.schedule == "onecycle":
            progress = (step - warmup) / max(total - warmup, 1)
            return 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
        return 1.0

    def factor(step: int) -> float:
        ramp = min((step + 1) / warmup, 1.0) if warmup > 0 else 1.0
        return ramp * decay(step)

    return factor
