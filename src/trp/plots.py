"""Figures (PNG, matplotlib with the non-interactive Agg backend)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["plot_accuracy_vs_speedup"]


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ValueError("plots need matplotlib: pip install matplotlib (or the 'quickstart' extra of trp).") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy_vs_speedup(
    curves: Mapping[str, Sequence[tuple[float, float]]], path: str | Path, title: str, baseline: float | None = None
) -> Path:
    """One line per method through its ``(conv MAC speed-up, top-1 accuracy in %)`` points,
    as in the TRP paper's Fig. 3; ``baseline`` draws the dense accuracy as a dashed line."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 4.2), dpi=120)
    for label, points in curves.items():
        ordered = sorted(points)
        axes.plot([p[0] for p in ordered], [p[1] for p in ordered], marker="o", label=label)
    if baseline is not None:
        axes.axhline(baseline, color="gray", linestyle="--", linewidth=1, label="dense baseline")
    axes.set_xlabel("conv MAC speed-up (x)")
    axes.set_ylabel("top-1 accuracy (%)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path)
    plt.close(figure)
    return path
