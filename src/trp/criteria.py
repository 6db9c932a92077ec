"""Rank criteria: how many singular values a truncated SVD keeps.

Each criterion is a small frozen dataclass with one method, ``select_rank``, that maps a
descending vector of singular values to a rank in ``[1, len(values)]``. They are named so
that their argument cannot be misread:

* :class:`EnergyCriterion` — ``pruned_energy`` is the fraction ``e`` of the squared
  singular-value energy that may be *dropped* (TRP paper, Eq. 4). ``e = 0.02`` keeps 98 %.
* :class:`ValueCriterion` — keep every singular value ``>= min_value`` (absolute units of
  the weight matrix), as the public TRP code does at the end of training.
* :class:`FixedRankCriterion` — keep exactly ``rank`` values.
* :class:`FractionCriterion` — keep ``ceil(fraction * full_rank)`` values.

Criteria round-trip through plain dicts (``to_dict`` / :func:`criterion_from_dict`) and a
compact text form used by the command line (:func:`parse_criterion`, e.g. ``energy:0.02``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch

__all__ = [
    "RankCriterion",
    "EnergyCriterion",
    "ValueCriterion",
    "FixedRankCriterion",
    "FractionCriterion",
    "criterion_from_dict",
    "parse_criterion",
]


@runtime_checkable
class RankCriterion(Protocol):
    """Anything that turns singular values into a rank."""

    kind: ClassVar[str]

    def select_rank(self, singular_values: torch.Tensor) -> int:
        """Return the rank to keep, ``1 <= rank <= len(singular_values)``.

        Args:
            singular_values: shape ``(p,)``, non-negative, sorted descending.
        """
        ...

    def to_dict(self) -> dict[str, Any]: ...


class _Serializable:
    kind: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}  # type: ignore[call-overload]


@dataclass(frozen=True)
class EnergyCriterion(_Serializable):
    """Keep the fewest singular values whose squares hold at least ``1 - pruned_energy`` of
    the total: the smallest ``k`` with ``sum_{j>k} s_j^2 <= pruned_energy * sum_j s_j^2``.

    ``pruned_energy = 0`` keeps every singular value that is not exactly zero; computed
    singular values of a rank-deficient float matrix are rarely exactly zero, so this is
    usually the full rank (use ``ValueCriterion`` for a numerical-rank cut-off).
    """

    kind: ClassVar[str] = "energy"
    pruned_energy: float

    def __post_init__(self) -> None:
        if not (0.0 <= self.pruned_energy < 1.0) or math.isnan(self.pruned_energy):
            raise ValueError(
                f"pruned_energy must lie in [0, 1), got {self.pruned_energy}: it is the fraction "
                "of squared singular-value energy that is dropped (the paper uses 0.02 on CIFAR-10)."
            )

    def select_rank(self, singular_values: torch.Tensor) -> int:
        energy = singular_values.double().square()
        # tail[k] = sum_{j >= k} s_j^2, summed from the small end so tiny values are not lost.
        tail = energy.flip(0).cumsum(0).flip(0)
        total = tail[0]
        # Ranks k = 1..p-1 leave tail[k] behind; rank p leaves nothing.
        fits = tail[1:] <= self.pruned_energy * total
        rank = int(fits.to(torch.int8).argmax()) + 1 if bool(fits.any()) else len(energy)
        return max(rank, 1)


@dataclass(frozen=True)
class ValueCriterion(_Serializable):
    """Keep every singular value ``>= min_value`` (at least one)."""

    kind: ClassVar[str] = "value"
    min_value: float

    def __post_init__(self) -> None:
        if not self.min_value >= 0.0:
            raise ValueError(f"min_value must be >= 0, got {self.min_value}.")

    def select_rank(self, singular_values: torch.Tensor) -> int:
        return max(int((singular_values >= self.min_value).sum()), 1)


@dataclass(frozen=True)
class FixedRankCriterion(_Serializable):
    """Keep exactly ``rank`` singular values; a rank above the full rank is an error."""

    kind: ClassVar[str] = "rank"
    rank: int

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"rank must be a positive integer, got {self.rank!r}.")

    def select_rank(self, singular_values: torch.Tensor) -> int:
        full_rank = len(singular_values)
        if self.rank > full_rank:
            raise ValueError(
                f"requested rank {self.rank} exceeds the full rank {full_rank} of this matrix; "
                "use a smaller rank, or a fraction/energy criterion that adapts to each layer."
            )
        return self.rank


@dataclass(frozen=True)
class FractionCriterion(_Serializable):
    """Keep ``ceil(fraction * full_rank)`` singular values (at least one)."""

    kind: ClassVar[str] = "fraction"
    fraction: float

    def __post_init__(self) -> None:
        if not (0.0 < self.fraction <= 1.0):
            raise ValueError(f"fraction must lie in (0, 1], got {self.fraction}.")

    def select_rank(self, singular_values: torch.Tensor) -> int:
        # round() first so that 0.5 * 64 is 32, not 33 through float noise.
        return max(math.ceil(round(self.fraction * len(singular_values), 9)), 1)


_CRITERIA: dict[str, type] = {
    cls.kind: cls
    for cls in (EnergyCriterion, ValueCriterion, FixedRankCriterion, FractionCriterion)
}
_FIELDS = {"energy": "pruned_energy", "value": "min_value", "rank": "rank", "fraction": "fraction"}


def criterion_from_dict(data: dict[str, Any]) -> RankCriterion:
    """Inverse of ``criterion.to_dict()``."""
    kind = data.get("kind")
    if kind not in _CRITERIA:
        raise ValueError(f"unknown rank criterion {kind!r}; expected one of {sorted(_CRITERIA)}.")
    fields = {key: value for key, value in data.items() if key != "kind"}
    return _CRITERIA[kind](**fields)


def parse_criterion(text: str) -> RankCriterion:
    """Parse ``KIND:VALUE`` as written on the command line.

    ``energy:0.02`` (prune 2 % of the energy), ``value:0.05`` (drop singular values below
    0.05), ``rank:16`` (fixed rank), ``fraction:0.5`` (half the full rank).
    """
    kind, sep, value = text.partition(":")
    if not sep or kind not in _CRITERIA:
        raise ValueError(
            f"cannot read rank criterion {text!r}; write KIND:VALUE with KIND one of "
            f"{sorted(_CRITERIA)}, e.g. energy:0.02, value:0.05, rank:16, fraction:0.5."
        )
    try:
        number: float | int = int(value) if kind == "rank" else float(value)
    except ValueError:
        raise ValueError(f"cannot read the number in rank criterion {text!r}.") from None
    return _CRITERIA[kind](**{_FIELDS[kind]: number})
