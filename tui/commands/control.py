"""`tunetui pause|resume|stop RUN_DIR`: drive a run trained by another process (the app, a detached or headless run).

Writes a request into the run folder's control channel (core.control), then follows its events.jsonl until the run
confirms ("paused at step 120"; "stopped at step 120, checkpoint saved"). Never imports textual or torch.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from core.errors import TuneError

WAIT_SECONDS = 600.0
"""How long to wait for the run to confirm: it acts at the end of its current step, and stopping saves first."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the run's folder (see `tunetui runs`)")
    parser.add_argument("--timeout", type=float, default=WAIT_SECONDS, metavar="SECONDS",
                        help=f"how long to wait for the run to confirm (default {WAIT_SECONDS:.0f}); 0: don't wait")


def run(args: argparse.Namespace) -> int:
    from core import rundir
    from core.control import request
    from core.events import read_events
    from core.follow import EventTail
    from core.terminal import guard_std_streams

    guard_std_streams()
    command = args.command
    run_dir = Path(args.run_dir).expanduser()
    events_path = run_dir / rundir.EVENTS_FILE
    if not events_path.is_file():
        raise TuneError(f"{run_dir} is not a run folder (it has no {rundir.EVENTS_FILE})", "RUN_DIR",
                        "Pass a folder listed by `tunetui runs`")
    summary = rundir.summarize(run_dir)
    if summary.status != "running":
        fix = ("Resume it with `tunetui train --resume RUN_DIR`" if summary.status in ("stopped", "crashed", "failed")
               and summary.checkpoint else "Pick a running run from `tunetui runs`")
        raise TuneError(f"The run in {run_dir} is not running (it is {summary.status})", "RUN_DIR", fix)
    paused_at = _paused_at(read_events(events_path))
    if command == "pause" and paused_at is not None:
        print(f"already paused at step {paused_at}. Resume with: tunetui resume {run_dir}")
        return 0

    tail = EventTail(events_path)
    tail.read_new()  # only what happens after the request counts as its answer
    try:
        request(run_dir, command)
    except PermissionError:
        raise TuneError(f"Cannot write a request into {run_dir}: permission denied", "RUN_DIR",
                        "Only the user who owns the run can pause, resume or stop it") from None
    if command == "resume" and paused_at is None:
        print("the run was not paused; it keeps training")
        return 0
    if args.timeout <= 0:
        print(f"asked the run to {command}; it acts at the end of its current step")
        return 0
    return _wait_for_answer(tail, run_dir, command, args.timeout, rundir)


def _paused_at(events) -> int | None:
    """The step the run is paused at now (since its latest start), or None while it trains."""
    paused = None
    for e in events:
        name = type(e).__name__
        if name == "RunPaused":
            paused = e.step
        elif name in ("RunResumed", "RunStarted", "RunFinished", "RunFailed"):
            paused = None
    return paused


def _wait_for_answer(tail, run_dir: Path, command: str, timeout: float, rundir) -> int:
    deadline = time.monotonic() + timeout
    saved: list[str] = []
    while True:
        alive = rundir.is_running(run_dir)  # checked before reading, so an ending run's last lines are read
        for e in tail.read_new():
            code = _answer(e, command, run_dir, saved)
            if code is not None:
                return code
        if not alive:
            print("the run's process ended without answering; `tunetui runs` shows it as crashed")
            return 1
        if time.monotonic() >= deadline:
            print(f"asked the run to {command}; no answer within {timeout:.0f} s (it acts at the end of its current "
                  "step: check with `tunetui runs`)")
            return 1
        time.sleep(0.2)


def _answer(e, command: str, run_dir: Path, saved: list[str]) -> int | None:
    """The exit code once `e` answers the request (printing what happened); None while waiting."""
    name = type(e).__name__
    if name == "CheckpointSaved":
        saved.append(e.path)
    elif name == "RunPaused" and command == "pause":
        print(f"paused at step {e.step}. Resume with: tunetui resume {run_dir}")
        return 0
    elif name == "RunResumed" and command == "resume":
        print(f"resumed at step {e.step}")
        return 0
    elif name == "RunFinished":
        if e.stopped:
            what = f"checkpoint saved ({saved[-1]})" if saved else "no checkpoint was saved"
            print(f"stopped at step {e.step}, {what}. Continue with: tunetui train --resume {run_dir}")
            return 0
        print(f"the run finished at step {e.step} before it could {command}; model in {e.final_dir}")
        return 0 if command == "stop" else 1
    elif name == "RunFailed":
        print(f"the run failed: {e.message}")
        return 1
    return None


__all__ = ["add_arguments", "run"]
