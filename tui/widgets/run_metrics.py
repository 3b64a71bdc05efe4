"""Read-outs of a RunState: the status line, the phase strip, the progress label and the metrics table."""
from __future__ import annotations

import math

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from core.events import PHASES
from core.units import count, duration
from core.training.metrics import METRIC_NAMES

PHASE_NAMES = {"loading_model": "load model", "preparing_data": "prepare data", "training": "train",
               "saving": "save"}
PHASE_ACTIVITY = {"loading_model": "loading the model", "preparing_data": "preparing data",
                  "saving": "saving"}
STATUS_STYLES = {"idle": "dim", "starting": "cyan", "running": "bold green", "pausing": "yellow",
                 "paused": "bold yellow", "stopping": "yellow", "finished": "bold green", "stopped": "bold yellow",
                 "failed": "bold red"}
STATUS_ICONS = {"idle": "○", "starting": "◌", "running": "▶", "pausing": "⏸", "paused": "⏸", "stopping": "■",
                "finished": "✓", "stopped": "■", "failed": "✗"}


def number(value: float | None, fmt: str = ".3g") -> str:
    if value is None:
        return "–"
    if not math.isfinite(value):
        return str(value)
    return format(value, fmt)


def status_text(state, *, model: str = "", method: str = "", pid: int | None = None) -> Text:
    """`▶ running  demo:tiny-llama · lora · run-id` (with the phase while it is not training yet); `pid`: the run
    trains in that other process (`▶ running (pid 4242)`)."""
    status = state.status
    text = Text(no_wrap=True, overflow="ellipsis")
    label = status
    if status == "running" and state.phase and state.phase != "training":
        label = PHASE_ACTIVITY.get(state.phase, state.phase)
    text.append(f"{STATUS_ICONS.get(status, '?')} {label}", style=STATUS_STYLES.get(status, ""))
    if pid is not None and status in ("running", "paused"):
        text.append(f" (pid {pid})", style=STATUS_STYLES.get(status, ""))
    parts = [p for p in (model, method, state.run_id) if p]
    if parts:
        text.append("  " + " · ".join(parts), style="dim")
    return text


def phase_strip(state) -> Text:
    """`✓ load model  ✓ prepare data  ▸ train  · save`: where the run is among the engine's phases. A run that
    failed or was stopped marks the phase it ended in with its status (`✗ prepare data`), never with a tick."""
    text = Text(no_wrap=True, overflow="ellipsis")
    current = state.phase
    for n, phase in enumerate(PHASES):
        name = PHASE_NAMES.get(phase, phase)
        if n:
            text.append("  ")
        if phase == current and not state.final:
            text.append(f"▸ {name}", style="bold cyan")
        elif phase == current and state.status != "finished":
            text.append(f"{STATUS_ICONS.get(state.status, '?')} {name}", style=STATUS_STYLES.get(state.status, ""))
        elif phase in state.phases_seen or state.status == "finished":
            text.append(f"✓ {name}", style="green")
        else:
            text.append(f"· {name}", style="dim")
    return text


def progress_numbers(state) -> tuple[str, float | None, float]:
    """(label, total, done) for the progress bar: the phase's own count outside training, else the steps.

    total None makes the bar indeterminate (it animates): a phase without a count still shows it is alive.
    """
    trained = bool(state.losses) or state.step > 0
    if not state.final and state.phase != "training" and (state.phase is not None or not trained):
        name = PHASE_ACTIVITY.get(state.phase, state.phase or "starting")
        if state.phase_total:
            return (f"{name} {state.phase_done or 0}/{state.phase_total}", float(state.phase_total),
                    float(state.phase_done or 0))
        return name + "…", None, 0.0
    if state.final and not trained:
        where = "before training" if state.phase is None else f"while {PHASE_ACTIVITY.get(state.phase, state.phase)}"
        return f"{state.status} {where}", 1.0, 0.0
    total = state.max_steps or None
    label = f"step {state.step}/{state.max_steps or '?'}  epoch {state.epoch:.2f}"
    return label, float(total) if total else None, float(state.step)


def group_throughput(state) -> str:
    """Under several processes: `2 · 617 tok/s each` (the group's tokens/s shared out over its processes)."""
    each = state.tokens_per_second_per_process
    if each is None and state.tokens_per_second is not None:
        each = state.tokens_per_second / state.world_size
    return f"{state.world_size} · {'–' if each is None else f'{each:,.0f}'} tok/s each"


def metrics_table(state) -> Table:
    """Loss, learning rate, grad norm, tokens/s, times and GPU memory as a two-column grid."""
    table = Table.grid(padding=(0, 1))
    table.add_column(style="dim", no_wrap=True, min_width=9)
    table.add_column(no_wrap=True, overflow="ellipsis")

    def row(name: str, value: str, style: str = "") -> None:
        table.add_row(name, Text(value, style=style))

    loss_style = "bold red" if state.loss is not None and not math.isfinite(state.loss) else "bold"
    row("loss", number(state.loss, ".4f"), loss_style)
    if state.eval_losses:
        row("eval loss", number(state.eval_losses[-1][1], ".4f"))
    for key, name in METRIC_NAMES.items():  # classification runs
        value = state.eval_metrics.get(key)
        if isinstance(value, (int, float)):
            row(name, number(value, ".3f"), "bold")
    row("lr", number(state.learning_rate, ".2e"))
    row("grad norm", number(state.grad_norm, ".3g"))
    row("tokens/s", "–" if state.tokens_per_second is None else f"{state.tokens_per_second:,.0f}")
    if state.world_size > 1:
        row("processes", group_throughput(state))
    row("step time", "–" if state.step_seconds is None else f"{state.step_seconds:.2f} s")
    row("elapsed", duration(state.elapsed_seconds if state.step or state.elapsed_seconds else None))
    row("ETA", duration(state.eta_seconds))
    if state.gpu_memory_gib is not None or state.peak_gpu_memory_gib is not None:
        peak = f" (peak {state.peak_gpu_memory_gib:.1f})" if state.peak_gpu_memory_gib is not None else ""
        row("GPU mem", f"{number(state.gpu_memory_gib, '.1f')} GiB{peak}")
        if state.reserved_gib is not None:
            row("reserved", f"{state.reserved_gib:.1f} GiB")  # torch's cache: nvidia-smi shows this + the context
        if state.estimated_peak_gib is not None and state.peak_gpu_memory_gib is not None:
            row("estimate", f"{state.estimated_peak_gib:.1f} GiB peak")  # beside the measured peak above
    for rank, gib in enumerate(state.peak_gib_per_rank):
        row(f"rank {rank} peak", f"{gib:.1f} GiB")  # rank r trains on the r-th GPU the run sees
    if state.model is not None:
        share = state.model.trainable_params / state.model.total_params if state.model.total_params else 0
        trains, total = count(state.model.trainable_params, sep=""), count(state.model.total_params, sep="")
        row("trains", f"{trains}/{total} ({share:.1%})")
        row("device", f"{state.model.device} {state.model.dtype}")
    if state.data is not None:
        val = f" + {state.data.val_examples} val" if state.data.val_examples else " examples"
        row("data", f"{state.data.train_examples}{val}")
    return table


class RunMetrics(Static):
    """The metrics column of the run view."""

    DEFAULT_CSS = """
    RunMetrics {
        width: 34;
        height: 1fr;
        border: round $panel-lighten-2;
        border-title-color: $text-muted;
        padding: 0 1;
    }
    """

    def on_mount(self) -> None:
        self.border_title = "now"
        self._shown: tuple | None = None

    def show(self, state) -> None:
        """Repaint when a value it shows changed (fixed size: no layout pass needed)."""
        key = (state.loss, state.eval_losses[-1] if state.eval_losses else None, state.learning_rate,
               state.grad_norm, state.tokens_per_second, state.step_seconds, round(state.elapsed_seconds),
               state.eta_seconds and round(state.eta_seconds), state.gpu_memory_gib, state.peak_gpu_memory_gib,
               state.reserved_gib, state.estimated_peak_gib,
               state.world_size, state.tokens_per_second_per_process, tuple(state.peak_gib_per_rank),
               id(state.model), id(state.data), tuple(sorted(state.eval_metrics.items())))
        if key != self._shown:
            self._shown = key
            self.update(metrics_table(state), layout=False)
