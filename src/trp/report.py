"""What a decomposition did: per layer and in total, as data, JSON and a printed table."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .plan import PlanEntry, RankPlan

__all__ = ["LayerReport", "DecompositionReport"]


@dataclass
class LayerReport:
    """The decision for one candidate layer. MACs are per example, over all its calls.

    ``scheme``, ``rank``, ``full_rank`` and ``relative_error`` are ``None`` when the layer was
    skipped before its type or shape was assessed (e.g. depthwise; a fixed rank above the full
    rank sets ``scheme`` and ``full_rank`` only); ``macs_after == macs_before`` when it stays dense.
    ``reason`` says why a layer stayed dense (empty when it was decomposed).
    """

    name: str
    layer_type: str
    decomposed: bool
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    scheme: str | None = None
    rank: int | None = None
    full_rank: int | None = None
    relative_error: float | None = None
    reason: str = ""
    aliases: tuple[str, ...] = ()
    is_conv: bool = True


@dataclass
class DecompositionReport:
    """Per-layer decisions and whole-model totals (MACs per example, for ``input_shape``).

    ``conv_speedup`` is the TRP paper's speed-up: conv MACs of the dense model over conv MACs
    of the decomposed one, every conv of the model counted (not only the candidates).
    """

    layers: list[LayerReport]
    input_shape: tuple[int, ...]
    conv_macs_before: int
    model_macs_before: int
    params_before: int
    config: dict[str, Any] = field(default_factory=dict)

    def _saved(self, conv_only: bool) -> int:
        return sum(
            layer.macs_before - layer.macs_after
            for layer in self.layers
            if layer.decomposed and (layer.is_conv or not conv_only)
        )

    @property
    def decomposed(self) -> list[LayerReport]:
        return [layer for layer in self.layers if layer.decomposed]

    @property
    def ranks(self) -> dict[str, int]:
        """The rank of each decomposed layer, by name: the decomposed architecture."""
        return {layer.name: layer.rank for layer in self.decomposed}

    @property
    def skipped(self) -> list[LayerReport]:
        return [layer for layer in self.layers if not layer.decomposed]

    @property
    def conv_macs_after(self) -> int:
        return self.conv_macs_before - self._saved(conv_only=True)

    @property
    def model_macs_after(self) -> int:
        return self.model_macs_before - self._saved(conv_only=False)

    @property
    def params_after(self) -> int:
        return self.params_before - sum(
            layer.params_before - layer.params_after for layer in self.layers if layer.decomposed
        )

    @property
    def conv_speedup(self) -> float:
        return self.conv_macs_before / max(self.conv_macs_after, 1)

    @property
    def model_speedup(self) -> float:
        return self.model_macs_before / max(self.model_macs_after, 1)

    @property
    def plan(self) -> RankPlan:
        """The rank plan that rebuilds this decomposition (see :func:`trp.apply_plan_`)."""
        return RankPlan(
            [PlanEntry(layer.name, layer.scheme or "", layer.rank or 0, layer.aliases) for layer in self.decomposed]
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_shape": list(self.input_shape),
            "config": self.config,
            "totals": {
                "conv_macs_before": self.conv_macs_before,
                "conv_macs_after": self.conv_macs_after,
                "conv_speedup": self.conv_speedup,
                "model_macs_before": self.model_macs_before,
                "model_macs_after": self.model_macs_after,
                "model_speedup": self.model_speedup,
                "params_before": self.params_before,
                "params_after": self.params_after,
                "layers_decomposed": len(self.decomposed),
                "layers_skipped": len(self.skipped),
            },
            "layers": [{**asdict(layer), "aliases": list(layer.aliases)} for layer in self.layers],
        }

    def table(self) -> str:
        """A fixed-width table: one row per candidate layer, then the totals."""
        header = f"{'layer':<34} {'scheme':<8} {'rank':>9} {'rel.err':>8} {'MACs before':>13} {'MACs after':>13}  note"
        rows = [header, "-" * len(header)]
        for layer in self.layers:
            rank = f"{layer.rank}/{layer.full_rank}" if layer.rank is not None else "-"
            error = f"{layer.relative_error:.4f}" if layer.relative_error is not None else "-"
            note = "" if layer.decomposed else f"dense: {layer.reason}"
            scheme = layer.scheme if layer.decomposed else "-"
            rows.append(
                f"{_clip(layer.name, 34):<34} {scheme:<8} {rank:>9} {error:>8} "
                f"{layer.macs_before:>13,} {layer.macs_after:>13,}  {note}"
            )
        rows += [
            "-" * len(header),
            f"decomposed {len(self.decomposed)} of {len(self.layers)} candidate layers; input {tuple(self.input_shape)}; "
            "MACs per example (1 MAC = 1 multiply-accumulate)",
            f"conv MACs   {self.conv_macs_before:>15,} -> {self.conv_macs_after:>15,}   speed-up {self.conv_speedup:.2f}x",
            f"model MACs  {self.model_macs_before:>15,} -> {self.model_macs_after:>15,}   speed-up {self.model_speedup:.2f}x",
            f"parameters  {self.params_before:>15,} -> {self.params_after:>15,}   ratio {self.params_before / max(self.params_after, 1):.2f}x",
        ]
        return "\n".join(rows)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1) :]
