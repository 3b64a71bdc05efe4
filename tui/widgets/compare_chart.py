"""Several runs' loss curves overlaid on shared axes: each run one colour, train as a braille line, eval as ●.

Built on the loss chart's conventions (same dots, labels and axis layout) so a compared curve reads like the
single-run one; kept apart so the single-run chart, redrawn ten times a second while training, stays simple.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from rich.text import Text
from textual.widget import Widget

from tui.widgets.loss_chart import _BRAILLE_BASE, _DOT_BITS, _EVAL_MARK, Series, _finite, format_loss

PALETTE = ("cyan", "magenta", "yellow", "green", "red", "blue", "bright_white", "bright_cyan", "bright_magenta",
           "bright_yellow")
"""Run colours in marking order; past ten runs they repeat (the legend still names every run)."""


def run_colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


@dataclass(frozen=True)
class Curve:
    """One run's points and its colour."""

    name: str
    train: Series
    evals: Series
    style: str


def render_overlay(curves: Sequence[Curve], width: int, height: int, *, axis_style: str = "dim",
                   empty_message: str = "no losses recorded") -> Text:
    """The overlaid chart as Rich Text of exactly `height` lines (each at most `width` cells)."""
    points = [(_finite(c.train), _finite(c.evals), c.style) for c in curves]
    every = [p for train, evals, _ in points for p in train + evals]
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

    for train, evals, style in points:
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
    for _, evals, style in points:  # eval markers on top of every line
        for step, value in evals:
            marks[(y_of(value) // 4, x_of(step) // 2)] = style

    text = Text(no_wrap=True, overflow="crop")
    label_rows = {0: labels[0], plot_h // 2: labels[1], plot_h - 1: labels[2]} if plot_h >= 3 else {
        0: labels[0], plot_h - 1: labels[2]}
    for row in range(plot_h):
        label = label_rows.get(row)
        text.append(f"{label:>{label_width}} ┤" if label else " " * label_width + " │", style=axis_style)
        run_style, run_chars = "", []
        for col in range(plot_w):
            if (row, col) in marks:
                char, style = _EVAL_MARK, marks[(row, col)]
            elif bits[row][col]:
                char, style = chr(_BRAILLE_BASE + bits[row][col]), styles[row][col] or ""
            else:
                char, style = " ", run_style  # a blank takes any style: fewer spans
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


def legend(curves: Sequence[Curve]) -> Text:
    """`⣀ train  ● eval   ■ run-a  ■ run-b`: what the glyphs mean, then each run in its colour."""
    text = Text(no_wrap=False)
    text.append("⣀ train  ● eval ", style="dim")
    for curve in curves:
        text.append("  ■ ", style=curve.style).append(curve.name, style=curve.style)
    return text


class OverlayChart(Widget):
    """Loss curves of several runs on one chart; call `set_curves`."""

    DEFAULT_CSS = """
    OverlayChart {
        width: 1fr;
        height: 1fr;
        min-height: 5;
        border: round $panel-lighten-2;
        border-title-color: $text-muted;
        padding: 0 1;
    }
    """

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.curves: list[Curve] = []
        self.empty_message = "reading the runs' events…"
        self.border_title = "loss"

    def set_curves(self, curves: Sequence[Curve]) -> None:
        self.curves = list(curves)
        self.refresh()

    def render(self) -> Text:
        return render_overlay(self.curves, self.content_size.width, self.content_size.height,
                              empty_message=self.empty_message)


__all__ = ["Curve", "OverlayChart", "render_overlay", "legend", "run_colour", "PALETTE"]
