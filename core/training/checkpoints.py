"""Checkpoints that survive the worst moment: written whole or not at all, and a full disk said in words.

transformers 5.x's `Trainer._save_checkpoint` writes straight into `checkpoints/checkpoint-N` (weights, then optimizer,
scheduler, RNG state, and trainer_state.json last), with no temporary folder and rename. A process killed in between
(kill -9, the OOM killer, a power cut of the job) leaves a folder that looks like a checkpoint but is not one. Here the
Trainer writes into `checkpoints/.partial/` instead, and only a finished checkpoint is renamed into place (a rename is
atomic within one file system); old ones are rotated out only after that. What a kill leaves is `.partial/`, which
nothing reads and the next save clears.

Imported only inside the runner (it pulls in transformers); never imports the UI.
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
from pathlib import Path

from transformers import Trainer

from core import rundir

log = logging.getLogger(__name__)

# Errors a full disk (or an exhausted quota) raises. torch.save reports it as a RuntimeError from its zip writer
# ("PytorchStreamWriter failed writing file", "unexpected pos"), safetensors as "StorageFull"/"os error 28".
_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_DISK_FULL_TEXT = ("no space left on device", "storagefull", "os error 28", "disk quota exceeded")
_TORCH_WRITE_FAILED = ("pytorchstreamwriter failed writing", "unexpected pos", "file write failed")
LOW_SPACE_BYTES = 64 * 2**20
"""Below this much free space, a failed write of the torch zip writer is taken for a full disk."""


class DiskFull(Exception):
    """Writing `folder` failed because its disk (or the user's quota) is full."""

    def __init__(self, folder: Path, what: str, free_bytes: int | None, cause: BaseException):
        self.folder, self.what, self.free_bytes, self.cause = Path(folder), what, free_bytes, cause
        super().__init__(f"no space left writing {what} to {folder}: {cause}")


def free_bytes(folder: str | Path) -> int | None:
    """Free space for this user on the disk holding `folder` (its nearest existing parent); None if unknown."""
    path = Path(folder)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def is_disk_full(exc: BaseException, folder: str | Path | None = None) -> bool:
    """True when `exc` (or an exception it was raised from) means the disk filled up."""
    for current in exception_chain(exc):
        if isinstance(current, OSError) and current.errno in _DISK_FULL_ERRNOS:
            return True
        text = str(current).lower()
        if any(t in text for t in _DISK_FULL_TEXT):
            return True
        if folder is not None and any(t in text for t in _TORCH_WRITE_FAILED):
            free = free_bytes(folder)
            if free is not None and free < LOW_SPACE_BYTES:
                return True
    return False


def exception_chain(exc: BaseException | None):
    """`exc` and the exceptions it was raised from or during, innermost last."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


class AtomicCheckpointTrainer(Trainer):
    """The Trainer, saving each checkpoint into a staging folder and renaming it into place once complete."""

    _staging: str | None = None

    def _get_output_dir(self, trial) -> str:
        # During a save, `_save_checkpoint` asks this where to write `checkpoint-N` and where to rotate: point both
        # at the staging folder. (No public hook sits between "checkpoint written" and "rename it".)
        if self._staging is not None:
            return self._staging
        return super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        if self.args.world_size > 1:
            # Under torchrun every process writes its own files (rng_state_<rank>.pth) into the same folder, and
            # only the main one the rest: renaming would need a barrier between them. Keep the Trainer's way there;
            # a torn folder is still passed over on resume (rundir.checkpoint_problem).
            return super()._save_checkpoint(model, trial)
        root = Path(super()._get_output_dir(trial))
        name = f"{rundir.CHECKPOINT_PREFIX}{self.state.global_step}"
        staging = root / rundir.PARTIAL_CHECKPOINT
        shutil.rmtree(staging, ignore_errors=True)  # what a killed process left
        staging.mkdir(parents=True, exist_ok=True)
        self._staging = str(staging)
        try:
            super()._save_checkpoint(model, trial)
        except BaseException as exc:
            self._staging = None
            # Judged before cleaning up: removing the partial files frees the space that ran out.
            full = isinstance(exc, Exception) and is_disk_full(exc, root)
            free = free_bytes(root)
            shutil.rmtree(staging, ignore_errors=True)  # never leave half a checkpoint behind
            if full:
                raise DiskFull(root / name, "a checkpoint", free, exc) from exc
            raise
        finally:
            self._staging = None
        target = root / name
        if target.exists():  # the same step saved twice (a resumed run): swap, never leave the step missing
            old = staging / f"{name}.replaced"
            os.replace(target, old)
            os.replace(staging / name, target)
        else:
            os.replace(staging / name, target)
        shutil.rmtree(staging, ignore_errors=True)
        if self.args.should_save:
            from transformers.trainer_utils import rotate_checkpoints

            rotate_checkpoints(output_dir=str(root), save_total_limit=self.args.save_total_limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=True)


def save_final(trainer, tokenizer, run_dir: Path, labels: list[str] | None) -> Path:
    """Write the trained model (an adapter for LoRA/QLoRA, full weights otherwise), its tokenizer and a classifier's
    labels to run_dir/final/, whole or not at all; a full disk raises DiskFull. Returns the final/ folder."""
    final = run_dir / rundir.FINAL
    # Written beside final/ and renamed into place: a kill or a full disk never leaves half a final/.
    tmp = run_dir / ".final-tmp"
    old = run_dir / ".final-old"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    try:
        trainer.save_model(str(tmp))  # adapter for LoRA/QLoRA, full weights (safetensors) otherwise
        tokenizer.save_pretrained(str(tmp))
        if labels is not None:
            rundir.write_labels(tmp, labels)
    except Exception as exc:
        full, free = is_disk_full(exc, run_dir), free_bytes(run_dir)  # before the cleanup frees space
        shutil.rmtree(tmp, ignore_errors=True)
        if full:
            raise DiskFull(final, "the final model", free, exc) from exc
        raise
    rundir.apply_umask(tmp)  # safetensors writes 0600 whatever the umask: others on the box may load it
    if final.exists():  # a resumed run replaces the previous final/: swap, then drop the old one
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final

__all__ = ["AtomicCheckpointTrainer", "save_final", "DiskFull", "is_disk_full", "free_bytes",
           "exception_chain"]
