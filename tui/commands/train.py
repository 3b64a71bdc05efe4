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
from dataclasses import replace
from pathlib import Path

from core.errors import TuneError
from tui.commands.progress import Display


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
    display = Display()
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
