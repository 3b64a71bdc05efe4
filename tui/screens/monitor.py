"""The Monitor screen: each GPU's memory and utilisation (now and as a history line), temperature, power and
processes; the host's CPU and RAM; and the method recommendation for the current draft config.

Samples come from `app.snapshot` (the App polls the sampler in a worker every ~1.5 s); this screen checks for a
new one on a 0.1 s timer, also while hidden, so its history keeps growing once it has been opened. The
recommendation is computed in a thread worker (it reads the model's config) whenever the draft config or the free
memory changes.
"""
from __future__ import annotations

from collections import deque
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Static

from core.errors import TuneError
from tui.widgets.footer import KeyFooter
from tui.widgets.gpu_panel import GpuCard, history_line, host_line, no_gpu_text
from tui.widgets.setup_nav import NavBar

HISTORY_SAMPLES = 240
"""Samples kept per GPU (at the App's 1.5 s poll: six minutes)."""
FIT_STYLES = {"fits": "green", "tight": "yellow", "no": "red"}
FIT_WORDS = {"fits": "fits", "tight": "tight", "no": "won't fit"}


class AdviceReady(Message, bubble=False):
    """The recommendation worker finished (posted from its thread)."""

    def __init__(self, key: Any, advice: Any, error: str | None) -> None:
        super().__init__()
        self.key, self.advice, self.error = key, advice, error


class MonitorScreen(Screen):
    """GPUs, host and the recommendation; no GPU is shown as a normal state."""

    DEFAULT_CSS = """
    MonitorScreen #monitor-summary { height: auto; padding: 0 1; }
    MonitorScreen #monitor-gpus { height: 1fr; min-height: 5; }
    MonitorScreen #monitor-none { height: auto; padding: 1 2; color: $text-muted; }
    MonitorScreen #monitor-host { height: 1; padding: 0 1; }
    MonitorScreen #monitor-advice {
        height: auto; max-height: 10; border: round $accent; border-title-color: $text; padding: 0 1;
    }
    """

    BINDINGS = [Binding("a", "refresh_advice", "Re-estimate")]

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.memory_history: dict[int, deque] = {}
        self.util_history: dict[int, deque] = {}
        self.cpu_history: deque = deque(maxlen=HISTORY_SAMPLES)
        self._seen_snapshot: Any = object()
        self._advice_key: Any = None

    def compose(self) -> ComposeResult:
        yield NavBar("monitor")
        yield Static(id="monitor-summary")
        yield VerticalScroll(id="monitor-gpus")
        yield Static(id="monitor-host")
        yield Static(Text("estimating…", style="dim"), id="monitor-advice")
        yield KeyFooter()

    def on_mount(self) -> None:
        self.query_one("#monitor-advice", Static).border_title = "which method"
        self.poll(force=True)
        # Samples come every ~1.5 s: checking five times as often keeps the view current without busy-waking.
        self.set_interval(0.3, self.poll)

    def on_screen_resume(self) -> None:
        self.poll(force=True)

    # ------------------------------------------------------------------ samples

    def poll(self, force: bool = False) -> None:
        snapshot = getattr(self.app, "snapshot", None)
        fresh = snapshot is not self._seen_snapshot
        if fresh:
            self._seen_snapshot = snapshot
            self._record(snapshot)
        if self.is_current and (fresh or force):
            self.query_one(NavBar).set_snapshot(snapshot)
            self._draw(snapshot)
        if self.is_current:
            self._maybe_estimate(snapshot)

    def _record(self, snapshot: Any) -> None:
        if snapshot is None:
            return
        for gpu in snapshot.gpus or ():
            self.memory_history.setdefault(gpu.index, deque(maxlen=HISTORY_SAMPLES)).append(gpu.memory_used_gib)
            self.util_history.setdefault(gpu.index, deque(maxlen=HISTORY_SAMPLES)).append(gpu.utilization_pct)
        if snapshot.host is not None:
            self.cpu_history.append(snapshot.host.cpu_pct)

    def _draw(self, snapshot: Any) -> None:
        summary = self.query_one("#monitor-summary", Static)
        box = self.query_one("#monitor-gpus", VerticalScroll)
        host = self.query_one("#monitor-host", Static)
        if snapshot is None:
            summary.update(Text("Sampling GPUs and host…", style="dim"))
            return
        gpus = list(snapshot.gpus or ())
        run_gpus = {g.index for g in (snapshot.run_gpus() or ())} if gpus else set()
        if gpus:
            free = sum(g.memory_free_gib or 0 for g in gpus if g.index in run_gpus)
            summary.update(Text.assemble(
                (f"{len(gpus)} GPU{'s' if len(gpus) != 1 else ''}", "bold"),
                f"  ·  runs use {len(run_gpus)}: {', '.join(str(i) for i in sorted(run_gpus)) or 'none'}"
                f"  ·  {free:.1f} GiB free on them"))
        else:
            summary.update(Text.assemble((no_gpu_text(snapshot), "bold"),
                                         " — a normal state: training runs on the CPU (small models only)."))
        self._sync_cards(box, gpus, run_gpus)
        line = host_line(snapshot.host)
        if snapshot.host is not None:
            width = host.content_size.width - line.cell_len - 8
            if width >= 8:
                line.append("  cpu↗ ", style="dim").append(history_line(self.cpu_history, 100.0, width, "green"))
        host.update(line)

    def _sync_cards(self, box: VerticalScroll, gpus: list, run_gpus: set[int]) -> None:
        """One card per GPU, rebuilt only when the set of GPUs changes (a card keeps its place and size)."""
        cards = {card.index: card for card in box.query(GpuCard)}
        if set(cards) != {g.index for g in gpus} or (not gpus and not box.query("#monitor-none")):
            box.remove_children()
            if gpus:
                new = [GpuCard(g.index) for g in gpus]
                box.mount_all(new)
                cards = {card.index: card for card in new}
                # Cards fill in after they mount (they need their width for the history lines).
                self.call_after_refresh(self._draw, self.app.snapshot)
                return
            box.mount(Static(Text(
                "No NVIDIA GPU is visible here (no driver, no device, or CUDA_VISIBLE_DEVICES hides them).\n"
                "The recommendation below says what your settings would need on a GPU."), id="monitor-none"))
            return
        for gpu in gpus:
            cards[gpu.index].show(gpu, self.memory_history.get(gpu.index, ()),
                                  self.util_history.get(gpu.index, ()), gpu.index in run_gpus)

    # ------------------------------------------------------------------ recommendation

    def action_refresh_advice(self) -> None:
        self._advice_key = None
        self._maybe_estimate(self.app.snapshot)

    def _maybe_estimate(self, snapshot: Any) -> None:
        if snapshot is None:
            return  # until the first sample it is unknown whether there is a GPU at all
        config = self.app.config
        free = snapshot.free_gib()
        rows = getattr(self.app, "dataset_rows", None)  # set by the Data screen's preview, when it has run
        # Re-estimate when the draft changes or free memory moves by more than half a GiB, not on every sample.
        key = (config, None if free is None else round(free * 2) / 2, rows)
        if key == self._advice_key:
            return
        self._advice_key = key
        self.run_worker(lambda: self._estimate(key, config, free, rows), thread=True, group="monitor-advice",
                        exclusive=True, exit_on_error=False)

    def _estimate(self, key: Any, config: Any, free: float | None, rows: int | None) -> None:
        """Thread worker: estimate every method for the draft and pick one."""
        advice, error = None, None
        try:
            from core.resources.estimate import EstimateSettings
            from core.resources.shape import load_shape
            from core.resources.recommend import recommend

            shape = load_shape(config.model.name_or_path)
            advice = recommend(shape, EstimateSettings.from_config(config), free, rows)
        except TuneError as exc:
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 - shown in place; the monitor itself keeps working
            error = f"Could not estimate memory for {config.model.name_or_path}: {exc}"
        self.post_message(AdviceReady(key, advice, error))

    def on_advice_ready(self, message: AdviceReady) -> None:
        if message.key != self._advice_key:
            return  # an older estimate finished after a newer one was asked for
        box = self.query_one("#monitor-advice", Static)
        box.border_title = advice_title(self.app.config, message.advice)
        box.update(advice_text(self.app.config, message.advice, message.error))


METHOD_NAMES = {"full": "Full", "freeze": "Freeze", "lora": "LoRA", "qlora": "QLoRA"}


def advice_text(config: Any, advice: Any, error: str | None) -> Text:
    """The recommendation, each method's estimated peak against free memory, and what would make more fit."""
    text = Text()
    if error:
        return text.append(error, style="red")
    if advice is None:
        return text.append("estimating…", style="dim")
    chosen = config.method.kind
    text.append("Recommended: ", style="bold").append(METHOD_NAMES.get(advice.method, advice.method),
                                                      style="bold green")
    text.append(f" — {advice.reason}\n")
    text.append("peak GiB:", style="dim")
    for method, estimate in advice.estimates.items():
        fit = advice.fit.get(method)
        text.append("  ▸" if method == chosen else "   ")
        text.append(f"{METHOD_NAMES.get(method, method)} ", style="bold" if method == chosen else "")
        text.append(f"{estimate.peak_gib:.1f}")
        if fit and not advice.no_gpu:
            text.append(f" {FIT_WORDS.get(fit, fit)}", style=FIT_STYLES.get(fit, ""))
    for suggestion in list(advice.suggestions or ())[:3]:
        name = METHOD_NAMES.get(suggestion.method, suggestion.method)
        verdict = "" if suggestion.fits else " (still too much)"
        text.append(f"\nTo fit {name}: {suggestion.change} → {suggestion.peak_gib:.1f} GiB{verdict}", style="dim")
    return text


def advice_title(config: Any, advice: Any) -> str:
    free = "" if advice is None or advice.no_gpu or advice.free_gib is None else f" · {advice.free_gib:.1f} GiB free"
    return f"which method · {config.model.name_or_path} · selected {METHOD_NAMES.get(config.method.kind)}{free}"
