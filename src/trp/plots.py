"""Figures (PNG, matplotlib with the non-interactive Agg backend)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = [
    "plot_accuracy_vs_speedup", "plot_layer_ranks", "plot_rank_dynamics", "plot_spectra", "plot_training_curves",
]

LEGEND_INSIDE_AT_MOST = 6  # more entries than this go beside the axes, where they cannot hide points


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ValueError("plots need matplotlib: pip install matplotlib (or the 'quickstart' extra of trp).") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _distinct_colors(plt, axes, lines: int) -> None:
    """Give each of ``lines`` lines its own colour: matplotlib's ten repeat from the eleventh
    line, so past ten the cycle goes on with the lighter shades of the same ten."""
    if lines > 10:
        shades = plt.get_cmap("tab20").colors
        axes.set_prop_cycle(color=[*shades[0::2], *shades[1::2]])


def plot_accuracy_vs_speedup(
    curves: Mapping[str, Sequence[tuple[float, float]]],
    path: str | Path,
    title: str,
    baseline: float | None = None,
    references: Mapping[str, Sequence[tuple[float, float]]] | None = None,
    floor: float | None = None,
    y_label: str = "top-1 accuracy (%)",
    y_unit: str = "%",
    front: bool = False,
) -> Path:
    """One line per method through its ``(conv MAC speed-up, top-1 accuracy in %)`` points,
    as in the TRP paper's Fig. 3; ``baseline`` draws the dense accuracy as a dashed line;
    ``references`` (e.g. a paper's points) are drawn dashed with open markers; ``floor`` cuts
    the accuracy axis there (collapsed points would squash the rest) and says so. ``y_label``
    and ``y_unit`` name another accuracy measure (e.g. the change against a baseline, in
    points). ``front`` draws each curve as the staircase of a Pareto front: between two of its
    points, the best reachable is the faster one's accuracy, not a line between them."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6.4, 4.6), dpi=120)
    _distinct_colors(plt, axes, len(curves) + len(references or {}))
    for label, points in curves.items():
        ordered = sorted(points)
        axes.plot([p[0] for p in ordered], [p[1] for p in ordered], marker="o", label=label,
                  drawstyle="steps-pre" if front else "default")
    for label, points in (references or {}).items():
        ordered = sorted(points)
        axes.plot([p[0] for p in ordered], [p[1] for p in ordered], marker="s", linestyle=":",
                  markerfacecolor="none", label=label)
    if baseline is not None:
        axes.axhline(baseline, color="gray", linestyle="--", linewidth=1, label="dense baseline")
    every_line = (*curves.values(), *(references or {}).values())
    hidden = sum(p[1] < floor for points in every_line for p in points) if floor is not None else 0
    if hidden:
        shown = [p[0] for points in every_line for p in points if p[1] >= floor]
        axes.set_ylim(bottom=floor)
        axes.set_xlim(0.9 * min(shown, default=1.0), 1.05 * max(shown, default=2.0))
        axes.text(0.01, 0.01, f"{hidden} point(s) below {floor:g} {y_unit} not shown", transform=axes.transAxes,
                  fontsize=8)
    return _finish(plt, figure, axes, path, title, "conv MAC speed-up (x)", y_label)


def plot_layer_ranks(ranks: Mapping[str, Mapping[str, int]], path: str | Path, title: str) -> Path:
    """Per-layer rank (x: layers in model order) for each labelled model."""
    plt = _pyplot()
    layers = list(next(iter(ranks.values())))
    figure, axes = plt.subplots(figsize=(max(6, 0.35 * len(layers)), 4.2), dpi=120)
    for label, by_layer in ranks.items():
        axes.plot(range(len(layers)), [by_layer.get(name, float("nan")) for name in layers], marker="o", label=label)
    axes.set_xticks(range(len(layers)), layers, rotation=75, fontsize=7)
    return _finish(plt, figure, axes, path, title, None, "rank")


def plot_rank_dynamics(
    series: Mapping[str, Sequence[tuple[int, int]]],
    path: str | Path,
    title: str,
    references: Mapping[str, Sequence[tuple[float, float]]] | None = None,
) -> Path:
    """Rank against projection count, one step line per label (the TRP paper's Fig. 2);
    ``references`` (e.g. a paper's points) are drawn as open markers."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6.4, 4.6), dpi=120)
    for label, points in series.items():
        axes.step([p[0] for p in points], [p[1] for p in points], where="post", label=label)
    for label, points in (references or {}).items():
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="s", linestyle="none",
                  markerfacecolor="none", color="black", label=label)
    return _finish(plt, figure, axes, path, title, "projections", "rank")


def plot_training_curves(curves: Mapping[str, Sequence[tuple[int, float]]], path: str | Path, title: str) -> Path:
    """Test top-1 (%) against epoch, one line per label (``(epoch, accuracy %)`` points)."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6.4, 4.6), dpi=120)
    _distinct_colors(plt, axes, len(curves))
    for label, points in curves.items():
        axes.plot([p[0] for p in points], [p[1] for p in points], label=label)
    return _finish(plt, figure, axes, path, title, "epoch", "test top-1 (%)")


def plot_spectra(spectra: Mapping[str, Sequence[float]], path: str | Path, title: str) -> Path:
    """Singular values (descending, divided by the largest) on a log scale, one line per label."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 4.2), dpi=120)
    for label, values in spectra.items():
        top = max(values[0], 1e-30)
        axes.semilogy(range(1, len(values) + 1), [max(v / top, 1e-12) for v in values], label=label)
    return _finish(plt, figure, axes, path, title, "index", "singular value / largest", grid="both")


def _finish(plt, figure, axes, path: str | Path, title: str, xlabel: str | None, ylabel: str, grid: str = "major") -> Path:
    """Label, title, grid and legend the axes, then write the figure to ``path`` and close it."""
    if xlabel is not None:
        axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(alpha=0.3, which=grid)
    if len(axes.get_legend_handles_labels()[1]) > LEGEND_INSIDE_AT_MOST:  # beside the axes, not over the data
        axes.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)
    else:
        axes.legend()
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, bbox_inches="tight")
    plt.close(figure)
    return path
