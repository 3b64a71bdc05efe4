"""GPU and host read-outs from a core.resources Snapshot: a compact summary for the run view, cards for Monitor.

History lines are drawn here rather than with Textual's Sparkline because Sparkline rescales to the data's own
min–max: a GPU sitting at 79–80 of 80 GiB would look like it swings from empty to full. Here 0 is the floor and
the GPU's total (or 100 %) the ceiling, and the newest sample is at the right edge.
"""
from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

if TYPE_CHECKING:
    from core.resources.gpus import GpuSample, Snapshot
    from core.resources.host import HostSample

_BLOCKS = " ▁▂▃▄▅▆▇█"
_EIGHTHS = " ▏▎▍▌▋▊▉"


def gib(value: float | None, digits: int = 1) -> str:
    return "?" if value is None else f"{value:.{digits}f}"


def pct(value: float | None) -> str:
    return "?" if value is None else f"{value:.0f}%"


def fill_style(fraction: float | None) -> str:
    if fraction is None:
        return "dim"
    return "red" if fraction >= 0.9 else "yellow" if fraction >= 0.7 else "green"


def meter(used: float | None, total: float | None, width: int) -> Text:
    """A bar of `width` cells filled to used/total (eighths of a cell), coloured by how full it is."""
    text = Text()
    if width <= 0:
        return text
    if used is None or not total:
        return text.append("░" * width, style="dim")
    fraction = max(0.0, min(used / total, 1.0))
    eighths = round(fraction * width * 8)
    full, part = divmod(eighths, 8)
    bar = "█" * full + (_EIGHTHS[part] if part and full < width else "")
    text.append(bar, style=fill_style(fraction))
    text.append(" " * (width - len(bar)), style="on grey23")
    return text


def history_line(values: Sequence[float | None], top: float | None, width: int, style: str = "cyan") -> Text:
    """The last `width` samples as block heights between 0 and `top`; unknown samples are blank."""
    text = Text(no_wrap=True)
    recent = list(values)[-width:] if width > 0 else []
    text.append(" " * (width - len(recent)))
    cells = []
    for value in recent:
        if value is None or not top:
            cells.append((" ", ""))
            continue
        level = max(0, min(round(value / top * 8), 8))
        cells.append((_BLOCKS[level], style) if level else ("▁", "dim"))
    # One span per run of same-styled cells (cheaper to paint than one per cell).
    for cell_style, run in itertools.groupby(cells, key=lambda cell: cell[1]):
        text.append("".join(char for char, _ in run), style=cell_style)
    return text


def host_line(host: HostSample | None) -> Text:
    """`CPU 35% of 16 · RAM 5.2/62.8 GiB · this app 0.4 GiB`."""
    text = Text()
    if host is None:
        return text.append("host: not sampled yet", style="dim")
    text.append("CPU ", style="bold").append(pct(host.cpu_pct))
    if host.cpu_count:
        text.append(f" of {host.cpu_count}", style="dim")
    text.append("  RAM ", style="bold").append(f"{gib(host.ram_used_gib)}/{gib(host.ram_total_gib)} GiB")
    if getattr(host, "process_rss_gib", None) is not None:
        text.append(f"  app {gib(host.process_rss_gib)} GiB", style="dim")
    return text


def gpu_line(gpu: GpuSample, bar_width: int = 12) -> Text:
    """`GPU0 NVIDIA H100 ▕████   ▏ 12.3/80.0 GiB  util 45%`."""
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(f"GPU{gpu.index} ", style="bold")
    text.append(meter(gpu.memory_used_gib, gpu.memory_total_gib, bar_width))
    text.append(f" {gib(gpu.memory_used_gib)}/{gib(gpu.memory_total_gib)} GiB")
    text.append("  util ", style="dim").append(pct(gpu.utilization_pct))
    text.append(f"  {gpu.name}", style="dim")
    return text


def no_gpu_text(snapshot: Snapshot | None) -> str:
    status = str(getattr(snapshot, "gpu_status", "") or "") if snapshot is not None else ""
    if not status or status == "ok":
        return "No NVIDIA GPU found"
    return status[0].upper() + status[1:]


class GpuSummary(Static):
    """A few lines for the run view: the GPUs the run uses (memory, utilisation) and the host."""

    DEFAULT_CSS = """
    GpuSummary {
        height: auto;
        max-height: 4;
    }
    """

    _lines = 0

    def show(self, snapshot: Snapshot | None, max_gpus: int = 2) -> None:
        if snapshot is None:
            self.update(Text("GPU: sampling…", style="dim"))
            return
        lines: list[Text] = []
        gpus = list(_run_gpus(snapshot))
        if not gpus:
            lines.append(Text(f"{no_gpu_text(snapshot)} — training on CPU", style="dim"))
        for gpu in gpus[:max_gpus]:
            lines.append(gpu_line(gpu))
        if len(gpus) > max_gpus:
            lines.append(Text(f"+{len(gpus) - max_gpus} more GPUs (Monitor: m)", style="dim"))
        lines.append(host_line(snapshot.host))
        # A layout pass only when the number of lines changes (GPUs appearing or going); otherwise repaint.
        self.update(Text("\n").join(lines), layout=len(lines) != self._lines)
        self._lines = len(lines)


def _run_gpus(snapshot: Snapshot) -> Sequence[GpuSample]:
    """The GPUs a run would use (CUDA_VISIBLE_DEVICES respected by the sampler), else all of them."""
    run_gpus = getattr(snapshot, "run_gpus", None)
    gpus = run_gpus() if callable(run_gpus) else None
    return gpus if gpus is not None else (snapshot.gpus or ())


class GpuCard(Vertical):
    """Monitor's view of one GPU: identity, temperature and power; memory and utilisation now and as history;
    the processes on it."""

    DEFAULT_CSS = """
    GpuCard {
        height: auto;
        border: round $panel-lighten-2;
        border-title-color: $text;
        padding: 0 1;
    }
    GpuCard > Static { height: auto; }
    """

    HISTORY_LABEL = 6  # "mem   " / "util  " before the history lines

    def __init__(self, index: int, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.index = index
        self._pending: tuple | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="gpu-now")
        yield Static(id="gpu-history")
        yield Static(id="gpu-processes")

    def on_mount(self) -> None:
        if self._pending is not None:
            self.call_after_refresh(lambda: self.show(*self._pending))

    def show(self, gpu: GpuSample, memory_history: Sequence[float | None], util_history: Sequence[float | None],
             in_run: bool) -> None:
        self._pending = (gpu, memory_history, util_history, in_run)
        if not self.query("#gpu-now"):
            return  # not composed yet: on_mount draws it
        self.border_title = f"GPU {gpu.index} · {gpu.name}"
        extras = []
        if gpu.temperature_c is not None:
            extras.append(f"{gpu.temperature_c:.0f}°C")
        if gpu.power_w is not None:
            limit = f"/{gpu.power_limit_w:.0f}" if gpu.power_limit_w else ""
            extras.append(f"{gpu.power_w:.0f}{limit} W")
        if in_run:
            extras.append("used by runs")
        self.border_subtitle = " · ".join(extras)
        width = max(self.content_size.width, 20)
        bar = max(min(width - 42, 40), 8)
        now = Text(no_wrap=True, overflow="ellipsis")
        now.append("mem   ", style="bold").append(meter(gpu.memory_used_gib, gpu.memory_total_gib, bar))
        now.append(f" {gib(gpu.memory_used_gib)}/{gib(gpu.memory_total_gib)} GiB")
        now.append(f" ({gib(gpu.memory_free_gib)} free)", style="dim")
        now.append("  util ", style="bold").append(pct(gpu.utilization_pct))
        self.query_one("#gpu-now", Static).update(now)
        # Memory and utilisation histories side by side: one row per card keeps two GPUs on an 80x24 screen.
        half = (width - 2) // 2
        span = max(half - self.HISTORY_LABEL, 4)
        history = Text(no_wrap=True)
        history.append("mem ↗ ", style="dim").append(history_line(memory_history, gpu.memory_total_gib, span,
                                                                  "magenta"))
        history.append("  ").append("util↗ ", style="dim").append(history_line(util_history, 100.0, span, "cyan"))
        self.query_one("#gpu-history", Static).update(history)
        procs = Text(no_wrap=True, overflow="ellipsis")
        processes = list(gpu.processes or ())
        if not processes:
            procs.append("no processes", style="dim")
        for n, proc in enumerate(sorted(processes, key=lambda p: -(p.memory_gib or 0))):
            if n:
                procs.append("\n")
            if n == 4:
                procs.append(f"+{len(processes) - 4} more", style="dim")
                break
            procs.append(f"{proc.pid:>7} ", style="bold").append(f"{gib(proc.memory_gib):>6} GiB ")
            procs.append(f"{(proc.user or '?')[:10]:<10} ", style="dim").append(proc.command or "?")
        self.query_one("#gpu-processes", Static).update(procs)
