"""The loss chart's cost per redraw does not grow with the run: a curve is kept as at most BLOCK_BOUND blocks,
extended with only the new points as a live run grows, with its axes (first and last step, lowest and highest loss)
exact at any length."""
from __future__ import annotations

import math

from tui.widgets.loss_chart import BLOCK_BOUND, Curve, LossChart, LossSeries, render_overlay


def _curve(n: int, first: int = 1) -> list[tuple[int, float]]:
    return [(step, 2.0 + math.sin(step / 300)) for step in range(first, first + n)]


class CountingList(list):
    """A list that counts the items read out of it (by iteration or slicing)."""

    read = 0

    def __iter__(self):
        for item in super().__iter__():
            self.read += 1
            yield item

    def __getitem__(self, index):
        item = super().__getitem__(index)
        self.read += len(item) if isinstance(index, slice) else 1
        return item


def test_a_short_curve_is_drawn_from_every_point():
    series = LossSeries(_curve(BLOCK_BOUND) + [(BLOCK_BOUND + 1, math.nan)])
    assert len(series) == BLOCK_BOUND  # one block per finite point: the chart is exact
    assert all(count == 1 for _, _, count in series.blocks())


def test_a_100k_step_curve_is_drawn_from_no_more_blocks_than_a_short_one():
    points = _curve(100_000)
    points[12_345] = (12_346, 9.5)  # a spike: the highest loss
    points[67_890] = (67_891, 0.25)  # the lowest
    series = LossSeries(points)
    assert BLOCK_BOUND // 2 <= len(series) <= BLOCK_BOUND
    assert sum(count for _, _, count in series.blocks()) == 100_000  # every point counted once
    assert (series.first, series.last, series.low, series.high) == (1, 100_000, 0.25, 9.5)
    lines = render_overlay([Curve("", series, [], "cyan")], 60, 12).plain.splitlines()
    assert [lines[0].split("┤")[0].strip(), lines[-3].split("┤")[0].strip()] == ["9.5", "0.25"]  # exact bounds
    assert lines[-1].split() == ["1", "step", "100000"]  # exact first and last step
    plot = [line[len(" 9.5 ┤"):] for line in lines[:-2]]
    assert any(row[0].strip() for row in plot) and any(row[-1].strip() for row in plot)  # the curve spans the width


def test_following_a_growing_run_folds_only_the_new_points():
    """As a live run's history grows, each update reads the new points only, and ends where a fold of the whole
    history in one go would."""
    history = CountingList(_curve(50_000))
    series = LossSeries().follow(history)
    for step in range(50_001, 50_201):
        history.append((step, 1.0))
        history.read = 0
        series = series.follow(history)
        assert history.read < 10  # the new point and a look at the ends (the list only grew), not 50 k
    assert series.followed == 50_200
    whole = LossSeries(list(history))
    assert list(series.blocks()) == list(whole.blocks())
    assert (series.first, series.last, series.low, series.high) == (whole.first, whole.last, whole.low, whole.high)


def test_a_history_cut_short_by_a_resume_is_folded_afresh():
    history = _curve(3_000)
    series = LossSeries().follow(history)
    cut = [p for p in history if p[0] <= 1_000]  # RunState drops the points past the resume checkpoint
    series = series.follow(cut)
    assert (series.followed, series.last, len(series)) == (1_000, 1_000, 1_000)


def test_the_chart_widget_does_not_copy_the_history_per_update():
    chart = LossChart()
    history, evals = CountingList(_curve(100_000)), CountingList([(100, 2.5)])
    chart.set_series(history, evals)
    for step in range(100_001, 100_011):
        history.append((step, 1.5))
        history.read = 0
        chart.set_series(history, evals)
        assert history.read < 10
    assert chart.points == (100_010, 1)
    assert chart.border_subtitle == "last 1.5"
