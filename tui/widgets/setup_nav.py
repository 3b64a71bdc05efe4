"""The one-line bar at the top of every screen: the numbered screens (current one lit) and free GPU memory."""
from __future__ import annotations

from typing import TYPE_CHECKING

from textual import getters
from textual.content import Content
from textual.widgets import Static

from tui.app import SCREENS, TuneApp

if TYPE_CHECKING:
    from core.resources.gpus import Snapshot


def gpu_summary(snapshot: Snapshot | None) -> str:
    """Free memory of the GPUs a run would use, in a few words (or why there is none)."""
    if snapshot is None:
        return "GPU: checking…"
    gpus = list(snapshot.run_gpus())
    if not gpus:
        return "no GPU"
    # A single-GPU run trains on the first visible GPU, so its free memory is the number that matters.
    first = gpus[0]
    free = "?" if first.memory_free_gib is None else _gib(first.memory_free_gib)
    total = "?" if first.memory_total_gib is None else f"{first.memory_total_gib:.0f}"
    label = "GPU" if len(gpus) == 1 else f"{len(gpus)}×GPU"
    return f"{label} {free}/{total} GiB free"


def _gib(value: float) -> str:
    # Tenths only matter on small GPUs; "79/80" keeps the bar inside 80 columns.
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


class NavBar(Static):
    """Shows where the user is; each name is clickable, and the digits are the keys (bound on the App)."""

    DEFAULT_CSS = """
    NavBar { height: 1; width: 1fr; background: $panel; color: $text-muted; }
    """

    app = getters.app(TuneApp)

    def __init__(self, current: str, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.current = current
        self.snapshot: Snapshot | None = None
        self._shown: tuple | None = None

    def on_mount(self) -> None:
        self.snapshot = self.app.snapshot
        self.refresh_bar()

    def set_snapshot(self, snapshot: Snapshot | None) -> None:
        self.snapshot = snapshot
        self.refresh_bar()

    def refresh_bar(self) -> None:
        parts: list[Content] = []  # the set-up steps, then the run-time screens
        for i, (name, (_m, _c, title)) in enumerate(SCREENS.items(), start=1):
            style = "bold reverse $accent" if name == self.current else ""
            label = Content.from_markup(f"[@click=app.show('{name}')]{i} {title}[/]")
            parts.append(label.stylize(style) if style else label)
        summary = gpu_summary(self.snapshot)
        short = summary.removesuffix(" free")
        # Eight screens and the GPU read-out fill 80 columns: when they don't fit, drop "free", then the outer
        # margins, then the spaces around the divider — never a screen's name.
        for margin, divider, gpu in ((" ", " │ ", summary), (" ", " │ ", short), ("", " │ ", short), ("", "│", short)):
            left = Content(margin) + Content(" ").join(parts[:4]) + Content(divider) + Content(" ").join(parts[4:])
            right = Content(gpu + margin)
            if left.cell_length + 1 + right.cell_length <= self.size.width:
                break
        gap = max(1, self.size.width - left.cell_length - right.cell_length)
        content = Content.assemble(left, " " * gap, right)
        key = (content.plain, tuple(content.spans))
        if key != self._shown:  # the GPU poll calls this every 1.5 s; repaint only when the bar changes
            self._shown = key
            self.update(content, layout=False)  # one line, always: no layout pass needed

    def on_resize(self) -> None:
        self.refresh_bar()
