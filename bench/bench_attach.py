"""Benchmark: attaching to a run trained by another process, and following it.

1. Time from `create_app(attach_dir=RUN)` to the Run view showing the last step, for runs of 10 k and 100 k steps
   (events.jsonl: StepEnded + LogLine per step, an EvalEnded every 100 - about twice the events of a real run, whose
   engine logs a line every few hundred steps). Wall and CPU time; the process start of `tunetui attach` (about
   0.3 s here) is not included.
2. CPU time of the app process while it follows a live run: a writer *process* appends steps at a given rate
   for a given time; the app's own CPU time (time.process_time) over that window is divided by the wall time.
   The app is the real one, driven headless by Textual's Pilot at 120x36.

With --terminal WxH (needs tmux and Linux's /proc), the same two figures for the real `tunetui attach` in a tmux
terminal of that size: from starting it to the last step on the screen (process start included), and the CPU time of
its main thread - the UI thread - read from /proc while the writer appends (--history: steps already in the run).

    .venv/bin/python bench/bench_attach.py [--steps 10000 100000] [--rate 20] [--seconds 10]
    .venv/bin/python bench/bench_attach.py --terminal 80x24 --steps 10000 --rate 5 --seconds 30 [--history 1000]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

WRITER = r"""
import sys, time
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/tests"]
from helpers_run import step_events
path, first, rate, seconds = sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
step, end = first, time.monotonic() + seconds
with open(path, "a", encoding="utf-8") as fh:
    while time.monotonic() < end:
        for event in step_events(step, step, max_steps=10**6):
            fh.write(event.to_json() + "\n")
        fh.flush()
        step += 1
        time.sleep(1 / rate)
"""


def write_run(out: Path, steps: int) -> Path:
    from core import rundir
    from helpers_run import scripted_run, write_run as write

    run_dir = write(out, f"run-{steps}", scripted_run(0, max_steps=10**6, run_dir=str(out / f"run-{steps}")))
    from helpers_run import step_events

    with open(run_dir / rundir.EVENTS_FILE, "a", encoding="utf-8") as fh:
        for first in range(1, steps + 1, 1000):
            for event in step_events(first, min(first + 999, steps), max_steps=10**6, eval_every=100):
                fh.write(event.to_json() + "\n")
    rundir.write_pid(run_dir)  # "alive": this process
    return run_dir


async def attach_time(run_dir: Path, steps: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) from building the app to the full view. The CPU time barely
    moves when other programs share the cores; the wall time does."""
    from tui.app import create_app

    app = create_app(output_dir=str(run_dir.parent), attach_dir=str(run_dir))
    start, cpu = time.perf_counter(), time.process_time()
    async with app.run_test(size=(120, 36)) as pilot:
        while app.session.state.step != steps or type(app.screen).__name__ != "RunScreen":
            await pilot.pause(0.01)
        await pilot.pause()
        return time.perf_counter() - start, time.process_time() - cpu


async def follow_cpu(run_dir: Path, first: int, rate: float, seconds: float) -> tuple[float, int]:
    from core import rundir
    from tui.app import create_app

    app = create_app(output_dir=str(run_dir.parent), attach_dir=str(run_dir))
    async with app.run_test(size=(120, 36)) as pilot:
        while type(app.screen).__name__ != "RunScreen":
            await pilot.pause(0.05)
        await pilot.pause(1.0)
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(ROOT), str(run_dir / rundir.EVENTS_FILE),
                                   str(first), str(rate), str(seconds)])
        cpu0, wall0 = time.process_time(), time.perf_counter()
        while writer.poll() is None:
            await pilot.pause(0.1)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        await pilot.pause(0.5)
        return cpu / wall, app.session.state.step - first + 1


class Terminal:
    """The real `tunetui attach RUN_DIR` in a private tmux server, its pane process the app itself (exec)."""

    def __init__(self, run_dir: Path, size: tuple[int, int]) -> None:
        import shlex

        self.socket = f"bench-attach-{os.getpid()}"
        tunetui = Path(sys.executable).with_name("tunetui")
        env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), "TERM": "xterm-256color",
               "PYTHONPATH": str(ROOT), "TUNETUI_CONFIG_DIR": os.environ["TUNETUI_CONFIG_DIR"]}
        line = "exec env " + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + \
            f" {shlex.quote(str(tunetui))} attach {shlex.quote(str(run_dir))}"
        self.tmux("new-session", "-d", "-x", str(size[0]), "-y", str(size[1]), line)
        self.pid = int(self.tmux("display-message", "-p", "#{pane_pid}").strip())

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True, capture_output=True, text=True,
                              timeout=20).stdout

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.tmux("capture-pane", "-p"):
            if time.monotonic() > deadline:
                raise SystemExit(f"{text!r} did not appear on the screen within {timeout:.0f} s")
            time.sleep(0.02)

    def main_thread_seconds(self) -> float:
        """CPU seconds (user + system) the app's main thread - the UI's - has used so far."""
        fields = Path(f"/proc/{self.pid}/task/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=20)


def terminal_figures(out: Path, args, size: tuple[int, int]) -> None:
    for steps in args.steps:
        run_dir = write_run(out, steps)
        start = time.perf_counter()
        term = Terminal(run_dir, size)
        try:
            term.wait_for(f"step {steps}/")
            print(f"tunetui attach to a {steps:,}-step run at {size[0]}x{size[1]}: last step on screen in "
                  f"{time.perf_counter() - start:.2f} s")
        finally:
            term.close()
    from core import rundir

    run_dir = write_run(out / "follow", args.history)  # its own folder: --steps may hold the same count
    term = Terminal(run_dir, size)
    try:
        term.wait_for(f"step {args.history}/")
        time.sleep(1.0)
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(ROOT), str(run_dir / rundir.EVENTS_FILE),
                                   str(args.history + 1), str(args.rate), str(args.seconds + 2)])
        time.sleep(1.0)
        cpu0, wall0 = term.main_thread_seconds(), time.perf_counter()
        time.sleep(args.seconds)
        cpu, wall = term.main_thread_seconds() - cpu0, time.perf_counter() - wall0
        writer.wait()
        print(f"following a live {args.history:,}-step run at {args.rate:g} steps/s for {args.seconds:g} s at "
              f"{size[0]}x{size[1]}: UI thread CPU {cpu / wall * 100:.1f}% of one core")
    finally:
        term.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--rate", type=float, default=20.0, help="steps per second appended while following")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--terminal", metavar="WxH", help="measure the real tunetui attach in tmux at this size")
    parser.add_argument("--history", type=int, default=1000, help="--terminal: steps in the followed run already")
    args = parser.parse_args()
    os.environ.setdefault("TUNETUI_CONFIG_DIR", tempfile.mkdtemp())
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        if args.terminal:
            width, height = (int(n) for n in args.terminal.lower().split("x"))
            terminal_figures(out, args, (width, height))
            return
        for steps in args.steps:
            run_dir = write_run(out, steps)
            size = (run_dir / "events.jsonl").stat().st_size / 2**20
            with open(run_dir / "events.jsonl", "rb") as fh:
                events = sum(1 for _ in fh)
            seconds, cpu = asyncio.run(attach_time(run_dir, steps))
            print(f"attach to a {steps:,}-step run ({events:,} events, {size:.1f} MiB events.jsonl): full view in "
                  f"{seconds:.2f} s ({cpu:.2f} s CPU)")
        run_dir = write_run(out / "follow", 1000)
        share, seen = asyncio.run(follow_cpu(run_dir, 1001, args.rate, args.seconds))
        print(f"following a live run at {args.rate:g} steps/s for {args.seconds:g} s: app process CPU "
              f"{share * 100:.1f}% of one core ({seen} new steps shown)")


if __name__ == "__main__":
    main()
