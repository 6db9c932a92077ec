"""Model surgery: replace dense layers of any ``nn.Module`` by factorized ones, in place.

:func:`decompose_` chooses and factorizes layers and reports what it did;
:func:`apply_plan_` rebuilds a saved decomposition in a fresh dense model.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .config import DecomposeConfig
from .counting import LayerCount, count_macs, layer_macs
from .criteria import FixedRankCriterion
from .layers import FACTORIZED_CONVS, FactorizedLayer, LowRankLinear, unsupported_conv_reason
from .plan import RankPlan
from .report import DecompositionReport, LayerReport

__all__ = ["decompose_", "apply_plan_", "densify_", "factorizable_layers", "factorized_class_for", "FilterFn"]

FilterFn = Callable[[nn.Module, str], bool]
_LAYER_TYPES = (nn.modules.conv._ConvNd, nn.Linear)


@dataclass
class _Candidate:
    module: nn.Module
    names: list[str]

    @property
    def name(self) -> str:
        return self.names[0]


def _refuse_wrapped(model: nn.Module, action: str = "decompose") -> None:
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        raise TypeError(
            f"cannot {action} a {type(model).__name__}-wrapped model: the wrapper's buckets and "
            f"replicas would keep the old layers. {action.capitalize()} model.module (or the model before "
            "wrapping it), then wrap the result again."
        )


def _modules_by_identity(model: nn.Module) -> list[_Candidate]:
    """Every conv/linear-like module once, with all names it is reachable by; modules
    inside an already factorized layer are left out."""
    inside_factorized = {
        id(child)
        for module in model.modules()
        if isinstance(module, FactorizedLayer)
        for child in module.modules()
        if child is not module
    }
    found: dict[int, _Candidate] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        if isinstance(module, _LAYER_TYPES) and id(module) not in inside_factorized:
            found.setdefault(id(module), _Candidate(module, [])).names.append(name)
    return list(found.values())


def _matches(patterns: tuple[str, ...], names: list[str]) -> bool:
    return any(re.fullmatch(pattern, name) for pattern in patterns for name in names)


def _select(
    model: nn.Module, config: DecomposeConfig, filter_fn: FilterFn | None
) -> list[_Candidate]:
    candidates = _modules_by_identity(model)
    for kind, patterns in (("include", config.include), ("exclude", config.exclude)):
        unmatched = [p for p in patterns if not any(_matches((p,), c.names) for c in candidates)]
        if unmatched:
            raise ValueError(
                f"{kind} pattern(s) {unmatched} match no conv or linear layer (a typo?); patterns are regexes "
                f"that must match a whole qualified name, e.g. {candidates[0].name if candidates else 'layer1.0.conv1'!r}."
            )
    selected = []
    for candidate in candidates:
        if isinstance(candidate.module, nn.Linear) and not config.decompose_linear:
            continue
        if config.include and not _matches(config.include, candidate.names):
            continue
        if _matches(config.exclude, candidate.names):
            continue
        if candidate.name == "":
            raise ValueError(
                "the model is itself a single layer and cannot be replaced in place; "
                "use ChannelWiseConv2d.from_dense / SpatialWiseConv2d.from_dense / LowRankLinear.from_dense."
            )
        selected.append(candidate)
    _check_ranks_named(config, candidates, selected)
    # filter_fn comes last: a layer it turns down stays dense, a fixed rank notwithstanding.
    return [c for c in selected if filter_fn is None or filter_fn(c.module, c.name)]


def _check_ranks_named(config: DecomposeConfig, candidates: list[_Candidate], selected: list[_Candidate]) -> None:
    """Every name in ``config.ranks`` is the name (the first, as reports show it) of one
    layer the config selects, and one that can be factorized."""
    primary = {candidate.name: candidate.module for candidate in selected}
    aliases = {alias: candidate.name for candidate in candidates for alias in candidate.names[1:]}
    known = {name for candidate in candidates for name in candidate.names}
    for name in config.ranks:
        if name in primary:
            reason = _skip_reason_before_svd(primary[name], config, calls=1)
            if reason is None:
                continue
            why = f"which cannot be factorized: {reason}"
        elif name in aliases:
            why = f"a second name of the shared layer {aliases[name]!r}: key its rank by {aliases[name]!r}"
        elif name in known:
            why = "which the config's selection (include, exclude, decompose_linear) leaves out"
        else:
            example = selected[0].name if selected else "layer1.0.conv1"
            why = f"which is not a conv or linear layer of this model (a typo? names look like {example!r})"
        raise ValueError(f"config.ranks gives a rank to {name!r}, {why}.")


def _has_forward_hooks(module: nn.Module) -> bool:
    """Whether ``module`` itself has forward or forward-pre hooks (a replacement would lose them)."""
    return bool(module._forward_hooks or module._forward_pre_hooks)


def _skip_reason_before_svd(module: nn.Module, config: DecomposeConfig, calls: int) -> str | None:
    if type(module) not in (nn.Conv2d, nn.Linear):
        return f"unsupported layer type {type(module).__name__} (only exact nn.Conv2d and nn.Linear are factorized)"
    if _has_forward_hooks(module):
        return "has forward hooks, which a replacement would silently drop"
    if isinstance(module, nn.Conv2d):
        reason = unsupported_conv_reason(module)
        if reason:
            return reason
        if module.groups > 1 and config.grouped == "skip":
            return f"grouped conv (groups={module.groups}) and config.grouped='skip'"
    if calls == 0:
        return "did not run in the forward pass of the example input, so its cost is unknown"
    return None


def factorizable_layers(
    model: nn.Module, config: DecomposeConfig, filter_fn: FilterFn | None = None
) -> list[tuple[str, nn.Module]]:
    """The ``(name, module)`` pairs that :func:`decompose_` would consider and could factorize
    (selected by ``config`` and ``filter_fn``, of a supported type, not depthwise, ...),
    each module once. Training with TRP targets exactly these."""
    _refuse_wrapped(model)
    layers = [
        (candidate.name, candidate.module)
        for candidate in _select(model, config, filter_fn)
        if _skip_reason_before_svd(candidate.module, config, calls=1) is None
    ]
    for name, module in layers:
        _check_rank_fits(config, name, module)
    return layers


def _check_rank_fits(config: DecomposeConfig, name: str, module: nn.Module) -> None:
    """A rank that ``config.ranks`` fixes for ``name`` is at most the layer's full rank."""
    if name in config.ranks:
        full_rank = factorized_class_for(module, config.scheme).full_rank_of(module)
        if config.ranks[name] > full_rank:
            raise ValueError(f"config.ranks gives {name!r} rank {config.ranks[name]}, above its full rank "
                             f"{full_rank} in the {config.scheme if isinstance(module, nn.Conv2d) else 'linear'} "
                             "scheme; give a rank from 1 to that.")


def _replace(model: nn.Module, names: list[str], new: nn.Module) -> None:
    for name in names:
        parent_name, _, attribute = name.rpartition(".")
        setattr(model.get_submodule(parent_name), attribute, new)


def factorized_class_for(module: nn.Module, scheme: str) -> type[FactorizedLayer]:
    return LowRankLinear if isinstance(module, nn.Linear) else FACTORIZED_CONVS[scheme]


def _param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def decompose_(
    model: nn.Module,
    config: DecomposeConfig | None = None,
    example_input: torch.Tensor | tuple[torch.Tensor, ...] | None = None,
    filter_fn: FilterFn | None = None,
) -> DecompositionReport:
    """Factorize the conv and linear layers of ``model`` in place by truncated SVD.

    Args:
        model: any ``nn.Module`` (nested containers and shared modules are fine; a module
            reachable by two names is replaced once, under both names). Not DDP-wrapped.
        config: scheme, rank criterion and layer selection; defaults to ``DecomposeConfig()``.
        example_input: an input batch (a tensor, or a tuple of positional inputs). It is run
            once, in eval mode and without gradients, to learn each layer's input size: MACs
            of the spatial scheme depend on it. Required.
        filter_fn: ``filter_fn(module, qualified_name) -> bool``, applied after the config's
            include/exclude patterns; ``False`` leaves the layer alone and unreported.

    Returns:
        A :class:`DecompositionReport`: per candidate layer the scheme, rank, full rank,
        relative error and MACs before/after, or why it stayed dense; totals and speed-ups.

    Layers are created on the device and dtype of the layer they replace and keep its
    train/eval mode and ``requires_grad``. Create optimizers after calling this.

    Raises:
        TypeError: DDP/DataParallel-wrapped model, or a missing ``example_input``.
        ValueError: an include pattern that matches no layer; a model that is one layer.
    """
    config = config if config is not None else DecomposeConfig()
    _refuse_wrapped(model)
    if example_input is None:
        raise TypeError(
            "decompose_ needs example_input, e.g. torch.randn(1, 3, 32, 32): one forward pass "
            "measures each layer's input size, which its MAC cost depends on."
        )
    candidates = _select(model, config, filter_fn)
    counted = count_macs(model, example_input)
    counts = counted.by_name()
    reports, replacements = [], []
    for candidate in candidates:
        report, layer = _decompose_one(candidate, config, counts.get(candidate.name))
        reports.append(report)
        if layer is not None:
            replacements.append((candidate.names, layer))
    for names, layer in replacements:  # only once every layer succeeded: no half-decomposed model
        _replace(model, names, layer)
    first_shape = example_input[0] if isinstance(example_input, tuple) else example_input
    return DecompositionReport(
        layers=reports,
        input_shape=tuple(first_shape.shape),
        conv_macs_before=counted.conv_macs,
        model_macs_before=counted.model_macs,
        params_before=counted.params,
        config=config.to_dict(),
    )


def _decompose_one(
    candidate: _Candidate, config: DecomposeConfig, count: LayerCount | None
) -> tuple[LayerReport, FactorizedLayer | None]:
    """The decision for one layer, and its factorized replacement if it is to be replaced."""
    module = candidate.module
    input_shapes = count.input_shapes if count else []
    supported = type(module) in (nn.Conv2d, nn.Linear)
    if supported:
        macs_before = sum(layer_macs(module, shape) for shape in input_shapes)
    else:
        macs_before = count.macs if count else 0
    params_before = _param_count(module)
    report = LayerReport(
        name=candidate.name,
        layer_type=type(module).__name__,
        decomposed=False,
        macs_before=macs_before,
        macs_after=macs_before,
        params_before=params_before,
        params_after=params_before,
        aliases=tuple(candidate.names[1:]),
        is_conv=isinstance(module, nn.modules.conv._ConvNd),
    )
    reason = _skip_reason_before_svd(module, config, len(input_shapes))
    if reason and candidate.name in config.ranks:
        raise ValueError(f"config.ranks gives a rank to {candidate.name!r}, which cannot be factorized: {reason} "
                         "(the model was not changed).")
    if reason:
        report.reason = reason
        return report, None
    factorized_class = factorized_class_for(module, config.scheme)
    report.scheme = factorized_class.scheme
    criterion = config.criterion_for(candidate.name)
    if isinstance(criterion, FixedRankCriterion):
        full_rank = factorized_class.full_rank_of(module)
        _check_rank_fits(config, candidate.name, module)
        if criterion.rank > full_rank:
            report.full_rank = full_rank
            report.reason = f"requested rank {criterion.rank} exceeds the full rank {full_rank}"
            return report, None
    try:
        solution = factorized_class.solve(module, criterion, config.rank_multiple)
    except (ValueError, RuntimeError) as error:
        raise type(error)(f"layer {candidate.name!r}: {error} (the model was not changed)") from None
    layer = factorized_class.from_solution(module, solution)
    macs_after = sum(layer_macs(layer, shape) for shape in input_shapes)
    report.rank, report.full_rank, report.relative_error = solution.rank, solution.full_rank, solution.relative_error
    if macs_after >= macs_before and not config.keep_unprofitable:
        report.reason = f"factorized at rank {solution.rank} it would cost {macs_after:,} MACs, not fewer"
        return report, None
    report.decomposed = True
    report.macs_after = macs_after
    report.params_after = _param_count(layer)
    return report, layer


def apply_plan_(model: nn.Module, plan: RankPlan, from_dense_weights: bool = False) -> nn.Module:
    """Rebuild the factorized layers named by ``plan`` in the dense ``model``, in place.

    The new layers have the planned ranks. Their weights are zero, to be overwritten by a
    decomposed state dict (see :func:`trp.load_decomposed`), unless ``from_dense_weights``:
    then each is the truncated SVD of the dense layer it replaces, at the planned rank (so a
    freshly initialized dense net becomes a freshly initialized factorized one).

    Raises:
        ValueError: a planned layer is missing, has another type, or cannot take the rank;
            the message names the layer. The model is left unchanged in that case.
    """
    _refuse_wrapped(model)
    replacements = []
    for entry in plan.layers:
        try:
            module = model.get_submodule(entry.name)
        except AttributeError:
            raise ValueError(
                f"the rank plan names layer {entry.name!r}, which this model does not have: "
                "the checkpoint was made from another architecture (check the model name and its options)."
            ) from None
        expected = nn.Linear if entry.kind == "linear" else nn.Conv2d
        if isinstance(module, FactorizedLayer):
            raise ValueError(
                f"{entry.name!r} is already factorized in this model: load the checkpoint into a freshly "
                "built dense model."
            )
        if type(module) is not expected:
            raise ValueError(
                f"the rank plan factorizes {entry.name!r} as {entry.kind}, but in this model it is a "
                f"{type(module).__name__}, not an nn.{expected.__name__}: the checkpoint belongs to another model."
            )
        factorized_class = factorized_class_for(module, entry.kind)
        full_rank = factorized_class.full_rank_of(module)
        if entry.rank > full_rank:
            raise ValueError(
                f"the rank plan gives {entry.name!r} rank {entry.rank}, above its full rank {full_rank} "
                "in this model: the checkpoint belongs to a model with other layer sizes."
            )
        for alias in entry.aliases:
            if _lookup(model, alias) is not module:
                raise ValueError(f"the rank plan says {alias!r} shares {entry.name!r}, but in this model it does not.")
        layer = (factorized_class.from_dense(module, FixedRankCriterion(entry.rank)) if from_dense_weights
                 else factorized_class.like(module, entry.rank))
        replacements.append(([entry.name, *entry.aliases], layer))
    for names, layer in replacements:
        _replace(model, names, layer)
    return model


def densify_(model: nn.Module) -> nn.Module:
    """Replace every factorized layer of ``model`` by the dense layer it computes, in place
    (the inverse of :func:`decompose_`, exact up to float rounding; a layer shared under
    several names stays shared). Raises ``ValueError``, changing nothing, if a factorized
    layer or one of its factors has forward hooks, which the replacement would drop."""
    _refuse_wrapped(model, "densify")
    names_by_layer: dict[int, list[str]] = {}
    layers: dict[int, FactorizedLayer] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        if isinstance(module, FactorizedLayer):
            names_by_layer.setdefault(id(module), []).append(name)
            layers[id(module)] = module
    for key, layer in layers.items():
        if any(_has_forward_hooks(part) for part in layer.modules()):
            raise ValueError(
                f"cannot densify {names_by_layer[key][0]!r}: it (or one of its factors) has forward hooks, which "
                "the dense layer replacing it would silently drop. Remove them (handle.remove()) first, and register "
                "them on the dense layer afterwards."
            )
    for key, layer in layers.items():
        _replace(model, names_by_layer[key], layer.to_dense())
    return model


def _lookup(model: nn.Module, name: str) -> nn.Module | None:
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None
