"""The figures' layout: every point the figure claims to show is visible and told apart."""

import pytest
from matplotlib.figure import Figure

from trp.plots import plot_accuracy_vs_speedup, plot_training_curves


@pytest.fixture
def saved_figures(monkeypatch):
    """The figures the plot functions save, kept open for inspection."""
    figures = []
    original = Figure.savefig

    def keep(figure, *args, **kwargs):
        figures.append(figure)
        return original(figure, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    return figures


def test_twelve_curves_get_twelve_colours_and_a_legend_beside_the_axes(tmp_path, saved_figures):
    curves = {f"run {i}": [(epoch, 50.0 + i + epoch) for epoch in range(1, 4)] for i in range(12)}
    plot_training_curves(curves, tmp_path / "curves.png", "twelve runs")
    axes, = saved_figures[0].axes
    assert len({line.get_color() for line in axes.get_lines()}) == 12
    legend_box = axes.get_legend().get_window_extent()
    assert legend_box.x0 >= axes.get_window_extent().x1  # not over the data
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_the_speed_up_axis_spans_the_shown_points_not_the_collapsed_ones(tmp_path, saved_figures):
    curves = {"kept": [(1.0, 90.0), (3.0, 85.0), (12.0, 10.0)], "not run yet": []}
    plot_accuracy_vs_speedup(curves, tmp_path / "fig3.png", "t", references={"ref": [(4.0, 88.0)]}, floor=75)
    axes, = saved_figures[0].axes
    low, high = axes.get_xlim()
    assert low <= 1.0 and 4.0 <= high < 12.0
    assert axes.get_ylim()[0] == 75


def test_a_front_is_drawn_as_the_staircase_of_what_is_reachable(tmp_path, saved_figures):
    """Between two nets of a front, the best reachable is the faster net's accuracy: no line
    through points that no net reaches."""
    plot_accuracy_vs_speedup({"front": [(3.0, -2.0), (2.0, -1.0)]}, tmp_path / "front.png", "t", baseline=0.0,
                             y_label="change (points)", y_unit="points", front=True)
    axes, = saved_figures[0].axes
    line = axes.get_lines()[0]
    # steps-pre: from (2, -1) down to (2, -2) first, then across to (3, -2)
    assert line.get_drawstyle() == "steps-pre" and axes.get_ylabel() == "change (points)"
    assert list(line.get_xdata()) == [2.0, 3.0]  # sorted by speed-up
