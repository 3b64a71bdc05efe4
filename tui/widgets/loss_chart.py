"""Loss-over-steps charts drawn with braille dots: train curves as lines, eval losses as markers, with axes; one
run's (LossChart) or several overlaid (render_overlay, for the compare view).

Hand-drawn because Textual's Sparkline shows one series with no axes or step scale, and a loss chart needs two
series (train and eval) on a shared step axis with the loss range labelled; textual-plotext is not installed.

A curve is drawn from a LossSeries: its points folded into at most BLOCK_BOUND blocks, so a redraw costs the same at
step 100 k as at step 1 k (the chart redraws up to 10 times a second while a run is followed, on the UI thread that
shares the GIL with training).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Iterator, Sequence, Union

from rich.text import Text
from textual.widget import Widget

# Braille dot bits for (column 0/1, row 0..3) inside one character cell.
_DOT_BITS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))
_BRAILLE_BASE = 0x2800
_EVAL_MARK = "●"

Series = Sequence[tuple[int, float]]
BLOCK_BOUND = 2048
"""Most blocks a LossSeries keeps: past it, neighbouring blocks merge in pairs. A curve of up to this many points is
drawn exactly; a longer one from 1024-2048 blocks, several to each dot column of any terminal."""


def format_loss(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


class LossSeries:
    """One curve's finite (step, loss) points, reduced for drawing: consecutive points fold into blocks of `k` (each
    keeps its steps' sum, its losses' sum and its count), and `k` doubles whenever the blocks pass `bound`. While
    the curve has at most `bound` points each block is one point, so it is drawn exactly as the points would be;
    the chart's bounds (first and last step, lowest and highest loss) stay exact at any length.

    `follow(points)` brings it up to a list that has grown at its end by folding only the new points."""

    def __init__(self, points: Series = (), bound: int = BLOCK_BOUND) -> None:
        self.bound = max(2, bound)
        self.k = 1
        self.step_sums: list[float] = []
        self.value_sums: list[float] = []
        self.counts: list[int] = []
        self.first: float | None = None
        self.last: float | None = None
        self.low: float | None = None
        self.high: float | None = None
        self.last_value: float | None = None
        """The last finite loss folded."""
        self.followed = 0
        """How many points of the sequence it follows it has taken in (non-finite ones too)."""
        self._source: Series | None = None
        self._tail: object = None
        self.extend(points)

    def __len__(self) -> int:
        """Blocks kept: the points a redraw goes through."""
        return len(self.counts)

    def __bool__(self) -> bool:
        return bool(self.counts)

    def extend(self, points: Series) -> None:
        steps, sums, counts, k = self.step_sums, self.value_sums, self.counts, self.k
        for step, value in points:
            if value is None or not math.isfinite(value):
                continue
            if counts and counts[-1] < k:
                steps[-1] += step
                sums[-1] += value
                counts[-1] += 1
            else:
                steps.append(step)
                sums.append(value)
                counts.append(1)
                if len(counts) > self.bound:
                    self._halve()
                    steps, sums, counts, k = self.step_sums, self.value_sums, self.counts, self.k
            if self.first is None:
                self.first = self.last = step
                self.low = self.high = value
            else:
                self.first, self.last = min(self.first, step), max(self.last, step)
                self.low, self.high = min(self.low, value), max(self.high, value)
            self.last_value = value

    def _halve(self) -> None:
        """Merge blocks in pairs (only the last block may be short of `k` points, so every merged block but the
        last holds 2k)."""
        def pairs(values: list) -> list:
            return [sum(values[i:i + 2]) for i in range(0, len(values), 2)]

        self.step_sums, self.value_sums, self.counts = pairs(self.step_sums), pairs(self.value_sums), pairs(self.counts)
        self.k *= 2

    def follow(self, points: Series) -> "LossSeries":
        """This series brought up to `points`: when `points` is the sequence it last followed, grown at its end,
        only the new points are folded; any other (another run's, or one a resume cut short) is folded afresh."""
        seen = self.followed
        grown = (points is self._source and len(points) >= seen and (seen == 0 or points[seen - 1] is self._tail))
        series = self if grown else LossSeries(bound=self.bound)
        if len(points) > series.followed:
            series.extend(points[series.followed:])
        series._source, series.followed = points, len(points)
        series._tail = points[-1] if len(points) else None
        return series

    def blocks(self) -> Iterator[tuple[float, float, int]]:
        """(step sum, loss sum, count) of each block, in order: a block's point is (step sum / count, loss sum /
        count)."""
        return zip(self.step_sums, self.value_sums, self.counts)


PointsLike = Union[Series, LossSeries]


def as_series(points: PointsLike) -> LossSeries:
    return points if isinstance(points, LossSeries) else LossSeries(points)


@dataclass(frozen=True)
class Curve:
    """One run's points (a LossSeries, or (step, loss) pairs to fold into one) and its colour (its eval markers'
    too, unless `eval_style` differs)."""

    name: str
    train: PointsLike
    evals: PointsLike
    style: str
    eval_style: str | None = None

    def reduced(self) -> "Curve":
        """The same curve with its points folded into LossSeries (once, instead of at every redraw)."""
        return replace(self, train=as_series(self.train), evals=as_series(self.evals))


def render_chart(train: PointsLike, evals: PointsLike, width: int, height: int, *, train_style: str = "cyan",
                 eval_style: str = "magenta", axis_style: str = "dim",
                 empty_message: str = "waiting for the first loss…") -> Text:
    """One run's chart: the one-curve case of render_overlay."""
    return render_overlay([Curve("", train, evals, train_style, eval_style)], width, height, axis_style=axis_style,
                          empty_message=empty_message, blank_style=train_style)


def render_overlay(curves: Sequence[Curve], width: int, height: int, *, axis_style: str = "dim",
                   empty_message: str = "no losses recorded", blank_style: str | None = None) -> Text:
    """The overlaid chart as Rich Text of exactly `height` lines (each at most `width` cells). Blank cells take
    `blank_style`, or (None) whichever style makes the fewest spans."""
    points = [(as_series(c.train), as_series(c.evals), c.style, c.eval_style or c.style) for c in curves]
    drawn = [series for train, evals, _, _ in points for series in (train, evals) if series]
    if width < 12 or height < 3 or not drawn:
        lines = [empty_message[:width]] + [""] * (height - 1)
        return Text("\n".join(lines[:max(height, 1)]), style=axis_style)

    low, high = min(series.low for series in drawn), max(series.high for series in drawn)
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    first, last = min(series.first for series in drawn), max(series.last for series in drawn)
    labels = (format_loss(high), format_loss((high + low) / 2), format_loss(low))
    label_width = max(len(label) for label in labels)
    plot_w, plot_h = width - label_width - 2, height - 2
    if plot_w < 4 or plot_h < 1:
        return Text(f"loss {format_loss(drawn[-1].last_value)}", style=axis_style)
    dots_w, dots_h = plot_w * 2, plot_h * 4

    def x_of(step: int) -> int:
        return 0 if last == first else round((step - first) / (last - first) * (dots_w - 1))

    def y_of(value: float) -> int:
        return round((high - value) / (high - low) * (dots_h - 1))

    bits = [[0] * plot_w for _ in range(plot_h)]
    styles: list[list[str | None]] = [[None] * plot_w for _ in range(plot_h)]
    marks: dict[tuple[int, int], str] = {}

    def dot(x: int, y: int, style: str) -> None:
        row, col = y // 4, x // 2
        bits[row][col] |= _DOT_BITS[x % 2][y % 4]
        styles[row][col] = style  # where curves cross, the later run's colour shows

    for train, _, style, _ in points:
        buckets: dict[int, list[float]] = {}  # dot column → [loss sum, count]
        for step_sum, value_sum, count in train.blocks():
            bucket = buckets.setdefault(x_of(step_sum if count == 1 else step_sum / count), [0, 0])
            bucket[0] += value_sum
            bucket[1] += count
        previous = None
        for x in sorted(buckets):
            y = y_of(buckets[x][0] / buckets[x][1])
            if previous is None:
                dot(x, y, style)
            else:
                px, py = previous
                n = max(abs(x - px), abs(y - py), 1)
                for i in range(1, n + 1):
                    dot(round(px + (x - px) * i / n), round(py + (y - py) * i / n), style)
            previous = (x, y)
    for _, evals, _, style in points:  # eval markers on top of every line
        for step_sum, value_sum, count in evals.blocks():
            marks[(y_of(value_sum / count) // 4, x_of(step_sum / count) // 2)] = style

    text = Text(no_wrap=True, overflow="crop")
    label_rows = {0: labels[0], plot_h // 2: labels[1], plot_h - 1: labels[2]} if plot_h >= 3 else {
        0: labels[0], plot_h - 1: labels[2]}
    for row in range(plot_h):
        label = label_rows.get(row)
        text.append(f"{label:>{label_width}} ┤" if label else " " * label_width + " │", style=axis_style)
        # One span per run of same-styled cells, not per cell: Textual converts every span when it paints.
        run_style, run_chars = blank_style or "", []
        for col in range(plot_w):
            if (row, col) in marks:
                char, style = _EVAL_MARK, marks[(row, col)]
            elif bits[row][col]:
                char, style = chr(_BRAILLE_BASE + bits[row][col]), styles[row][col] or ""
            else:
                char, style = " ", run_style if blank_style is None else blank_style
            if style != run_style:
                text.append("".join(run_chars), style=run_style)
                run_style, run_chars = style, []
            run_chars.append(char)
        text.append("".join(run_chars), style=run_style)
        text.append("\n")
    text.append(" " * label_width + " └" + "─" * plot_w + "\n", style=axis_style)
    left, right = f"{first}", f"step {last}"
    gap = max(plot_w - len(left) - len(right), 1)
    text.append(" " * (label_width + 2) + left + " " * gap + right, style=axis_style)
    return text


class LossChart(Widget):
    """Train loss (line) and eval loss (●) against the step; call `set_series` with new points."""

    DEFAULT_CSS = """
    LossChart {
        width: 1fr;
        height: 1fr;
        min-height: 5;
        border: round $panel-lighten-2;
        border-title-color: $text-muted;
        padding: 0 1;
    }
    """

    def __init__(self, *, empty_message: str = "waiting for the first loss…", name: str | None = None,
                 id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.empty_message = empty_message
        self._train = LossSeries()
        self._eval = LossSeries()
        self.border_title = "loss ⣀ train"

    @property
    def points(self) -> tuple[int, int]:
        """How many (train, eval) points it shows: a caller can skip `set_series` when nothing was added."""
        return self._train.followed, self._eval.followed

    def set_series(self, train: Series, evals: Series = ()) -> None:
        """Show these points. Called again with the same lists grown (a live run's), it folds only the new points:
        neither this nor a redraw goes through a long run's whole history."""
        self._train, self._eval = self._train.follow(train), self._eval.follow(evals)
        last = train[-1][1] if len(train) else None
        title = "loss ⣀ train" + (f"  {_EVAL_MARK} eval" if len(evals) else "")
        self.border_title = title
        self.border_subtitle = f"last {format_loss(last)}" if last is not None and math.isfinite(last) else (
            f"last {last}" if last is not None else "")
        self.refresh()

    def render(self) -> Text:
        return render_chart(self._train, self._eval, self.content_size.width, self.content_size.height,
                            empty_message=self.empty_message)
