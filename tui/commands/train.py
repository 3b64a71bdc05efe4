"""`tunetui train CONFIG.yaml [--set k=v]... [--resume RUN_DIR]`: a headless run with a progress bar on stderr.

Runs the same engine as the app (core.training.runner.run). Ctrl-C and SIGTERM stop cooperatively: the current step
ends, a checkpoint is saved, and the run can be resumed with --resume. SIGHUP (the terminal went away) does not stop
it: training goes on and what it prints goes to the run folder's output.log. Never imports textual.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

from core.errors import TuneError
from core.units import duration

# LogLines worth showing on a terminal: warnings from anyone, and the engine's own notes (format, method, ...).
SHOWN_INFO_LOGGERS = ("core",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", metavar="CONFIG.yaml",
                        help="run config (see presets/); optional with --resume, which reuses the run's own config")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.max_steps=30 (repeatable; YAML scalars)")
    parser.add_argument("--resume", metavar="RUN_DIR",
                        help="continue a stopped or crashed run in place from its newest checkpoint")
    parser.add_argument("--strict", action="store_true",
                        help="refuse to start when the memory estimate says the run will not fit")
    parser.add_argument("--output-dir", metavar="DIR", help="where the run folder is created (overrides output.dir)")
    parser.add_argument("--nproc", type=int, metavar="N",
                        help="train with N processes (one GPU each; on a CPU-only box N CPU processes) through "
                             "torch.distributed.run; under torchrun itself this is not needed")
    parser.add_argument("--gpus", metavar="LIST",
                        help="the GPUs to train on, as nvidia-smi numbers them (e.g. 0,2,3): sets "
                             "CUDA_VISIBLE_DEVICES and one process per GPU")
    parser.add_argument("--run-dir-file", metavar="PATH",
                        help="write the run folder's path to PATH once the folder exists (for programs that start "
                             "a run and then follow its events.jsonl, as the app does)")


def run(args: argparse.Namespace) -> int:
    from core import config as cfg
    from core.control import RunControl

    from core.terminal import guard_std_streams

    guard_std_streams()  # nothing printed, by us or a library, may fail the run once the terminal is gone
    config = _load_config(args, cfg)
    if args.output_dir:
        config = replace(config, output=replace(config.output, dir=args.output_dir))
    nproc, gpus = _processes(args)
    if nproc is not None and nproc > 1:
        return _launch(args, config, nproc, gpus)
    if gpus is not None:  # one GPU picked: this process trains on it (before anything imports torch)
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    control = RunControl()
    display = _Display()
    stopper = _SignalStopper(control, display)

    from core.training.runner import run as run_engine

    on_event = display.on_event
    if args.run_dir_file:
        from core.spawn import write_run_dir_file

        def on_event(event, show=display.on_event):
            if type(event).__name__ == "RunStarted":
                write_run_dir_file(args.run_dir_file, event.run_dir)
            show(event)

    with stopper, display:
        outcome = run_engine(config, on_event, control, resume_from=args.resume, strict=args.strict)
    return display.exit_code(outcome, stopper.signal_number)


def _processes(args) -> tuple[int | None, list[str] | None]:
    """(processes to launch, GPUs to show them) from --nproc/--gpus; (None, None) under torchrun, which already
    made this process one rank of its group."""
    from core.launch import parse_gpus, under_torchrun

    if args.nproc is None and args.gpus is None:
        return None, None
    if under_torchrun():
        return None, None  # launched by torchrun: this is one rank; never launch a group from a rank
    gpus = parse_gpus(args.gpus) if args.gpus is not None else None
    nproc = args.nproc if args.nproc is not None else len(gpus)
    if nproc < 1:
        raise TuneError(f"--nproc {nproc}: at least one process is needed", "--nproc", "Use --nproc 2 or more")
    if gpus is not None and nproc != len(gpus):
        raise TuneError(f"--nproc {nproc} but --gpus names {len(gpus)} GPU(s)", "--nproc",
                        "Give one of them (one process per GPU), or make them agree")
    return nproc, gpus


def _check_strategy(config, nproc: int) -> None:
    """Settings that cannot combine with `nproc` processes are refused before any process starts."""
    from core import methods
    from core.training.distributed import choose_strategy

    cuda = config.train.device != "cpu" and _cuda_visible()
    strategy = choose_strategy(config.train.distributed, nproc, "cuda" if cuda else "cpu")
    method = methods.get(config.method.kind)
    if strategy == "fsdp" and method.quantized and config.method.quant.bits != 4:
        raise TuneError("train.distributed: fsdp shards 4-bit QLoRA bases only; bitsandbytes' 8-bit (LLM.int8) "
                        "weights cannot be sharded", "train.distributed",
                        "Use method.quant.bits: 4, or train.distributed: ddp")


def _cuda_visible() -> bool:
    """A CUDA GPU this process would see (NVML, without importing torch)."""
    from core.resources.gpus import SystemSampler

    sampler = SystemSampler()
    try:
        return bool(sampler.sample().run_gpus())
    except Exception:  # noqa: BLE001 - no driver, no NVML: the CPU
        return False
    finally:
        sampler.close()


def _launch(args, config, nproc: int, gpus: list[str] | None) -> int:
    """Make the run folder here, then start the group (core.launch); every rank trains in it."""
    from core import config as cfg
    from core import rundir
    from core.launch import launch
    from core.spawn import write_run_dir_file
    from core.terminal import safe_print

    cfg.validate(config)  # a bad config fails here, once, not in every rank
    _check_strategy(config, nproc)
    if args.resume:
        run_dir = Path(args.resume).expanduser().resolve()
        rundir.load_run_config(run_dir)
        if rundir.is_running(run_dir):
            raise TuneError(f"The run in {run_dir} is still running", "--resume",
                            "Stop it first (tunetui stop RUN_DIR), then resume")
        if rundir.latest_checkpoint(run_dir) is None:
            raise TuneError(f"The run in {run_dir} has no checkpoint to resume from", "--resume",
                            "Start it again as a new run")
    else:
        run_dir = rundir.new_run_dir(config.output.dir, config).resolve()
    worker_args = []
    if args.config:
        worker_args.append(str(Path(args.config).expanduser().resolve()))
    for override in args.overrides:
        worker_args += ["--set", override]
    if args.resume:
        worker_args += ["--resume", str(run_dir)]
    if args.strict:
        worker_args.append("--strict")
    if args.output_dir:
        worker_args += ["--output-dir", args.output_dir]
    write_run_dir_file(args.run_dir_file, run_dir)  # before any rank starts: a follower sees the run from its start
    where = f" on GPUs {','.join(gpus)}" if gpus else ""
    safe_print(f"tunetui train: {nproc} processes{where} (torch.distributed.run); run folder: {run_dir}",
               file=sys.stderr)
    return launch(worker_args, nproc, run_dir, gpus=gpus,
                  note=lambda text: safe_print(f"tunetui train: {text}", file=sys.stderr))


def _load_config(args, cfg):
    if args.config:
        return cfg.load(args.config, args.overrides)
    if args.resume:
        from core import rundir

        path = Path(args.resume).expanduser() / rundir.CONFIG_FILE
        if not path.is_file():
            raise TuneError(f"{args.resume} is not a run folder (it has no {rundir.CONFIG_FILE})", "--resume",
                            "Pass a folder listed by `tunetui runs`")
        return cfg.load(path, args.overrides)
    raise TuneError("No config given", None, "Run `tunetui train presets/demo.yaml`, or `tunetui train --resume RUN_DIR`")


class _SignalStopper:
    """First SIGINT/SIGTERM: stop after this step and save. A second Ctrl-C aborts without saving. SIGHUP: keep
    training, detached from the dead terminal (left alone when it was ignored already, as under nohup)."""

    SIGNALS = tuple(s for s in (getattr(signal, n, None) for n in ("SIGINT", "SIGTERM", "SIGHUP")) if s is not None)

    def __init__(self, control, display):
        self.control = control
        self.display = display
        self.signal_number: int | None = None
        self._previous: dict = {}

    def __enter__(self):
        for sig in self.SIGNALS:
            try:
                if sig == getattr(signal, "SIGHUP", None) and signal.getsignal(sig) == signal.SIG_IGN:
                    continue  # nohup: the user asked for hang-ups to be ignored, and they are
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. called from tests in a worker): no handlers
                break
        return self

    def __exit__(self, *exc):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        return False

    def _handle(self, signum, frame):
        if signum == getattr(signal, "SIGHUP", None):
            self.display.hang_up()
            return
        if self.signal_number is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_number = signum
        self.control.stop(save=True)
        self.display.note(f"{signal.Signals(signum).name}: stopping after this step and saving a checkpoint "
                          "(Ctrl-C again aborts without saving)")


class _Display:
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
