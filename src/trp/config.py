"""The one place for decomposition options, shared by the Python API, training and the CLI."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from .criteria import EnergyCriterion, FixedRankCriterion, RankCriterion, criterion_from_dict
from .lowrank import SCHEMES, Scheme

__all__ = ["DecomposeConfig", "CONFIG_VERSION"]

CONFIG_VERSION = 1
GroupedPolicy = Literal["per_group", "skip"]


@dataclass
class DecomposeConfig:
    """What :func:`trp.decompose_` factorizes and how.

    Attributes:
        scheme: ``"channel"`` (TRP1: ``kh x kw`` conv to rank ``r``, then ``1 x 1``) or
            ``"spatial"`` (TRP2: ``kh x 1`` then ``1 x kw``). Linear layers always become
            two linears.
        criterion: how each layer's rank is chosen; default: prune 2 % of the singular-value
            energy (the paper's CIFAR-10 setting, ``EnergyCriterion(0.02)``).
        ranks: fixed ranks by qualified layer name, e.g. ``{"layer1.0.conv1": 8}``; each named
            layer takes its rank instead of the criterion's, in decomposition and in TRP's
            projections (rounded up to ``rank_multiple`` like every rank; an all-zero weight
            still gets rank 1). A layer shared under several names is keyed by its first name
            (the one reports show). A name that is not a layer the config selects, a layer
            that cannot be factorized (depthwise, say) and a rank above the layer's full rank
            are errors; a ``filter_fn`` may still turn a named layer down.
            :func:`trp.target.ranks_for_speedup` fills it for a MAC budget.
        rank_multiple: round every rank up to a multiple of this (e.g. 8 for SIMD or
            tensor-core widths), never above the full rank.
        include: regexes; if given, only layers whose qualified name fully matches one are
            considered. A pattern that matches no layer is an error (it is likely a typo).
        exclude: regexes; layers whose name fully matches one are left alone. Exclusion wins
            over inclusion; a ``filter_fn`` passed to ``decompose_`` is applied last.
        decompose_linear: also factorize ``nn.Linear`` layers.
        grouped: ``"per_group"`` factorizes a grouped conv group by group (one rank for all
            groups); ``"skip"`` leaves grouped convs dense. Depthwise convs are always skipped.
        keep_unprofitable: also factorize layers whose factorized form costs at least as many
            MACs as the dense layer (by default they stay dense and are reported as such).
    """

    scheme: Scheme = "channel"
    criterion: RankCriterion = field(default_factory=lambda: EnergyCriterion(0.02))
    ranks: dict[str, int] = field(default_factory=dict)
    rank_multiple: int = 1
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    decompose_linear: bool = True
    grouped: GroupedPolicy = "per_group"
    keep_unprofitable: bool = False

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, got {self.scheme!r}.")
        if not isinstance(self.criterion, RankCriterion):
            raise TypeError(
                f"criterion must be a rank criterion such as EnergyCriterion(0.02), got {self.criterion!r}."
            )
        if not isinstance(self.ranks, dict):
            raise ValueError(f"ranks must be a dict of layer names to ranks, e.g. {{'layer1.0.conv1': 8}}, got {self.ranks!r}.")
        self.ranks = dict(self.ranks)
        for name, rank in self.ranks.items():
            if not isinstance(name, str) or isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
                raise ValueError(f"ranks must map layer names to positive integers, got {name!r}: {rank!r}.")
        if isinstance(self.rank_multiple, bool) or not isinstance(self.rank_multiple, int) or self.rank_multiple < 1:
            raise ValueError(f"rank_multiple must be a positive integer, got {self.rank_multiple!r}.")
        for name in ("decompose_linear", "keep_unprofitable"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}.")
        if self.grouped not in ("per_group", "skip"):
            raise ValueError(f"grouped must be 'per_group' or 'skip', got {self.grouped!r}.")
        self.include = tuple(self.include)
        self.exclude = tuple(self.exclude)
        for pattern in (*self.include, *self.exclude):
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"invalid layer-name regex {pattern!r}: {error}.") from None

    def criterion_for(self, name: str) -> RankCriterion:
        """The criterion of the layer called ``name``: its fixed rank from ``ranks``, else
        ``criterion``."""
        return FixedRankCriterion(self.ranks[name]) if name in self.ranks else self.criterion

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"version": CONFIG_VERSION}
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "criterion":
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, dict):
                value = dict(value)
            data[item.name] = value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DecomposeConfig:
        data = dict(data)
        version = data.pop("version", CONFIG_VERSION)
        if version != CONFIG_VERSION:
            raise ValueError(
                f"decomposition config version {version} is not supported by this trp "
                f"(it reads version {CONFIG_VERSION}); upgrade trp."
            )
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown decomposition config keys {unknown}; known keys: {sorted(known)}.")
        if "criterion" in data:
            data["criterion"] = criterion_from_dict(data["criterion"])
        for key in ("include", "exclude"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> DecomposeConfig:
        return cls.from_dict(json.loads(text))
