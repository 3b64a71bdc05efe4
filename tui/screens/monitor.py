"""The Monitor screen: each GPU's memory and utilisation (now and as a history line), temperature, power and
processes; the host's CPU and RAM; and the method recommendation for the current draft config.

Samples come from `app.snapshot` (the App polls the sampler in a worker every ~1.5 s); this screen checks for a
new one on a 0.3 s timer, also while hidden, so its history keeps growing once it has been opened. The
recommendation is the draft's (tui.draft, the same facts Method and Review show), drawn while the screen is shown.
"""
from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.content import Content
from textual.widgets import Static

from core import methods
from tui.draft import fit_label
from tui.messages import FactsChanged
from tui.screens.base import TuneScreen, update_if_changed
from tui.widgets.gpu_panel import GpuCard, history_line, host_line, no_gpu_text

if TYPE_CHECKING:
    from core.config import RunConfig
    from core.resources.gpus import GpuSample, Snapshot
    from core.resources.recommend import Recommendation

HISTORY_SAMPLES = 240
"""Samples kept per GPU (at the App's 1.5 s poll: six minutes)."""
_UNSEEN = object()


class MonitorScreen(TuneScreen):
    """GPUs, host and the recommendation; no GPU is shown as a normal state."""

    NAME = "monitor"
    BINDINGS = [Binding("a", "refresh_advice", "Re-estimate")]

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.memory_history: dict[int, deque[float | None]] = {}
        self.util_history: dict[int, deque[float | None]] = {}
        self.cpu_history: deque[float | None] = deque(maxlen=HISTORY_SAMPLES)
        self._seen_snapshot: object = _UNSEEN  # a Snapshot, None (not sampled yet) or _UNSEEN

    def compose_body(self) -> ComposeResult:
        yield Static(id="monitor-summary")
        yield VerticalScroll(id="monitor-gpus")
        yield Static(id="monitor-host")
        yield Static(Text("estimating…", style="dim"), id="monitor-advice")

    def on_mount(self) -> None:
        self.query_one("#monitor-advice", Static).border_title = "which method"
        self.poll(force=True)
        # Samples come every ~1.5 s: checking five times as often keeps the view current without busy-waking.
        self.set_interval(0.3, self.poll)

    def on_screen_resume(self) -> None:
        self.poll(force=True)

    # ------------------------------------------------------------------ samples

    def poll(self, force: bool = False) -> None:
        snapshot = self.app.snapshot
        fresh = snapshot is not self._seen_snapshot
        if fresh:
            self._seen_snapshot = snapshot
            self._record(snapshot)
        if self.is_current and (fresh or force):
            self._draw(snapshot)
            self._show_advice()

    def _record(self, snapshot: Snapshot | None) -> None:
        if snapshot is None:
            return
        for gpu in snapshot.gpus or ():
            self.memory_history.setdefault(gpu.index, deque(maxlen=HISTORY_SAMPLES)).append(gpu.memory_used_gib)
            self.util_history.setdefault(gpu.index, deque(maxlen=HISTORY_SAMPLES)).append(gpu.utilization_pct)
        if snapshot.host is not None:
            self.cpu_history.append(snapshot.host.cpu_pct)

    def _draw(self, snapshot: Snapshot | None) -> None:
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

    def _sync_cards(self, box: VerticalScroll, gpus: list[GpuSample], run_gpus: set[int]) -> None:
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
        """Read the model's shape again (its config.json may have changed) and estimate anew."""
        self.app.draft.read_shape_again()
        self._show_advice()

    def on_facts_changed(self, message: FactsChanged) -> None:
        self._show_advice()

    def _show_advice(self) -> None:
        if self.app.snapshot is None:
            return  # until the first sample it is unknown whether there is a GPU at all
        facts = self.app.draft.facts()
        box = self.query_one("#monitor-advice", Static)
        box.border_title = advice_title(facts.config, facts.recommendation, planned=facts.planned)
        update_if_changed(box, advice_text(facts.config, facts.recommendation, facts.shape_error or facts.error))




def advice_text(config: RunConfig, advice: Recommendation | None, error: str | None) -> Content:
    """The recommendation, each method's estimated peak against free memory, and what would make more fit."""
    if error:
        return Content.styled(error, "ansi_red")
    if advice is None:
        return Content.styled("estimating…", "dim")
    chosen = config.method.kind
    parts: list[Content | tuple[str, str] | str] = [
        ("Recommended: ", "bold"), (methods.get(advice.method).title, "bold ansi_green"),
        f" — {advice.reason}\n", ("peak GiB:", "dim")]
    for method, estimate in advice.estimates.items():
        fit = advice.fit.get(method)
        parts.append("  ▸" if method == chosen else "   ")
        parts.append((f"{methods.get(method).title} ", "bold" if method == chosen else ""))
        parts.append(f"{estimate.peak_gib:.1f}")
        if fit and not advice.no_gpu:
            parts += [" ", fit_label(fit)]
    for suggestion in list(advice.suggestions or ())[:3]:
        name = methods.get(suggestion.method).title
        verdict = "" if suggestion.fits else " (still too much)"
        parts.append((f"\nTo fit {name}: {suggestion.change} → {suggestion.peak_gib:.1f} GiB{verdict}", "dim"))
    return Content.assemble(*parts)


def advice_title(config: RunConfig, advice: Recommendation | None, *, planned: bool = False) -> str:
    free = ("" if advice is None or advice.no_gpu or advice.free_gib is None else
            f" · {advice.free_gib:.1f} GiB {'planned' if planned else 'free'}")
    return f"which method · {config.model.name_or_path} · selected {methods.get(config.method.kind).title}{free}"
