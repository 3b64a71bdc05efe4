"""A transformers TrainerCallback that turns trainer state into events and obeys pause/stop from RunControl.

Imported only inside the runner (it pulls in transformers); never imports the UI.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from transformers import TrainerCallback

from core import rundir
from core.control import RunControl
from core.events import CheckpointSaved, Emit, EvalEnded, RunPaused, RunResumed, StepEnded
from core.training.guard import ClimbWatch

log = logging.getLogger(__name__)

PAUSE_POLL_SECONDS = 0.2


class EventCallback(TrainerCallback):
    """One StepEnded per optimizer step; EvalEnded, CheckpointSaved; pause blocks between steps; stop saves.

    A step's loss is only known in `on_log`, which the Trainer calls after `on_step_end`: a logging step's
    StepEnded (and any pause at that step) therefore waits for `on_log`, so the UI sees the loss before "paused".
    """

    def __init__(self, emit: Emit, control: RunControl | None = None, *, eta_window: int = 20, group=None):
        self.emit = emit
        self.control = control or RunControl()
        self.group = group
        """core.training.distributed.Group under torchrun: pause and stop are decided for all ranks together."""
        self.stopped = False
        self._eta_window = eta_window
        self._durations: list[float] = []
        self._mark = 0.0
        self._train_start = 0.0
        self._paused_total = 0.0
        self._tokens_at_mark = 0
        self._pending: dict | None = None
        self._cuda = False
        self.memory = None
        """core.training.gpu.PeakMemory on a CUDA run: peaks per step window and for the run."""
        self.last_step = 0
        self.climb = ClimbWatch()

    # ---------------------------------------------------------------- lifecycle

    def on_train_begin(self, args, state, control, **kwargs):
        import torch

        self._cuda = args.device.type == "cuda" and torch.cuda.is_available()
        if self._cuda:
            from core.training.gpu import PeakMemory

            self.memory = PeakMemory()
            self.memory.start()
        self._train_start = self._mark = time.perf_counter()
        self._tokens_at_mark = state.num_input_tokens_seen

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        seconds = now - self._mark
        tokens = state.num_input_tokens_seen - self._tokens_at_mark
        self._mark, self._tokens_at_mark = now, state.num_input_tokens_seen
        self._durations.append(seconds)
        del self._durations[:-self._eta_window]
        self._pending = {
            "step": state.global_step, "max_steps": state.max_steps, "epoch": float(state.epoch or 0.0),
            "step_seconds": seconds, "tokens_per_second": tokens / seconds if seconds > 0 and tokens else None,
        }
        if not control.should_log:
            self._emit_step({})
            self._obey(control)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if self._pending is not None and "loss" in logs:
            self._emit_step(logs)
            warning = self.climb.observe(state.global_step, _num(logs.get("loss")))
            if warning:  # forwarded as a LogLine: the log in the app and on the terminal
                log.warning("%s", warning)
            self._obey(control)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        metrics = dict(metrics or {})
        loss = metrics.pop("eval_loss", None)
        extra = {k.removeprefix("eval_"): v for k, v in metrics.items() if k.startswith("eval_")
                 and isinstance(v, (int, float)) and not k.endswith(("_runtime", "_per_second"))}
        self.emit(EvalEnded(step=state.global_step, eval_loss=loss, metrics=extra,
                            confusion_matrix=metrics.get("eval_confusion_matrix")))
        self._restart_clock(state)  # evaluation time is not training time

    def on_save(self, args, state, control, **kwargs):
        path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        rundir.apply_umask(path)  # the Trainer's safetensors files are written 0600 whatever the umask
        self.emit(CheckpointSaved(step=state.global_step, path=str(path)))
        self._restart_clock(state)

    # ---------------------------------------------------------------- helpers

    def _emit_step(self, logs: dict) -> None:
        pending, self._pending = self._pending, None
        self.last_step = pending["step"]
        mean = sum(self._durations) / len(self._durations)
        remaining = max(pending["max_steps"] - pending["step"], 0)
        gpu = peak = reserved = per_rank = None
        if self._cuda:
            import torch

            gpu = torch.cuda.memory_allocated() / 2**30
            peak, reserved = self.memory.read()  # the window's peak holds the activations, freed by now
        processes = self.group.world_size if self.group is not None else 1
        if self._cuda and processes > 1 and logs:
            # Logging steps only, which every rank reaches together (the Trainer logs on all of them): each rank
            # must join the collective; rank 0 alone emits.
            per_rank = self.group.gather(self.memory.run_peak_gib or 0.0)
        tokens = pending["tokens_per_second"]
        self.emit(StepEnded(
            step=pending["step"], max_steps=pending["max_steps"], epoch=pending["epoch"],
            loss=_num(logs.get("loss")), learning_rate=_num(logs.get("learning_rate")),
            grad_norm=_num(logs.get("grad_norm")), tokens_per_second=pending["tokens_per_second"],
            step_seconds=pending["step_seconds"],
            elapsed_seconds=time.perf_counter() - self._train_start - self._paused_total,
            eta_seconds=mean * remaining, gpu_memory_gib=gpu, peak_allocated_gib=peak, reserved_gib=reserved,
            # The Trainer gathers every rank's token count into num_input_tokens_seen: the rate is the group's.
            tokens_per_second_per_process=tokens / processes if tokens is not None and processes > 1 else None,
            peak_gib_per_rank=per_rank,
        ))

    def _obey(self, control) -> None:
        """Pause here (between steps, model loaded) and/or ask the Trainer to save and stop."""
        run = self.control
        stop, paused, no_save = self._decide()
        if paused and not stop:
            step = self.last_step
            self.emit(RunPaused(step=step))
            began = time.perf_counter()
            while paused and not stop:
                run.wait_while_paused(PAUSE_POLL_SECONDS)
                # Under torchrun every rank passes here once per poll and takes the same (shared) decision, so
                # no rank sits in a collective long enough to time out while the run is paused.
                stop, paused, no_save = self._decide()
            self._paused_total += time.perf_counter() - began
            self._mark = time.perf_counter()
            if not stop:
                self.emit(RunResumed(step=step))
        # At the last step the run is complete anyway: a late stop changes nothing.
        if stop and not control.should_training_stop:
            self.stopped = True
            control.should_training_stop = True
            # Keep a save the Trainer already planned for this step; add one when stopping should save.
            control.should_save = control.should_save or not no_save

    def _decide(self) -> tuple[bool, bool, bool]:
        """(stop, paused, stop without saving) for this step. Under torchrun: OR-ed over the ranks (rank 0 reads the
        control channel; a signal may reach any rank), so all of them stop at the same step and save one
        checkpoint, and pause together."""
        run = self.control
        flags = (run.stop_requested, run.paused, run.stop_requested and not run.save_on_stop)
        if self.group is None:
            return flags
        return self.group.any(*flags)

    def _restart_clock(self, state) -> None:
        self._mark = time.perf_counter()
        self._tokens_at_mark = state.num_input_tokens_seen


def _num(value) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


class BackwardFromTrainable(TrainerCallback):
    """Lets the backward pass stop at the lowest block that trains, under gradient checkpointing.

    When the Trainer turns checkpointing on, transformers also makes the input embeddings' output require grad
    (`enable_input_require_grads`): the reentrant checkpoint variant needs that for gradients to reach parameters
    inside a checkpointed block. The runner uses the non-reentrant variant (`use_reentrant: False`), which does
    not, and peft's own k-bit preparation skips the hook for it too. Left on, the hook makes backward run through
    (and recompute) every frozen block below a Freeze run's trainable ones, and compute a gradient nobody uses.
    """

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if args.activation_checkpointing and model is not None:
            model.disable_input_require_grads()
