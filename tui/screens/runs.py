"""The Runs screen: the runs in the output folder; one's curves (from its events.jsonl) and config; resume a stopped
run; start a new run from a run's config.

Listing and reading run folders happen in thread workers (a folder with many long runs must not stall the UI);
their results come back as messages.

Over 400 lines because it is one screen's list, detail pane, marks, and the
actions on a run (attach, resume, chat, compare, export), which all act on the selected row.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.syntax import Syntax
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Static

from core import methods, rundir
from core.errors import TuneError
from core.training.metrics import confusion_lines, metrics_text
from tui.messages import RunLoaded, RunsListed
from tui.screens.base import TuneScreen
from tui.widgets.loss_chart import LossChart
from core.units import duration
from tui.widgets.run_metrics import STATUS_STYLES

if TYPE_CHECKING:
    from core.config import RunConfig
    from core.rundir import RunSummary

COLUMNS = ("run", "status", "step", "loss", "eta", "method", "model", "started")
MODEL_MIN = 10
"""Narrowest model column worth showing (an ellipsized name shorter than this says little)."""
SCROLLBAR = 2
"""Columns kept free for the table's vertical scrollbar, which appears when the runs outgrow the table."""
LIVE_RELIST_SECONDS = 3.0
"""While a run trains, the list (its step and loss) is refreshed this often when the screen is shown."""
RESUMABLE = ("stopped", "failed", "crashed")
"""Statuses whose latest checkpoint can be resumed."""


def started_text(started: float | str | None) -> str:
    if isinstance(started, (int, float)) and math.isfinite(started):
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(started))
    return str(started or "–")[:16]


def step_text(run: RunSummary) -> str:
    if run.max_steps:
        return f"{run.step}/{run.max_steps}"
    return str(run.step or 0)


def loss_text(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}" if math.isfinite(value) else str(value)


def fit_columns(rows: list[tuple[str, ...]], width: int, padding: int = 1) -> tuple[tuple[str, ...], int]:
    """The columns of the runs table (rows of COLUMNS' cells) that fit `width` cells, and the model column's width.
    What gives way, in order: `started` (an automatic run id begins with the same date and time), `eta` while no
    run has one, the model names (ellipsized down to MODEL_MIN), `method` when every id names its method, and last
    `model` (an automatic id names the model too). Ids are never cut: ids too long for even the narrowest table
    scroll sideways."""
    need = {c: max([len(c)] + [len(row[i]) for row in rows]) for i, c in enumerate(COLUMNS)}

    def room_for_model(columns: tuple[str, ...]) -> int:
        return width - sum(need[c] + 2 * padding for c in columns if c != "model") - 2 * padding

    def without(columns: tuple[str, ...], name: str) -> tuple[str, ...]:
        return tuple(c for c in columns if c != name)

    columns = COLUMNS
    no_eta = all(row[COLUMNS.index("eta")] == "–" for row in rows)
    for name, may_go in (("started", True), ("eta", no_eta)):
        if room_for_model(columns) >= need["model"]:
            return columns, need["model"]
        if may_go:
            columns = without(columns, name)
    if room_for_model(columns) < MODEL_MIN and all(row[COLUMNS.index("method")] in row[0] for row in rows):
        columns = without(columns, "method")
    room = room_for_model(columns)
    if room >= MODEL_MIN:
        return columns, min(need["model"], room)
    return without(columns, "model"), 0


def ellipsize(text: str, width: int) -> str:
    return text if len(text) <= width else text[:max(0, width - 1)] + "…"


class RunsScreen(TuneScreen):
    """Run history of `app.output_dir`."""

    NAME = "runs"
    BINDINGS = [
        Binding("enter", "open", "Open", show=False),
        Binding("r", "resume", "Resume"),
        Binding("a", "attach", "Attach"),
        Binding("n", "new_from_config", "New from config"),
        Binding("c", "chat", "Chat"),
        Binding("space", "toggle_mark", "Mark", show=False),  # (README; keeps the footer to the keys in use)
        Binding("v", "compare", "Compare"),
        Binding("e", "export", "Merge and save"),
        Binding("f5", "reload", "Refresh"),
    ]

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.runs: list[RunSummary] = []
        self.selected: RunSummary | None = None
        self._loaded_dir: str | None = None
        self._seen_status: tuple | None = None
        self._listing: list[tuple] | None = None
        self._listed_at = 0.0
        self._live_version = -1
        self.marked: set[str] = set()
        """Run folders marked (space) for the Compare view."""
        self._marks_shown: frozenset | None = None
        self._fitted_width: int | None = None
        """The screen width the table's columns were fitted to."""

    def compose_body(self) -> ComposeResult:
        yield Static(id="runs-title")
        table: DataTable = DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        yield table
        yield Static(id="runs-empty")
        # Across the whole width: a failed run's message (with the command that starts it again) must fit.
        yield Static(id="runs-summary")
        with Horizontal(id="runs-detail"):
            with Vertical(id="runs-left"):
                yield Static(id="runs-confusion")
                yield LossChart(id="runs-chart", empty_message="no losses recorded")
            with VerticalScroll(id="runs-config"):
                yield Static(id="runs-config-text")

    def on_mount(self) -> None:
        self.query_one("#runs-config", VerticalScroll).border_title = "config"
        # (The first listing comes from on_screen_resume, which follows the mount.)
        # A run that ends while the app is open should appear here without a manual refresh.
        self.set_interval(0.5, self._watch_session)

    def on_screen_resume(self) -> None:
        self.action_reload()

    def on_resize(self) -> None:
        if self.runs and self._fitted_width != self.app.size.width:
            self._listing = None  # the same runs, laid out again for the new width
            self.on_runs_listed(RunsListed(self.runs, None))

    # ------------------------------------------------------------------ listing

    def action_reload(self) -> None:
        self._listed_at = time.monotonic()
        output_dir = self.app.output_dir
        self.query_one("#runs-title", Static).update(Text.assemble(("Runs in ", "dim"), (str(output_dir), "bold")))
        self.run_worker(lambda: self._list(output_dir), thread=True, group="runs-list", exclusive=True,
                        exit_on_error=False)

    def _list(self, output_dir: str) -> None:
        runs: list[RunSummary] = []
        error = None
        try:
            runs = list(rundir.list_runs(output_dir))
        except TuneError as exc:
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 - shown in place instead of crashing the screen
            error = f"Could not list the runs in {output_dir}: {exc}"
        self.post_message(RunsListed(runs, error))

    def _watch_session(self) -> None:
        session = self.app.session
        state = session.state
        key = (id(state), state.status)
        if key != self._seen_status:
            first = self._seen_status is None
            self._seen_status = key
            if not first and (state.final or state.status == "running"):
                self.action_reload()
                return
        if not self.is_current:
            return
        if self._is_live(self.selected):
            # The run training in this app: its curve comes from the live state, not from re-reading the file.
            if state.version != self._live_version:
                self._live_version = state.version
                self.query_one("#runs-chart", LossChart).set_series(state.losses, state.eval_losses)
        if session.running and time.monotonic() - self._listed_at > LIVE_RELIST_SECONDS:
            self.action_reload()

    def _is_here(self, run: RunSummary | None) -> bool:
        """The run trains in this app's own process."""
        return self.app.session.owns_process and self.app.session.running and self._is_live(run)

    def _is_live(self, run: RunSummary | None) -> bool:
        """This app's current (or last) run: relative and absolute spellings of the folder are the same run."""
        state = self.app.session.state
        return (run is not None and state.run_dir is not None
                and Path(state.run_dir).resolve() == Path(run.run_dir).resolve())

    def on_runs_listed(self, message: RunsListed) -> None:
        table = self.query_one("#runs-table", DataTable)
        previous = str(self.selected.run_dir) if self.selected is not None else None
        listing = [(str(r.run_dir), r.status, r.step, r.last_loss, r.checkpoint, r.final_dir, r.viewers)
                   for r in message.runs]
        marks = frozenset(self.marked)
        if listing == self._listing and marks == self._marks_shown and self.runs and not message.error:
            return  # nothing changed: keep the cursor and the open run as they are
        before = {row[0]: row for row in self._listing or ()}
        self._listing, self._marks_shown = listing, marks
        self.runs = message.runs
        rows = [(("✓ " if str(run.run_dir) in marks else "") + run.run_id,  # ✓: marked for the Compare view (space)
                 run.status_words(here=self._is_here(run)), step_text(run), loss_text(run.last_loss),
                 duration(run.eta_seconds) if run.status == "running" else "–", run.method, run.model,
                 started_text(run.started)) for run in self.runs]
        # Columns sized from their contents up front: DataTable caches rows rendered before it measures new
        # cells on idle, and without fixed widths a busy machine could leave rows drawn at the old widths.
        # Only the columns that fit the screen (an 80-column terminal shows no cut values, no sideways scroll).
        columns, model_width = fit_columns(rows, self.app.size.width - SCROLLBAR, table.cell_padding)
        self._fitted_width = self.app.size.width
        table.clear(columns=True)
        for column in columns:
            n = COLUMNS.index(column)
            widest = max([len(column)] + [len(row[n]) for row in rows])
            table.add_column(column, key=column, width=model_width if column == "model" else widest)
        for run, row in zip(self.runs, rows):
            cells = dict(zip(COLUMNS, row))
            cells["status"] = Text(cells["status"], style=STATUS_STYLES.get(run.status, ""))
            cells["model"] = ellipsize(cells["model"], model_width)
            table.add_row(*(cells[c] for c in columns), key=str(run.run_dir))
        empty = not self.runs
        self.set_class(empty, "-empty")
        if message.error or empty:
            self.query_one("#runs-empty", Static).update(
                Text(message.error, style="red") if message.error else
                Text(f"No runs in {self.app.output_dir} yet. Launch one from the Review screen; it appears here "
                     "with its curves and config."))
            self.selected = None
            self.refresh_bindings()
            return
        row = next((n for n, run in enumerate(self.runs) if str(run.run_dir) == previous), 0)
        table.move_cursor(row=row)
        run = self.runs[row]
        # Re-read the open run only when it changed on disk (and is not the live one, drawn from memory).
        changed = before.get(str(run.run_dir)) != listing[row]
        self._select(run, force=changed and not self._is_live(run))

    # ------------------------------------------------------------------ one run

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if 0 <= event.cursor_row < len(self.runs):
            self._select(self.runs[event.cursor_row])

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if 0 <= event.cursor_row < len(self.runs):
            self._open(self.runs[event.cursor_row])

    def action_open(self) -> None:
        if self.selected is not None:
            self._open(self.selected)

    def _open(self, run: RunSummary) -> None:
        """Enter: a running run opens live on the Run view (this app's own, or followed from its folder); any
        other is read again here."""
        if run.status == "running" and self._is_live(run) and self.app.session.running:
            self.app.show("run")
        elif run.status == "running" and not self._is_live(run):
            self.app.attach(str(run.run_dir))
        else:
            self._select(run, force=True)

    def _select(self, run: RunSummary, force: bool = False) -> None:
        if run is not self.selected:
            self.selected = run
            self.refresh_bindings()  # Resume is only offered for a run that can be resumed
        self._show_summary(run)
        run_dir = str(run.run_dir)
        if force or self._loaded_dir != run_dir:
            if self._loaded_dir != run_dir:
                chart = self.query_one("#runs-chart", LossChart)
                chart.empty_message = f"reading {rundir.EVENTS_FILE}…"
                chart.set_series([], [])
                self._live_version = -1
            self._loaded_dir = run_dir
            self.run_worker(lambda: self._load(run_dir), thread=True, group="runs-load", exclusive=True,
                            exit_on_error=False)

    def _show_summary(self, run: RunSummary) -> None:
        text = Text(no_wrap=False)
        text.append(run.run_id, style="bold").append("  ")
        text.append(run.status_words(here=self._is_here(run)), style=STATUS_STYLES.get(run.status, ""))
        text.append(f"  step {step_text(run)}  loss {loss_text(run.last_loss)}", style="dim")
        if run.eval_loss is not None:
            text.append(f"  eval {loss_text(run.eval_loss)}", style="dim")
        metrics = metrics_text(run.eval_metrics)  # classification: accuracy, macro-F1
        if metrics:
            text.append(f"  {metrics}", style="bold")
        if run.final_dir:
            text.append(f"\nmodel saved in {run.final_dir}", style="dim")
        elif run.checkpoint:
            text.append(f"\ncheckpoint {Path(run.checkpoint).name}", style="dim")
            if run.status in RESUMABLE:
                text.append("  r resumes it", style="bold")
        if run.message:
            text.append(f"\n{run.message}", style="red" if run.status == "failed" else "dim")
        self.query_one("#runs-summary", Static).update(text)
        # A classifier's last confusion matrix, one row per true class, cut (not wrapped) where the pane ends.
        confusion = self.query_one("#runs-confusion", Static)
        confusion.display = bool(run.confusion_matrix)
        if run.confusion_matrix:
            lines = confusion_lines(run.confusion_matrix, run.labels)
            confusion.update(Text("\n".join(lines), no_wrap=True, overflow="ellipsis"))

    def _load(self, run_dir: str) -> None:
        """Thread worker: replay the run's events into a RunState and read its config."""
        from tui.session import RunState

        state, config_yaml, errors = None, None, []
        events_path = Path(run_dir) / rundir.EVENTS_FILE
        try:
            from core.events import read_events

            state = RunState.from_events(read_events(events_path)) if events_path.is_file() else None
        except OSError as exc:
            errors.append(f"Cannot read {events_path}: {exc}")
        try:
            from core.config import dump_yaml

            config_yaml = dump_yaml(rundir.load_run_config(run_dir))
        except TuneError as exc:
            errors.append(str(exc))
        except Exception as exc:  # noqa: BLE001 - shown in place
            errors.append(f"Cannot read the config of {run_dir}: {exc}")
        self.post_message(RunLoaded(run_dir, state, config_yaml, "\n".join(errors) or None))

    def on_run_loaded(self, message: RunLoaded) -> None:
        if self.selected is None or message.run_dir != str(self.selected.run_dir):
            return
        chart = self.query_one("#runs-chart", LossChart)
        chart.empty_message = "no losses recorded"
        if self._is_live(self.selected):
            state = self.app.session.state
            chart.set_series(state.losses, state.eval_losses)
        elif message.state is not None:
            chart.set_series(message.state.losses, message.state.eval_losses)
        else:
            chart.set_series([], [])
        config_view = self.query_one("#runs-config-text", Static)
        if message.config_yaml:
            # Highlighted into Text, so long values end in an ellipsis (the stylesheet) instead of being cut.
            yaml_text = Syntax(message.config_yaml, "yaml", theme="ansi_dark", background_color="default").highlight(
                message.config_yaml)
            yaml_text.rstrip()
            config_view.update(yaml_text)
        else:
            config_view.update(Text(message.error or f"no {rundir.CONFIG_FILE}", style="red"))

    # ------------------------------------------------------------------ actions

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        run = self.selected
        if action == "resume":
            return True if run is not None and run.status in RESUMABLE and run.checkpoint else None
        if action == "new_from_config":
            return True if run is not None else None
        if action == "chat":  # a run with a model saved (final/ or a checkpoint) and not training
            return run is not None and run.status != "running" and bool(run.final_dir or run.checkpoint)
        if action == "compare":  # hidden until two runs are marked
            return len(self._marked_runs()) >= 2
        if action == "export":  # hidden unless a finished LoRA/QLoRA run: its adapter can be merged into the base
            return self._can_export(run)
        if action == "toggle_mark":
            return True if run is not None else None
        if action == "attach":  # hidden unless the run trains in another process
            return run is not None and run.status == "running" and not self._is_live(run)
        return True

    def _marked_runs(self) -> list[RunSummary]:
        """The marked runs still listed, in the list's order."""
        return [run for run in self.runs if str(run.run_dir) in self.marked]

    @staticmethod
    def _can_export(run: RunSummary | None) -> bool:
        return (run is not None and run.status == "finished" and methods.get(run.method).adapter
                and run.final_dir is not None)

    def action_toggle_mark(self) -> None:
        """Mark or unmark the highlighted run for the Compare view (a ✓ before its id)."""
        # The row under the cursor now: `selected` follows the cursor through a message, which keys arriving
        # together (typed fast, pasted) overtake, and the redraw below puts the cursor back on `selected`.
        row = self.query_one("#runs-table", DataTable).cursor_row
        if not 0 <= row < len(self.runs):
            return
        run = self.runs[row]
        if run is not self.selected:
            self._select(run)
        self.marked ^= {str(run.run_dir)}
        self.on_runs_listed(RunsListed(self.runs, None))  # redraws the rows (and their widths) with the marks
        self.refresh_bindings()

    def action_compare(self) -> None:
        """The marked runs' curves overlaid and configs side by side."""
        runs = self._marked_runs()
        if len(runs) < 2:
            self.notify("Mark two or more runs with space to compare them.", severity="warning")
            return
        from tui.screens.compare import CompareScreen

        self.app.push_screen(CompareScreen([str(run.run_dir) for run in runs]))

    def action_export(self) -> None:
        """Merge the selected LoRA/QLoRA run's adapter into its base and save it (as `tunetui export --merge`)."""
        run = self.selected
        if not self._can_export(run):
            self.notify("Merge and save needs a finished LoRA or QLoRA run.", severity="warning")
            return
        from tui.widgets.export_dialog import ExportDialog

        assert run is not None
        self.app.push_screen(ExportDialog(run.run_dir, run.run_id))

    def action_chat(self) -> None:
        """Talk to the selected run's model (final/, else its newest checkpoint) beside its base."""
        run = self.selected
        if run is not None and run.status != "running" and (run.final_dir or run.checkpoint):
            self.app.open_chat(str(run.run_dir))

    def action_attach(self) -> None:
        """Follow the selected run, trained by another process, live on the Run view (pause/stop work there)."""
        run = self.selected
        if run is not None and run.status == "running" and not self._is_live(run):
            self.app.attach(str(run.run_dir))

    def action_resume(self) -> None:
        run = self.selected
        if run is None:
            self.notify("No run selected.", severity="warning")
            return
        if run.status == "running":
            self.notify(f"{run.run_id} is still running (in this app or another process).", severity="warning",
                        markup=False)
            return
        if run.status == "finished":
            self.notify(f"{run.run_id} finished; there is nothing to resume. Press n to start a new run from its "
                        "config.", severity="warning", markup=False)
            return
        if not run.checkpoint:
            self.notify(f"{run.run_id} has no checkpoint to resume from. Press n to start it again from its config.",
                        severity="warning", markup=False)
            return
        config = self._run_config(run)
        if config is not None:
            self.app.launch(config=config, resume_from=str(run.run_dir))

    def action_new_from_config(self) -> None:
        run = self.selected
        if run is None:
            self.notify("No run selected.", severity="warning")
            return
        config = self._run_config(run)
        if config is not None:
            self.app.set_config(config)
            self.app.show("review")

    def _run_config(self, run: RunSummary) -> RunConfig | None:
        try:
            return rundir.load_run_config(run.run_dir)
        except TuneError as exc:
            self.notify(str(exc), title="Cannot read the run's config", severity="error", markup=False)
            return None
