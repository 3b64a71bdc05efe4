"""Several runs' loss curves overlaid on shared axes: each run one colour, train as a braille line, eval as ●.

Drawn by the loss chart's renderer (tui.widgets.loss_chart.render_overlay), so a compared curve reads like the
single-run one; this module adds the run colours, the legend and the widget.
"""
from __future__ import annotations

from typing import Sequence

from rich.text import Text
from textual.widget import Widget

from tui.widgets.loss_chart import Curve, render_overlay

PALETTE = ("cyan", "magenta", "yellow", "green", "red", "blue", "bright_white", "bright_cyan", "bright_magenta",
           "bright_yellow")
"""Run colours in marking order; past ten runs they repeat (the legend still names every run)."""


def run_colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


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
        self.curves = [curve.reduced() for curve in curves]
        self.refresh()

    def render(self) -> Text:
        return render_overlay(self.curves, self.content_size.width, self.content_size.height,
                              empty_message=self.empty_message)


__all__ = ["OverlayChart", "legend", "run_colour", "PALETTE"]
