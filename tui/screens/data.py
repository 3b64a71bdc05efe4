"""Data screen: choose the dataset and see it exactly as the model will, with what max_length cuts.

A file picker (DirectoryTree) or a typed path / hub id; the detected format (changeable); a few examples rendered
through the chat template with the trained-on tokens lit; token-length stats, how many examples max_length
truncates or drops; the validation split.

Tokenizing needs transformers and datasets, so the preview is read by the App's draft facts (tui.draft) in a thread
worker, asked for here and debounced while typing; its row count feeds the validation split and the recommendation.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.timer import Timer
from textual.widgets import Collapsible, DirectoryTree, Input, Select, Static

from core import units
from core.config import FORMATS, RunConfig
from tui.draft import DataKey, DataReading, data_key
from tui.messages import FactsChanged
from tui.screens.setup_base import SetupScreen, get_value, parse_number
from tui.widgets.fields import Choice

PREVIEW_HEAD_LINES, PREVIEW_TAIL_LINES = 8, 3
PREVIEW_DELAY_SECONDS = 0.3
"""Wait this long after the last keystroke before tokenizing again."""
DATA_SUFFIXES = {".json", ".jsonl", ".csv", ".tsv", ".parquet", ".txt", ".arrow"}
TEXT_FIELDS = {"data-text-column": "data.text_column", "data-label-column": "data.label_column",
               "data-system-prompt": "data.system_prompt", "data-val-path": "data.val_path"}
"""Advanced fields kept as typed (blank: unset)."""

# The trained-on tokens (the ones the loss sees) stand out; the masked prompt recedes.
TRAINED_STYLE = "bold $text-success on $success-muted"
PROMPT_STYLE = "dim"  # ($text-muted inside Content comes out brighter than plain text)


class DataTree(DirectoryTree):
    """Folders and data files only; hidden entries left out. Backspace moves the root up a folder."""

    BINDINGS = [Binding("backspace", "up", "Up a folder")]

    def action_up(self) -> None:
        parent = Path(self.path).resolve().parent
        if parent != Path(self.path).resolve():
            self.path = parent

    def filter_paths(self, paths: Iterable[Path]) -> Iterable[Path]:
        return [p for p in paths if not p.name.startswith(".")
                and (p.is_dir() or p.suffix.lower() in DATA_SUFFIXES)]


class UpLink(Static):
    """The ".." line above the tree: a click moves the tree up a folder (backspace does, in the tree)."""

    def on_click(self) -> None:
        self.screen.query_one(DataTree).action_up()


class DataScreen(SetupScreen):
    AUTO_FOCUS = "#data-preview"
    NAME = "data"
    SUBMIT_KEEPS = ("data-path",)
    BINDINGS = [
        Binding("enter", "next", "Next"),
        Binding("slash", "focus_path", "Type a path"),
        Binding("ctrl+t", "focus_tree", "Files"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.wanted: DataKey | None = None
        """What the preview should be made from (model, data settings); a new one is asked for when it changes."""
        self.shown: DataReading | None = None
        """The draft's data preview (or its error) on screen: up to date when its key is `wanted`."""
        self._pending: Timer | None = None

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="data-body"):
            with Vertical(id="data-left"):
                yield UpLink("⬑ .. up a folder", id="data-up")
                yield DataTree(Path.cwd(), id="data-tree")
            with Vertical(id="data-right"):
                with Horizontal(classes="form-row"):
                    yield Static("Data", classes="label-short")
                    yield Input(placeholder="file, folder or hub dataset id, Enter", id="data-path",
                                compact=True)
                with Horizontal(classes="form-row"):
                    yield Static("Format", classes="label-short")
                    yield Choice([(f, f) for f in FORMATS], id="data-format", value=self.app.config.data.format,
                                 allow_blank=False, compact=True)
                    yield Static(id="data-detected", classes="hint", markup=False)
                with Horizontal(classes="form-row"):
                    yield Static("Max len", classes="label-short")
                    yield Input(id="data-max-length", compact=True, classes="number")
                    yield Static("Val split", classes="label-short")
                    yield Input(id="data-val-size", compact=True, classes="number")
                    yield Static(id="data-val-rows", classes="hint", markup=False)
                yield Static(id="data-val-warning", markup=False)
                with Collapsible(title="Advanced: columns, system prompt, validation file", collapsed=True,
                                 id="data-advanced"):
                    with Horizontal(classes="form-row"):
                        yield Static("Text col", classes="label-short")
                        yield Input(id="data-text-column", placeholder="detected", compact=True, classes="data-text")
                        yield Static("Label col", classes="label-short")
                        yield Input(id="data-label-column", placeholder="detected", compact=True, classes="data-text")
                    with Horizontal(classes="form-row"):
                        yield Static("System", classes="label-short")
                        yield Input(id="data-system-prompt", placeholder="system prompt when a row has none",
                                    compact=True, classes="data-text")
                    with Horizontal(classes="form-row"):
                        yield Static("Val file", classes="label-short")
                        yield Input(id="data-val-path", placeholder="none: Val split is cut off the data",
                                    compact=True, classes="data-text")
                yield Static(id="data-error", classes="error", markup=False)
                yield Static(id="data-stats", markup=False)
                with VerticalScroll(id="data-preview"):
                    yield Static(id="data-examples")

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#data-error").display = False

    @property
    def error_box(self) -> Static:
        return self.query_one("#data-error", Static)

    # ------------------------------------------------------------ editing

    def action_focus_path(self) -> None:
        self.query_one("#data-path", Input).focus()

    def action_focus_tree(self) -> None:
        self.query_one("#data-tree").focus()

    @on(DirectoryTree.FileSelected)
    def _file_chosen(self, event: DirectoryTree.FileSelected) -> None:
        event.stop()
        path = event.path
        try:
            path = path.relative_to(Path.cwd())
        except ValueError:
            pass
        self.apply({"data.path": str(path)}, self.error_box, self.query_one("#data-path", Input))

    @on(Input.Submitted, "#data-path")
    def _path_typed(self, event: Input.Submitted) -> None:
        event.stop()
        self.apply({"data.path": event.value.strip()}, self.error_box, event.input)
        self.query_one("#data-preview").focus()

    @on(Input.Changed, "#data-max-length")
    def _max_length_changed(self, event: Input.Changed) -> None:
        self.apply({"data.max_length": parse_number(event.value)}, self.error_box, event.input)

    @on(Input.Changed, "#data-val-size")
    def _val_size_changed(self, event: Input.Changed) -> None:
        self.apply({"data.val_size": parse_number(event.value)}, self.error_box, event.input)

    @on(Input.Changed, ".data-text")
    def _text_changed(self, event: Input.Changed) -> None:
        # Blank means "not set" (None): detected columns, no system prompt, no validation file.
        self.apply({TEXT_FIELDS[event.input.id]: event.value.strip() or None}, self.error_box, event.input)

    @on(Select.Changed, "#data-format")
    def _format_changed(self, event: Select.Changed) -> None:
        if event.value is not Select.NULL:
            self.apply({"data.format": event.value}, self.error_box)

    def show_config(self, config: RunConfig, from_self: bool) -> None:
        d = config.data
        if not from_self:
            self.forget_errors(self.error_box)
            texts = {wid: get_value(config, key) or "" for wid, key in TEXT_FIELDS.items()}
            for wid, value in (("data-path", d.path), ("data-max-length", str(d.max_length)),
                               ("data-val-size", _number_text(d.val_size)), *texts.items()):
                field = self.query_one(f"#{wid}", Input)
                field.remove_class("-invalid")
                if field.value != value:
                    field.value = value
            select = self.query_one("#data-format", Select)
            if select.value != d.format:
                select.value = d.format
        self._show_val_rows()
        key = data_key(config)
        if key != self.wanted:
            self.wanted = key
            self._schedule_preview()

    # ------------------------------------------------------------ the preview

    def _schedule_preview(self) -> None:
        if self._pending is not None:
            self._pending.stop()
        self._pending = self.set_timer(PREVIEW_DELAY_SECONDS, self._start_preview)

    def _start_preview(self) -> None:
        self._pending = None
        draft = self.app.draft
        draft.read_data()
        if draft.data_current:  # nothing to read (no data path), or read already
            self._render_preview()
        else:
            self.query_one("#data-stats", Static).update("Reading and tokenizing…")

    def on_facts_changed(self, message: FactsChanged) -> None:
        self._render_if_new()

    def on_screen_resume(self) -> None:
        self._render_if_new()  # a preview that arrived while another screen was shown

    def _render_if_new(self) -> None:
        draft = self.app.draft
        if draft.data_current and draft.data is not self.shown and draft.data_wanted == self.wanted:
            self._render_preview()

    def _render_preview(self) -> None:
        stats_box = self.query_one("#data-stats", Static)
        examples_box = self.query_one("#data-examples", Static)
        detected = self.query_one("#data-detected", Static)
        self.shown = reading = self.app.draft.data
        p = reading.preview if reading is not None else None
        if p is None:
            stats_box.update("")
            detected.update("")
            examples_box.update(Content.styled((reading.error if reading is not None else None) or "", "$error"))
            self._show_val_rows()
            return
        detected.update(f"detected: {p.format}" if self.config.data.format == "auto" else f"reading as {p.format}")
        s = p.stats
        limit = self.config.data.max_length
        sampled = s["examples"] + s["dropped"]
        rows = "? rows (streamed)" if p.rows is None else f"{units.count_short(p.rows)} rows"
        stats_box.update(
            f"{rows}. Tokens in the first {sampled}: min {s['min']}, median {s['median']}, p95 {s['p95']}, "
            f"max {s['max']}; max_length {limit} truncates {s['truncated']}, drops {s['dropped']}.")
        parts: list[Content] = [Content.assemble(("trained on (the loss)", TRAINED_STYLE), "  ",
                                                 ("prompt: masked, not trained", PROMPT_STYLE))]
        for i, segments in enumerate(p.examples, start=1):
            parts.append(Content.styled(f"── example {i} ", "dim"))
            example = Content.assemble(*[(text, TRAINED_STYLE if trained else PROMPT_STYLE)
                                         for text, trained in segments])
            parts += _head_and_tail(example.split("\n", allow_blank=True))
        examples_box.update(Content("\n").join(parts))
        self._show_val_rows()

    def _show_val_rows(self) -> None:
        box = self.query_one("#data-val-rows", Static)
        warning = self.query_one("#data-val-warning", Static)
        split = self.app.draft.split()
        if split.val_path:
            box.update(f"from {split.val_path}")
        elif not split.val_size:
            box.update("none")
        elif split.val is None:
            box.update("")
        else:
            box.update(f"{split.val} rows")
        warning.update(split.warning or "")
        warning.display = bool(split.warning)

def _head_and_tail(lines: list[Content]) -> list[Content]:
    """A long example as its start (the template, the prompt) and its end (where EOS must be), with the middle
    counted: a screenful of wrapped text makes every repaint of this screen slow."""
    if len(lines) <= PREVIEW_HEAD_LINES + PREVIEW_TAIL_LINES + 1:
        return lines
    hidden = len(lines) - PREVIEW_HEAD_LINES - PREVIEW_TAIL_LINES
    return [*lines[:PREVIEW_HEAD_LINES], Content.styled(f"  … {hidden} more lines …", "dim italic"),
            *lines[-PREVIEW_TAIL_LINES:]]


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
