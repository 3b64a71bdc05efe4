"""Model screen: pick a model this machine has, or type a folder / hub id, and see what it is.

Lists the built-in demo, the HF cache, a models folder and recent choices; shows the details of the one under the
cursor (architecture, parameters, layers, ...) and its problems (no tokenizer, unreadable) in place.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence, Union

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from core import units
from core.config import RunConfig
from core.errors import TuneError
from tui.messages import ModelDescribed, ModelsListed
from tui.screens.setup_base import SetupScreen

if TYPE_CHECKING:
    from core.catalog import ModelEntry, ModelInfo


@dataclass(frozen=True)
class CurrentModel:
    """The draft's model when the scan did not list it. Not core.catalog.ModelEntry: importing the catalog
    (huggingface_hub) would delay the first frame."""

    name_or_path: str
    source: str = "current"
    size_bytes: int | None = None
    note: str = ""


Entry = Union["ModelEntry", CurrentModel]

log = logging.getLogger(__name__)


class ModelList(OptionList):
    """The models found; Enter uses the highlighted one (shown in the footer, unlike OptionList's own binding)."""

    BINDINGS = [Binding("enter", "select", "Use model", key_display="⏎")]


class ModelScreen(SetupScreen):
    """Pick the model: Enter on a listed model (or a typed path) uses it and moves on to Method."""

    AUTO_FOCUS = "#model-list"
    NAME = "model"
    SUBMIT_KEEPS = ("model-path",)
    BINDINGS = [
        Binding("enter", "next", "Next"),
        Binding("slash", "focus_path", "Type a path"),
        Binding("ctrl+r", "rescan", "Rescan"),
        Binding("escape", "focus_list", "Back to the list", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.entries: list[Entry] = []
        self.infos: dict[str, ModelInfo | str] = {}
        """name -> ModelInfo, or a TuneError message when the model cannot be described."""
        self.shown: str | None = None
        self.scanned = False
        """The machine's models have been listed (the list starts with only the draft's model)."""

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="model-body"):
            with Vertical(id="model-left"):
                yield Static("Models on this machine", classes="section-title")
                yield ModelList(id="model-list")
                yield Input(placeholder="or type a model folder / hub id, Enter", id="model-path")
                yield Static(id="model-error", classes="error", markup=False)
            with VerticalScroll(id="model-right"):
                yield Static(id="model-details")

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#model-error").display = False
        self._set_options([])
        # After the first frame: the scan's imports in a thread would otherwise hold up the first paint (GIL).
        self.call_after_refresh(self.action_rescan)

    # ------------------------------------------------------------ the list

    def action_rescan(self) -> None:
        self.run_worker(self._scan, name="scan", thread=True, group="model-scan", exclusive=True,
                        exit_on_error=False)

    def _scan(self) -> None:
        """Thread worker: list the models on this machine."""
        try:
            from core.catalog import list_models, recent_models

            self.post_message(ModelsListed(list(list_models(self.app.models_dir, recent_models()))))
        except Exception as exc:  # noqa: BLE001 - a bug, not a user error: said in place, the traceback logged
            log.exception("listing models failed")
            self.post_message(ModelsListed([], f"Listing models failed: {exc!r}"))

    def on_models_listed(self, message: ModelsListed) -> None:
        self.scanned = True
        if message.error:
            self.query_one("#model-details", Static).update(Content.styled(message.error, "$error"))
            return
        self._set_options(message.entries)

    def _set_options(self, entries: Sequence[Entry]) -> None:
        """Show `entries` (the draft's model first when it is not among them) with the draft's model highlighted."""
        current = self.config.model.name_or_path
        self.entries = list(entries)
        if not any(e.name_or_path == current for e in self.entries):
            self.entries.insert(0, CurrentModel(current))
        option_list = self.query_one("#model-list", OptionList)
        option_list.set_options(Option(self._option_label(e), id=str(i)) for i, e in enumerate(self.entries))
        option_list.highlighted = next(i for i, e in enumerate(self.entries) if e.name_or_path == current)

    def _option_label(self, entry: Entry) -> Content:
        mark = "● " if entry.name_or_path == self.config.model.name_or_path else "  "
        size = f" {units.size(entry.size_bytes)}" if entry.size_bytes else ""
        return Content.assemble(mark, (entry.name_or_path, "bold"), (f"  {entry.source}{size}", "dim"))

    @on(OptionList.OptionHighlighted, "#model-list")
    def _highlighted(self, event: OptionList.OptionHighlighted) -> None:
        self.describe(self.entries[event.option_index].name_or_path)

    @on(OptionList.OptionSelected, "#model-list")
    def _selected(self, event: OptionList.OptionSelected) -> None:
        if self.use_model(self.entries[event.option_index].name_or_path):
            self.action_next()

    # ------------------------------------------------------------ typing a path or hub id

    def action_focus_list(self) -> None:
        self.query_one("#model-list").focus()

    def action_focus_path(self) -> None:
        self.query_one("#model-path", Input).focus()

    @on(Input.Submitted, "#model-path")
    def _typed(self, event: Input.Submitted) -> None:
        name = event.value.strip()
        if not name:
            return
        if self.use_model(name):
            self.describe(name)
            # Back on the list (the typed model is highlighted): Enter goes on, digits switch screens.
            self.query_one("#model-list").focus()

    def use_model(self, name: str) -> bool:
        """Make `name` the draft's model (the screen shows its details; problems stay visible in place)."""
        ok = self.apply({"model.name_or_path": name}, self.query_one("#model-error", Static),
                        self.query_one("#model-path", Input))
        if ok:
            self._set_options(self.entries_without_current())
        return ok

    def entries_without_current(self) -> list[Entry]:
        return [e for e in self.entries if e.source != "current"]

    # ------------------------------------------------------------ details

    def describe(self, name: str) -> None:
        self.shown = name
        if name in self.infos:
            self._show_details(name)
            return
        self.query_one("#model-details", Static).update(Content.assemble((name, "bold"), "\n\nReading…"))
        # After the next frame: a thread importing the catalog would hold the GIL while the first frame renders.
        self.call_after_refresh(self.run_worker, lambda: self._describe(name), name="describe", thread=True,
                                group="model-describe", exclusive=True, exit_on_error=False)

    def _describe(self, name: str) -> None:
        """Thread worker: the model's details (or why there are none)."""
        try:
            from core.catalog import describe_model

            info: ModelInfo | str = describe_model(name)
        except TuneError as exc:
            info = str(exc)
        except Exception as exc:  # noqa: BLE001 - a bug, not a user error: said in place, the traceback logged
            log.exception("describing %s failed", name)
            info = f"Reading the model failed: {exc!r}"
        self.post_message(ModelDescribed(name, info))

    def on_model_described(self, message: ModelDescribed) -> None:
        self.infos[message.name] = message.info
        if message.name == self.shown:
            self._show_details(message.name)

    def _show_details(self, name: str) -> None:
        info = self.infos[name]
        selected = name == self.config.model.name_or_path
        note = next((e.note for e in self.entries if e.name_or_path == name and e.note), "")
        head = Content.assemble((name, "bold"), "\n", (f"{note}\n" if note else "", "italic"),
                                ("● the selected model" if selected else "Enter to use this model", "dim"), "\n\n")
        if isinstance(info, str):
            body = Content.styled(info, "$error")
        else:
            rows = [
                ("Architecture", info.architecture or "?"),
                ("Parameters", units.count_short(info.params)),
                ("Layers", str(info.layers) if info.layers is not None else "?"),
                ("Hidden size", str(info.hidden_size) if info.hidden_size is not None else "?"),
                ("Vocab", f"{info.vocab_size:,}" if info.vocab_size is not None else "?"),
                ("Dtype", info.dtype or "?"),
                ("Size on disk", units.size(info.size_on_disk_bytes) if info.size_on_disk_bytes else "—"),
                ("Tokenizer", "yes" if info.has_tokenizer else "none"),
            ]
            lines = [Content.assemble((f"{label:<13}", "dim"), value) for label, value in rows]
            if info.problems:
                lines.append(Content.styled("\nProblems", "bold $error"))
                lines += [Content.styled(f"• {p}", "$error") for p in info.problems]
            else:
                lines.append(Content.styled("\nNo problems found", "$success"))
            body = Content("\n").join(lines)
        self.query_one("#model-details", Static).update(head + body)

    def show_config(self, config: RunConfig, from_self: bool) -> None:
        if not from_self and self.entries:
            self._set_options(self.entries_without_current())
        path = self.query_one("#model-path", Input)
        listed = any(e.name_or_path == config.model.name_or_path and e.source != "current" for e in self.entries)
        if not listed and path.value != config.model.name_or_path:
            path.value = config.model.name_or_path
