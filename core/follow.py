"""Following a run's events.jsonl as another process appends to it: read it once from the start, then only new lines.

A viewer never writes to the file. Imports nothing heavy (no UI either).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from core.events import Event, parse_lines


class EventTail:
    """Reads the complete lines appended to an events file since the last call (a torn last line waits).

    Keeps the file open and its byte offset: each `read_new` costs one fstat when nothing was written, and reads
    only the new bytes when something was, however long the run already is.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.offset = 0
        """Bytes of the file consumed so far (always at a line boundary)."""
        self._fh = None
        self._partial = b""

    def read_new(self) -> list[Event]:
        """The events in the complete lines written since the last call; [] when none (or no file yet)."""
        if self._fh is None:
            try:
                self._fh = open(self.path, "rb")
            except FileNotFoundError:
                return []
        try:
            size = os.fstat(self._fh.fileno()).st_size
        except OSError:
            return []
        consumed = self.offset + len(self._partial)
        if size < consumed:  # truncated under us: start again from the top
            self.offset, self._partial, consumed = 0, b"", 0
        if size == consumed:
            return []
        self._fh.seek(consumed)
        data = self._partial + self._fh.read(size - consumed)
        cut = data.rfind(b"\n") + 1
        self._partial = data[cut:]
        self.offset += cut
        return parse_lines(data[:cut].splitlines())  # skips what does not parse, as read_events does

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "EventTail":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def wait_for_event(tail: EventTail, accept, timeout: float, poll_seconds: float = 0.2) -> Event | None:
    """Follow `tail` until an event for which `accept(event)` is true arrives; None after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        for event in tail.read_new():
            if accept(event):
                return event
        if time.monotonic() >= deadline:
            return None
        time.sleep(poll_seconds)


__all__ = ["EventTail", "wait_for_event"]
