"""CPU runs keep freed tensor memory in the process between steps, instead of page-faulting it back each step."""
from __future__ import annotations

import resource

import pytest

from core.training.hostmem import _glibc, keep_freed_memory

pytestmark = pytest.mark.skipif(_glibc() is None, reason="mallopt is glibc's")


def _faults_of_steps(steps: int = 10) -> int:
    """Minor page faults of `steps` "training steps" that each allocate, write and free 32 MiB, as activations do."""
    import torch

    torch.ones(1)  # import and first-use faults happen before counting
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    for _ in range(steps):
        block = torch.ones(8 * 1024 * 1024)  # 32 MiB of float32
        del block
    return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before


def test_a_cpu_run_reuses_freed_memory_and_gives_it_back_at_the_end():
    import psutil

    untuned = _faults_of_steps()
    restore = keep_freed_memory("cpu")
    try:
        _faults_of_steps(10)  # the first steps fault their memory in, once
        kept = _faults_of_steps()
        held = psutil.Process().memory_info().rss
    finally:
        restore()
    assert untuned > 10 * 8192 * 0.45  # each step faulted its 32 MiB back in (8 192 pages of 4 KiB, or fewer
    # faults where the kernel maps several pages at once)
    assert kept < untuned / 20, (kept, untuned)
    assert psutil.Process().memory_info().rss < held - 16 * 2**20  # what the run kept goes back at its end


def test_gpu_runs_leave_the_allocator_alone():
    restore = keep_freed_memory("cuda:0")
    try:
        assert _faults_of_steps() > 10 * 8192 * 0.45
    finally:
        restore()
