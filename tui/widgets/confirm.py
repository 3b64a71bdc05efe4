"""A question as a modal screen: yes/no by default, or a few labelled choices (quitting during a run: stop, detach,
cancel). Any screen may push it."""
from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.events import Key
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class ConfirmScreen(ModalScreen[Any]):
    """Dismisses with the chosen answer's value: True (y) or False (n / escape) unless `choices` says otherwise.
    `choices`: (key, label, value, button variant) in display order; escape answers the last one."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", show=False)]
    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Vertical { width: 64; max-width: 95%; height: auto; border: thick $warning;
                               background: $surface; padding: 1 2; }
    ConfirmScreen Horizontal { height: auto; align-horizontal: right; margin-top: 1; }
    ConfirmScreen Button { margin-left: 1; min-width: 8; }
    """

    def __init__(self, question: str, yes: str = "Yes", no: str = "No",
                 choices: list[tuple[str, str, Any, str]] | None = None) -> None:
        super().__init__()
        self.question = question
        self.choices = choices or [("y", yes, True, "error"), ("n", no, False, "primary")]

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.question, markup=False)
            with Horizontal():
                for n, (key, label, _value, variant) in enumerate(self.choices):
                    yield Button(f"{label} ({key})", variant=variant, id=f"choice-{n}")

    def on_mount(self) -> None:
        self.query_one(f"#choice-{len(self.choices) - 1}", Button).focus()  # the harmless answer

    def on_key(self, event: Key) -> None:
        for key, _label, value, _variant in self.choices:
            if event.key == key:
                event.stop()
                self.dismiss(value)
                return

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(self.choices[int(event.button.id.rsplit("-", 1)[1])][2])

    def action_cancel(self) -> None:
        self.dismiss(self.choices[-1][2])
