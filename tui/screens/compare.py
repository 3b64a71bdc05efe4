"""The Compare view: the runs marked on the Runs screen, their loss curves overlaid and their configs side by side.

Pushed over the Runs screen (escape goes back). The run folders are read in a thread worker and come back as one
message; nothing here writes to a run folder.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Static

from tui.messages import RunsCompared
from tui.screens.base import TuneScreen
from tui.widgets.compare_chart import OverlayChart, legend, run_colour
from tui.widgets.loss_chart import Curve

DIFF_STYLE = "bold yellow"
"""How a config key whose value differs between the runs stands out."""


@dataclass
class ComparedRun:
    """What the view shows of one run, read off the UI thread."""

    run_id: str
    status: str
    step: str
    last_loss: float | None
    eval_loss: float | None
    metrics: dict[str, float]
    losses: list[tuple[int, float]]
    eval_losses: list[tuple[int, float]]
    config: dict[str, str]
    """Dotted key → value as text (empty with `error` set when the config could not be read)."""
    error: str | None = None


def flatten(data: object, prefix: str = "") -> dict[str, str]:
    """{'train': {'lr': 0.0002}} → {'train.lr': '0.0002'}; lists stay whole values (`[q_proj, v_proj]`)."""
    if isinstance(data, dict):
        out: dict[str, str] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(data, (list, tuple)):
        return {prefix: "[" + ", ".join(str(v) for v in data) + "]"}
    return {prefix: "null" if data is None else str(data).lower() if isinstance(data, bool) else str(data)}


def differing_keys(runs: list[ComparedRun]) -> set[str]:
    """Keys whose value is not the same in every run (a key missing from one run counts as differing)."""
    keys = {k for run in runs for k in run.config}
    return {k for k in keys if len({run.config.get(k) for run in runs}) > 1}


def read_run(run_dir: str) -> ComparedRun:
    """One run's summary, curves and flattened config (thread worker; never raises for a bad folder)."""
    from core import config as cfg
    from core import rundir
    from core.errors import TuneError
    from core.events import read_events
    from tui.screens.runs import step_text
    from tui.session import RunState

    path = Path(run_dir)
    summary = rundir.summarize(path)
    try:
        events = read_events(path / rundir.EVENTS_FILE)
    except OSError:
        events = []
    state = RunState.from_events(events)
    config: dict[str, str] = {}
    error = None
    try:
        config = flatten(cfg.to_dict(rundir.load_run_config(path)))
    except TuneError as exc:
        error = exc.message
    except Exception as exc:  # noqa: BLE001 - shown in the column instead of failing the whole view
        error = f"cannot read the config: {exc}"
    return ComparedRun(run_id=summary.run_id, status=summary.status, step=step_text(summary),
                       last_loss=summary.last_loss, eval_loss=summary.eval_loss,
                       metrics=dict(summary.eval_metrics or {}), losses=list(state.losses),
                       eval_losses=list(state.eval_losses), config=config, error=error)


def _number(value: float | None) -> str:
    from tui.screens.runs import loss_text

    return loss_text(value)


def comparison_table(runs: list[ComparedRun], *, only_differences: bool) -> Table:
    """Results, then config keys in rows and runs in columns; differing keys first in DIFF_STYLE, the rest dim."""
    from core.training.metrics import METRIC_NAMES

    table = Table(box=None, padding=(0, 1), show_edge=False, expand=False, header_style="bold")
    table.add_column("", no_wrap=True)
    for n, run in enumerate(runs):
        table.add_column(Text(run.run_id, style=f"bold {run_colour(n)}"), overflow="fold")
    table.add_row(Text("status", style="dim"), *[Text(r.status) for r in runs])
    table.add_row(Text("step", style="dim"), *[Text(r.step) for r in runs])
    table.add_row(Text("last loss", style="dim"), *[Text(_number(r.last_loss)) for r in runs])
    if any(r.eval_loss is not None for r in runs):
        table.add_row(Text("eval loss", style="dim"), *[Text(_number(r.eval_loss)) for r in runs])
    for key, name in METRIC_NAMES.items():
        if any(key in r.metrics for r in runs):
            table.add_row(Text(name, style="dim"), *[Text(f"{r.metrics[key]:.3f}" if key in r.metrics else "–")
                                                      for r in runs])
    differ = differing_keys(runs)
    keys = list(dict.fromkeys(k for run in runs for k in run.config))  # config order, first run first
    # The differing keys first (in bold yellow), so they show without scrolling; then the shared ones, dim.
    shown = [k for k in keys if k in differ] + ([] if only_differences else [k for k in keys if k not in differ])
    table.add_row("", *[""] * len(runs))
    heading = (f"config: {len(differ)} of {len(keys)} keys differ" if keys else "config")
    table.add_row(Text(heading, style="bold"), *[Text(r.error or "", style="red") for r in runs])
    for key in shown:
        style = DIFF_STYLE if key in differ else "dim"
        table.add_row(Text(key, style=style), *[Text(r.config.get(key, "–"), style=style) for r in runs])
    return table


class CompareScreen(TuneScreen):
    """Two or more runs side by side (the nav bar lights Runs: this view is pushed over it)."""

    NAME = "runs"
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("d", "toggle_differences", "Only differences"),
    ]

    def __init__(self, run_dirs: list[str]) -> None:
        super().__init__()
        self.run_dirs = list(run_dirs)
        self.runs: list[ComparedRun] = []
        self.only_differences = False

    def compose_body(self) -> ComposeResult:
        yield Static(Text(f"Comparing {len(self.run_dirs)} runs", style="bold"), id="compare-title")
        yield Static(id="compare-legend")
        yield OverlayChart(id="compare-chart")
        with VerticalScroll(id="compare-configs"):
            yield Static(id="compare-table")

    def on_mount(self) -> None:
        self.query_one("#compare-configs", VerticalScroll).border_title = "results and config"
        dirs = list(self.run_dirs)
        self.run_worker(lambda: self.post_message(RunsCompared([read_run(d) for d in dirs])), thread=True,
                        group="compare-read", exclusive=True, exit_on_error=False)

    def on_runs_compared(self, message: RunsCompared) -> None:
        self.runs = message.runs
        curves = [Curve(run.run_id, run.losses, run.eval_losses, run_colour(n)) for n, run in enumerate(self.runs)]
        chart = self.query_one(OverlayChart)
        chart.empty_message = "no losses recorded"
        chart.set_curves(curves)
        self.query_one("#compare-legend", Static).update(legend(curves))
        self._show_table()

    def _show_table(self) -> None:
        self.query_one("#compare-table", Static).update(
            comparison_table(self.runs, only_differences=self.only_differences))
        differ = len(differing_keys(self.runs))
        self.query_one("#compare-configs", VerticalScroll).border_subtitle = (
            "d: all keys" if self.only_differences else f"d: only the {differ} differing keys")

    def action_toggle_differences(self) -> None:
        self.only_differences = not self.only_differences
        if self.runs:
            self._show_table()

    def action_back(self) -> None:
        self.app.pop_screen()


__all__ = ["CompareScreen", "ComparedRun", "comparison_table", "differing_keys", "flatten", "read_run"]
