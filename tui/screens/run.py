"""The run view: phases, progress, live loss chart, metrics, GPU, engine log; pause/resume, stop and detach.

Redraws from `app.session.state` on a 0.1 s timer and only when its version changed (≤ 10 redraws/s whatever the
step rate). GPU read-outs come from `app.snapshot` (the App's sampler), checked on the same timer.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Label, ProgressBar, RichLog, Static

from tui.screens.base import TuneScreen
from tui.widgets.confirm import ConfirmScreen
from tui.widgets.gpu_panel import GpuSummary
from tui.widgets.loss_chart import LossChart
from tui.widgets.run_metrics import RunMetrics, phase_strip, progress_numbers, status_text

if TYPE_CHECKING:
    from tui.app import TuneApp
    from tui.session import RunState

LEVEL_STYLES = {"DEBUG": "dim", "WARNING": "yellow", "ERROR": "bold red", "CRITICAL": "bold red"}
REDRAW_SECONDS = 0.1


class RunScreen(TuneScreen):
    """The live view of `app.session`'s run (or its last one)."""

    NAME = "run"
    BINDINGS = [
        Binding("p", "toggle_pause", "Pause/Resume"),
        Binding("s", "stop", "Stop"),
        Binding("d", "detach", "Detach"),
        Binding("c", "chat", "Chat with it"),
    ]

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._seen: tuple[int, int] | None = None
        self._seen_snapshot = object()
        self._logged = (None, 0)  # (state id, log lines already written) so the pane only appends new lines
        self._traceback_for: int | None = None
        self._failure_logged: tuple | None = None  # (state id, message) of the failure written to the log
        self._bindings_for_running: bool | None = None
        self._shown: dict[str, tuple] = {}  # what each text part last showed

    def compose_body(self) -> ComposeResult:
        yield Static(id="run-status")
        yield Static(id="run-phases")
        with Horizontal(id="run-progress"):
            yield Label(id="run-progress-label")
            yield ProgressBar(total=None, show_eta=False, id="run-bar")
        yield Static(id="run-error", markup=False)
        yield Static("No run yet. Set one up (Model → Method → Data → Review) and launch it; it shows here.\n\n"
                     "Earlier runs are on the Runs screen, where a stopped run can be resumed.", id="run-idle")
        with Horizontal(id="run-middle"):
            yield LossChart(id="run-chart")
            yield RunMetrics(id="run-metrics")
        yield GpuSummary(id="run-gpu")
        yield RichLog(id="run-log", max_lines=1000, wrap=True, markup=False, auto_scroll=True, min_width=20)

    def on_mount(self) -> None:
        log = self.query_one("#run-log", RichLog)
        log.border_title = "log"
        # Anchored, the log stays at its last line when the error panel appears and shrinks it (auto_scroll alone
        # scrolls once per write, before that layout change); scrolling up releases the anchor as usual.
        log.anchor()
        self.redraw(force=True)
        self.set_interval(REDRAW_SECONDS, self.redraw)

    def on_screen_resume(self) -> None:
        self.redraw(force=True)

    # ------------------------------------------------------------------ drawing

    def redraw(self, force: bool = False) -> None:
        """Repaint from the session state when it changed (and the GPU read-out when a new snapshot came)."""
        if not force and not self.is_current:
            return
        running = self.app.session.running
        if running != self._bindings_for_running:  # the thread ends a moment after its last event
            self._bindings_for_running = running
            self.refresh_bindings()
        state = self.app.session.state
        key = (id(state), state.version)
        if force or key != self._seen:
            self._seen = key
            self._draw(state)
        snapshot = self.app.snapshot
        if force or snapshot is not self._seen_snapshot:  # (the nav bar hears of new samples from TuneScreen)
            self._seen_snapshot = snapshot
            self.query_one("#run-gpu", GpuSummary).show(snapshot)

    def _draw(self, state: RunState) -> None:
        # Each part is repainted only when what it shows changed, and fixed-size parts without a layout pass:
        # the UI thread shares the GIL with the trainer, so every millisecond spent here is taken from training.
        self.set_class(state.status == "idle", "-idle")
        self.set_class(state.status in ("failed", "crashed"), "-failed")
        model, method = _model_and_method(self.app, state)
        session = self.app.session
        pid = None if session.owns_process else getattr(session, "pid", None)
        self._update("#run-status", status_text(state, model=model, method=method, pid=pid))
        self._update("#run-phases", phase_strip(state))
        label, total, done = progress_numbers(state)
        self._update("#run-progress-label", Text(label))
        bar = self.query_one("#run-bar", ProgressBar)
        if (bar.total, bar.progress) != (total, done):
            bar.update(total=total, progress=done)
        if state.status in ("failed", "crashed"):
            error = Text(state.error or "The run failed.")
            if state.error_kind == "error" and state.traceback:
                error.append("\nThe traceback is in the log below.", style="dim")
            self._update("#run-error", error, layout=True)
        chart = self.query_one("#run-chart", LossChart)
        if chart.points != (len(state.losses), len(state.eval_losses)):
            chart.set_series(state.losses, state.eval_losses)
        metrics = self.query_one("#run-metrics", RunMetrics)
        metrics.show(state)
        self._append_logs(state)

    def _update(self, selector: str, text: Text, layout: bool = False) -> None:
        key = (text.plain, tuple(text.spans))
        if self._shown.get(selector) != key:
            self._shown[selector] = key
            self.query_one(selector, Static).update(text, layout=layout)

    def _append_logs(self, state: RunState) -> None:
        log = self.query_one("#run-log", RichLog)
        owner, written = self._logged
        if owner != id(state):
            log.clear()
            written = 0
        new = min(state.log_count - written, len(state.logs))
        if new > 0:
            for level, message in list(state.logs)[-new:]:
                log.write(Text(message, style=LEVEL_STYLES.get(level.upper(), "")))
        if state.status not in ("failed", "crashed") or not state.error:
            self._failure_logged = None  # a resumed run may fail again, with the same words
        elif self._failure_logged != (id(state), state.error):
            # The whole message also ends the log, where it can be scrolled: the error panel above holds a few lines
            # (at 80x24 a divergence's advice is cut off there).
            self._failure_logged = (id(state), state.error)
            log.write(Text(state.error, style=LEVEL_STYLES["ERROR"]))
        if state.traceback and self._traceback_for != id(state):
            # A bug in the engine: its traceback belongs in the log, never painted over the screen.
            self._traceback_for = id(state)
            log.write(Text(state.traceback.rstrip(), style="red"))
        self._logged = (id(state), state.log_count)

    # ------------------------------------------------------------------ actions

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Pause and stop only mean something while a run is going: shown greyed out otherwise.
        if action in ("toggle_pause", "stop", "detach"):
            return True if self.app.session.running else None
        if action == "chat":  # offered once the run has a model to talk to
            return bool(self.app.session.state.final_dir) and not self.app.session.running
        return True

    def action_chat(self) -> None:
        """The finished run on the Chat screen, its base model beside it."""
        state = self.app.session.state
        if state.final_dir and not self.app.session.running:
            self.app.open_chat(state.run_dir or state.final_dir)

    def action_detach(self) -> None:
        """Keep training, close the app (`tunetui attach` brings the view back)."""
        if not self.app.session.running:
            self.notify("No run is going.", severity="warning")
            return
        self.app.detach()

    def action_toggle_pause(self) -> None:
        session = self.app.session
        if not session.running:
            self.notify("No run is going.", severity="warning")
            return
        session.toggle_pause()
        self.redraw(force=True)

    def action_stop(self) -> None:
        session = self.app.session
        if not session.running:
            self.notify("No run is going.", severity="warning")
            return

        def answered(yes: bool | None) -> None:
            if yes:
                session.stop(save=True)
                self.redraw(force=True)

        question = ConfirmScreen("Stop the run? It stops after the current step and saves a checkpoint, so you can "
                                 "resume it later from the Runs screen.", yes="Stop and save", no="Keep training")
        self.app.push_screen(question, answered)


def _model_and_method(app: TuneApp, state: RunState) -> tuple[str, str]:
    """From the run's own config (RunStarted) when it has come, else the config the session launched."""
    config = state.config or {}
    if config:
        return (config.get("model", {}).get("name_or_path", ""), config.get("method", {}).get("kind", ""))
    launched = app.session.config
    if launched is not None:
        return launched.model.name_or_path, launched.method.kind
    return "", ""
