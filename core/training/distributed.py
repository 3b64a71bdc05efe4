"""This process's place in a torchrun group: the process group, rank-0-first sections, and control shared by all ranks.

With one process (no torchrun) every method is a no-op, so the runner calls them unconditionally. The Trainer's own
DDP support does the training; this module only adds what a run needs around it: one run folder for all ranks,
caches filled by rank 0 before the others read them, and pause/stop decided together at the end of each step.

torch is imported inside methods; imported only by the runner; never imports the UI.
"""
from __future__ import annotations

import contextlib
import logging
import os
from datetime import timedelta

log = logging.getLogger(__name__)

DDP_TIMEOUT_SECONDS = 1800
"""How long a rank waits in a collective before giving up (TrainingArguments.ddp_timeout, and the process group made
early here). A rank that dies is noticed by torchrun's agent within a second, which ends the group: this only bounds
a rank that hangs alive. It must cover rank 0 tokenizing a large dataset while the others wait to read its cache."""


class Group:
    """RANK / LOCAL_RANK / WORLD_SIZE as torchrun sets them, and the collectives a run needs."""

    def __init__(self, env=None) -> None:
        env = os.environ if env is None else env
        self.rank = int(env.get("RANK", "0") or 0)
        self.local_rank = int(env.get("LOCAL_RANK", "0") or 0)
        self.world_size = int(env.get("WORLD_SIZE", "1") or 1)
        self.device = None
        self._made_group = False

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def init(self, device: str, timeout_seconds: int = DDP_TIMEOUT_SECONDS) -> None:
        """Join the process group now (before data and model load), as the Trainer would later: rank 0's choice of
        run folder reaches the others through it. accelerate (under the Trainer) finds the group already made and
        uses it. gloo on the CPU, nccl on CUDA, the backends torch pairs with each device."""
        if not self.active:
            return
        import torch
        import torch.distributed as dist

        cuda = device.startswith("cuda")
        if cuda:
            torch.cuda.set_device(self.local_rank)
            self.device = torch.device("cuda", self.local_rank)
        else:
            self.device = torch.device("cpu")
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if cuda else "gloo", timeout=timedelta(seconds=timeout_seconds))
            self._made_group = True

    def broadcast(self, value):
        """Rank 0's `value` on every rank (any picklable object)."""
        if not self.active:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()

    @contextlib.contextmanager
    def main_first(self):
        """Rank 0 runs the body first (filling the model and tokenization caches), then the others (reading them):
        the pattern of the Trainer's `main_process_first`, needed here before the Trainer exists. The barrier is
        passed whatever the body did, so a rank-0 failure or stop never leaves the others waiting."""
        if self.active and not self.is_main:
            self.barrier()
        try:
            yield
        finally:
            if self.active and self.is_main:
                self.barrier()

    def any(self, *flags: bool) -> tuple[bool, ...]:
        """Each flag OR-ed over all ranks (one small all_reduce): every rank gets the same answer."""
        if not self.active:
            return tuple(bool(f) for f in flags)
        import torch
        import torch.distributed as dist

        tensor = torch.tensor([1 if f else 0 for f in flags], dtype=torch.int32, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tuple(bool(v) for v in tensor.tolist())

    def gather(self, value: float) -> list[float]:
        """Every rank's `value`, by rank, on every rank (one small all_gather; each rank must call it)."""
        if not self.active:
            return [float(value)]
        import torch
        import torch.distributed as dist

        mine = torch.tensor([float(value)], dtype=torch.float32, device=self.device)
        everyone = [torch.zeros_like(mine) for _ in range(self.world_size)]
        dist.all_gather(everyone, mine)
        return [float(t.item()) for t in everyone]

    def close(self) -> None:
        """Leave the group (torch warns at exit about a group never destroyed)."""
        if not self.active:
            return
        try:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
        except Exception:  # noqa: BLE001 - a broken group (a peer died) has nothing left to close
            pass


STRATEGIES = ("auto", "ddp", "fsdp")
"""`train.distributed`: how the processes of a group share the work. ddp: each GPU holds a whole replica and the
gradients are averaged. fsdp: weights, gradients and optimizer state sharded across the GPUs (each block gathered
whole only while it computes). auto: DDP when the run fits one GPU, FSDP when it does not."""


def choose_strategy(requested: str, world_size: int, device: str, fits_one_gpu: bool | None = None) -> str | None:
    """The strategy a run uses: None for one process, else "ddp" or "fsdp".

    `fits_one_gpu` is the memory estimate's answer for a whole replica on one GPU (None: unknown, taken as fits).
    FSDP is refused on the CPU: accelerate (under the Trainer) shards only across CUDA devices and would train
    plain DDP instead, which is not what the config says.
    """
    from core.errors import TuneError

    if requested not in STRATEGIES:
        raise TuneError(f"`train.distributed` is {requested!r}", "train.distributed", "Use auto, ddp or fsdp")
    if world_size <= 1:
        return None
    cuda = device.startswith("cuda")
    if requested == "fsdp" and not cuda:
        raise TuneError("train.distributed: fsdp shards the model across CUDA GPUs, and this run trains on the CPU",
                        "train.distributed", "Use train.distributed: ddp (or auto) for processes on the CPU")
    if requested == "auto":
        return "fsdp" if cuda and fits_one_gpu is False else "ddp"
    return requested


def fsdp_arguments(model, gradient_checkpointing: bool) -> dict:
    """TrainingArguments keywords for FSDP full-shard (FSDP2 through accelerate): each transformer block is one
    shard unit, full weights are gathered for saving (final/ loads like any model or adapter), and activation
    checkpointing is FSDP's own (the Trainer's variant would gather every block's weights once more in backward,
    so training_arguments leaves it off)."""
    from core.training.anatomy import find_blocks

    blocks = sorted(set(getattr(model, "_no_split_modules", None) or ()))
    if not blocks:
        blocks = [type(find_blocks(model)[1][0]).__name__]
    return {
        "fsdp": True,
        "fsdp_config": {"version": 2, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
                        "transformer_layer_cls_to_wrap": blocks, "reshard_after_forward": True,
                        "state_dict_type": "FULL_STATE_DICT", "activation_checkpointing": gradient_checkpointing},
    }


def is_collective_failure(exc: BaseException) -> bool:
    """True when `exc` says a collective broke (a peer process died or hung): not this rank's own fault."""
    try:
        import torch.distributed as dist

        kinds = tuple(k for k in (getattr(dist, "DistError", None),) if k is not None)
    except Exception:  # noqa: BLE001
        kinds = ()
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if kinds and isinstance(exc, kinds):
            return True
        text = str(exc).lower()
        if any(t in text for t in ("connection closed by peer", "connection reset by peer", "gloo", "nccl",
                                   "broken pipe", "socket timeout")):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


__all__ = ["Group", "DDP_TIMEOUT_SECONDS", "STRATEGIES", "choose_strategy", "fsdp_arguments", "is_collective_failure"]
