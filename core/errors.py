"""The one exception type for mistakes a user can fix. Imports nothing heavy."""
from __future__ import annotations


class TuneError(Exception):
    """A user error: what was wrong, where (file, line, key) and what to do.

    The CLI prints it without a traceback and exits non-zero; the TUI shows it in place.
    Bugs stay ordinary exceptions so they surface with a traceback in the log.
    """

    def __init__(self, what: str, where: str | None = None, fix: str | None = None):
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(self.message)

    @property
    def message(self) -> str:
        text = _sentence(self.what, f" ({self.where})" if self.where else "")
        if self.fix:
            text += " " + _sentence(self.fix)
        return text

    def __str__(self) -> str:
        return self.message


def _sentence(text: str, suffix: str = "") -> str:
    text = text.rstrip(". ")
    if text.endswith(("?", "!")) and not suffix:
        return text
    return text + suffix + "."
