"""GPU/host monitor: no driver is a normal state, one failing NVML field stays unknown, CUDA_VISIBLE_DEVICES."""
import os
from types import SimpleNamespace

import pynvml
import pytest

from core.resources.gpus import Snapshot, SystemSampler, visible_devices
from core.resources.host import HostSample
from helpers_gpus import NO_GPU_STATUS, ScriptedSampler, fake_snapshot

GIB = 1024 ** 3


def test_no_nvml_library_is_a_normal_no_gpu_state_and_the_host_still_reads(monkeypatch):
    def no_library():
        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    monkeypatch.setattr(pynvml, "nvmlInit", no_library)
    sampler = SystemSampler()
    first, second = sampler.sample(), sampler.sample()
    assert first.gpus == () and first.run_gpus() == () and first.free_gib() is None
    assert first.gpu_status == "no NVIDIA GPU found (NVML: driver library not found)" == NO_GPU_STATUS
    host = second.host
    assert host.cpu_count >= 1 and host.ram_total_gib > 0.1
    assert 0 < host.ram_available_gib <= host.ram_total_gib
    assert 0 < host.process_rss_gib < host.ram_total_gib
    assert second.host.cpu_pct is not None  # the second reading has an interval to measure over
    sampler.close()


class FakeNvml:
    """Two GPUs; GPU 1 has no power sensor and a process the driver will not size."""

    def __init__(self):
        self.init_calls = 0

    def install(self, monkeypatch):
        mem = {0: (80, 30), 1: (24, 4)}

        def handle(i):
            return i

        def power(h):
            if h == 1:
                raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
            return 250_000

        def procs(h):
            if h == 0:
                return [SimpleNamespace(pid=os.getpid(), usedGpuMemory=2 * GIB)]
            return [SimpleNamespace(pid=999_999_999, usedGpuMemory=None)]

        def init():
            self.init_calls += 1

        calls = {
            "nvmlInit": init, "nvmlShutdown": lambda: None, "nvmlDeviceGetCount": lambda: 2,
            "nvmlDeviceGetHandleByIndex": handle,
            "nvmlDeviceGetName": lambda h: ["NVIDIA H100 80GB HBM3", "NVIDIA GeForce RTX 4090"][h],
            "nvmlDeviceGetUUID": lambda h: ["GPU-aaaa1111", "GPU-bbbb2222"][h],
            "nvmlDeviceGetMemoryInfo": lambda h: SimpleNamespace(total=mem[h][0] * GIB, used=mem[h][1] * GIB,
                                                                 free=(mem[h][0] - mem[h][1]) * GIB),
            "nvmlDeviceGetUtilizationRates": lambda h: SimpleNamespace(gpu=[97, 0][h], memory=10),
            "nvmlDeviceGetTemperature": lambda h, sensor: [71, 35][h],
            "nvmlDeviceGetPowerUsage": power, "nvmlDeviceGetEnforcedPowerLimit": lambda h: 700_000,
            "nvmlDeviceGetComputeRunningProcesses": procs, "nvmlDeviceGetGraphicsRunningProcesses": lambda h: [],
        }
        for name, fn in calls.items():
            monkeypatch.setattr(pynvml, name, fn)


def test_nvml_fields_become_gib_watts_and_processes_and_a_failing_field_is_none(monkeypatch):
    nvml = FakeNvml()
    nvml.install(monkeypatch)
    sampler = SystemSampler(env={})
    snap = sampler.sample()
    sampler.sample()
    assert nvml.init_calls == 1  # initialised once, handles reused
    h100, rtx = snap.gpus
    assert snap.gpu_status == "ok" and snap.visible is None
    assert (h100.name, h100.memory_total_gib, h100.memory_used_gib, h100.memory_free_gib) == \
        ("NVIDIA H100 80GB HBM3", 80.0, 30.0, 50.0)
    assert (h100.utilization_pct, h100.temperature_c, h100.power_w, h100.power_limit_w) == (97, 71, 250.0, 700.0)
    assert rtx.power_w is None and rtx.power_limit_w == 700.0 and rtx.temperature_c == 35
    mine = h100.processes[0]
    assert mine.pid == os.getpid() and mine.memory_gib == 2.0 and "python" in (mine.command or "")
    gone = rtx.processes[0]
    assert (gone.memory_gib, gone.user, gone.command) == (None, None, None)
    assert snap.free_gib() == 50.0


@pytest.mark.parametrize("value, expected", [
    (None, None), ("", ()), ("1", (1,)), ("1,0", (1, 0)), ("0,7,1", (0,)), ("GPU-bbbb", (1,)),
    ("GPU-aaaa1111,GPU-bbbb2222", (0, 1)), ("MIG-1234", ()), ("-1", ()),
])
def test_cuda_visible_devices_names_the_gpus_a_run_uses(value, expected):
    gpus = fake_snapshot([80, 24]).gpus
    gpus = tuple(g.__class__(**{**g.__dict__, "uuid": u}) for g, u in zip(gpus, ("GPU-aaaa1111", "GPU-bbbb2222")))
    assert visible_devices(value, gpus) == expected


def test_cuda_visible_devices_picks_the_free_gpu(monkeypatch):
    FakeNvml().install(monkeypatch)
    snap = SystemSampler(env={"CUDA_VISIBLE_DEVICES": "1"}).sample()
    assert [g.index for g in snap.run_gpus()] == [1] and len(snap.gpus) == 2
    assert snap.free_gib() == 20.0


def test_scripted_sampler_and_fake_snapshots_cover_none_one_and_two_gpus():
    none, one, two = fake_snapshot(), fake_snapshot([24], [6]), fake_snapshot([80, 48], [0, 40], visible=(1,))
    sampler = ScriptedSampler([none, one, two])
    assert [sampler.sample() for _ in range(4)] == [none, one, two, none]
    assert none.gpu_status.startswith("no NVIDIA GPU found") and none.free_gib() is None
    assert one.free_gib() == 18.0 and one.gpus[0].processes[0].memory_gib == 6.0
    assert two.free_gib() == 8.0 and two.gpus[0].processes == ()
    assert isinstance(two, Snapshot) and isinstance(two.host, HostSample)


def test_gpus_command_shows_gpus_processes_and_host(capsys):
    import argparse
    import json

    from tui.commands import gpus as command

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    two = ScriptedSampler([fake_snapshot([80, 24], [30, 0], name="NVIDIA A100", visible=(1,), utilization=[88, 0])])
    assert command.run(parser.parse_args(["--json"]), sampler=two) == 0
    data = json.loads(capsys.readouterr().out)
    assert [g["memory_free_gib"] for g in data["gpus"]] == [50.0, 24.0] and data["run_gpus"] == [1]
    assert data["gpus"][0]["processes"][0]["command"] == "python other_job.py" and data["host"]["cpu_count"] == 16

    assert command.run(parser.parse_args([]), sampler=two) == 0
    text = capsys.readouterr().out
    for words in ("NVIDIA A100", "30.0 / 80.0", "88%", "other_job.py", "a run uses GPU 1", "RAM 12.0 / 64.0 GiB"):
        assert words in text
    assert command.run(parser.parse_args([]), sampler=ScriptedSampler([fake_snapshot()])) == 0
    assert "no NVIDIA GPU found" in capsys.readouterr().out
