"""The facts of the GPU a run trains on, and the decisions that follow from them: one device per process, the
precision and weight dtypes, fp32 trainable parameters under fp16 AMP, peak memory per step, what counts as an
out-of-memory error, a torch build without the card's architecture, and bitsandbytes' paged buffers.

torch is imported inside functions (the UI imports core modules before torch is loaded); never imports the UI.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Any

from core.errors import TuneError

log = logging.getLogger(__name__)

GIB = 2 ** 30
NATIVE_BF16_CAPABILITY = (8, 0)
"""Ampere (sm80) and newer have bf16 tensor cores. Older cards (T4 sm75, V100 sm70) only emulate bf16 —
torch.cuda.is_bf16_supported() is True there by default — which is slow and loses fp16's speed for nothing."""


# ---------------------------------------------------------------- the card

@dataclass(frozen=True)
class Card:
    name: str
    capability: tuple[int, int]

    @property
    def sm(self) -> str:
        return f"sm{self.capability[0]}{self.capability[1]}"

    @property
    def native_bf16(self) -> bool:
        return tuple(self.capability) >= NATIVE_BF16_CAPABILITY

    def __str__(self) -> str:
        return f"{self.name} ({self.sm})"


def current_card(device: str = "cuda") -> Card | None:
    """The card this process trains on (LOCAL_RANK's under torchrun, else torch's current device, as the model is
    placed: core.training.models._placement); None on the CPU."""
    if not device.startswith("cuda"):
        return None
    import torch

    if device == "cuda":
        index = int(os.environ.get("LOCAL_RANK", torch.cuda.current_device()))
    else:
        index = torch.device(device).index or 0
    return Card(str(torch.cuda.get_device_name(index)), tuple(torch.cuda.get_device_capability(index)))


# ---------------------------------------------------------------- precision and dtypes

@dataclass(frozen=True)
class Precision:
    precision: str
    """bf16 | fp16 | fp32: what the Trainer's mixed precision (AMP) runs in."""
    reason: str
    """One sentence for the log, e.g. "Tesla T4 (sm75): no native bf16, training in fp16 mixed precision"."""


def decide_precision(requested: str, device: str, card: Card | None, asked_device: str | None = None) -> Precision:
    """train.precision (auto | bf16 | fp16 | fp32) on this device → the Trainer's precision and why.

    `auto` is bf16 only where the card has it natively (sm80+), fp16 on older GPUs, fp32 on the CPU.
    `asked_device` (train.device) lets the reason say why a run is on the CPU.
    """
    cuda = device.startswith("cuda")
    if not cuda:
        if requested == "fp16":
            raise TuneError("train.precision is fp16, which needs a CUDA GPU", "train.precision",
                            "Use train.precision: auto (fp32 on CPU) or bf16")
        where = {"auto": "CPU (no CUDA GPU visible)", "cpu": "CPU (train.device: cpu)"}.get(asked_device, "CPU")
        if requested == "auto":
            return Precision("fp32", f"{where}: training in fp32")
        return Precision(requested, f"{where}: training in {requested} (train.precision: {requested})")
    where = str(card) if card else "this GPU"
    if requested == "auto":
        if card is not None and card.native_bf16:
            return Precision("bf16", f"{where}: native bf16, training in bf16 mixed precision")
        return Precision("fp16", f"{where}: no native bf16, training in fp16 mixed precision")
    if requested == "bf16" and card is not None and not card.native_bf16:
        raise TuneError(f"train.precision is bf16 but {where} has no native bf16 (it needs compute capability "
                        "8.0 or newer: A100, L4, RTX 30xx and later)", "train.precision",
                        "Use train.precision: auto or fp16 (bf16 would only be emulated, slowly)")
    return Precision(requested, f"{where}: training in {requested} (train.precision: {requested})")


def weight_dtype_name(model_dtype: str, method_kind: str, precision: str) -> str:
    """The dtype the base weights load in (float32 | bfloat16 | float16), from model.dtype and the precision.

    `auto` follows the precision: bf16 → bfloat16; fp32 → float32; fp16 → float16 for LoRA/QLoRA/Freeze (frozen
    weights in half, the trainable ones upcast by `upcast_trainable`), but float32 for Full: every weight trains,
    and fp16 AMP's gradient scaler refuses fp16 gradients ("Attempting to unscale FP16 gradients"), so the weights
    must be fp32 anyway — loading them in fp32 avoids an fp16 round trip of a bf16 checkpoint.
    """
    if model_dtype != "auto":
        return model_dtype
    if precision == "bf16":
        return "bfloat16"
    if precision == "fp16":
        from core import methods

        return "float32" if methods.get(method_kind).trains_every_weight else "float16"
    return "float32"


def compute_dtype_name(compute_dtype: str, precision: str) -> str:
    """QLoRA's compute dtype (method.quant.compute_dtype): `auto` is the precision's half type, float32 for fp32."""
    if compute_dtype != "auto":
        return compute_dtype
    return {"bf16": "bfloat16", "fp16": "float16"}.get(precision, "float32")


def torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def upcast_trainable(model) -> int:
    """Make every trainable floating-point parameter fp32 (frozen ones keep their dtype); returns how many changed.

    Needed under fp16 AMP: its GradScaler refuses fp16 gradients, and a fp16 master weight loses small updates.
    Covers what peft leaves in half precision: a LoRA classification run's `modules_to_save` (the head is a copy of
    the fp16 original), freeze's trained blocks, trainable norms. peft's `cast_mixed_precision_params` does the same
    for trainable parameters but also casts every frozen one to a half dtype, which would touch quantized
    (4-/8-bit) and deliberately-fp32 weights: hence only its trainable half here.
    """
    import torch

    changed = 0
    for param in model.parameters():
        if param.requires_grad and param.is_floating_point() and param.dtype != torch.float32:
            param.data = param.data.float()
            changed += 1
    return changed


# ---------------------------------------------------------------- one device per process

def is_distributed(env=None) -> bool:
    env = os.environ if env is None else env
    return "LOCAL_RANK" in env or int(env.get("WORLD_SIZE", "1") or 1) > 1


def one_device_per_process(args) -> None:
    """Keep the Trainer from wrapping the model in nn.DataParallel.

    Without torchrun/accelerate, TrainingArguments counts every visible GPU (`n_gpu = torch.cuda.device_count()`)
    and the Trainer then wraps in DataParallel: the model was loaded on one GPU, and per-device batches are
    multiplied by n_gpu on GPU 0. The Trainer itself sets `args._n_gpu = 1` for a model-parallel model; the same
    here, after the devices are set up (that cached property would otherwise overwrite it). Distributed launches
    already have n_gpu == 1 (one process per GPU).
    """
    _ = args.device  # runs TrainingArguments._setup_devices, which sets _n_gpu
    if args.n_gpu > 1:
        args._n_gpu = 1


def nvidia_smi_index(logical: int, cuda_visible: str | None, gpus, migs=()) -> int | None:
    """The index nvidia-smi shows for CUDA device `logical`, given CUDA_VISIBLE_DEVICES and the NVML GPUs (and MIG
    slices: a MIG-… entry is its GPU's index).

    core sets CUDA_DEVICE_ORDER=PCI_BUS_ID (core/__init__.py), so CUDA's order is NVML's.
    """
    from core.resources.gpus import visible_devices

    visible = visible_devices(cuda_visible, gpus, migs)
    if visible is None:
        return logical if any(g.index == logical for g in gpus) or not gpus else None
    return visible[logical] if logical < len(visible) else None


def describe_device(logical: int, card: Card | None, cuda_visible: str | None, gpus, device_count: int,
                    migs=()) -> str:
    """"Training on GPU 2 (NVIDIA A100-SXM4-80GB, sm80; CUDA device 0 with CUDA_VISIBLE_DEVICES=2,3) ...". """
    physical = nvidia_smi_index(logical, cuda_visible, gpus, migs)
    name = f"GPU {physical}" if physical is not None else f"CUDA device {logical}"
    details = [f"{card.name}, {card.sm}"] if card else []
    if cuda_visible is not None:
        details.append(f"CUDA device {logical} with CUDA_VISIBLE_DEVICES={cuda_visible}")
    text = f"Training on {name}" + (f" ({'; '.join(details)})" if details else "")
    if device_count > 1 and not is_distributed():
        text += (f". {device_count - 1} more visible GPU(s) stay idle: one process trains on one GPU; launch with "
                 "torchrun --nproc-per-node N to train on several")
    return text


# ---------------------------------------------------------------- memory

class PeakMemory:
    """Peak memory per window (between reads) and for the whole run, from torch's allocator statistics.

    memory_allocated() at a step's end misses the activations, freed by then; max_memory_allocated() since the
    last reset holds them. Each read resets the peak, so every window shows its own; `run_peak_gib` keeps the max.
    """

    def __init__(self) -> None:
        self.run_peak_gib: float | None = None
        self.reserved_gib: float | None = None

    def start(self) -> None:
        import torch

        torch.cuda.reset_peak_memory_stats()

    def read(self) -> tuple[float, float]:
        """(peak allocated, reserved) in GiB for the window since the last read; starts the next window."""
        import torch

        peak = torch.cuda.max_memory_allocated() / GIB
        reserved = torch.cuda.memory_reserved() / GIB
        torch.cuda.reset_peak_memory_stats()
        self.run_peak_gib = max(self.run_peak_gib or 0.0, peak)
        self.reserved_gib = max(self.reserved_gib or 0.0, reserved)
        return peak, reserved

    def peak_now_gib(self) -> float:
        """The run's peak including the window in progress (e.g. at an out-of-memory error), without a reset."""
        import torch

        return max(self.run_peak_gib or 0.0, torch.cuda.max_memory_allocated() / GIB)


def cuda_peak_gib(tracker: PeakMemory | None) -> float | None:
    """The run's peak allocated GiB, or None without an initialised CUDA."""
    import torch

    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return tracker.run_peak_gib if tracker else None
    if tracker is None:
        return torch.cuda.max_memory_allocated() / GIB
    return tracker.peak_now_gib()


# ---------------------------------------------------------------- out of memory

# CUDA allocation failures that do not come as torch.OutOfMemoryError: cuBLAS/cuDNN/cuSOLVER/cuSPARSE handles
# that could not allocate their workspace, a raw cudaMalloc in an extension (bitsandbytes), ROCm's HIP.
_OOM_PATTERNS = (
    re.compile(r"\b(CUDA|HIP)\b.*out of memory", re.I | re.S),
    re.compile(r"out of memory.*\b(CUDA|HIP)\b", re.S),
    re.compile(r"CU(BLAS|DNN|SOLVER|SPARSE|FFT)_STATUS_ALLOC_FAILED"),
    re.compile(r"cudaErrorMemoryAllocation"),
)


def is_cuda_oom(exc: BaseException | None) -> bool:
    """True for a GPU out-of-memory error, also when wrapped (raise ... from, or raised while handling one)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        try:
            import torch

            if isinstance(exc, torch.OutOfMemoryError):
                return True
        except ImportError:
            pass
        # By text, whatever the class: extensions raise RuntimeError, accelerate and bitsandbytes their own.
        text = str(exc)
        if any(p.search(text) for p in _OOM_PATTERNS) and "DefaultCPUAllocator" not in text:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


_TRIED = re.compile(r"Tried to allocate ([\d.]+) (GiB|MiB|KiB|B)\b")
_UNIT = {"GiB": 1.0, "MiB": 1 / 1024, "KiB": 1 / 1024 ** 2, "B": 1 / GIB}


def tried_to_allocate_gib(exc: BaseException) -> float | None:
    """The allocation that failed, from torch's message ("Tried to allocate 2.00 GiB"); None when it says not."""
    found = _TRIED.search(str(exc))
    return float(found.group(1)) * _UNIT[found.group(2)] if found else None


# ---------------------------------------------------------------- a torch without the card's kernels

def missing_arch(card: Card | None, arch_list: list[str] | None = None) -> str | None:
    """A message when this torch build has no kernels for the card (the "no kernel image is available" error)."""
    if card is None:
        return None
    if arch_list is None:
        import torch

        arch_list = list(torch.cuda.get_arch_list())
    if not arch_list:
        return None
    major, minor = card.capability
    built = {a for a in arch_list if a.startswith("sm_")}
    # sm_XY runs on the same major at minor ≥ Y; PTX (compute_XY) JIT-compiles for any newer card.
    native = any(int(a[3:-1] or 0) == major and int(a[-1]) <= minor for a in built if a[3:].isdigit())
    ptx = any(a.startswith("compute_") and a[8:].isdigit() and (int(a[8:-1]), int(a[-1])) <= (major, minor)
              for a in arch_list)
    if native or ptx:
        return None
    import torch

    cuda = getattr(torch.version, "cuda", None) or "?"
    return (f"This torch build ({torch.__version__}, CUDA {cuda}) has no kernels for {card}: it was built for "
            f"{', '.join(sorted(arch_list))}. Install a torch wheel that supports sm_{major}{minor} (see "
            "https://pytorch.org/get-started/locally/ — older cards need an older CUDA build, the newest cards a "
            "newer one).")


# ---------------------------------------------------------------- bitsandbytes' paged optimizer buffers

def free_paged_buffers() -> tuple[int, float]:
    """Empty bitsandbytes' process-wide list of paged optimizer buffers; returns (how many, GiB).

    Paged optimizers (paged_adamw_8bit) allocate each state buffer with cudaMallocManaged (`F.get_paged`) and
    append it to `GlobalPageManager.get_instance().paged_tensors`, a list bitsandbytes never empties: in the app's
    long-lived process every run added its whole optimizer state to it, and `prefetch_all` would page all of them
    back onto the GPU. Emptying it at a run's end is the clean-up bitsandbytes offers. It has no call that frees
    the managed memory itself (its library exports no free for `cget_managed_ptr`), so that stays mapped until the
    process exits: unified memory, which the driver can page out to host RAM, but still held. Freeing it by hand
    (cudaFree through ctypes) was left out: untestable without a GPU, and a use-after-free if anything still holds
    a view.
    """
    import sys

    functional = sys.modules.get("bitsandbytes.functional")
    if functional is None:  # never imported: no paged optimizer ran in this process
        return 0, 0.0
    manager = getattr(functional, "GlobalPageManager", None)
    instance = getattr(manager, "_instance", None) if manager is not None else None
    tensors = getattr(instance, "paged_tensors", None)
    if not tensors:
        return 0, 0.0
    count = len(tensors)
    gib = sum(t.numel() * t.element_size() for t in tensors) / GIB
    tensors.clear()
    return count, gib


__all__ = ["Card", "current_card", "Precision", "decide_precision", "weight_dtype_name", "compute_dtype_name",
           "torch_dtype", "upcast_trainable", "is_distributed", "one_device_per_process", "nvidia_smi_index",
           "describe_device", "PeakMemory", "cuda_peak_gib", "is_cuda_oom", "tried_to_allocate_gib", "missing_arch",
           "free_paged_buffers"]
