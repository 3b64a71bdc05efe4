"""The rich Console the headless commands print their results with (stdout). Never imports textual."""
from __future__ import annotations

from rich.console import Console


class StdoutConsole(Console):
    """A Console whose closed pipe (`tunetui runs | head -1`) ends the command the way every other write to a
    closed stdout does: tui.cli.main catches the BrokenPipeError and exits 141, as a SIGPIPE would.

    rich's own `on_broken_pipe` (its documented hook for this) exits with status 1 instead, so the same pipe would
    end with 1 or 141 depending on whether rich or a plain print met it first."""

    def on_broken_pipe(self) -> None:
        self.quiet = True  # nothing more from this console, including the flush on the way out
        raise BrokenPipeError(32, "Broken pipe")
