"""The rank plan: which layers were factorized, by which scheme, at which rank.

It is the architecture of a decomposed model as data: saved beside the weights, it lets
:func:`trp.apply_plan_` rebuild the factorized layers in a freshly built dense model before
the weights are loaded. It serializes to versioned JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PlanEntry", "RankPlan", "PLAN_VERSION"]

PLAN_VERSION = 1
LAYER_KINDS = ("channel", "spatial", "linear")


@dataclass(frozen=True)
class PlanEntry:
    """One factorized layer.

    Attributes:
        name: qualified module name, e.g. ``"layer1.0.conv1"``.
        kind: ``"channel"``, ``"spatial"`` (conv schemes) or ``"linear"``.
        rank: intermediate width per group.
        aliases: other names of the same (shared) module.
    """

    name: str
    kind: str
    rank: int
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in LAYER_KINDS:
            raise ValueError(f"plan entry {self.name!r}: kind must be one of {LAYER_KINDS}, got {self.kind!r}.")
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"plan entry {self.name!r}: rank must be a positive integer, got {self.rank!r}.")


@dataclass
class RankPlan:
    """The factorized layers of a model, in the order they were decomposed."""

    layers: list[PlanEntry] = field(default_factory=list)

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for entry in self.layers:
            for name in (entry.name, *entry.aliases):
                if name in seen:
                    raise ValueError(f"the rank plan names layer {name!r} twice; the plan is corrupt.")
                seen.add(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": PLAN_VERSION,
            "layers": [
                {"name": e.name, "kind": e.kind, "rank": e.rank, "aliases": list(e.aliases)} for e in self.layers
            ],
        }

    @classmethod
    def from_dict(cls, data: Any) -> RankPlan:
        if not isinstance(data, dict) or "layers" not in data:
            raise ValueError("not a trp rank plan: expected a JSON object with a 'layers' list.")
        version = data.get("version")
        if version != PLAN_VERSION:
            raise ValueError(
                f"rank plan version {version!r} is not supported (this trp reads version {PLAN_VERSION}); "
                "upgrade trp or re-create the checkpoint."
            )
        try:
            layers = [
                PlanEntry(str(item["name"]), str(item["kind"]), item["rank"], tuple(item.get("aliases", ())))
                for item in data["layers"]
            ]
        except (KeyError, TypeError) as error:
            raise ValueError(f"malformed rank plan entry ({error!r}): each needs name, kind and rank.") from None
        return cls(layers)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> RankPlan:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"rank plan is not valid JSON: {error}.") from None
        return cls.from_dict(data)
