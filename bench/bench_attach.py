"""Benchmark: attaching to a run trained by another process, and following it.

1. Time from `create_app(attach_dir=RUN)` to the Run view showing the last step, for runs of 10 k and 100 k steps
   (events.jsonl: StepEnded + LogLine per step, an EvalEnded every 100 - about twice the events of a real run, whose
   engine logs a line every few hundred steps). Wall and CPU time; the process start of `tunetui attach` (about
   0.3 s here) is not included.
2. CPU time of the app process while it follows a live run: a writer *process* appends steps at a given rate
   for a given time; the app's own CPU time (time.process_time) over that window is divided by the wall time.
   The app is the real one, driven headless by Textual's Pilot at 120x36.

    .venv/bin/python bench/bench_attach.py [--steps 10000 100000] [--rate 20] [--seconds 10]
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--rate", type=float, default=20.0, help="steps per second appended while following")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    os.environ.setdefault("TUNETUI_CONFIG_DIR", tempfile.mkdtemp())
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for steps in args.steps:
            run_dir = write_run(out, steps)
            size = (run_dir / "events.jsonl").stat().st_size / 2**20
            with open(run_dir / "events.jsonl", "rb") as fh:
                events = sum(1 for _ in fh)
            seconds, cpu = asyncio.run(attach_time(run_dir, steps))
            print(f"attach to a {steps:,}-step run ({events:,} events, {size:.1f} MiB events.jsonl): full view in "
                  f"{seconds:.2f} s ({cpu:.2f} s CPU)")
        run_dir = write_run(out, 1000)
        share, seen = asyncio.run(follow_cpu(run_dir, 1001, args.rate, args.seconds))
        print(f"following a live run at {args.rate:g} steps/s for {args.seconds:g} s: app process CPU "
              f"{share * 100:.1f}% of one core ({seen} new steps shown)")


if __name__ == "__main__":
    main()
