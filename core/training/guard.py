"""Divergence guard: stops a run whose loss or gradient norm turns NaN/inf before the optimizer writes it into the
weights, and notices a loss that climbs far above where it started.

Imported only inside the runner (it pulls in transformers); never imports the UI.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from core.training.checkpoints import AtomicCheckpointTrainer


class Diverged(Exception):
    """The loss or the gradient norm of an optimizer step was not finite; the step was not applied."""

    def __init__(self, step: int, what: str, value: float, last_loss: float | None, last_loss_step: int | None):
        self.step, self.what, self.value = step, what, value
        self.last_loss, self.last_loss_step = last_loss, last_loss_step
        super().__init__(f"{what} is {value} at step {step}")


class GuardedTrainer(AtomicCheckpointTrainer):
    """The Trainer (writing whole checkpoints: core.training.checkpoints), checking each optimizer step's loss and
    gradient norm just before `optimizer.step()`.

    The Trainer's own `logging_nan_inf_filter` hides a NaN loss (it logs the running mean instead, so a dead run
    reads `loss 0.0`) and still applies the NaN step to the weights. Checking here is the last moment the weights
    are still good: raising leaves them, and every checkpoint already written, untouched.
    """

    def __init__(self, *args, check_grad_norm: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        # Under fp16 the GradScaler sees inf gradients as a matter of course (it skips that step and lowers its
        # scale), so only the loss is checked there.
        self.check_grad_norm = check_grad_norm
        self._step_loss = None
        self.last_finite_loss: float | None = None
        self.last_finite_step: int | None = None
        self._flops_params: int | None = None

    def floating_point_ops(self, inputs) -> int:
        # The Trainer's own counts the model's parameters again at every step (`num_parameters` walks every module
        # to leave the embeddings out): about 3% of a LoRA step on a small model, whose adapters double the module
        # count. The count cannot change during training, so it is taken once. Same formula: 6 x tokens x params.
        if self._flops_params is None:
            self._flops_params = (self.model.num_parameters(exclude_embeddings=True)
                                  if hasattr(self.model, "num_parameters") else 0)
        main_input = getattr(self.model, "main_input_name", "input_ids")
        return 6 * inputs[main_input].numel() * self._flops_params if main_input in inputs else 0

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        # Summed on the device: one host sync per optimizer step (in _get_grad_norm), not per micro-batch.
        self._step_loss = loss if self._step_loss is None else self._step_loss + loss
        return loss

    def _get_grad_norm(self, model, grad_norm=None):
        # The Trainer calls this once per optimizer step, right before `optimizer.step()`, after clipping; no public
        # callback sees the loss and the norm at that point.
        norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        self._check(norm)
        return norm

    def _check(self, norm) -> None:
        import torch

        loss, self._step_loss = self._step_loss, None
        if loss is None:
            return
        values = [loss.detach().float().reshape(())]
        if self.check_grad_norm and norm is not None:
            values.append(torch.as_tensor(norm, dtype=torch.float32, device=loss.device).reshape(()))
        found = torch.stack(values).tolist()
        step = self.state.global_step + 1
        if not math.isfinite(found[0]):
            raise Diverged(step, "the training loss", found[0], self.last_finite_loss, self.last_finite_step)
        if len(found) > 1 and not math.isfinite(found[1]):
            raise Diverged(step, "the gradient norm", found[1], found[0], step)
        self.last_finite_loss, self.last_finite_step = found[0], step


def divergence_advice(exc: Diverged, train, precision: str, run_dir, checkpoint) -> str:
    """The message of a diverged run: what happened, where, what is kept and what to change (as --set overrides)."""
    if exc.last_loss is None:
        last = ""
    elif exc.last_loss_step == exc.step:
        last = f" The loss of that step was {exc.last_loss:.4g}."
    else:
        last = f" The last finite loss was {exc.last_loss:.4g} (step {exc.last_loss_step})."
    fixes = [f"a lower learning rate (--set train.lr={train.lr / 10:g})"]
    if not train.max_grad_norm:
        fixes.append("gradient clipping (--set train.max_grad_norm=1.0)")
    elif train.max_grad_norm > 1.0:
        fixes.append("tighter gradient clipping (--set train.max_grad_norm=1.0)")
    if precision == "fp16":
        fixes.append("bf16 instead of fp16 on a GPU that has it (--set train.precision=bf16)")
    if not train.warmup_ratio:
        fixes.append("a warm-up (--set train.warmup_ratio=0.05)")
    # Not "--resume with a lower lr": resuming restores the optimizer and scheduler state of the checkpoint, learning
    # rate included, so the same settings would diverge at the same step again.
    again = f"start again with `tunetui train {run_dir}/config.yaml --set ...`"
    kept = (f" Nothing of that step was written: the newest checkpoint ({checkpoint.name}) is intact. To change the "
            f"settings, {again}." if checkpoint is not None
            else f" No checkpoint was written before it; {again}.")
    return (f"Training diverged: {exc.what} became {exc.value} at step {exc.step}.{last}{kept} Try "
            + ", ".join(fixes[:-1]) + (" or " if len(fixes) > 1 else "") + fixes[-1] + ".")


@dataclass
class ClimbWatch:
    """Notices the slower kind of divergence: logged losses far above where the run started, many logs in a row.

    The start is the lowest of the first `warmup_logs` logged losses; a warning is due once `patience` logs in a row
    exceed `factor` times it. It warns once per climb (again only after the loss has come back down).
    """

    factor: float = 2.0
    patience: int = 5
    warmup_logs: int = 3
    start: float | None = None
    seen: int = 0
    above: int = 0
    warned: bool = False

    def observe(self, step: int, loss: float | None) -> str | None:
        if loss is None or not math.isfinite(loss):
            return None
        self.seen += 1
        if self.seen <= self.warmup_logs:
            self.start = loss if self.start is None else min(self.start, loss)
            return None
        if self.start is None or self.start <= 0 or loss <= self.factor * self.start:
            self.above, self.warned = 0, False
            return None
        self.above += 1
        if self.above < self.patience or self.warned:
            return None
        self.warned = True
        return (f"The loss has climbed to {loss:.4g} at step {step}, over {self.factor:g}x its starting "
                f"{self.start:.4g}, for {self.above} logged steps in a row: the run may be diverging. Consider "
                "stopping it and lowering train.lr or setting train.max_grad_norm (gradient clipping).")
