"""The App's training session: runs the engine in a thread worker and folds its events into a RunState.

The training thread only calls `emit`, which posts an EngineEvent (thread-safe, non-blocking); the App hands each
one to `TrainingSession.handle` on the UI thread. Screens redraw from `session.state` on a 0.1 s timer, and only
when `state.version` changed, so a fast run never floods the terminal. Nothing here imports torch & co at module
top level: the runner is imported inside the worker.

Over 400 lines because a session's state (RunState) and its folding of every event kind are one idea, shared by the
three ways the app holds a run: trained here, attached to, or launched in processes of its own.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import traceback as traceback_module
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from core import rundir
from core.control import RunControl
from core.errors import TuneError
from core.events import (
    CheckpointSaved, DataReady, EvalEnded, Event, LogLine, ModelReady, PhaseChanged, RunFailed, RunFinished,
    RunPaused, RunResumed, RunStarted, StepEnded, read_events,
)
from tui.messages import EngineEvent

if TYPE_CHECKING:
    from textual.worker import Worker

    from core.config import RunConfig
    from tui.app import TuneApp

LOG_LINES = 500
"""How many engine log lines the run view keeps."""

FINAL_STATUSES = ("finished", "stopped", "failed")


def is_finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


@dataclass
class RunState:
    """Everything the run view shows, folded from engine events; `version` bumps on every change."""

    status: str = "idle"
    """idle → starting → running ⇄ pausing/paused → stopping → finished | stopped | failed (the final three)."""
    phase: str | None = None
    phase_done: int | None = None
    phase_total: int | None = None
    phase_message: str = ""
    phases_seen: list[str] = field(default_factory=list)
    run_id: str | None = None
    run_dir: str | None = None
    resumed_from: str | None = None
    config: dict = field(default_factory=dict)
    step: int = 0
    max_steps: int = 0
    epoch: float = 0.0
    loss: float | None = None
    losses: list[tuple[int, float]] = field(default_factory=list)
    eval_losses: list[tuple[int, float]] = field(default_factory=list)
    learning_rate: float | None = None
    grad_norm: float | None = None
    tokens_per_second: float | None = None
    """The whole run's rate: under several processes, the group's."""
    world_size: int = 1
    """How many processes train the run (RunStarted)."""
    tokens_per_second_per_process: float | None = None
    peak_gib_per_rank: list[float] = field(default_factory=list)
    """Under several processes on GPUs: each rank's peak allocated memory so far, by rank."""
    step_seconds: float | None = None
    elapsed_seconds: float = 0.0
    eta_seconds: float | None = None
    gpu_memory_gib: float | None = None
    peak_gpu_memory_gib: float | None = None
    """The most memory allocated on the GPU in the run so far, activations included (StepEnded's window peaks,
    then RunFinished's or an out-of-memory RunFailed's figure)."""
    reserved_gib: float | None = None
    """Held by torch's caching allocator: the last step's, then the run's most (RunFinished, RunFailed)."""
    estimated_peak_gib: float | None = None
    """The memory check's estimate of the run's peak (RunFinished), to read beside the measured peak."""
    model: ModelReady | None = None
    data: DataReady | None = None
    checkpoint: str | None = None
    final_dir: str | None = None
    train_loss: float | None = None
    error: str | None = None
    error_kind: str | None = None
    traceback: str | None = None
    first_nonfinite_step: int | None = None
    eval_metrics: dict = field(default_factory=dict)
    """The last evaluation's metrics besides the loss (classification: accuracy, macro_f1)."""
    confusion_matrix: list | None = None
    """The last evaluation's confusion matrix (classification runs)."""
    logs: deque = field(default_factory=lambda: deque(maxlen=LOG_LINES))
    """(level, message) pairs, oldest first."""
    log_count: int = 0
    """Log lines ever folded (the pane appends only the new ones)."""
    version: int = 0

    @classmethod
    def from_events(cls, events: Iterable[Event]) -> "RunState":
        """Replay a run (e.g. an events.jsonl) into the state the live view would have shown."""
        state = cls()
        for event in events:
            state.fold(event)
        return state

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    def set_status(self, status: str) -> None:
        self.status = status
        self.version += 1

    def fold(self, event: Event) -> None:
        """Apply one event. Unknown event types are ignored so newer engines don't break the view."""
        if type(event) is StepEnded:  # half of a long run's events: first, before the chain of checks below
            self._fold_step(event)
            self.version += 1
            return
        if isinstance(event, RunStarted):
            self.run_id, self.run_dir, self.config = event.run_id, event.run_dir, dict(event.config or {})
            self.resumed_from = event.resumed_from
            self.world_size = max(1, event.world_size or 1)
            if self.status in ("idle", "starting", "crashed") or self.final:
                # A resumed run appends to the same events.jsonl: a new RunStarted opens a new segment.
                self.status = "running"
                self.error = self.error_kind = self.traceback = self.final_dir = None
                self.phase, self.phases_seen = None, []
            if event.resumed_from:
                self._drop_after(_checkpoint_step(event.resumed_from))
        elif isinstance(event, PhaseChanged):
            if self.phase != event.phase:
                if event.phase not in self.phases_seen:
                    self.phases_seen.append(event.phase)
            self.phase, self.phase_done, self.phase_total = event.phase, event.done, event.total
            self.phase_message = event.message
            if self.status in ("idle", "starting"):
                self.status = "running"
        elif isinstance(event, ModelReady):
            self.model = event
        elif isinstance(event, DataReady):
            self.data = event
        elif isinstance(event, StepEnded):
            self._fold_step(event)
        elif isinstance(event, EvalEnded):
            self.eval_metrics = dict(event.metrics or {})
            self.confusion_matrix = event.confusion_matrix or self.confusion_matrix
            if event.eval_loss is not None:
                self.eval_losses.append((event.step, event.eval_loss))
                if not is_finite(event.eval_loss) and self.first_nonfinite_step is None:
                    self.first_nonfinite_step = event.step
        elif isinstance(event, CheckpointSaved):
            self.checkpoint = event.path
        elif isinstance(event, RunPaused):
            self.status, self.step = "paused", max(self.step, event.step)
        elif isinstance(event, RunResumed):
            if self.status in ("paused", "pausing"):
                self.status = "running"
        elif isinstance(event, LogLine):
            self.logs.append((event.level, event.message))
            self.log_count += 1
        elif isinstance(event, RunFinished):
            self.status = "stopped" if event.stopped else "finished"
            self.run_dir = event.run_dir or self.run_dir
            self.final_dir = event.final_dir
            self.step = max(self.step, event.step)
            self.max_steps = event.max_steps or self.max_steps
            self.train_loss = event.train_loss
            if event.peak_gpu_memory_gib is not None:
                self.peak_gpu_memory_gib = event.peak_gpu_memory_gib
            if event.reserved_gib is not None:
                self.reserved_gib = event.reserved_gib
            self.estimated_peak_gib = event.estimated_peak_gib
            self.eta_seconds = None
        elif isinstance(event, RunFailed):
            self.status = "failed"
            self.error, self.error_kind, self.traceback = event.message, event.kind, event.traceback
            self.run_dir = event.run_dir or self.run_dir
            if event.peak_gpu_memory_gib is not None:  # out of memory: what the run had when it failed
                self.peak_gpu_memory_gib = max(self.peak_gpu_memory_gib or 0.0, event.peak_gpu_memory_gib)
            if event.reserved_gib is not None:
                self.reserved_gib = event.reserved_gib
            if event.step is not None:
                self.step = max(self.step, event.step)
            self.eta_seconds = None
        else:
            return
        self.version += 1

    def _drop_after(self, step: int | None) -> None:
        """Forget points past the resume checkpoint: those steps run again and would be drawn twice."""
        if step is None:
            return
        self.losses = [p for p in self.losses if p[0] <= step]
        self.eval_losses = [p for p in self.eval_losses if p[0] <= step]
        self.step = min(self.step, step)

    def _fold_step(self, event: StepEnded) -> None:
        if self.phase != "training":
            # Steps mean training is under way even if the engine's PhaseChanged was missed (re-attach, replay).
            self.phase, self.phase_done, self.phase_total = "training", None, None
            if "training" not in self.phases_seen:
                self.phases_seen.append("training")
        self.step, self.max_steps, self.epoch = event.step, event.max_steps, event.epoch
        if event.loss is not None:
            self.loss = event.loss
            self.losses.append((event.step, event.loss))
            if not is_finite(event.loss) and self.first_nonfinite_step is None:
                self.first_nonfinite_step = event.step
        for name in ("learning_rate", "grad_norm", "tokens_per_second", "tokens_per_second_per_process",
                     "step_seconds", "eta_seconds", "gpu_memory_gib", "reserved_gib"):
            value = getattr(event, name)
            if value is not None or name == "eta_seconds":
                setattr(self, name, value)
        self.elapsed_seconds = event.elapsed_seconds
        # The step window's peak (activations included) where the engine reports it; older logs: the step's end.
        peak = event.peak_allocated_gib if event.peak_allocated_gib is not None else event.gpu_memory_gib
        if peak is not None:
            self.peak_gpu_memory_gib = max(self.peak_gpu_memory_gib or 0.0, peak)
        if event.peak_gib_per_rank:
            # Each rank's peak so far in the run; a resume starts the ranks' counts again, so keep the larger.
            old = self.peak_gib_per_rank
            self.peak_gib_per_rank = [max(v, old[i] if i < len(old) else 0.0)
                                      for i, v in enumerate(event.peak_gib_per_rank)]


def _checkpoint_step(path: str) -> int | None:
    """`.../checkpoint-120` → 120 (None for a path that does not name a checkpoint)."""
    step = rundir.checkpoint_step(path)
    return step if Path(path).name == f"{rundir.CHECKPOINT_PREFIX}{step}" else None


class TrainingSession:
    """The one training run the App owns: start it, control it, and fold what it reports.

    The worker belongs to the App (a worker started on a Screen dies when the Screen is popped), in the
    group "training". `handle` must be called on the UI thread (the App's `on_engine_event` does).
    """

    owns_process = True
    """True: the run trains in this process (quitting the app must stop it); False: it is followed from its folder."""

    def __init__(self, app: TuneApp) -> None:
        self.app = app
        self.state = RunState()
        self.control: RunControl | _RemoteControl = RunControl()
        self.config: RunConfig | None = None
        self.worker: Worker[None] | None = None
        self._done: threading.Event | None = None

    @property
    def running(self) -> bool:
        """The training thread is alive (the run may be paused or stopping)."""
        return self._done is not None and not self._done.is_set()

    def start(self, config: RunConfig, resume_from: str | None = None) -> None:
        """Start a run in an App-owned thread worker; returns at once."""
        if self.running:
            raise TuneError("A run is already going", self.state.run_id,
                            "Stop it (s on the run screen) or wait for it to finish before starting another")
        self.config = config
        state = RunState()
        if resume_from:
            # Show the run's history (curve, log) while the engine reloads it, then continue it live.
            _replay_history(state, resume_from)
        state.status, state.resumed_from, state.version = "starting", resume_from, state.version + 1
        state.error = state.error_kind = state.traceback = None
        self.state = state
        self.control = RunControl()
        self._done = threading.Event()
        control, done = self.control, self._done

        def work() -> None:
            emit = self._emit
            try:
                # Imported here, in the thread: it pulls torch & co, which must not delay the first frame.
                import torch

                from core.training.runner import run

                # Leave a core to the UI thread: on a small machine a CPU run on every core starves key handling
                # (and a tiny model trains no slower on one thread fewer).
                torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
                run(config, emit, control, resume_from=resume_from)
            except BaseException as exc:  # noqa: BLE001 - the runner never raises; this is an import error or a bug
                emit(RunFailed(message=f"The training engine could not run: {exc}", kind="error",
                               traceback=traceback_module.format_exc()))
            finally:
                done.set()

        self.worker = self.app.run_worker(work, name="training", group="training", description="training run",
                                          exclusive=True, thread=True, exit_on_error=False)

    def _emit(self, event: Event) -> None:
        """Called on the training thread: post and return at once (call_from_thread would block the trainer)."""
        try:
            self.app.post_message(EngineEvent(event))
        except Exception:  # noqa: BLE001 - the app is shutting down; the run still writes events.jsonl
            pass

    def handle(self, event: Event) -> None:
        """Fold one event (UI thread) and tell the user about what they must not miss."""
        state = self.state
        bad_before = state.first_nonfinite_step
        state.fold(event)
        if isinstance(event, RunFinished):
            if event.stopped:
                where = f"; checkpoint in {state.checkpoint}" if state.checkpoint else ""
                self._notify(f"Run stopped at step {event.step}{where}. Resume it from Runs.", "Run stopped")
            else:
                where = f" Saved to {event.final_dir}." if event.final_dir else ""
                offer = " Press c to chat with it beside its base model." if event.final_dir else ""
                self._notify(f"Run finished at step {event.step}.{where}{offer}", "Run finished")
        elif isinstance(event, RunFailed):
            title = {"out_of_memory": "Out of GPU memory", "user_error": "Run cannot start",
                     "diverged": "Training diverged", "disk_full": "Disk full"}.get(
                event.kind, "Run failed")
            self._notify(event.message, title, severity="error", timeout=30)
        elif bad_before is None and state.first_nonfinite_step is not None:
            value = event.loss if isinstance(event, StepEnded) else getattr(event, "eval_loss", None)
            self._notify(f"Loss is {value} at step {state.first_nonfinite_step}: training has diverged. "
                         "Stop the run and lower train.lr (or turn on gradient clipping).",
                         "Loss is not finite", severity="warning", timeout=20)

    def _notify(self, message: str, title: str, severity: str = "information", timeout: float = 10) -> None:
        # markup=False: engine messages contain paths and [brackets] that are not Rich markup.
        self.app.notify(message, title=title, severity=severity, timeout=timeout, markup=False)

    def pause(self) -> None:
        if self.running and self.state.status in ("starting", "running"):
            self.control.pause()
            self.state.set_status("pausing")

    def resume(self) -> None:
        if self.running and self.state.status in ("pausing", "paused"):
            self.control.resume()
            # RunResumed arrives from the engine when it continues; "pausing" never reached the engine's loop.
            self.state.set_status("running")

    def toggle_pause(self) -> None:
        if self.state.status in ("pausing", "paused"):
            self.resume()
        else:
            self.pause()

    def stop(self, save: bool = True) -> None:
        """Ask the run to stop after the current step (saving a checkpoint unless save=False)."""
        if self.running:
            self.control.stop(save=save)
            if not self.state.final:
                self.state.set_status("stopping")

    def close(self) -> None:
        """Let go of the run's view (an attached session stops counting as a viewer); a run trained here goes on."""

    def leaving_words(self) -> str | None:
        """What the app says on its way out about this run (None: nothing; a run trained here has its own words)."""
        return None

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the training thread has ended; True when it has (or none ever started)."""
        return True if self._done is None else self._done.wait(timeout)


class _RemoteControl:
    """RunControl's twin for a run trained by another process: each call becomes a request in the run folder's
    control file, which that process obeys at the end of its current step (stopping always saves a checkpoint)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def _request(self, command: str) -> None:
        from core.control import request

        request(self.run_dir, command)

    def pause(self) -> None:
        self._request("pause")

    def resume(self) -> None:
        self._request("resume")

    def stop(self, save: bool = True) -> None:
        self._request("stop")


class AttachedSession(TrainingSession):
    """A run trained by another process (a headless `tunetui train`, an app that lost its terminal), drawn by the
    same Run view: its events.jsonl is folded once from the start, then followed (only appended lines are read).
    Pause, resume and stop go through the run folder's control file. Closing the viewer changes nothing for the run,
    and the viewer never writes to events.jsonl."""

    owns_process = False

    def __init__(self, app: TuneApp, run_dir: str | Path) -> None:
        from core.follow import EventTail

        super().__init__(app)
        self.run_dir = Path(run_dir)
        self.control = _RemoteControl(self.run_dir)
        self.tail = EventTail(self.run_dir / rundir.EVENTS_FILE)
        for event in self.tail.read_new():  # the history, quietly: no notifications for what already happened
            self.state.fold(event)
        self.state.run_dir = self.state.run_dir or str(self.run_dir)
        self.pid = rundir.read_pid(self.run_dir)
        self._alive = True
        self._check_alive()
        self._viewer_mark = rundir.add_viewer(self.run_dir)  # "watched by N" on the Runs screens of others

    def close(self) -> None:
        """Stop counting as a viewer (the app leaves the run, or quits)."""
        rundir.remove_viewer(self._viewer_mark)
        self._viewer_mark = None

    @property
    def running(self) -> bool:
        return self._alive and not self.state.final

    def start(self, config: RunConfig, resume_from: str | None = None) -> None:
        raise RuntimeError("an attached session follows a run; it does not start one")

    def poll(self) -> None:
        """Fold what the run appended since the last poll (UI thread, on a ≤ 10 Hz timer)."""
        for event in self.tail.read_new():
            if isinstance(event, RunStarted):
                self._started_in_new_process()
            self.handle(event)
        self._check_alive()

    def _started_in_new_process(self) -> None:
        """The run started again while followed (`tunetui train --resume` after a stop or a crash): follow the new
        process, whose pid it wrote to run.pid before its RunStarted, not the one that ended."""
        self.pid = rundir.read_pid(self.run_dir) or self.pid
        self._alive = True

    def _process_alive(self) -> bool:
        return rundir.is_running(self.run_dir)

    def _check_alive(self) -> None:
        if self._alive and not self.state.final and not self._process_alive():
            self._alive = False
            for event in self.tail.read_new():  # its last words, written just before it went
                self.handle(event)
            if not self.state.final:
                checkpoint = rundir.latest_checkpoint(self.run_dir)
                self.state.error = (
                    f"The process training this run{f' (pid {self.pid})' if self.pid else ''} ended without "
                    "finishing it. " + (f"Resume it from {checkpoint.name}: r on the Runs screen, or tunetui train "
                                        f"--resume {self.run_dir}" if checkpoint else
                                        "It saved no checkpoint; start it again from its config.yaml."))
                self.state.set_status("crashed")


class LaunchedSession(AttachedSession):
    """A run this app started as `tunetui train` in processes of its own (several GPUs, or GPUs other than all of
    them: CUDA_VISIBLE_DEVICES must be set before torch starts). The launcher writes its run folder's path to a
    file (`--run-dir-file`); until then the Run view says it is starting, and once the folder is known the run is
    followed like an attached one: pause and stop go through the run folder's control file, which rank 0 reads
    and shares with every rank. The processes are in a session of their own, so closing the app leaves them
    training (`tunetui attach` follows them again)."""

    def __init__(self, app: TuneApp, process: subprocess.Popen, run_dir_file: Path, log_path: Path,
                 config: RunConfig, plan) -> None:
        TrainingSession.__init__(self, app)
        self.process = process
        self.pid = process.pid
        self.run_dir_file = Path(run_dir_file)
        self.log_path = Path(log_path)
        self.config = config
        self.plan = plan
        self.run_dir: Path | None = None
        self.tail = None
        self._alive = True
        self._viewer_mark = None
        self.control = _LauncherSignal(process)  # until the run folder is known
        self.state.status, self.state.world_size = "starting", plan.nproc
        self.state.version += 1

    @classmethod
    def begin(cls, app: TuneApp, config: RunConfig, plan, resume_from: str | None = None) -> "LaunchedSession":
        """Write `config` to a file and start `tunetui train` on the GPUs of `plan` (core.spawn); `resume_from`: a
        run folder to go on with instead."""
        import tempfile

        from core import config as cfg
        from core import spawn

        folder = Path(tempfile.mkdtemp(prefix="tunetui-launch-"))
        config_path = folder / rundir.CONFIG_FILE
        cfg.save(config, config_path)
        run_dir_file, log_path = folder / "run-dir", folder / rundir.LOG_FILE
        arguments = spawn.train_arguments(config_path, plan, resume=resume_from, run_dir_file=run_dir_file)
        process = spawn.start_train(arguments, log_path)
        return cls(app, process, run_dir_file, log_path, config, plan)

    @property
    def following(self) -> bool:
        return self.run_dir is not None

    def poll(self) -> None:
        if self.run_dir is None:
            from core.spawn import read_run_dir_file

            found = read_run_dir_file(self.run_dir_file)
            if found is not None:
                self._follow(found)
            elif self.process.poll() is not None:
                self._alive = False
                self.state.error = (f"`tunetui train` ended (exit code {self.process.returncode}) before its run "
                                    f"started: {_log_tail(self.log_path)} (its output: {self.log_path})")
                self.state.error_kind = "user_error" if self.process.returncode == 2 else "error"
                self.state.set_status("failed")
                self._notify(self.state.error, "Run cannot start", severity="error", timeout=30)
            return
        super().poll()

    def _follow(self, run_dir: Path) -> None:
        from core.follow import EventTail

        self.run_dir = run_dir
        self.state.run_dir = str(run_dir)
        self.control = _RemoteControl(run_dir)
        self.tail = EventTail(run_dir / rundir.EVENTS_FILE)
        for event in self.tail.read_new():  # a resumed run's history, quietly (a new run has none yet)
            self.state.fold(event)
        if self.state.final:  # the end of the segment it resumes: the new one's RunStarted is on its way
            self.state.set_status("starting")
        self._viewer_mark = rundir.add_viewer(run_dir)

    def _process_alive(self) -> bool:
        return self.process.poll() is None  # the launcher outlives every rank and writes the run's last word

    def _started_in_new_process(self) -> None:
        pass  # the pid shown is the launcher's (run.pid holds rank 0's): it outlives every rank

    def pause(self) -> None:
        if self.following:
            super().pause()

    def close(self) -> None:
        if self._viewer_mark is not None:
            super().close()

    def leaving_words(self) -> str | None:
        """What the app says on its way out while this run still trains."""
        if not self.running:
            return None
        if self.run_dir is None:
            return f"The run goes on starting in process {self.pid}; its output: {self.log_path}"
        return (f"The run goes on in process {self.pid} ({self.plan.describe()}).\n  watch it:  tunetui attach "
                f"{self.run_dir}\n  stop it:   tunetui stop {self.run_dir}")


class _LauncherSignal:
    """Control of a launched run before its folder is known: stopping interrupts the launcher (SIGINT), which asks
    every process to stop and save through the run folder once the run has one; pausing waits for the folder."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process

    def pause(self) -> None:
        pass

    def resume(self) -> None:
        pass

    def stop(self, save: bool = True) -> None:
        import signal

        if self.process.poll() is None:
            try:
                self.process.send_signal(signal.SIGINT)
            except OSError:
                pass


def _log_tail(path: Path, lines: int = 3) -> str:
    """The last lines of a log, on one line (what a launcher that failed early said)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return "it wrote nothing"
    return " ".join(line.strip() for line in text[-lines:]) or "it wrote nothing"


def continue_in_background(run_dir: str | Path) -> str:
    """After a detach (the run stopped with a checkpoint, the app closed): go on with the run in a process of its
    own, in a new session so no hang-up of this terminal reaches it, its output appended to the run's output.log.
    Returns what to tell the user."""
    run = Path(run_dir).resolve()
    summary = rundir.summarize(run)
    if summary.status == "finished":
        return f"The run reached its last step while detaching; it is finished: {run}"
    if summary.status != "stopped":
        return f"The run {summary.status} while detaching ({summary.message or 'see its log'}): {run}"
    if summary.checkpoint is None:
        # Detached before the first step: nothing trained yet, so the same config starts over (a new run folder,
        # next to this one).
        command = ["train", str(run / rundir.CONFIG_FILE), "--output-dir", str(run.parent)]
        where = f"--output-dir {run.parent}"
        said = "starts again (it was stopped before its first step)"
    else:
        command, where, said = ["train", "--resume", str(run)], str(run), f"goes on from step {summary.step}"
    with open(run / rundir.LOG_FILE, "ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "tui.cli", *command], stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    stop = "tunetui stop RUN_DIR (tunetui runs lists them)" if summary.checkpoint is None else f"tunetui stop {where}"
    return (f"The run {said} in process {process.pid}.\n  watch it:  tunetui attach {where}\n"
            f"  stop it:   {stop}\n  its log:   {run / rundir.LOG_FILE}")


def _replay_history(state: RunState, run_dir: str) -> None:
    """Fold a run folder's events.jsonl into `state` (its curve and log), quietly: no notifications."""
    root = Path(run_dir)
    if _checkpoint_step(run_dir) is not None:  # given a checkpoint: its run is two levels up (see core.rundir)
        root = root.parent.parent
    path = root / rundir.EVENTS_FILE
    try:
        events = read_events(path) if path.is_file() else []
    except OSError:
        return
    for event in events:
        state.fold(event)


__all__ = ["AttachedSession", "LaunchedSession", "continue_in_background", "EngineEvent", "RunState", "TrainingSession", "is_finite", "FINAL_STATUSES", "LOG_LINES"]
