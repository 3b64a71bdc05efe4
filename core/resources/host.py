"""Host read-outs through psutil: CPU %, RAM and this process's resident memory. Imports nothing heavy."""
from __future__ import annotations

import os
from dataclasses import dataclass

import psutil

GIB = 1024 ** 3


@dataclass(frozen=True)
class HostSample:
    cpu_pct: float | None
    """Whole-machine CPU use since the previous sample (None on the very first one: there is no interval yet)."""
    cpu_count: int
    ram_total_gib: float
    ram_used_gib: float
    """Total minus available: what a new process cannot have."""
    ram_available_gib: float
    process_rss_gib: float
    """Resident memory of this process (the app or the training run)."""


_primed = False
_process: psutil.Process | None = None


def sample_host() -> HostSample:
    """One cheap reading (no sleeping: CPU % is measured against the previous call)."""
    global _primed, _process
    # interval=None compares with the previous call; the first call has nothing to compare with.
    cpu = psutil.cpu_percent(interval=None)
    cpu_pct = cpu if _primed else None
    _primed = True
    mem = psutil.virtual_memory()
    if _process is None or _process.pid != os.getpid():  # a forked child must not report its parent
        _process = psutil.Process()
    try:
        rss = _process.memory_info().rss
    except psutil.Error:
        rss = 0
    return HostSample(
        cpu_pct=cpu_pct,
        cpu_count=psutil.cpu_count() or 1,
        ram_total_gib=mem.total / GIB,
        ram_used_gib=(mem.total - mem.available) / GIB,
        ram_available_gib=mem.available / GIB,
        process_rss_gib=rss / GIB,
    )


__all__ = ["HostSample", "sample_host", "GIB"]
