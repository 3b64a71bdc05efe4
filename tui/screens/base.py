"""What every screen shares: the nav bar on top (the numbered screens, free GPU memory), the key footer at the bottom,
the nav bar kept current as GPU samples come, and `self.app` typed as the tunetui App."""
from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from textual import getters
from textual.app import ComposeResult
from textual.content import Content
from textual.events import ScreenResume
from textual.screen import Screen
from textual.widgets import Static

from tui.app import TuneApp
from tui.messages import SnapshotTaken
from tui.widgets.footer import KeyFooter
from tui.widgets.setup_nav import NavBar

if TYPE_CHECKING:
    from textual.visual import VisualType

    from core.resources.gpus import Snapshot


class TuneScreen(Screen):
    """A screen of the app. Subclasses set NAME and write compose_body(); snapshot_changed() hears of GPU samples."""

    NAME: ClassVar[str] = ""
    """The screen's name in tui.app.SCREENS: the one its nav bar lights."""

    app = getters.app(TuneApp)

    def compose(self) -> ComposeResult:
        yield NavBar(self.NAME)
        yield from self.compose_body()
        yield KeyFooter()

    def compose_body(self) -> ComposeResult:
        """What goes between the nav bar and the footer."""
        raise NotImplementedError

    @property
    def nav(self) -> NavBar:
        return self.query_one(NavBar)

    def _on_screen_resume(self, event: ScreenResume) -> None:
        # The underscore name leaves `on_screen_resume` to the subclasses: Textual calls one handler per class,
        # the underscore one when a class has both.
        self.nav.set_snapshot(self.app.snapshot)
        self.snapshot_changed(self.app.snapshot)

    def on_snapshot_taken(self, message: SnapshotTaken) -> None:
        self.nav.set_snapshot(message.snapshot)
        self.snapshot_changed(message.snapshot)

    def snapshot_changed(self, snapshot: Snapshot | None) -> None:
        """A new GPU/host sample arrived while this screen is shown, or the screen is shown again (with the latest
        sample; None before the first)."""


def update_if_changed(widget: Static, content: VisualType, *, layout: bool = True) -> None:
    """Static.update, skipped when the text and styles are what it shows already: the GPU poll redraws every 1.5 s
    and most of the time nothing it feeds has changed (each update costs a repaint, and a layout pass unless
    `layout=False` for widgets of fixed size)."""
    key = (content.plain, tuple(content.spans)) if isinstance(content, Content) else content
    if getattr(widget, "_tunetui_shown", None) == key:
        return
    widget._tunetui_shown = key  # type: ignore[attr-defined]  # a mark of our own on the widget
    widget.update(content, layout=layout)


__all__ = ["TuneScreen", "update_if_changed"]
