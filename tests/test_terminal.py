"""A vanished terminal or reader never fails a run: writes to stdout/stderr survive EIO and a closed pipe, and
detach_from_terminal sends everything later written (by Python or C code) to the run's log."""
from __future__ import annotations

import errno
import subprocess
import sys
import textwrap
from pathlib import Path

from core.terminal import SafeStream

ROOT = Path(__file__).resolve().parents[1]


class _GoneTerminal:
    """A stream whose writes fail as a hung-up terminal's (EIO) or a closed pipe's (EPIPE) do."""

    def __init__(self, error: OSError) -> None:
        self.error = error
        self.written: list[str] = []
        self.fail = True

    def write(self, text: str) -> int:
        if self.fail:
            raise self.error
        self.written.append(text)
        return len(text)

    def flush(self) -> None:
        if self.fail:
            raise self.error


def test_writes_survive_a_hung_up_terminal_and_a_closed_pipe():
    for error in (OSError(errno.EIO, "Input/output error"), BrokenPipeError(errno.EPIPE, "Broken pipe")):
        inner = _GoneTerminal(error)
        stream = SafeStream(inner)
        assert stream.write("step 1\n") == len("step 1\n")  # no exception, and print() sees a full write
        stream.flush()
        print("step 2", file=stream)
        assert stream.dead and not stream.isatty()
        inner.fail = False  # the fd now points somewhere that works (detach_from_terminal revives the stream)
        stream.revive()
        stream.write("step 3\n")
        assert inner.written == ["step 3\n"]


def test_detach_from_terminal_sends_later_output_to_the_log(tmp_path):
    """In a process of its own (it re-points fds 0, 1 and 2): what Python and C code write afterwards lands in the
    log, created owner-only; nothing goes to the old stdout/stderr."""
    log = tmp_path / "output.log"
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(ROOT)!r})
        from core.terminal import detach_from_terminal, guard_std_streams
        guard_std_streams()
        print("before")
        sys.stdout.flush()
        assert detach_from_terminal({str(log)!r}) == {str(log)!r}
        print("from python")
        sys.stdout.flush()
        print("to stderr", file=sys.stderr)
        os.write(2, b"from C\\n")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "before\n" and done.stderr == ""
    assert log.read_text().splitlines() == ["from python", "to stderr", "from C"]
    assert log.stat().st_mode & 0o777 == 0o600
