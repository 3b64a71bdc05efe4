"""How a run's Trainer is set up: its TrainingArguments (accumulation, precision, schedule, checkpoints, DDP under
torchrun), the metrics of a classification evaluation, and the log line naming the GPU it trains on. transformers
and torch are imported inside functions. Never imports textual or tui.
"""
from __future__ import annotations

import logging
from pathlib import Path

from core import rundir
from core.config import RunConfig
from core.errors import TuneError

log = logging.getLogger(__name__)

OPTIMIZERS = {"adamw": "adamw_torch", "adamw8bit": "adamw_bnb_8bit", "paged_adamw8bit": "paged_adamw_8bit"}


def resolve_precision(precision: str, device: str) -> str:
    """bf16 | fp16 | fp32 for the Trainer: `auto` is bf16 on GPUs that have it natively (sm80+), fp16 on older
    GPUs, fp32 on CPU (core.training.gpu.decide_precision, which also says why)."""
    from core.training import gpu

    return gpu.decide_precision(precision, device, gpu.current_card(device)).precision


def log_device() -> None:
    """Name the GPU this run trains on as nvidia-smi numbers it, and say when other visible GPUs stay idle."""
    import os

    import torch

    from core.training import gpu

    try:
        from core.resources.gpus import SystemSampler

        sampler = SystemSampler()
        try:
            snapshot = sampler.sample()
        finally:
            sampler.close()
        gpus, migs = snapshot.gpus, snapshot.migs
    except Exception:  # noqa: BLE001 - naming the GPU is best effort
        gpus, migs = (), ()
    logical = torch.cuda.current_device()
    log.info("%s", gpu.describe_device(logical, gpu.current_card(f"cuda:{logical}"),
                                       os.environ.get("CUDA_VISIBLE_DEVICES"), gpus, torch.cuda.device_count(),
                                       migs))


def training_arguments(config: RunConfig, run_dir: Path, device: str, precision: str, *, has_val: bool,
                       distributed: bool = False, fsdp: dict | None = None):
    """The TrainingArguments for a run: the Trainer does accumulation, precision, schedule, checkpoints, and (under
    torchrun, `distributed`) DDP over the process group, or FSDP where `fsdp` holds its arguments
    (core.training.distributed.fsdp_arguments)."""
    from transformers import TrainingArguments

    from core.training.distributed import DDP_TIMEOUT_SECONDS

    t = config.train
    evaluate_every = has_val and t.eval_steps > 0
    try:
        args = TrainingArguments(
            output_dir=str(run_dir / rundir.CHECKPOINTS),
            per_device_train_batch_size=t.batch_size, per_device_eval_batch_size=t.batch_size,
            gradient_accumulation_steps=t.grad_accum,
            num_train_epochs=t.epochs, max_steps=t.max_steps,
            learning_rate=t.lr, lr_scheduler_type=t.scheduler,
            warmup_steps=float(t.warmup_ratio),  # a float in [0, 1) is a fraction of the steps
            weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm,
            optim=("adamw_torch_fused" if device.startswith("cuda") else "adamw_torch")
            if t.optim == "adamw" else OPTIMIZERS[t.optim],
            bf16=precision == "bf16", fp16=precision == "fp16", use_cpu=device == "cpu",
            activation_checkpointing=t.gradient_checkpointing and not fsdp,
            activation_checkpointing_kwargs={"use_reentrant": False} if t.gradient_checkpointing and not fsdp else None,
            **(fsdp or {}),
            logging_strategy="steps", logging_steps=t.logging_steps,
            # The filter logs a NaN loss as the running mean (a dead run reads "loss 0.0"); GuardedTrainer stops it.
            logging_nan_inf_filter=False,
            eval_strategy="steps" if evaluate_every else "no", eval_steps=t.eval_steps if evaluate_every else None,
            # The curve starts from the base model's loss, so a chart shows how far the run moved it.
            eval_on_start=evaluate_every,
            save_strategy="steps", save_steps=t.save_steps, save_total_limit=t.save_total_limit,
            seed=t.seed, data_seed=t.seed,
            include_num_input_tokens_seen="non_padding",  # tokens/s counts real tokens, not padding
            label_names=["labels"],
            report_to="none", disable_tqdm=True,
            dataloader_pin_memory=device.startswith("cuda"), dataloader_num_workers=0,
            # gloo on the CPU (accelerate would pick MPI where torch has it), nccl on CUDA (accelerate's default).
            ddp_backend=("gloo" if device == "cpu" else None) if distributed else None,
            ddp_timeout=DDP_TIMEOUT_SECONDS,
            # LoRA/freeze leave most parameters without gradients: DDP must not wait for them. Every trainable one
            # gets a gradient each step, so the (costly) unused-parameter search stays off.
            ddp_find_unused_parameters=False if distributed else None,
        )
    except ValueError as exc:
        text = str(exc)
        if "scheduler" in text.lower() or "SchedulerType" in text:
            raise TuneError(f"`train.scheduler` is {t.scheduler!r}, which transformers does not know",
                            "train.scheduler", "Use linear, cosine, constant, constant_with_warmup or "
                            "cosine_with_restarts") from None
        raise
    if device.startswith("cuda"):
        from core.training.gpu import one_device_per_process

        one_device_per_process(args)  # never nn.DataParallel over every visible GPU
    return args


def accuracy(eval_pred) -> dict:
    """Accuracy, macro-F1 and the confusion matrix of a classification evaluation (see core.training.metrics)."""
    from core.training.metrics import classification_metrics

    logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
    return classification_metrics(logits, eval_pred.label_ids)


__all__ = ["training_arguments", "resolve_precision", "log_device", "accuracy", "OPTIMIZERS"]
