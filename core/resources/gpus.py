"""GPU read-outs through NVML (module `pynvml`). Imports nothing heavy.

No driver or no GPU is a normal state, reported in `Snapshot.gpu_status`, never an exception. Each NVML field is
read on its own, so one unsupported call (power on some boards, processes in containers) leaves only that field
None. `CUDA_VISIBLE_DEVICES` decides which GPUs a run would use.
"""
from __future__ import annotations

import os
import threading
import time as _time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from core.resources.host import GIB, HostSample, sample_host


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    user: str | None
    memory_gib: float | None
    """GPU memory the process holds (None where the driver does not say, e.g. inside some containers)."""
    command: str | None


@dataclass(frozen=True)
class GpuSample:
    index: int
    """NVML index (PCI bus order, like nvidia-smi)."""
    name: str
    memory_total_gib: float | None
    memory_used_gib: float | None
    memory_free_gib: float | None
    utilization_pct: float | None
    temperature_c: float | None
    power_w: float | None
    power_limit_w: float | None
    processes: tuple[GpuProcess, ...] = ()
    uuid: str | None = None
    """`GPU-…` (`MIG-…` for a MIG slice), for matching UUIDs in CUDA_VISIBLE_DEVICES."""
    mig_index: int | None = None
    """A MIG slice of GPU `index`: its NVML MIG device index (None: a whole GPU)."""
    compute_capability: tuple[int, int] | None = None
    """CUDA compute capability, e.g. (7, 5) for a T4: bf16 is native from (8, 0). None where NVML does not say."""


@dataclass(frozen=True)
class Snapshot:
    gpus: tuple[GpuSample, ...]
    host: HostSample
    gpu_status: str
    """"ok", or a sentence saying why there are no GPUs, e.g. "no NVIDIA GPU found (NVML: driver library not found)"."""
    time: float = 0.0
    """Unix time of the sample."""
    visible: tuple[int, ...] | None = None
    """NVML indices a run would use, in CUDA order (from CUDA_VISIBLE_DEVICES); None: all of them."""
    migs: tuple[GpuSample, ...] = ()
    """MIG slices of the GPUs in MIG mode (`index` is their GPU's, `mig_index` the slice's)."""
    visible_migs: tuple[str, ...] | None = None
    """UUIDs of the MIG slices CUDA_VISIBLE_DEVICES names (None: it names none)."""

    def run_gpus(self) -> tuple[GpuSample, ...]:
        """The GPUs a run started now would use: a GPU in MIG mode stands for its slice(s) (CUDA sees the slices)."""
        if self.visible is None:
            chosen = self.gpus
        else:
            by_index = {g.index: g for g in self.gpus}
            chosen = tuple(by_index[i] for i in self.visible if i in by_index)
        if not self.migs:
            return chosen
        out: list[GpuSample] = []
        for gpu in chosen:
            slices = [m for m in self.migs if m.index == gpu.index]
            named = [m for m in slices if self.visible_migs and m.uuid in self.visible_migs]
            out.extend(named or slices or [gpu])
        return tuple(out)

    def free_gib(self) -> float | None:
        """Free memory on the first GPU a run would use (the one a single-GPU run trains on); None: no GPU."""
        gpus = self.run_gpus()
        return gpus[0].memory_free_gib if gpus else None


def visible_devices(value: str | None, gpus: Sequence[GpuSample],
                    migs: Sequence[GpuSample] = ()) -> tuple[int, ...] | None:
    """NVML indices named by a CUDA_VISIBLE_DEVICES value (None when unset: every GPU is visible).

    Like CUDA, the list ends at the first entry that names no device. Entries are indices or (prefixes of) GPU
    UUIDs, or MIG slice UUIDs (`MIG-…`, in `migs`: they name their GPU's index). Indices are taken as NVML's (PCI)
    order: core sets CUDA_DEVICE_ORDER=PCI_BUS_ID (core/__init__.py), so CUDA numbers GPUs the same way.
    """
    if value is None:
        return None
    out: list[int] = []
    by_index = {g.index for g in gpus}
    for raw in value.split(","):
        entry = raw.strip()
        if not entry:
            break
        index: int | None = None
        if entry.lstrip("-").isdigit():
            index = int(entry) if int(entry) in by_index else None
        elif entry.upper().startswith("GPU-"):
            matches = [g.index for g in gpus if g.uuid and g.uuid.lower().startswith(entry.lower())]
            index = matches[0] if len(matches) == 1 else None
        elif entry.upper().startswith("MIG-"):
            index = _mig_parent(entry, migs)
        if index is None:  # an unknown device: CUDA stops here too
            break
        if index not in out:
            out.append(index)
    return tuple(out)


def _mig_parent(entry: str, migs: Sequence[GpuSample]) -> int | None:
    matches = [m.index for m in migs if m.uuid and m.uuid.lower().startswith(entry.lower())]
    return matches[0] if len(set(matches)) == 1 else None


def visible_migs(value: str | None, migs: Sequence[GpuSample]) -> tuple[str, ...] | None:
    """UUIDs of the MIG slices a CUDA_VISIBLE_DEVICES value names (None: it names none)."""
    if not value or not migs:
        return None
    out = []
    for raw in value.split(","):
        entry = raw.strip()
        if entry.upper().startswith("MIG-"):
            out += [m.uuid for m in migs if m.uuid and m.uuid.lower().startswith(entry.lower())][:1]
    return tuple(out) or None


# ------------------------------------------------------------------ the real sampler

def nvml_errors(nvml: Any) -> tuple[type[BaseException], ...]:
    """Every exception class pynvml raises: NVMLError and its per-code subclasses, and NVMLLibraryMismatchError,
    which is not an NVMLError (an old driver library met by a newer pynvml)."""
    classes = [getattr(nvml, name, None) for name in ("NVMLError", "NVMLLibraryMismatchError")]
    return tuple(c for c in classes if isinstance(c, type)) + (OSError,)


def _nvml_reason(exc: BaseException) -> str:
    name = type(exc).__name__
    if name == "NVMLLibraryMismatchError":
        return "the driver library is older than nvidia-ml-py expects"
    if name.endswith("LibraryNotFound"):
        return "driver library not found"
    if name.endswith("DriverNotLoaded"):
        return "driver not loaded"
    if name.endswith("NoPermission"):
        return "no permission to read the GPUs"
    return str(exc) or name


class SystemSampler:
    """Reads this machine: NVML for GPUs (initialised once, handles reused) and psutil for the host.

    Cheap enough to call every second: the only per-call work is a handful of NVML queries per GPU and a psutil
    lookup per GPU process.
    """

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self._env = env
        self._lock = threading.Lock()
        self._nvml: Any = None
        self._status: str | None = None
        self._handles: list[tuple[int, Any]] = []
        """(NVML index, handle); a GPU whose handle could not be read has handle None."""
        self._mig_handles: list[tuple[int, int, Any]] = []
        """(GPU index, MIG index, handle) of every MIG slice."""
        self._unreadable: dict[int, str] = {}
        self._errors: tuple[type[BaseException], ...] = (OSError,)
        self._static: dict[Any, tuple[str, str | None]] = {}
        self._users: dict[int, tuple[str | None, str | None]] = {}

    def _init(self) -> None:
        if self._status is not None:
            return
        try:
            import pynvml
        except ImportError:
            self._status = "no NVIDIA GPU found (the nvidia-ml-py package is not installed)"
            return
        errors = self._errors = nvml_errors(pynvml)
        try:
            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
        except errors as exc:
            self._status = f"no NVIDIA GPU found (NVML: {_nvml_reason(exc)})"
            return
        self._nvml = pynvml
        # Each GPU on its own: one that cannot be read (fallen off the bus, no permission) stays listed, unreadable,
        # and the others are still found (and keep their NVML indices, which CUDA_VISIBLE_DEVICES refers to).
        for i in range(count):
            try:
                handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            except errors as exc:
                self._unreadable[i] = _nvml_reason(exc)
                handle = None
            self._handles.append((i, handle))
            if handle is not None:
                self._mig_handles += self._find_migs(i, handle)
        self._status = "ok" if self._handles else "no NVIDIA GPU found (NVML sees 0 devices)"

    def _find_migs(self, index: int, handle: Any) -> list[tuple[int, int, Any]]:
        """The MIG slices of a GPU in MIG mode (CUDA sees those, not the GPU); [] otherwise."""
        nv = self._nvml
        mode = self._field(getattr(nv, "nvmlDeviceGetMigMode", None), handle)  # [current, pending]
        if not mode or mode[0] != getattr(nv, "NVML_DEVICE_MIG_ENABLE", 1):
            return []
        out = []
        for j in range(self._field(getattr(nv, "nvmlDeviceGetMaxMigDeviceCount", None), handle) or 0):
            # NotFound for an empty slot
            mig = self._field(getattr(nv, "nvmlDeviceGetMigDeviceHandleByIndex", None), handle, j)
            if mig is not None:
                out.append((index, j, mig))
        return out

    def sample(self) -> Snapshot:
        with self._lock:
            self._init()
            gpus = tuple(self._gpu(i, h) for i, h in self._handles) if self._nvml else ()
            migs = tuple(self._mig(i, j, h) for i, j, h in self._mig_handles) if self._nvml else ()
        env = self._env if self._env is not None else os.environ
        value = env.get("CUDA_VISIBLE_DEVICES")
        return Snapshot(gpus=gpus, host=sample_host(), gpu_status=self._status or "ok", time=_time.time(),
                        visible=visible_devices(value, gpus, migs), migs=migs, visible_migs=visible_migs(value, migs))

    def close(self) -> None:
        with self._lock:
            if self._nvml is not None:
                try:
                    self._nvml.nvmlShutdown()
                except self._errors:
                    pass
            self._nvml, self._status, self._handles, self._mig_handles = None, None, [], []
            self._unreadable, self._static = {}, {}

    def _field(self, call: Callable[..., Any] | None, *args: Any) -> Any:
        if call is None:  # an older pynvml without this call
            return None
        try:
            return call(*args)
        except self._errors:
            return None

    def _mig(self, index: int, mig_index: int, handle: Any) -> GpuSample:
        nv = self._nvml
        key = ("mig", index, mig_index)
        if key not in self._static:
            name = _text(self._field(nv.nvmlDeviceGetName, handle))
            parent = self._static.get(index, (f"GPU {index}", None))[0]
            uuid = _text(self._field(nv.nvmlDeviceGetUUID, handle))
            self._static[key] = (name or f"{parent} MIG {mig_index}", uuid)
        name, uuid = self._static[key]
        mem = self._field(nv.nvmlDeviceGetMemoryInfo, handle)
        return GpuSample(index=index, mig_index=mig_index, name=name, uuid=uuid,
                         memory_total_gib=_gib(getattr(mem, "total", None)),
                         memory_used_gib=_gib(getattr(mem, "used", None)),
                         memory_free_gib=_gib(getattr(mem, "free", None)),
                         utilization_pct=None, temperature_c=None, power_w=None, power_limit_w=None,
                         compute_capability=self._static.get(("cc", index)))

    def _gpu(self, index: int, handle: Any) -> GpuSample:
        nv = self._nvml
        if handle is None:
            return GpuSample(index=index, name=f"GPU {index} (unreadable: {self._unreadable.get(index, '?')})",
                             memory_total_gib=None, memory_used_gib=None, memory_free_gib=None,
                             utilization_pct=None, temperature_c=None, power_w=None, power_limit_w=None)
        if index not in self._static:
            name = self._field(nv.nvmlDeviceGetName, handle)
            uuid = self._field(nv.nvmlDeviceGetUUID, handle)
            self._static[index] = (_text(name) or f"GPU {index}", _text(uuid))
            capability = self._field(getattr(nv, "nvmlDeviceGetCudaComputeCapability", None), handle)
            self._static[("cc", index)] = tuple(capability) if capability else None
        name, uuid = self._static[index]
        mem = self._field(nv.nvmlDeviceGetMemoryInfo, handle)
        util = self._field(nv.nvmlDeviceGetUtilizationRates, handle)
        temp = self._field(nv.nvmlDeviceGetTemperature, handle, nv.NVML_TEMPERATURE_GPU)
        power = self._field(nv.nvmlDeviceGetPowerUsage, handle)
        limit = self._field(nv.nvmlDeviceGetEnforcedPowerLimit, handle)
        return GpuSample(
            index=index, name=name, uuid=uuid,
            memory_total_gib=_gib(getattr(mem, "total", None)),
            memory_used_gib=_gib(getattr(mem, "used", None)),
            memory_free_gib=_gib(getattr(mem, "free", None)),
            utilization_pct=_float(getattr(util, "gpu", None)),
            temperature_c=_float(temp),
            power_w=None if power is None else power / 1000.0,
            power_limit_w=None if limit is None else limit / 1000.0,
            processes=self._processes(handle), compute_capability=self._static.get(("cc", index)),
        )

    def _processes(self, handle: Any) -> tuple[GpuProcess, ...]:
        nv = self._nvml
        seen: dict[int, GpuProcess] = {}
        for call in (nv.nvmlDeviceGetComputeRunningProcesses, nv.nvmlDeviceGetGraphicsRunningProcesses):
            for proc in self._field(call, handle) or ():
                pid = int(getattr(proc, "pid", 0) or 0)
                if pid in seen:
                    continue
                used = getattr(proc, "usedGpuMemory", None)
                user, command = self._owner(pid)
                seen[pid] = GpuProcess(pid=pid, user=user, memory_gib=_gib(used), command=command)
        return tuple(sorted(seen.values(), key=lambda p: -(p.memory_gib or 0.0)))

    def _owner(self, pid: int) -> tuple[str | None, str | None]:
        """User and command line of a pid; None where it lives in another PID namespace or is not ours to read."""
        if pid in self._users:
            return self._users[pid]
        import psutil

        try:
            proc = psutil.Process(pid)
            user = proc.username()
            command = " ".join(proc.cmdline()) or proc.name()
        except (psutil.Error, OSError):
            user, command = None, None
        if len(self._users) > 512:  # pids are reused; keep the cache from growing for ever
            self._users.clear()
        self._users[pid] = (user, command)
        return user, command


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _gib(value: Any) -> float | None:
    # NVML reports NVML_VALUE_NOT_AVAILABLE (2**64 - 1) for memory it cannot attribute.
    if value is None or value >= 2 ** 63:
        return None
    return value / GIB


__all__ = ["GpuProcess", "GpuSample", "Snapshot", "SystemSampler", "visible_devices", "visible_migs", "nvml_errors"]
