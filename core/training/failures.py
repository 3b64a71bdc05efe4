"""Why a run failed, in words: out of GPU memory (and how much it held), a broken torch.distributed group, a full
disk. The runner turns these into RunFailed events. torch and the libraries are imported inside functions. Never
imports textual or tui.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from core import rundir
from core.config import RunConfig

log = logging.getLogger(__name__)


def collective_failure(exc: BaseException) -> bool:
    """A torch.distributed collective broke (core.training.distributed.is_collective_failure)."""
    from core.training.distributed import is_collective_failure

    return is_collective_failure(exc)


def is_oom(exc: BaseException) -> bool:
    """Out of GPU memory: what the runner reports as kind="out_of_memory" (core.training.gpu.is_cuda_oom)."""
    from core.training.gpu import is_cuda_oom

    return is_cuda_oom(exc)


def memory_at_failure(memory) -> tuple[float | None, float | None]:
    """(peak allocated, reserved) GiB when an out-of-memory error struck; (None, None) where CUDA cannot say."""
    try:
        import torch

        from core.training import gpu

        peak = gpu.cuda_peak_gib(memory)
        reserved = torch.cuda.memory_reserved() / gpu.GIB if peak is not None else None
        return peak, reserved
    except Exception:  # noqa: BLE001 - the failure report must not fail
        return None, None


def oom_message(config: RunConfig, peak_gib: float | None = None, exc: BaseException | None = None) -> str:
    """What to try after an out-of-memory error (core.resources.preflight.oom_advice); "" when that fails."""
    try:
        from core.resources.preflight import oom_advice
    except ImportError:
        return ("Out of GPU memory. Try a smaller train.batch_size (raise train.grad_accum to keep the effective "
                "batch), train.gradient_checkpointing: true, a shorter data.max_length, or method.kind: qlora.")
    try:
        from core.training.gpu import tried_to_allocate_gib

        tried = tried_to_allocate_gib(exc) if exc is not None else None
        return oom_advice(config, measured_gib=peak_gib, tried_gib=tried)
    except Exception:  # advice is best effort
        return ""


def release_paged_buffers() -> None:
    """bitsandbytes keeps paged optimizer buffers in a process-wide list: empty it when a run ends (see gpu.py)."""
    try:
        from core.training.gpu import free_paged_buffers

        count, gib = free_paged_buffers()
    except Exception:  # noqa: BLE001 - cleanup is best effort
        return
    if count:
        log.info("Dropped %d paged optimizer buffers (%.2f GiB) from bitsandbytes' page manager; bitsandbytes "
                 "cannot free their unified memory before this process exits (a later run in this app shares the "
                 "GPU with it; restart the app, or use train.optim: adamw8bit, to avoid that)", count, gib)


def disk_full_message(exc: Exception, run_dir: Path, step: int | None) -> str:
    """What was being written where, how much space is left, what was kept, and how to go on."""
    from core.training.checkpoints import DiskFull, exception_chain, free_bytes
    from core.units import size

    if isinstance(exc, DiskFull):
        what, folder, free = exc.what, exc.folder, exc.free_bytes
    else:  # outside a save (config.yaml, the datasets cache ...): the file's own folder when the error names it
        named = next((e.filename for e in exception_chain(exc) if isinstance(e, OSError) and e.filename), None)
        folder = Path(os.fsdecode(named)).parent if named else run_dir
        what, free = "files", free_bytes(folder)
    latest = rundir.latest_checkpoint(run_dir)
    kept = (f"The newest complete checkpoint, {latest.name}, is intact" if latest is not None
            else "No checkpoint had been written yet")
    # A save that failed removed what it had written (core.training.checkpoints; the runner's final save).
    kept += "; nothing half-written was kept. " if isinstance(exc, DiskFull) else ". "
    again = (f"then continue with `tunetui train --resume {run_dir}`" if latest is not None
             else f"then start it again with `tunetui train {run_dir / rundir.CONFIG_FILE}`")
    return (f"The disk is full: writing {what} to {folder} failed ({size(free, none='unknown')} free there"
            f"{f', at step {step}' if step else ''}). {kept}Free some space on that disk (the checkpoints/ "
            f"folders of runs you will not resume can go), or keep fewer checkpoints "
            f"(--set train.save_total_limit=1), {again}.")


def peer_failure_message(exc: BaseException, rank: int) -> str:
    """A collective that broke because another process of the group failed, seen from this rank."""
    return (f"Another process of the group failed, which broke torch.distributed here (rank "
            f"{rank}: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}). "
            "torchrun's output names the rank that failed first.")


__all__ = ["collective_failure", "is_oom", "memory_at_failure", "oom_message", "release_paged_buffers",
           "disk_full_message", "peer_failure_message"]
