"""Surviving a terminal that goes away: standard streams whose writes never raise, and fds 0/1/2 re-pointed at a log.

After SIGHUP (an SSH connection dropped) a write to the old terminal raises `OSError: [Errno 5]`; a closed pipe
raises `BrokenPipeError`. A training run must never fail because of either. Imports nothing heavy (no UI either).
"""
from __future__ import annotations

import io
import os
import sys
from pathlib import Path


class SafeStream(io.TextIOBase):
    """A text stream wrapper whose write/flush swallow the errors of a vanished terminal or reader.

    Once a write failed, later writes are dropped (a dead terminal does not come back) until `revive()`, which
    `detach_from_terminal` calls after pointing the file descriptor somewhere that works again.
    """

    def __init__(self, stream) -> None:
        super().__init__()
        self.stream = stream
        self.dead = False

    def write(self, text: str) -> int:
        if not self.dead:
            try:
                self.stream.write(text)
            except (OSError, ValueError):  # EIO, EPIPE/BrokenPipeError, or "I/O operation on closed file"
                self.dead = True
        return len(text)

    def flush(self) -> None:
        if not self.dead:
            try:
                self.stream.flush()
            except (OSError, ValueError):
                self.dead = True

    def revive(self) -> None:
        self.dead = False

    def isatty(self) -> bool:
        try:
            return not self.dead and self.stream.isatty()
        except (OSError, ValueError):
            return False

    def fileno(self) -> int:
        return self.stream.fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", "utf-8")

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self.stream, "errors", None)

    def __getattr__(self, name):
        # Everything else (buffer, line_buffering, ...) as the wrapped stream has it.
        return getattr(self.stream, name)


def guard_std_streams() -> None:
    """Wrap sys.stdout and sys.stderr (once) so no print anywhere in the process can raise on a dead terminal."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, SafeStream):
            setattr(sys, name, SafeStream(stream))


def detach_from_terminal(log_path: str | Path | None = None) -> str:
    """Point fds 1 and 2 at `log_path` (appended, created 0600) or /dev/null, and fd 0 at /dev/null.

    Safe to call from a signal handler: only os.open/os.dup2/os.close. Everything later written to stdout/stderr,
    by Python or by C libraries, lands in the log (or nowhere) instead of raising on the dead terminal. Returns
    where the output now goes.
    """
    target = os.devnull
    out = -1
    if log_path is not None:
        try:
            out = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            target = str(log_path)
        except OSError:
            out = -1
    if out < 0:
        out = os.open(os.devnull, os.O_WRONLY)
    null_in = os.open(os.devnull, os.O_RDONLY)
    try:
        for fd in (1, 2):
            os.dup2(out, fd)
        os.dup2(null_in, 0)
    finally:
        os.close(out)
        os.close(null_in)
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, SafeStream):
            stream.revive()
    return target


def safe_print(*args, file=None, **kwargs) -> None:
    """print() that never raises because its stream is a dead terminal or a closed pipe."""
    try:
        print(*args, file=file if file is not None else sys.stderr, **kwargs)
    except (OSError, ValueError):
        pass


__all__ = ["SafeStream", "guard_std_streams", "detach_from_terminal", "safe_print"]
