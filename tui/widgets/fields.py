"""Form widgets for the set-up screens, where Enter always means "next screen" and the state shows in the glyph."""
from __future__ import annotations

from textual.binding import Binding
from textual.widgets import Checkbox, Select


class Tick(Checkbox, inherit_bindings=False):
    """A checkbox toggled by space or a click only: Enter is left to the screen (go on), so "Enter, Enter, Enter"
    through the set-up screens never flips a setting on the way. Ticked shows `X`, unticked a blank, so the state
    reads without colour."""

    BINDINGS = [Binding("space", "toggle_button", "Toggle", show=False)]

    @property
    def BUTTON_INNER(self) -> str:  # noqa: N802 - Textual's ToggleButton reads this name when it draws the box
        return "X" if self.value else " "


class Choice(Select, inherit_bindings=False):
    """A Select whose list opens with space, the arrow keys or a click: Enter is left to the screen (go on), as
    for Tick. Textual's Select opens on Enter too, so Enter on a focused Select opened and closed its list for
    ever and never went on. Inside the open list Enter still picks the highlighted option."""

    BINDINGS = [Binding("space,down,up", "show_overlay", "Show menu", show=False)]
