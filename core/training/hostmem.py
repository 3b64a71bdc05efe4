"""Host memory during CPU training: glibc's allocator keeps freed tensor memory for the next step.

A training step frees and allocates the same large blocks (activations, logits, gradients) step after step. By
default glibc hands blocks above its mmap threshold back to the kernel as they are freed and trims the free top of
its heap, so every step page-faults the same memory in again. On demo:tiny-llama (LoRA, batch 8 x 128 tokens) that
was about 16 000 minor page faults per step, with a sixth of the training thread's CPU time spent in the kernel;
with both thresholds raised for the run the faults go away and the peak stays the same (bench/bench_throughput.py
prints the step rate with and without).

PyTorch's CPU performance advice is another allocator (jemalloc or tcmalloc through LD_PRELOAD, set before the
process starts); raising the thresholds of the allocator the process already has gets the same effect from inside
the run, and is undone when the run ends (the kept memory goes back with `malloc_trim`). GPU runs keep tensors in
CUDA's caching allocator and are left alone. Other C libraries (macOS, musl) have no `mallopt`: nothing changes.
"""
from __future__ import annotations

import ctypes
import logging
import sys
from collections.abc import Callable

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc's <malloc.h>
M_MMAP_THRESHOLD = -3
KEEP_BYTES = 1 << 30  # blocks up to 1 GiB come from the heap, and up to 1 GiB of free heap top is kept
DEFAULT_BYTES = 128 * 1024  # glibc's starting value of both


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 - both exist in glibc only
    except (OSError, AttributeError):
        return None
    return libc


def keep_freed_memory(device: str) -> Callable[[], None]:
    """From now on, keep freed memory in the process (CPU runs on glibc only); returns the call that undoes it."""
    libc = _glibc() if device == "cpu" else None
    if libc is None or not (libc.mallopt(M_MMAP_THRESHOLD, KEEP_BYTES) and libc.mallopt(M_TRIM_THRESHOLD, KEEP_BYTES)):
        return lambda: None
    log.debug("glibc malloc: mmap and trim thresholds raised to %d bytes for the run", KEEP_BYTES)

    def restore() -> None:
        libc.mallopt(M_MMAP_THRESHOLD, DEFAULT_BYTES)
        libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_BYTES)
        libc.malloc_trim(0)  # what the run kept goes back to the system

    return restore


__all__ = ["keep_freed_memory"]
