"""The console side of `tunetui train`: events in, a rich progress bar (or plain lines) out, on stderr; what a hang-up
does to the output; the exit code a run ends with. Never imports textual."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from core.units import duration

# LogLines worth showing on a terminal: warnings from anyone, and the engine's own notes (format, method, ...).
SHOWN_INFO_LOGGERS = ("core",)


class Display:
    """Turns events into a rich progress bar (or plain lines when stderr is not a terminal)."""

    def __init__(self):
        from rich.console import Console

        self.console = Console(stderr=True, highlight=False)
        self.live = self.console.is_terminal
        self.progress = None
        self.task = None
        self.run_dir: str | None = None
        self.final = None
        self._last_plain_step = 0
        self.hung_up = False
        """The terminal went away (SIGHUP): output goes to the run's output.log."""
        self._output: str | None = None
        self._detached_step: int | None = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._stop_bar()
        return False

    # ---------------------------------------------------------------- events

    def on_event(self, event) -> None:
        if self.hung_up and self._output == os.devnull and type(event).__name__ == "RunStarted":
            # Hung up before the run had a folder: from now on the output goes to its log, which opens with the
            # hang-up note (written again there: the first one went to /dev/null).
            from core import rundir
            from core.terminal import detach_from_terminal

            self._output = detach_from_terminal(Path(event.run_dir) / rundir.LOG_FILE)
            self._detached_step = None
        if self.hung_up and self._detached_step is None:
            self._continue_detached(event)
        name = type(event).__name__
        handler = getattr(self, f"_on_{name}", None)
        if handler:
            handler(event)

    def _on_RunStarted(self, e):
        self.run_dir = e.run_dir
        verb = f"resuming from {e.resumed_from}" if e.resumed_from else "run folder"
        self.note(f"[bold]tunetui train[/] {verb}: {e.run_dir}")
        if e.world_size > 1:
            self.note(f"{e.world_size} processes, global batch {e.global_batch_size}")

    def _on_PhaseChanged(self, e):
        if e.phase == "training":
            self._start_bar()
        elif e.phase == "saving":
            self._stop_bar()
            self.note("saving final model")
        elif e.message and e.total is None:
            self.note(f"{e.phase.replace('_', ' ')}: {e.message}", dim=True)

    def _on_DataReady(self, e):
        s = e.token_stats or {}
        self.note(f"data: {e.format}, {e.train_examples} train / {e.val_examples} validation examples; tokens "
                  f"median {s.get('median', '?')}, p95 {s.get('p95', '?')}, max {s.get('max', '?')} "
                  f"({s.get('truncated', 0)} truncated, {s.get('dropped', 0)} dropped)")

    def _on_ModelReady(self, e):
        pct = 100 * e.trainable_params / max(e.total_params, 1)
        self.note(f"model: {e.method} on {e.device} ({e.dtype}), {e.trainable_params:,} of {e.total_params:,} "
                  f"parameters train ({pct:.2f}%): {'; '.join(e.trainable_modules)}")

    def _on_StepEnded(self, e):
        loss = f"{e.loss:.4f}" if e.loss is not None else "—"
        tps = f"{e.tokens_per_second:,.0f}" if e.tokens_per_second else "—"
        eta = duration(e.eta_seconds, none="—")
        if self.progress is not None:
            self.progress.update(self.task, completed=e.step, total=e.max_steps, loss=loss, tps=tps, eta=eta)
        elif e.step == e.max_steps or e.step - self._last_plain_step >= max(1, e.max_steps // 20):
            self._last_plain_step = e.step
            self.console.print(f"step {e.step}/{e.max_steps}  loss {loss}  tokens/s {tps}  eta {eta}")

    def _on_EvalEnded(self, e):
        extra = "".join(f", {k} {v:.4f}" for k, v in e.metrics.items() if isinstance(v, float))
        loss = f"{e.eval_loss:.4f}" if e.eval_loss is not None else "—"
        self.note(f"eval at step {e.step}: loss {loss}{extra}")

    def _on_CheckpointSaved(self, e):
        self.note(f"checkpoint: {e.path}", dim=True)

    def _on_LogLine(self, e):
        if e.logger == "py.warnings" and ("FutureWarning" in e.message or "DeprecationWarning" in e.message):
            return  # libraries' notes to their own developers; still in events.jsonl
        if e.level in ("WARNING", "ERROR", "CRITICAL"):
            self.note(f"[yellow]{e.level.lower()}[/]: {_escape(e.message)}")
        elif e.logger.split(".")[0] in SHOWN_INFO_LOGGERS:
            self.note(_escape(e.message), dim=True)

    def _on_RunFinished(self, e):
        self._stop_bar()
        self.final = e
        if e.stopped:
            self.note(f"[bold]stopped[/] at step {e.step}/{e.max_steps}. Resume with: "
                      f"tunetui train --resume {e.run_dir}")
        else:
            loss = f", mean train loss {e.train_loss:.4f}" if e.train_loss is not None else ""
            self.note(f"[bold green]finished[/]: {e.step} steps{loss}. Model: {e.final_dir}")
        if e.peak_gpu_memory_gib is not None:
            self.note(gpu_memory_summary(e))

    def _on_RunFailed(self, e):
        self._stop_bar()
        self.final = e
        if e.kind == "user_error":
            return  # printed once, as the one-paragraph message, by exit_code
        if e.kind == "error" and e.traceback:
            self.console.print(_escape(e.traceback.rstrip()), style="dim", soft_wrap=True)
        where = f" (run folder: {e.run_dir})" if e.run_dir else ""
        self.console.print(f"[bold red]failed[/]: {_escape(e.message)}{where}", soft_wrap=True)

    # ---------------------------------------------------------------- hang-up

    def hang_up(self) -> None:
        """SIGHUP handler (main thread, between two bytecodes of whatever runs): mute the console at once and point
        fds 0/1/2 away from the dead terminal. Swapping the console waits for the next event (`on_event`), outside
        the handler: stopping the progress bar there could deadlock on the lock its refresh thread shares."""
        from core import rundir
        from core.terminal import detach_from_terminal

        if self.hung_up:
            return
        self.console.quiet = True  # the bar's refresh thread writes nothing from now on
        self.hung_up = True
        log_path = Path(self.run_dir) / rundir.LOG_FILE if self.run_dir else None
        self._output = detach_from_terminal(log_path)

    def _continue_detached(self, event) -> None:
        from rich.console import Console

        self._stop_bar()
        # stderr is now the run's log (or /dev/null): a fresh console sees a plain file and writes no colours.
        self.console = Console(stderr=True, highlight=False)
        self.live = False
        step = getattr(event, "step", None)
        self._detached_step = step if isinstance(step, int) else 0
        self.note(f"{time.strftime('%Y-%m-%d %H:%M:%S')} terminal hung up (SIGHUP): training goes on in process "
                  f"{os.getpid()}; its output continues here")

    # ---------------------------------------------------------------- helpers

    def note(self, text: str, dim: bool = False) -> None:
        self.console.print(text, style="dim" if dim else None, soft_wrap=True)

    def _start_bar(self):
        if not self.live or self.progress is not None:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.progress = Progress(
            TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[tps]} tok/s"),
            TextColumn("ETA {task.fields[eta]}"), console=self.console, transient=False)
        self.task = self.progress.add_task("train", total=None, loss="—", tps="—", eta="—")
        self.progress.start()

    def _stop_bar(self):
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def exit_code(self, outcome, signal_number: int | None) -> int:
        event = outcome.event
        if type(event).__name__ == "RunFailed":
            if event.kind == "user_error":
                if os.environ.get("RANK", "0") in ("", "0"):  # under torchrun, rank 0 says it once for all
                    print(f"tunetui train: {event.message}", file=sys.stderr)
                    if self.run_dir and not event.run_dir:  # announced above, then removed: say so
                        print(f"tunetui train: nothing was trained; the run folder {self.run_dir} was removed",
                              file=sys.stderr)
                return 2
            if event.kind == "peer_failed":
                from core.launch import PEER_FAILED_EXIT

                return PEER_FAILED_EXIT
            return 1
        if event.stopped and signal_number is not None:
            return 128 + signal_number  # the shell convention for "ended by a signal"
        return 0


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def gpu_memory_summary(event) -> str:
    """A finished run's GPU memory, measured beside the estimate: `GPU memory: estimated 21.4 GiB, measured 19.8
    GiB peak allocated (21.0 GiB reserved by torch; nvidia-smi adds the CUDA context)`."""
    parts = []
    if event.estimated_peak_gib is not None:
        parts.append(f"estimated {event.estimated_peak_gib:.1f} GiB")
    parts.append(f"measured {event.peak_gpu_memory_gib:.1f} GiB peak allocated")
    text = "GPU memory: " + ", ".join(parts)
    if event.reserved_gib is not None:
        text += f" ({event.reserved_gib:.1f} GiB reserved by torch; nvidia-smi adds the CUDA context)"
    return text
