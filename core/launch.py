"""`tunetui train --nproc N`: one run trained by N processes, started by PyTorch's own launcher (torch.distributed.run).

The launching process (the "parent") makes the run folder, then starts `torch.distributed.run --standalone` as a
child in a session of its own, with the folder in TUNETUI_RUN_DIR for every rank (rank 0 writes there; the others
only read it). The terminal's Ctrl-C and SIGTERM reach the parent alone; it turns the first into a stop request in the
run folder's control channel, which rank 0 reads and shares with every rank at the end of a step
(core.training.distributed), so the whole group stops at the same step and saves one consistent checkpoint. A second
Ctrl-C asks torchrun to end the group without saving.

When a rank dies, torchrun's elastic agent ends the others; the agent's report (which rank, its exit code or signal) is
handed back here through a small file, and the parent writes RunFailed naming that rank into events.jsonl unless rank
0 already wrote the run's last event.

The same `tunetui train` started *by* torchrun (WORLD_SIZE/RANK/LOCAL_RANK set) is a rank and never launches again.

Imports nothing heavy at module level; torch is imported only by the agent (`python -m core.launch`).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

RUN_DIR_ENV = "TUNETUI_RUN_DIR"
"""Set by the parent for every rank: the run folder it made (or the one being resumed)."""
LAUNCHER_ENV = "TUNETUI_LAUNCHER_PID"
"""Set by the parent for every rank: a launcher will report a failed rank, so rank 0 leaves that to it."""
WAIT_POLL_SECONDS = 0.5


def rank(env=None) -> int:
    env = os.environ if env is None else env
    return int(env.get("RANK", "0") or 0)


def world_size(env=None) -> int:
    env = os.environ if env is None else env
    return int(env.get("WORLD_SIZE", "1") or 1)


def under_torchrun(env=None) -> bool:
    """True in a process started by torchrun (or any launcher that sets the torch.distributed env variables)."""
    env = os.environ if env is None else env
    return "LOCAL_RANK" in env or "WORLD_SIZE" in env


def parse_gpus(text: str) -> list[str]:
    """`--gpus 0,2,3` → ["0", "2", "3"]; UUIDs (GPU-…, MIG-…) pass through as CUDA_VISIBLE_DEVICES takes them."""
    from core.errors import TuneError

    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items or len(set(items)) != len(items):
        raise TuneError(f"--gpus {text!r} is not a list of distinct GPUs", "--gpus",
                        "Give GPU indexes as nvidia-smi numbers them, e.g. --gpus 0,2,3 (see `tunetui gpus`)")
    for item in items:
        if not (item.isdigit() or item.startswith(("GPU-", "MIG-"))):
            raise TuneError(f"--gpus: {item!r} is not a GPU index or UUID", "--gpus",
                            "Give GPU indexes as nvidia-smi numbers them, e.g. --gpus 0,2,3 (see `tunetui gpus`)")
    return items


PEER_FAILED_EXIT = 3
"""A worker's exit code when a collective broke under it (another rank died): a consequence, not a cause."""


@dataclass(frozen=True)
class Failure:
    """One worker that failed, as torchrun's agent reported it."""

    rank: int
    pid: int
    exitcode: int
    message: str = ""
    timestamp: float = 0.0

    def describe(self) -> str:
        if self.exitcode < 0:
            try:
                how = f"was killed by {signal.Signals(-self.exitcode).name}"
            except ValueError:
                how = f"was killed by signal {-self.exitcode}"
        elif self.exitcode == PEER_FAILED_EXIT:
            how = "stopped because another process of the group broke torch.distributed"
        else:
            how = f"exited with code {self.exitcode}"
        return f"rank {self.rank} (pid {self.pid}) {how}"


def first_failure(failures: list[Failure]) -> Failure | None:
    """The root cause among the ranks torchrun saw fail.

    A rank that exited with PEER_FAILED_EXIT only lost a peer, so it is a cause only when nothing else failed.
    Among the rest, the earliest; torchrun's timestamps are whole seconds (and, for a rank killed by a signal, the
    second torchrun noticed), so at a tie a rank killed by a signal (it cannot have been a consequence) comes
    first, then the lowest rank.
    """
    causes = [f for f in failures if f.exitcode != PEER_FAILED_EXIT] or failures
    return min(causes, key=lambda f: (f.timestamp, f.exitcode >= 0, f.rank)) if causes else None


def launch(worker_args: list[str], nproc: int, run_dir: Path, *, gpus: list[str] | None = None,
           note: Callable[[str], None] = lambda text: None) -> int:
    """Train with `nproc` processes on this node; returns the exit code for the shell.

    `worker_args` are the `tunetui train` arguments each rank gets (without --nproc/--gpus).
    """
    from core import rundir
    from core.control import request

    fd, failures_path = tempfile.mkstemp(prefix="tunetui-failures-", suffix=".json")
    os.close(fd)
    env = dict(os.environ)
    env[RUN_DIR_ENV] = str(run_dir)
    env[LAUNCHER_ENV] = str(os.getpid())
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    # The agent is torchrun itself (torch.distributed.run's run()), wrapped only to hand back which rank failed.
    command = [sys.executable, "-m", "core.launch", failures_path, "--standalone", f"--nproc-per-node={nproc}",
               "-m", "tui.cli", "train", *worker_args]
    started = _segment_count(run_dir)
    stop = _StopForwarder(run_dir, started, request)
    # A session of its own: the terminal's Ctrl-C (sent to the whole foreground group) reaches this process only,
    # which asks for a stop through the run folder; torchrun would otherwise SIGTERM each worker on its own.
    process = subprocess.Popen(command, env=env, start_new_session=True)
    previous = {}

    def on_signal(signum, frame):
        if signum == getattr(signal, "SIGHUP", None):
            return  # the group has no terminal to lose: it trains on
        if stop.signal_number is not None and signum == signal.SIGINT:
            if not stop.aborted:
                stop.aborted = True
                note("Ctrl-C again: ending every process of the group now, without saving")
                _abort(process)
            return
        if stop.signal_number is None:
            stop.signal_number = signum
            note(f"{signal.Signals(signum).name}: every process stops after this step and a checkpoint is saved "
                 "(Ctrl-C again aborts without saving)")
            stop.forward()

    for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is not None:
            try:
                previous[sig] = signal.signal(sig, on_signal)
            except ValueError:  # not the main thread: no handlers (a test calling launch from a thread)
                break
    try:
        while True:
            try:
                returncode = process.wait(timeout=WAIT_POLL_SECONDS)
                break
            except subprocess.TimeoutExpired:
                stop.forward()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    failures = _read_failures(failures_path)
    try:
        os.unlink(failures_path)
    except OSError:
        pass
    if stop.aborted:
        failures = []  # the ranks were killed on purpose: the run's last word is the interruption, not a rank
    final = record_failure(run_dir, returncode, failures, nproc=nproc,
                           why="Interrupted (a second Ctrl-C): every process was ended without saving a checkpoint"
                           if stop.aborted else None)
    if stop.aborted:
        return 128 + signal.SIGINT
    if final is None:
        # The folder is gone: rank 0 met a bad config or data file and removed the run it had not begun (and said
        # why on stderr), as a one-process run does.
        return 2 if any(f.exitcode == 2 for f in failures) else (returncode or 1)
    if type(final).__name__ == "RunFailed" and final.kind != "user_error" and final.message:
        note(f"failed: {final.message}")
    return exit_code(final, returncode, stop.signal_number)


class _StopForwarder:
    """Writes the stop request once rank 0 listens: its control channel clears what it finds when it starts (a
    request left for an earlier process), so a request made before the run started is written again after."""

    def __init__(self, run_dir: Path, started_segments: int, request) -> None:
        self.run_dir = run_dir
        self.started_segments = started_segments
        self.request = request
        self.signal_number: int | None = None
        self.aborted = False
        self._sent_after_start = False

    def forward(self) -> None:
        if self.signal_number is None or self._sent_after_start:
            return
        listening = _segment_count(self.run_dir) > self.started_segments
        try:
            self.request(self.run_dir, "stop")
        except OSError:  # the folder went (a bad config removes it): nothing left to stop
            self._sent_after_start = True
            return
        self._sent_after_start = listening


def _abort(process: subprocess.Popen) -> None:
    """End the group at once. Signalling torchrun would not do: it passes SIGINT/SIGTERM on to the ranks, which
    take it for a stop request and save first. The ranks are torchrun's children (each in a session of its own)."""
    try:
        import psutil

        workers = psutil.Process(process.pid).children(recursive=True)
    except Exception:  # noqa: BLE001 - psutil missing or the agent gone: let torchrun end them
        workers = []
    for worker in workers:
        try:
            worker.kill()
        except Exception:  # noqa: BLE001 - already gone
            pass
    if not workers:
        try:
            process.send_signal(signal.SIGTERM)
        except OSError:
            pass


def _segment_count(run_dir: Path) -> int:
    """How many RunStarted lines events.jsonl holds (each process that trained the run wrote one)."""
    try:
        with open(Path(run_dir) / "events.jsonl", "rb") as fh:
            return sum(1 for line in fh if b'"event": "RunStarted"' in line)
    except OSError:
        return 0


def _read_failures(path: str) -> list[Failure]:
    try:
        with open(path, encoding="utf-8") as fh:
            raw = json.load(fh)
    except (OSError, ValueError):
        return []
    out = []
    for item in raw if isinstance(raw, list) else []:
        try:
            out.append(Failure(rank=int(item["rank"]), pid=int(item["pid"]), exitcode=int(item["exitcode"]),
                               message=str(item.get("message") or ""), timestamp=float(item.get("timestamp") or 0)))
        except (KeyError, TypeError, ValueError):
            continue
    return out


def _current_final(run_dir: Path):
    """The last event of the run's newest segment when it is RunFinished or RunFailed; else None."""
    from core.events import RunFailed, RunFinished, RunStarted, read_events

    try:
        events = read_events(Path(run_dir) / "events.jsonl")
    except OSError:
        return None
    final = None
    for event in events:
        if isinstance(event, RunStarted):
            final = None
        elif isinstance(event, (RunFinished, RunFailed)):
            final = event
    return final


def record_failure(run_dir: Path, returncode: int, failures: list[Failure], *, nproc: int,
                   why: str | None = None):
    """After the group ended: the run's final event, writing RunFailed (naming the failed rank) when rank 0 wrote
    none. Returns that final event; None where the run folder is gone (a bad config: rank 0 removed it)."""
    from core import rundir
    from core.events import RunFailed

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return None
    final = _current_final(run_dir)
    if final is not None:
        return final
    root = first_failure(failures)
    if why is not None:
        what = why
    elif root is not None:
        what = f"Training process {root.describe()}"
        detail = root.message.strip()
        if detail and not detail.startswith(("Signal ", "To enable traceback")):
            what += f": {detail.splitlines()[-1]}"
    elif returncode != 0:
        what = f"The launcher (torch.distributed.run) ended with exit code {returncode}"
    else:
        what = "The training processes ended without finishing the run"
    checkpoint = rundir.latest_checkpoint(run_dir)
    again = (f"Resume it with `tunetui train --resume {run_dir} --nproc {nproc}`" if checkpoint is not None
             else "It saved no checkpoint; start it again from its config.yaml")
    message = f"{what}. {again}." if why else f"{what}; torchrun ended the other processes of the group. {again}."
    event = RunFailed(message=message, kind="error", run_dir=str(run_dir), step=_last_step(run_dir))
    with open(run_dir / rundir.EVENTS_FILE, "a", encoding="utf-8") as fh:
        fh.write(event.to_json() + "\n")
    if not rundir.is_running(run_dir):
        rundir.clear_pid(run_dir)  # rank 0 was killed before it could
    return event


def _last_step(run_dir: Path) -> int | None:
    from core.events import StepEnded, read_events

    try:
        steps = [e.step for e in read_events(Path(run_dir) / "events.jsonl") if isinstance(e, StepEnded)]
    except OSError:
        return None
    return steps[-1] if steps else None


def exit_code(final, returncode: int, signal_number: int | None) -> int:
    """The shell's answer: 0 finished, 128+signal stopped by a signal, 2 bad input, 1 any failure."""
    name = type(final).__name__
    if name == "RunFailed":
        return 2 if final.kind == "user_error" else 1
    if name == "RunFinished":
        if returncode != 0:
            return 1
        if final.stopped and signal_number is not None:
            return 128 + signal_number
        return 0
    return returncode or 1


# ---------------------------------------------------------------- the agent (a child process)

def _agent(argv: list[str]) -> int:
    """`python -m core.launch FAILURES_JSON TORCHRUN_ARGS...`: run torchrun (its own `run`), and on a failed group
    write what its ChildFailedError says (rank, pid, exit code) to FAILURES_JSON for the parent."""
    failures_path, rest = argv[0], argv[1:]
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    try:
        run(parse_args(rest))
    except ChildFailedError as exc:
        records = [{"rank": int(r), "local_rank": f.local_rank, "pid": f.pid, "exitcode": f.exitcode,
                    "message": f.message if isinstance(f.message, str) else json.dumps(f.message),
                    "timestamp": f.timestamp} for r, f in exc.failures.items()]
        with open(failures_path, "w", encoding="utf-8") as fh:
            json.dump(records, fh)
        print(exc.format_msg(), file=sys.stderr)  # torchrun's own report, as `torchrun` prints it
        return 1
    except SignalException as exc:  # the parent ended the group (a second Ctrl-C)
        return 128 + int(exc.sigval)
    return 0


if __name__ == "__main__":
    sys.exit(_agent(sys.argv[1:]))


__all__ = ["launch", "rank", "world_size", "under_torchrun", "parse_gpus", "Failure", "first_failure",
           "record_failure", "exit_code", "PEER_FAILED_EXIT", "RUN_DIR_ENV", "LAUNCHER_ENV"]
