"""Made-up GPU read-outs for tests: ScriptedSampler plays given snapshots in turn (what takes a sampler, such as the
app and `tunetui gpus`, takes it in place of core.resources.gpus.SystemSampler); fake_snapshot makes one for any set
of GPUs."""
from __future__ import annotations

import itertools
import threading
from typing import Sequence

from core.resources.gpus import GpuProcess, GpuSample, Snapshot
from core.resources.host import HostSample

FAKE_HOST = HostSample(cpu_pct=12.0, cpu_count=16, ram_total_gib=64.0, ram_used_gib=12.0, ram_available_gib=52.0,
                       process_rss_gib=0.4)
NO_GPU_STATUS = "no NVIDIA GPU found (NVML: driver library not found)"


class ScriptedSampler:
    """Returns the given snapshots in turn, starting over after the last."""

    def __init__(self, snapshots: Sequence[Snapshot]) -> None:
        if not snapshots:
            raise ValueError("ScriptedSampler needs at least one snapshot")
        self.snapshots = tuple(snapshots)
        self._cycle = itertools.cycle(self.snapshots)
        self._lock = threading.Lock()
        self.calls = 0

    def sample(self) -> Snapshot:
        with self._lock:
            self.calls += 1
            return next(self._cycle)


def fake_snapshot(gpus_gib: Sequence[float] = (), used_gib: Sequence[float] = (), *, name: str = "NVIDIA Fake GPU",
                  processes: bool = True, utilization: float | Sequence[float] = 0.0,
                  host: HostSample | None = None, visible: tuple[int, ...] | None = None,
                  time: float = 0.0) -> Snapshot:
    """A made-up snapshot: one GPU per entry of `gpus_gib` (total GiB), `used_gib` already taken on each (by a
    fake process `python other_job.py` when `processes`). No entries: the no-driver state."""
    gpus = []
    for i, total in enumerate(gpus_gib):
        used = float(used_gib[i]) if i < len(used_gib) else 0.0
        util = utilization if isinstance(utilization, (int, float)) else utilization[i]
        procs = (GpuProcess(pid=4242 + i, user="someone", memory_gib=used, command="python other_job.py"),) \
            if processes and used > 0 else ()
        gpus.append(GpuSample(
            index=i, name=name, memory_total_gib=float(total), memory_used_gib=used,
            memory_free_gib=float(total) - used, utilization_pct=float(util), temperature_c=40.0,
            power_w=60.0, power_limit_w=300.0, processes=procs, uuid=f"GPU-fake-{i:04d}"))
    return Snapshot(gpus=tuple(gpus), host=host or FAKE_HOST, gpu_status="ok" if gpus else NO_GPU_STATUS,
                    time=time, visible=visible)
