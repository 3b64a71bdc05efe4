"""Loss-over-steps charts drawn with braille dots: train curves as lines, eval losses as markers, with axes; one
run's (LossChart) or several overlaid (render_overlay, for the compare view).

Hand-drawn because Textual's Sparkline shows one series with no axes or step scale, and a loss chart needs two
series (train and eval) on a shared step axis with the loss range labelled; textual-plotext is not installed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from rich.text import Text
from textual.widget import Widget

# Braille dot bits for (column 0/1, row 0..3) inside one character cell.
_DOT_BITS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))
_BRAILLE_BASE = 0x2800
_EVAL_MARK = "●"

Series = Sequence[tuple[int, float]]


def _finite(points: Series) -> list[tuple[int, float]]:
    return [(s, v) for s, v in points if v is not None and math.isfinite(v)]


def format_loss(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


@dataclass(frozen=True)
class Curve:
    """One run's points and its colour (its eval markers' too, unless `eval_style` differs)."""

    name: str
    train: Series
    evals: Series
    style: str
    eval_style: str | None = None


def render_chart(train: Series, evals: Series, width: int, height: int, *, train_style: str = "cyan",
                 eval_style: str = "magenta", axis_style: str = "dim",
                 empty_message: str = "waiting for the first loss…") -> Text:
    """One run's chart: the one-curve case of render_overlay."""
    return render_overlay([Curve("", train, evals, train_style, eval_style)], width, height, axis_style=axis_style,
                          empty_message=empty_message, blank_style=train_style)


def render_overlay(curves: Sequence[Curve], width: int, height: int, *, axis_style: str = "dim",
                   empty_message: str = "no losses recorded", blank_style: str | None = None) -> Text:
    """The overlaid chart as Rich Text of exactly `height` lines (each at most `width` cells). Blank cells take
    `blank_style`, or (None) whichever style makes the fewest spans."""
    points = [(_finite(c.train), _finite(c.evals), c.style, c.eval_style or c.style) for c in curves]
    every = [p for train, evals, _, _ in points for p in train + evals]
    if width < 12 or height < 3 or not every:
        lines = [empty_message[:width]] + [""] * (height - 1)
        return Text("\n".join(lines[:max(height, 1)]), style=axis_style)

    values, steps = [v for _, v in every], [s for s, _ in every]
    low, high = min(values), max(values)
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    first, last = min(steps), max(steps)
    labels = (format_loss(high), format_loss((high + low) / 2), format_loss(low))
    label_width = max(len(label) for label in labels)
    plot_w, plot_h = width - label_width - 2, height - 2
    if plot_w < 4 or plot_h < 1:
        return Text(f"loss {format_loss(values[-1])}", style=axis_style)
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
        buckets: dict[int, list[float]] = {}
        for step, value in train:
            buckets.setdefault(x_of(step), []).append(value)
        previous = None
        for x in sorted(buckets):
            y = y_of(sum(buckets[x]) / len(buckets[x]))
            if previous is None:
                dot(x, y, style)
            else:
                px, py = previous
                n = max(abs(x - px), abs(y - py), 1)
                for i in range(1, n + 1):
                    dot(round(px + (x - px) * i / n), round(py + (y - py) * i / n), style)
            previous = (x, y)
    for _, evals, _, style in points:  # eval markers on top of every line
        for step, value in evals:
            marks[(y_of(value) // 4, x_of(step) // 2)] = style

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
        self._train: list[tuple[int, float]] = []
        self._eval: list[tuple[int, float]] = []
        self.border_title = "loss ⣀ train"

    @property
    def points(self) -> tuple[int, int]:
        """How many (train, eval) points it shows: a caller can skip `set_series` when nothing was added."""
        return len(self._train), len(self._eval)

    def set_series(self, train: Series, evals: Series = ()) -> None:
        self._train, self._eval = list(train), list(evals)
        last = next((v for _, v in reversed(self._train)), None)
        title = "loss ⣀ train" + (f"  {_EVAL_MARK} eval" if self._eval else "")
        self.border_title = title
        self.border_subtitle = f"last {format_loss(last)}" if last is not None and math.isfinite(last) else (
            f"last {last}" if last is not None else "")
        self.refresh()

    def render(self) -> Text:
        return render_chart(self._train, self._eval, self.content_size.width, self.content_size.height,
                            empty_message=self.empty_message)
