"""``model.plan``: a run that trains a net factorized at given ranks, with no TRP.

The plan is read and checked against the model before anything is trained or written; the
net then trains factorized (:func:`trp.apply_plan_` with ``from_dense_weights``), is multiplied
back to dense weights after training (:func:`trp.densify_`), and is decomposed at the plan:
its layers, its scheme and its ranks (``DecomposeConfig.ranks``).
"""

from __future__ import annotations

import re
from typing import Any

from ..checkpoint import CheckpointError, read_rank_plan_and_model
from ..config import DecomposeConfig
from ..models import create_model
from ..plan import RankPlan
from ..surgery import apply_plan_

__all__ = ["load_training_plan", "plan_decompose_config", "plan_ranks", "plan_config_section"]

def load_training_plan(path: str, model_name: str, model_kwargs: dict[str, int], scheme: str) -> RankPlan:
    """The rank plan in ``path`` (a rank-plan JSON or a decomposed trp checkpoint), checked to
    be non-empty, to factorize its convs by ``scheme`` alone, and to fit ``model_name`` built
    with ``model_kwargs``.

    Raises:
        ValueError: naming ``model.plan`` and what to change.
    """
    try:
        plan, saved_model = read_rank_plan_and_model(path)
    except CheckpointError as error:
        raise ValueError(f"model.plan: {error}") from None
    if not plan.layers:
        raise ValueError(f"model.plan {path} factorizes no layer: give a plan with at least one layer.")
    if saved_model and saved_model.get("name") != model_name:
        raise ValueError(f"model.plan {path} was made from a {saved_model.get('name')}, and this run trains a "
                         f"{model_name}: give a plan of the same model (or set model.name to match).")
    schemes = sorted({entry.kind for entry in plan.layers} - {"linear"})
    if set(schemes) - {scheme}:
        raise ValueError(f"model.plan {path} factorizes convs by another scheme than decompose.scheme = {scheme!r} "
                         f"({' and '.join(schemes)}): set decompose.scheme to the plan's; a run decomposes with one.")
    try:
        apply_plan_(create_model(model_name, **model_kwargs), plan)  # zero weights: a cheap check that it fits
    except ValueError as error:
        raise ValueError(f"model.plan {path}: {error} Make the plan from a {model_name} with "
                         f"{model_kwargs.get('num_classes')} classes (or leave its linear layers out).") from None
    return plan


def plan_decompose_config(plan: RankPlan) -> DecomposeConfig:
    """How a plan run's trained net is decomposed: exactly the planned layers, by the plan's
    scheme, at the planned ranks."""
    names = [name for entry in plan.layers for name in (entry.name, *entry.aliases)]
    schemes = {entry.kind for entry in plan.layers} - {"linear"}
    return DecomposeConfig(
        scheme=schemes.pop() if schemes else "channel",  # type: ignore[arg-type]
        ranks=plan_ranks(plan),
        include=tuple(re.escape(name) for name in names),
        decompose_linear=any(entry.kind == "linear" for entry in plan.layers),
        keep_unprofitable=True,
    )


def plan_ranks(plan: RankPlan) -> dict[str, int]:
    """Each planned layer's rank, by name (what a plan run logs per epoch)."""
    return {entry.name: entry.rank for entry in plan.layers}


def plan_config_section(plan: RankPlan) -> dict[str, Any]:
    """The plan as one more section of the config saved with the training state, so that
    resuming with a plan that changed is refused, naming the layers that differ."""
    return {entry.name: f"{entry.kind}:{entry.rank}" for entry in plan.layers}
