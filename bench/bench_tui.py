"""Benchmark the app as a user meets it: first paint after `tunetui` starts, key-press latency during a run.

Drives the real `tunetui` in a pseudo-terminal (100x30) and reads what it writes: the time from starting it to its
first painted frame (beside a bare Textual app started the same way), and key-press to screen-update latency while
the demo run trains. Prints figures; never part of the test run.

    .venv/bin/python bench/bench_tui.py [--starts 7] [--presses 40]

Targets (issue 4): first paint <= 0.5 s; key-press latency p95 <= 50 ms while a run is going.
"""
from __future__ import annotations

import argparse
import fcntl
import os
import pty
import re
import select
import shutil
import signal
import statistics
import struct
import sys
import tempfile
import termios
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
LONG_RUN_STEPS = 100_000
COLUMNS, ROWS = 100, 30
ANSI = re.compile(rb"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b[PX^_].*?\x1b\\|\x1b\][^\x07]*(\x07|\x1b\\)|\x1b[@-Z\\-_]")

# What each screen paints that no other screen does (the footer's keys or a label of its own).
MARKERS = {"model": b"Use model", "method": b"Recommended", "data": b"Max len", "review": b"Save as",
           "run": b"Pause/Resume"}
SWITCH_KEYS = [(b"3", "data"), (b"4", "review"), (b"5", "run")]
# → on the Method screen, starting from LoRA: what each next method's settings show that the previous one's don't.
METHOD_MARKERS = [b"Base weights", b"All weights train", b"Trainable layers", b"Targets"]


def tunetui_command() -> list[str]:
    exe = Path(sys.executable).with_name("tunetui")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "tui.cli"]


class Terminal:
    """`tunetui` in a pseudo-terminal; `screen` is everything it wrote, escape sequences removed."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: str) -> None:
        self.started = time.perf_counter()
        pid, fd = pty.fork()
        if pid == 0:  # the child: size the terminal, then become tunetui
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
            os.chdir(cwd)
            os.execvpe(args[0], args, env)
        self.pid, self.fd = pid, fd
        self.raw = b""
        self.text = b""

    def read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return False
        try:
            chunk = os.read(self.fd, 1 << 16)
        except OSError:  # the child is gone
            return False
        self.raw += chunk
        self.text += ANSI.sub(b"", chunk)
        return True

    def wait_for(self, pattern: bytes | re.Pattern, timeout: float, since: int = 0) -> float:
        """Seconds until `pattern` shows up in the output written after offset `since`."""
        t0 = time.perf_counter()
        while True:
            haystack = self.text[since:]
            if (pattern.search(haystack) if isinstance(pattern, re.Pattern) else pattern in haystack):
                return time.perf_counter() - t0
            if time.perf_counter() - t0 > timeout:
                tail = self.text[-600:].decode(errors="replace")
                raise TimeoutError(f"no {pattern!r} after {timeout:.0f} s; the screen ends with:\n{tail}")
            self.read(0.05)

    def drain(self, quiet: float = 0.3) -> None:
        """Read until the app has been silent for `quiet` seconds (so the next measurement starts clean)."""
        while self.read(quiet):
            pass

    def send(self, keys: bytes) -> None:
        os.write(self.fd, keys)

    def close(self, timeout: float = 120.0) -> None:
        """Ctrl+Q (and 'y' if a run is going: stop it with a checkpoint), then wait for the process to end."""
        self.send(b"\x11")
        deadline = time.perf_counter() + timeout
        asked = False
        while time.perf_counter() < deadline:
            self.read(0.1)
            if not asked and b"and quit?" in self.text[-4000:]:
                self.send(b"y")
                asked = True
            done, _ = os.waitpid(self.pid, os.WNOHANG)
            if done:
                return
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)


def environment(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(TERM="xterm-256color", COLUMNS=str(COLUMNS), LINES=str(ROWS), TUNETUI_CONFIG_DIR=str(home / "config"))
    env.pop("TEXTUAL", None)
    return env


# The floor: a bare Textual app with one label and a footer, started the same way.
BARE_APP = """
from textual.app import App
from textual.widgets import Footer, Label
class Bare(App):
    BINDINGS = [("enter", "quit", "Use model")]
    def compose(self):
        yield Label("1 Model")
        yield Footer()
Bare().run()
"""


def first_paint(starts: int, home: Path) -> tuple[list[float], list[float]]:
    """Start `tunetui` and the bare app alternately, `starts` times each; a first frame is there when the
    footer's "Use model" is."""
    ours, bare = [], []
    for _ in range(starts):
        for command, times in ((tunetui_command(), ours), ([sys.executable, "-c", BARE_APP], bare)):
            term = Terminal(command, environment(home), str(home))
            term.wait_for(MARKERS["model"], timeout=30)
            times.append(time.perf_counter() - term.started)
            term.drain(0.5)
            term.close()
    return ours, bare


def latency_while_training(presses: int, home: Path) -> tuple[dict[str, list[float]], str]:
    """`tunetui CONFIG.yaml` opens on Review and Enter launches the demo (made longer, so it still trains at the
    last key). Once steps arrive, time two kinds of key: → on the Method screen (cards, estimates and settings
    change) and screen switches (Data, Review, Run, ...), each from writing the key until text only the new state
    shows appears in the terminal's output."""
    from core.config import save
    from tui.app import default_config

    demo = default_config()
    config = home / "bench-run.yaml"
    save(replace(demo, train=replace(demo.train, max_steps=LONG_RUN_STEPS, save_steps=LONG_RUN_STEPS)), config)
    term = Terminal([*tunetui_command(), str(config)], environment(home), str(home))
    try:
        term.wait_for(MARKERS["review"], timeout=30)
        term.drain(0.3)
        since = len(term.text)
        term.send(b"\r")  # the Launch button has the focus
        term.wait_for(MARKERS["run"], timeout=60, since=since)
        step = re.compile(rb"step (\d+)/(\d+)")
        term.wait_for(step, timeout=300)  # training has started
        first_step = int(step.findall(term.text)[-1][0])
        latencies: dict[str, list[float]] = {"method key": [], "screen switch": []}
        term.send(b"2")
        term.wait_for(MARKERS["method"], timeout=10)
        for i in range(presses):
            marker = METHOD_MARKERS[i % len(METHOD_MARKERS)]
            latencies["method key"].append(_time_key(term, b"\x1b[C", marker))  # → : the next method
        for i in range(presses):
            key, screen = SWITCH_KEYS[i % len(SWITCH_KEYS)]
            latencies["screen switch"].append(_time_key(term, key, MARKERS[screen]))
        last, total = step.findall(term.text)[-1]
        still = "still training" if int(last) < int(total) else "the run had finished"
        return latencies, f"measured from step {first_step} to step {int(last)} of {int(total)} ({still})"
    finally:
        term.close()


def _time_key(term: Terminal, key: bytes, marker: bytes) -> float:
    term.drain(0.15)
    since = len(term.text)
    t0 = time.perf_counter()
    term.send(key)
    term.wait_for(marker, timeout=10, since=since)
    return time.perf_counter() - t0


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=7, help="how many cold starts to time")
    parser.add_argument("--presses", type=int, default=40, help="how many presses of each kind to time during the run")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-tui-"))
    try:
        print(f"tunetui in a {COLUMNS}x{ROWS} pseudo-terminal; {os.cpu_count()} CPUs, load average "
              f"{os.getloadavg()[0]:.1f} at the start; command: {' '.join(tunetui_command())}")
        paint, bare = first_paint(args.starts, home)
        print(f"first paint: median {statistics.median(paint) * 1000:.0f} ms, min {min(paint) * 1000:.0f}, "
              f"max {max(paint) * 1000:.0f} over {len(paint)} starts (target <= 500 ms); a bare Textual app, "
              f"started alternately: median {statistics.median(bare) * 1000:.0f} ms, "
              f"min {min(bare) * 1000:.0f}")
        latencies, state = latency_while_training(args.presses, home)
        print(f"key-press -> screen update while the demo trains ({state}; target p95 <= 50 ms):")
        for kind, values in latencies.items():
            ms = [x * 1000 for x in values]
            print(f"  {kind:>13}: median {statistics.median(ms):.0f} ms, p95 {p95(ms):.0f} ms, "
                  f"max {max(ms):.0f} ms over {len(ms)} presses; in order: {' '.join(f'{x:.0f}' for x in ms)}")
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
