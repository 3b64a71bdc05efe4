"""The one entry the UI and the CLI call: `run(config, emit, control)` trains a model and reports by events.

It never raises (except KeyboardInterrupt/SystemExit, after reporting) and always ends with exactly one RunFinished
or RunFailed, also written to the run's events.jsonl. Heavy libraries are imported inside functions.

Beside it: the Trainer's settings (trainargs), library logs as events (liblogs), failures in words (failures).
Over 400 lines on purpose: one _Session carries a run from its folder to its one terminal event, and its steps
(prepare, train, save, fail) share that session's state.
"""
from __future__ import annotations

import gc
import logging
import os
import shutil
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core import config as cfg
from core import methods, rundir
from core.config import RunConfig
from core.control import RunControl
from core.errors import TuneError
from core.imports import import_heavy
from core.events import (DataReady, Emit, Event, LogLine, ModelReady, PhaseChanged, RunFailed, RunFinished,
                         RunStarted)
from core.launch import LAUNCHER_ENV, RUN_DIR_ENV
from core.training.failures import (collective_failure, disk_full_message, is_oom, memory_at_failure, oom_message,
                                    peer_failure_message, release_paged_buffers)
from core.training.hostmem import keep_freed_memory
from core.training.liblogs import forward_logs
from core.training.trainargs import accuracy, log_device, training_arguments

log = logging.getLogger(__name__)

PROGRESS_EVENTS_PER_SECOND = 10


@dataclass
class RunOutcome:
    status: str
    """finished | stopped | failed."""
    run_dir: Path | None
    final_dir: Path | None
    step: int
    event: RunFinished | RunFailed
    """The terminal event (also the last line of events.jsonl)."""

    @property
    def ok(self) -> bool:
        return self.status in ("finished", "stopped")


# What a checkpoint restores whatever the config says: the optimizer's settings as saved (its learning rate, which the
# scheduler also keeps as its base, and its weight decay) and the optimizer itself. The schedule's shape (warm-up,
# kind, length), clipping and the rest are read from the config on resume.
RESTORED_BY_CHECKPOINT = ("lr", "weight_decay", "optim")


def _restored_by_checkpoint(saved: RunConfig, config: RunConfig) -> list[tuple[str, object, object]]:
    """(key, the run's value, the new value) for each train.* setting a resume would ask to change but cannot."""
    return [(key, getattr(saved.train, key), getattr(config.train, key)) for key in RESTORED_BY_CHECKPOINT
            if getattr(saved.train, key) != getattr(config.train, key)]


def _value(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


class _StopRequested(Exception):
    """Stop was asked for while data or the model were still being prepared."""


_engine_imported = False


def import_engine() -> None:
    """Import what every run needs (torch, datasets, transformers' Trainer and auto classes, peft: the Trainer
    imports it whenever it is installed), then freeze the garbage collector's view of the objects that exist now
    (`gc.freeze`).

    The imports take seconds, so the app calls this in the background after its first frame. The freeze matters as
    much: these imports leave about half a million objects, and each full collection walked all of them, holding
    the GIL for 200-460 ms on a 2-core machine, a stall of the UI or of training several times a minute. Frozen
    objects are only skipped by the collector; reference counting still frees them as usual.
    """
    global _engine_imported
    if _engine_imported:  # runs then freeze and thaw their own objects (_Session._train, _Session._release)
        return
    from core.imports import LOCK

    with LOCK:  # the app's preview and chat workers import some of these too (core.imports says why)
        import datasets  # noqa: F401
        import peft  # noqa: F401
        import torch  # noqa: F401
        from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification,  # noqa: F401
                                  AutoTokenizer, Trainer, TrainingArguments)

    gc.freeze()
    _engine_imported = True


def run(config: RunConfig, emit: Emit, control: RunControl | None = None, *,
        resume_from: str | Path | None = None, strict: bool = False) -> RunOutcome:
    """Train `config`, emitting events; `resume_from` continues a run dir in place from its newest checkpoint.

    `strict`: refuse to start when the memory preflight says the run will not fit (otherwise only warn).
    """
    session = _Session(config, emit, control or RunControl(), strict)
    return session.execute(resume_from)


class _Session:
    def __init__(self, config: RunConfig, emit: Emit, control: RunControl, strict: bool):
        self.config = config
        self.user_emit = emit
        self._restore_host_memory: Callable[[], None] = lambda: None
        self.control = control
        self.strict = strict
        self.run_dir: Path | None = None
        self.created_dir = False
        self.events_file = None
        self.lock = threading.Lock()
        self.training_started = False
        self.step = 0
        self.max_steps = 0
        self.callback = None
        self.trainer = None
        self.estimated_peak_gib: float | None = None
        self.channel = None
        """The run folder's control channel (pause/resume/stop from a shell or another app)."""
        from core.training.distributed import Group

        self.padding_free = False
        """Batches are concatenated without padding (data.padding_free, where the model supports it)."""
        self.strategy: str | None = None
        """ddp | fsdp under several processes (train.distributed, decided at start); None for one."""
        self.group = Group()
        """This process's place under torchrun (one process: world size 1, every collective a no-op)."""

    # ---------------------------------------------------------------- events

    def emit(self, event: Event) -> None:
        if not self.group.is_main:
            # One run, however many processes: only rank 0 reports. The others' errors still reach their own
            # stderr (torchrun passes it on), where a failure of that rank is explained.
            if ((isinstance(event, LogLine) and event.level in ("ERROR", "CRITICAL"))
                    or (isinstance(event, RunFailed) and event.kind != "user_error")):
                self._tell_user(event)
            return
        with self.lock:
            if self.events_file is not None:
                try:
                    self.events_file.write(event.to_json() + "\n")
                    self.events_file.flush()  # a crash must leave every event already reported on disk
                except (OSError, ValueError):
                    pass
        self._tell_user(event)

    def _tell_user(self, event: Event) -> None:
        try:
            self.user_emit(event)
        except Exception:  # a broken listener must not kill the training
            try:
                traceback.print_exc(file=sys.__stderr__)
            except (OSError, ValueError):  # nor a terminal that went away (EIO) or a closed pipe
                pass

    def _open_events(self) -> None:
        self.events_file = open(self.run_dir / rundir.EVENTS_FILE, "a", encoding="utf-8")

    # ---------------------------------------------------------------- the run

    def execute(self, resume_from) -> RunOutcome:
        outcome = None
        try:
            with forward_logs(self.emit):
                try:
                    outcome = self._run(resume_from)
                except TuneError as exc:
                    outcome = self._fail_user(exc)
                except BaseException as exc:  # noqa: BLE001 - the runner reports every failure as an event
                    outcome = self._fail(exc)
                    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                        raise
        finally:
            self._close()
            self._release()
            self.group.close()
        return outcome

    def _release(self) -> None:
        """Drop the model and trainer now: an app may start another run in this process."""
        self.trainer = None
        self.callback = None
        self._restore_host_memory()
        if "torch" in sys.modules:
            import torch

            # Frozen at the start of training (see _train), the run's objects are out of the collector's reach:
            # thaw them so cycles holding the model (and its GPU memory) are collected, then freeze what is left.
            gc.unfreeze()
            gc.collect()
            gc.freeze()
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                torch.cuda.empty_cache()

    def _run(self, resume_from) -> RunOutcome:
        from core.training import gpu
        from core.training.models import check_bitsandbytes, resolve_device

        config = self.config
        cfg.validate(config)
        import_heavy("torch")  # core.imports: never at the same moment as the app's other workers' first imports
        device = resolve_device(config.train.device)
        card = gpu.current_card(device)
        problem = gpu.missing_arch(card)
        if problem:  # else the first kernel fails with "no kernel image is available for execution on the device"
            raise TuneError(problem, "train.device", "Install a matching torch build, or use train.device: cpu")
        choice = gpu.decide_precision(config.train.precision, device, card, config.train.device)
        precision = self.precision = choice.precision
        if card is not None:
            import torch

            torch.cuda.reset_peak_memory_stats()  # an out-of-memory report measures this run, not earlier ones
        if methods.get(config.method.kind).quantized:
            check_bitsandbytes(device, config.method.quant.bits)  # fail before any work, and say why

        self.group.init(device)  # under torchrun: rank 0's run folder reaches the others through the group
        checkpoint = self._open_run_dir(resume_from)
        from core.training.distributed import choose_strategy

        self.strategy = choose_strategy(config.train.distributed, self.group.world_size, device,
                                        fits_one_gpu=getattr(self, "fits_one_gpu", None))
        if self.strategy is not None:
            log.info("Strategy: %s over %d processes (train.distributed: %s)", self.strategy.upper(),
                     self.group.world_size, config.train.distributed)
        log.info("%s", choice.reason)  # after RunStarted: in events.jsonl too
        stopped = False
        try:
            with self.group.main_first():  # rank 0 fills the model and tokenization caches, then the others read
                prepared, tokenizer, model, model_dir = self._prepare(config, device)
        except _StopRequested:
            stopped = True
        # Every rank stops before training, or none does (a stop seen by rank 0 alone would leave the others
        # waiting for it in the Trainer's first collective).
        (stopped,) = self.group.any(stopped or self.control.stop_requested)
        if stopped:
            return self._finish(stopped=True, final_dir=None)
        return self._train(config, device, precision, prepared, tokenizer, model, checkpoint)

    def _open_run_dir(self, resume_from) -> Path | None:
        """Rank 0 (or the only process) picks the run folder and opens it; under torchrun the others are told which
        (the folder, and the checkpoint to resume from) and write nothing there but what checkpoints need."""
        group = self.group
        if not group.is_main:
            run_dir, checkpoint, error = group.broadcast(None)
            if error is not None:
                raise TuneError(*error)
            self.run_dir = Path(run_dir)
            return Path(checkpoint) if checkpoint else None
        try:
            checkpoint, torn = self._choose_run_dir(resume_from)
        except TuneError as exc:
            group.broadcast((None, None, (exc.what, exc.where, exc.fix)))
            raise
        group.broadcast((str(self.run_dir), str(checkpoint) if checkpoint else None, None))
        config = self.config
        cfg.save(config, self.run_dir / rundir.CONFIG_FILE)
        self._open_events()
        rundir.write_pid(self.run_dir)
        from core.control import ControlChannel

        self.channel = ControlChannel(self.run_dir, self.control).start()
        t = config.train
        self.emit(RunStarted(run_id=self.run_dir.name, run_dir=str(self.run_dir), config=cfg.to_dict(config),
                             resumed_from=str(checkpoint) if checkpoint else None, world_size=group.world_size,
                             global_batch_size=t.batch_size * t.grad_accum * group.world_size))
        if resume_from is not None:
            for path, why in torn:
                # Left (by an older version, or by hand) where a save was cut short: never loaded, left for the user.
                log.warning("Skipping %s: %s, so it is not a complete checkpoint. Resuming from %s instead.",
                            path.name, why, checkpoint.name)
        if group.active:
            log.info("%d processes train this run (torch.distributed, %s): global batch %d = %d per process x %d "
                     "accumulation x %d processes", group.world_size,
                     "nccl" if str(group.device).startswith("cuda") else "gloo",
                     t.batch_size * t.grad_accum * group.world_size, t.batch_size, t.grad_accum, group.world_size)
        self._preflight()
        return checkpoint

    def _choose_run_dir(self, resume_from):
        """(checkpoint to resume from, torn checkpoints passed over); sets self.run_dir."""
        config = self.config
        checkpoint = None
        torn = []
        if resume_from is not None:
            self.run_dir = Path(resume_from).expanduser()
            saved = rundir.load_run_config(self.run_dir)
            if rundir.is_running(self.run_dir):
                raise TuneError(f"The run in {self.run_dir} is still running", "--resume",
                                "Stop it first (Ctrl-C in its terminal, or Stop in the app), then resume")
            if (saved.model.name_or_path != config.model.name_or_path
                    or cfg.to_dict(saved.method) != cfg.to_dict(config.method)):
                raise TuneError(f"The run in {self.run_dir} used another model or method than this config",
                                "--resume", "Resume with the run's own config (leave out CONFIG), or start a new run")
            overridden = _restored_by_checkpoint(saved, config)
            if overridden:
                changes = ", ".join(f"train.{k} ({_value(was)} -> {_value(new)})" for k, was, new in overridden)
                sets = " ".join(f"--set train.{k}={_value(new_v)}" for k, _, new_v in overridden)
                raise TuneError(
                    f"A resumed run cannot change {changes}: its checkpoint brings back the optimizer and "
                    "learning-rate schedule as they were saved, so the new value would be ignored", "--resume",
                    f"Resume without that --set, or start a new run with it: "
                    f"`tunetui train {self.run_dir / rundir.CONFIG_FILE} {sets}`")
            checkpoint = rundir.latest_checkpoint(self.run_dir)
            torn = [(path, why) for path, why in rundir.incomplete_checkpoints(self.run_dir)
                    if checkpoint is None or rundir.checkpoint_step(path) > rundir.checkpoint_step(checkpoint)]
            if checkpoint is None:
                raise TuneError(f"The run in {self.run_dir} has no checkpoint to resume from", "--resume",
                                "Start it again as a new run (checkpoints are written every train.save_steps "
                                "and when a run is stopped)")
        elif self.group.active and os.environ.get(RUN_DIR_ENV):
            # `tunetui train --nproc N` made the folder before starting the group (core.launch): use it.
            self.run_dir = Path(os.environ[RUN_DIR_ENV])
            self.created_dir = True
        else:
            self.run_dir = rundir.new_run_dir(config.output.dir, config)
            self.created_dir = True
        return checkpoint, torn

    def _preflight(self, after_download: bool = False, model_dir: Path | None = None) -> None:
        try:
            from core.resources.preflight import fetch_hub_config, preflight
        except ImportError:
            return
        if not after_download:
            deferred = fetch_hub_config(self.config)
            if deferred:  # checked again once the model is downloaded (_prepare)
                self.preflight_deferred = True
                log.info("Memory preflight deferred: %s", deferred)
                return
        config = self.config
        if model_dir is not None:  # the resolved folder holds config.json: size the model from it
            from dataclasses import replace

            config = replace(config, model=replace(config.model, name_or_path=str(model_dir)))
        try:
            result = preflight(config)
        except Exception as exc:  # an estimate must never stop a run that might work
            log.warning("Memory preflight failed: %s", exc)
            return
        self.estimated_peak_gib = result.estimate_gib
        self.fits_one_gpu = result.fits  # a whole replica on one GPU: train.distributed auto decides from it
        if result.fits is False:
            if self.strict:
                raise TuneError(f"This run will likely not fit in GPU memory: {result.message}", "--strict",
                                "Choose a cheaper configuration, or run without --strict to try anyway")
            log.warning("Memory preflight: %s", result.message)
        elif result.message:
            log.info("Memory preflight: %s", result.message)

    def _prepare(self, config: RunConfig, device: str):
        from core.training import gpu
        from core.methods import apply as apply_method
        from core.training.encode import can_flatten, padding_share, token_lengths, tokenize
        from core.training.models import load_model, load_tokenizer, resolve_model_dir
        from core.training.rawdata import load_raw

        # Data first: it is cheap, and a bad file should fail before seconds of imports and minutes of model loading.
        self.emit(PhaseChanged(phase="preparing_data", message=f"reading {config.data.path}"))
        import_heavy("datasets")
        raw = load_raw(config.data, seed=config.train.seed)
        if not _engine_imported:
            self.emit(PhaseChanged(phase="preparing_data", message="importing torch, peft and transformers"))
            import_engine()

        self.emit(PhaseChanged(phase="loading_model", message=f"resolving {config.model.name_or_path}"))
        model_dir = resolve_model_dir(config.model)
        if getattr(self, "preflight_deferred", False):  # the model is downloaded now: its config can be read
            self.preflight_deferred = False
            self._preflight(after_download=True, model_dir=model_dir)
        tokenizer = load_tokenizer(config.model, model_dir)

        self.emit(PhaseChanged(phase="preparing_data", done=0, message="tokenizing"))
        prepared = tokenize(raw, tokenizer, config.data, progress=self._progress("preparing_data"))
        n_val = len(prepared.val) if prepared.val is not None else 0
        # Plain text is packed into full blocks already; classification pads to the longest of a batch.
        wanted = device.startswith("cuda") if config.data.padding_free == "auto" else config.data.padding_free
        self.padding_free = (wanted and prepared.task != "classification" and prepared.format != "text"
                             and can_flatten(model_dir, config.model.trust_remote_code))
        token_stats = dict(prepared.stats or {})
        if prepared.format != "text":
            padded = padding_share(token_lengths(prepared.train), config.train.batch_size, config.train.seed)
            token_stats["padding"] = 0.0 if self.padding_free else round(100 * padded, 1)
            if self.padding_free:
                log.info("Padding-free batches: examples are concatenated (padding would have been %.0f%% of the "
                         "tokens at batch size %d)", 100 * padded, config.train.batch_size)
        self.emit(DataReady(format=prepared.format, train_examples=len(prepared.train), val_examples=n_val,
                            token_stats=token_stats))

        self.emit(PhaseChanged(phase="loading_model", message=f"loading {config.model.name_or_path}"))
        from transformers import set_seed

        set_seed(config.train.seed)  # LoRA and new heads are initialised from the run's seed
        labels = list(prepared.label_names or []) if prepared.task == "classification" else None
        # Beside config.yaml (rank 0 writes the folder), so a checkpoint of a run that never reached final/ can still
        # be merged.
        if labels and self.group.is_main:
            rundir.write_labels(self.run_dir, labels)
        precision = getattr(self, "precision", "fp32")
        dtype = gpu.torch_dtype(gpu.compute_dtype_name(config.method.quant.compute_dtype, precision)
                                if methods.get(config.method.kind).quantized
                                else gpu.weight_dtype_name(config.model.dtype, config.method.kind, precision))
        model = load_model(config.model, config.method, prepared.task, len(labels) if labels else None, device,
                           label_names=labels, pad_token_id=tokenizer.pad_token_id, model_dir=model_dir,
                           dtype=dtype, sharded=self.strategy == "fsdp")
        model, report = apply_method(model, config.method, prepared.task,
                                     gradient_checkpointing=config.train.gradient_checkpointing)
        if precision == "fp16":
            upcast = gpu.upcast_trainable(model)
            if upcast:
                log.info("fp16 mixed precision: %d trainable tensors held in fp32 (the gradient scaler needs fp32 "
                         "gradients)", upcast)
        self.emit(ModelReady(trainable_params=report.trainable_params, total_params=report.total_params,
                             trainable_modules=report.trainable_modules, method=config.method.kind, device=device,
                             dtype=str(dtype).removeprefix("torch."), distributed=self.strategy,
                             precision=precision))
        return prepared, tokenizer, model, model_dir

    def _progress(self, phase: str):
        last = [0.0]

        def report(done: int, total: int | None = None) -> None:
            if self.control.stop_requested:
                raise _StopRequested()  # tokenizing a large dataset can take minutes: don't make stop wait
            now = time.monotonic()
            if done == total or now - last[0] >= 1 / PROGRESS_EVENTS_PER_SECOND:
                last[0] = now
                self.emit(PhaseChanged(phase=phase, done=done, total=total))
        return report

    def _train(self, config, device, precision, prepared, tokenizer, model, checkpoint) -> RunOutcome:
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        from core.training.callbacks import BackwardFromTrainable, EventCallback
        from core.training.guard import GuardedTrainer

        self.precision = precision
        has_val = prepared.val is not None and len(prepared.val) > 0
        from core.training.distributed import fsdp_arguments

        fsdp = (fsdp_arguments(model, config.train.gradient_checkpointing) if self.strategy == "fsdp" else None)
        args = training_arguments(config, self.run_dir, device, precision, has_val=has_val,
                                  distributed=self.group.active, fsdp=fsdp)
        if device.startswith("cuda"):
            log_device()
        if checkpoint:
            args.eval_on_start = False  # a resumed run's curve already starts from the base model's loss
        self.callback = EventCallback(self.emit, self.control, group=self.group)
        self.memory = self.callback.memory
        trainer = GuardedTrainer(
            check_grad_norm=precision != "fp16", model=model, args=args, train_dataset=prepared.train,
            eval_dataset=prepared.val if has_val else None,
            data_collator=prepared.collator(tokenizer, padding_free=self.padding_free), processing_class=tokenizer,
            callbacks=[self.callback, BackwardFromTrainable()],
            compute_metrics=accuracy if prepared.task == "classification" else None,
        )
        # The Trainer prints logs to stdout by default; events carry them instead.
        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
        self.trainer = trainer

        self.emit(PhaseChanged(phase="training"))
        self.training_started = True
        # What exists now (model, data, trainer) lives for the whole run: freeze it, so that full collections during
        # training walk only what training creates (cheap), not the model and datasets each time. _release thaws it.
        gc.collect()
        gc.freeze()
        # Freed tensor memory stays in the process from step to step (core.training.hostmem says why); undone by
        # _release.
        self._restore_host_memory = keep_freed_memory(device)
        if device.startswith("cuda"):
            import torch

            torch.cuda.reset_peak_memory_stats()  # RunFinished reports this run's peak, not the process's
        result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        self.step, self.max_steps = trainer.state.global_step, trainer.state.max_steps
        if self.callback.stopped:
            return self._finish(stopped=True, final_dir=None, train_loss=result.training_loss)

        if has_val and config.train.eval_steps == 0:
            trainer.evaluate()  # "0: at the end only"
        if not self.group.is_main:  # rank 0 alone writes final/ (DDP keeps every rank's weights the same)
            return self._finish(stopped=False, final_dir=None, train_loss=result.training_loss)
        self.emit(PhaseChanged(phase="saving", message="writing final/"))
        final_dir = self._save_final(trainer, tokenizer, prepared)
        return self._finish(stopped=False, final_dir=final_dir, train_loss=result.training_loss)

    def _save_final(self, trainer, tokenizer, prepared) -> Path:
        from core.training.checkpoints import save_final

        labels = list(prepared.label_names) if prepared.task == "classification" else None
        final = save_final(trainer, tokenizer, self.run_dir, labels)
        # The Trainer's own line names the temporary folder; say where the result is.
        log.info("Saved the final %s to %s", methods.get(self.config.method.kind).saves, final)
        return final

    # ---------------------------------------------------------------- endings

    def _finish(self, *, stopped: bool, final_dir: Path | None, train_loss: float | None = None) -> RunOutcome:
        from core.training import gpu

        memory = getattr(self, "memory", None)
        peak = gpu.cuda_peak_gib(memory)
        release_paged_buffers()
        event = RunFinished(run_dir=str(self.run_dir), final_dir=str(final_dir) if final_dir else None,
                            step=self.step, max_steps=self.max_steps, stopped=stopped, train_loss=train_loss,
                            peak_gpu_memory_gib=peak, estimated_peak_gib=self.estimated_peak_gib,
                            reserved_gib=memory.reserved_gib if memory else None)
        self.emit(event)
        return RunOutcome("stopped" if stopped else "finished", self.run_dir, final_dir, self.step, event)

    def _fail_user(self, exc: TuneError) -> RunOutcome:
        early = not self.training_started
        if early and self.created_dir:
            self._close()
            shutil.rmtree(self.run_dir, ignore_errors=True)  # bad input leaves no half-made run behind
            self.run_dir = None
        event = RunFailed(message=exc.message, kind="user_error",
                          run_dir=str(self.run_dir) if self.run_dir else None, step=self._step_now())
        self.emit(event)
        return RunOutcome("failed", self.run_dir, None, self._step_now() or 0, event)

    def _fail_known(self, exc: Exception) -> RunOutcome | None:
        """A run that failed for a reason it can name (diverged, disk full); None for anything else."""
        from core.training.checkpoints import DiskFull, is_disk_full
        from core.training.guard import Diverged, divergence_advice

        if isinstance(exc, DiskFull) or (self.run_dir is not None and is_disk_full(exc, self.run_dir)):
            return self._fail_disk_full(exc)
        if not isinstance(exc, Diverged):
            return None
        step = exc.step  # the step that diverged (it was not applied), as the message says
        message = divergence_advice(exc, self.config.train, getattr(self, "precision", ""), self.run_dir,
                                    rundir.latest_checkpoint(self.run_dir) if self.run_dir else None)
        event = RunFailed(message=message, kind="diverged", run_dir=str(self.run_dir) if self.run_dir else None,
                          step=step)
        self.emit(event)
        return RunOutcome("failed", self.run_dir, None, step or 0, event)

    def _fail_disk_full(self, exc: Exception) -> RunOutcome:
        step = self._step_now()
        message = disk_full_message(exc, self.run_dir, step)
        event = RunFailed(message=message, kind="disk_full", run_dir=str(self.run_dir), step=step)
        self.emit(event)
        return RunOutcome("failed", self.run_dir, None, step or 0, event)

    def _fail(self, exc: BaseException) -> RunOutcome:
        known = self._fail_known(exc) if isinstance(exc, Exception) else None
        if known is not None:
            return known
        step = self._step_now()
        tb = traceback.format_exc()
        peak = reserved = None
        if is_oom(exc):
            kind = "out_of_memory"
            peak, reserved = memory_at_failure(getattr(self, "memory", None))
            # The traceback's frames hold the model and activations: drop them so the GPU memory really frees.
            traceback.clear_frames(exc.__traceback__)
            self._release()
            message = oom_message(self.config, peak, exc) or "Out of GPU memory."
            if step:
                message += f" (It ran out at step {step}.)"
        elif isinstance(exc, KeyboardInterrupt):
            kind, message, tb = "error", "Interrupted (a second Ctrl-C): no checkpoint was saved.", None
        elif self.group.active and collective_failure(exc):
            kind = "error"
            message = peer_failure_message(exc, self.group.rank)
            if os.environ.get(LAUNCHER_ENV):
                # `tunetui train --nproc` hears from torchrun which rank failed, and how, and writes the run's
                # RunFailed naming it (core.launch.record_failure): this rank only logs what it saw.
                log.error("%s", message)
                event = RunFailed(message=message, kind="peer_failed",
                                  run_dir=str(self.run_dir) if self.run_dir else None, step=step)
                return RunOutcome("failed", self.run_dir, None, step or 0, event)
        else:
            kind = "error"
            message = f"{type(exc).__name__}: {exc} (this is a bug; the traceback is in events.jsonl)"
        release_paged_buffers()
        event = RunFailed(message=message, kind=kind, run_dir=str(self.run_dir) if self.run_dir else None,
                          step=step, traceback=tb, peak_gpu_memory_gib=peak, reserved_gib=reserved)
        self.emit(event)
        return RunOutcome("failed", self.run_dir, None, step or 0, event)

    def _step_now(self) -> int | None:
        trainer = getattr(self, "trainer", None)
        if trainer is not None and getattr(trainer, "state", None) is not None:
            return trainer.state.global_step
        return None

    def _close(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        with self.lock:
            if self.events_file is not None:
                self.events_file.close()
                self.events_file = None
        if self.run_dir is not None:
            rundir.clear_pid(self.run_dir)


__all__ = ["run", "RunOutcome", "import_engine"]
