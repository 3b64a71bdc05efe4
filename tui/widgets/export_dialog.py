"""The "merge and save" dialog: merge a finished LoRA/QLoRA run's adapter into its base and save it to a folder.

The same code as `tunetui export RUN --merge OUT` (core.training.export.merge_run), run in a thread worker owned by
this dialog; progress and the result come back as messages. The dialog cannot be closed while the merge runs (a
thread cannot be interrupted halfway through writing the weights, and the merge leaves nothing half-written).
"""
from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, ProgressBar, Static

from core import units
from tui.messages import ExportEnded, ExportProgress

MERGED_FOLDER = "merged"
"""The default target: a folder inside the run's own folder, so the merged model stays with its run."""


def folder_bytes(folder: Path) -> int:
    """Bytes of every file under `folder` (what the merge wrote)."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


class ExportDialog(ModalScreen["str | None"]):
    """Dismisses with the folder written, or None when closed without exporting."""

    BINDINGS = [Binding("escape", "close", "Close")]
    DEFAULT_CSS = """
    ExportDialog { align: center middle; }
    ExportDialog > Vertical { width: 76; max-width: 95%; height: auto; border: thick $accent;
                              background: $surface; padding: 0 1; }
    ExportDialog #export-title { text-style: bold; margin-bottom: 1; }
    ExportDialog #export-about { color: $text-muted; margin-bottom: 1; }
    ExportDialog Input { margin-bottom: 1; }
    ExportDialog ProgressBar { display: none; }
    ExportDialog.-busy ProgressBar { display: block; }
    ExportDialog #export-status { height: auto; min-height: 1; }
    ExportDialog Horizontal { height: auto; align-horizontal: right; margin-top: 1; }
    ExportDialog Button { margin-left: 2; }
    """

    def __init__(self, run_dir: str | Path, run_id: str | None = None) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.run_id = run_id or self.run_dir.name
        self.busy = False
        self.written: str | None = None

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Text(f"Merge and save {self.run_id}"), id="export-title")
            yield Static(Text("The adapter is merged into an unquantized copy of the base model and saved as a "
                              "standalone model (safetensors and tokenizer) that loads with "
                              "AutoModelForCausalLM.from_pretrained — the same as `tunetui export RUN --merge DIR`."),
                         id="export-about")
            yield Static(Text("Target folder (new or empty):", style="dim"))
            yield Input(str(self.run_dir / MERGED_FOLDER), id="export-target")
            yield ProgressBar(total=None, show_eta=False, show_percentage=False, id="export-progress")
            yield Static(id="export-status")
            with Horizontal():
                yield Button("Merge and save (enter)", variant="primary", id="export-go")
                yield Button("Close (esc)", id="export-close")

    def on_mount(self) -> None:
        self.query_one("#export-target", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.start()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "export-go":
            self.start()
        else:
            self.action_close()

    def _status(self, text: Text) -> None:
        self.query_one("#export-status", Static).update(text)

    def start(self) -> None:
        if self.busy or self.written:
            return
        target = self.query_one("#export-target", Input).value.strip()
        if not target:
            self._status(Text("Type the folder to write the merged model to.", style="red"))
            return
        self.busy = True
        self.add_class("-busy")
        self.query_one("#export-target", Input).disabled = True
        self.query_one("#export-go", Button).disabled = True
        self.query_one("#export-close", Button).disabled = True
        self._status(Text("starting…", style="dim"))
        run_dir = self.run_dir

        def work() -> None:
            from core.errors import TuneError

            try:
                from core.training.export import merge_run

                out = merge_run(run_dir, target, progress=lambda text: self.post_message(ExportProgress(text)))
                self.post_message(ExportEnded(str(out), folder_bytes(out), None))
            except TuneError as exc:
                self.post_message(ExportEnded(None, None, str(exc)))
            except Exception as exc:  # noqa: BLE001 - shown in the dialog; the app keeps running
                self.post_message(ExportEnded(None, None, f"The merge failed: {type(exc).__name__}: {exc}"))

        self.run_worker(work, thread=True, group="export", exclusive=True, exit_on_error=False)

    def on_export_progress(self, message: ExportProgress) -> None:
        if self.busy:
            self._status(Text(message.text, style="dim"))

    def on_export_ended(self, message: ExportEnded) -> None:
        self.busy = False
        self.remove_class("-busy")
        self.query_one("#export-close", Button).disabled = False
        if message.error:
            self.query_one("#export-target", Input).disabled = False
            self.query_one("#export-go", Button).disabled = False
            self._status(Text(message.error, style="red"))
            self.query_one("#export-target", Input).focus()
            return
        self.written = message.path
        self._status(Text.assemble(("✓ ", "bold green"), f"Wrote {units.size(message.size_bytes)} to ",
                                   (str(message.path), "bold")))
        self.query_one("#export-close", Button).focus()

    def action_close(self) -> None:
        if self.busy:
            self.notify("The merge is still running; it cannot be interrupted safely. Wait for it to end.",
                        severity="warning")
            return
        self.dismiss(self.written)


__all__ = ["ExportDialog", "folder_bytes", "MERGED_FOLDER"]
