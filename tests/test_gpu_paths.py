"""The first GPU run must be right: what a run decides from CUDA facts, checked here with those facts faked.

One device per process (no silent DataParallel), native-bf16-only precision and the dtypes that follow, fp32
trainable weights under fp16 AMP, peak memory per step, MIG slices and unreadable GPUs in NVML, the memory check of
a model not downloaded yet, out-of-memory recognition and advice, bitsandbytes' paged buffers, a torch build
without the card's architecture. No GPU needed.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from core import rundir
from core.errors import TuneError
from core.events import LogLine, ModelReady, RunFailed, StepEnded, from_dict, read_events
from core.resources.gpus import SystemSampler
from core.training import gpu
from helpers_gpus import fake_snapshot

GIB = 2 ** 30
T4, V100, A100, H100 = (gpu.Card("Tesla T4", (7, 5)), gpu.Card("Tesla V100-SXM2-16GB", (7, 0)),
                        gpu.Card("NVIDIA A100-SXM4-80GB", (8, 0)), gpu.Card("NVIDIA H100 80GB HBM3", (9, 0)))


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch.cuda that says: `count` GPUs of the given card are here (nothing runs on them)."""
    import peft  # noqa: F401 - imported for real first: bitsandbytes sets up its CUDA backend when torch has CUDA
    import torch
    from transformers import Trainer  # noqa: F401 - likewise (it imports peft and bitsandbytes)

    def install(card=T4, count=1):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: card.name)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: card.capability)
        # What torch says on a T4: bf16 "supported" (emulated).
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True:
                            including_emulation or card.capability >= (8, 0))
    return install


# ---------------------------------------------------------------- 1. one GPU per process

def test_several_visible_gpus_train_on_one_not_data_parallel(fake_cuda, tmp_path, small_config, monkeypatch):
    from transformers import TrainingArguments

    from core.training.trainargs import training_arguments

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    fake_cuda(A100, count=4)
    # What the Trainer would do by itself: count all four and wrap the model in nn.DataParallel.
    assert TrainingArguments(output_dir=str(tmp_path / "plain"), report_to="none").n_gpu == 4
    args = training_arguments(small_config(tmp_path), tmp_path, "cuda", "fp32", has_val=False)
    assert args.n_gpu == 1 and args.device.type == "cuda"
    assert args.train_batch_size == args.per_device_train_batch_size  # not batch × 4 on GPU 0


def test_the_log_names_the_gpu_as_nvidia_smi_numbers_it():
    gpus = fake_snapshot([80, 80, 80, 80]).gpus
    text = gpu.describe_device(0, A100, "2,3", gpus, device_count=2)
    assert text.startswith("Training on GPU 2 (NVIDIA A100-SXM4-80GB, sm80; CUDA device 0 with "
                           "CUDA_VISIBLE_DEVICES=2,3)")
    assert "1 more visible GPU(s) stay idle" in text and "torchrun" in text
    assert gpu.describe_device(1, A100, None, gpus, device_count=1).startswith("Training on GPU 1 (")
    assert gpu.nvidia_smi_index(0, "GPU-fake-0003", gpus) == 3


def test_cuda_device_order_is_pci_bus_order_once_core_is_imported():
    env = {k: v for k, v in os.environ.items() if k != "CUDA_DEVICE_ORDER"}
    env["PYTHONPATH"] = os.getcwd()
    out = subprocess.run([sys.executable, "-c", "import os, core; print(os.environ['CUDA_DEVICE_ORDER'])"],
                         env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "PCI_BUS_ID"


# ---------------------------------------------------------------- 2./3. precision and dtypes

@pytest.mark.parametrize("card, requested, expected", [
    (T4, "auto", "fp16"), (V100, "auto", "fp16"), (A100, "auto", "bf16"), (H100, "auto", "bf16"),
    (None, "auto", "fp32"), (T4, "fp16", "fp16"), (A100, "fp16", "fp16"), (T4, "fp32", "fp32"),
    (H100, "bf16", "bf16"),
])
def test_precision_is_bf16_only_where_the_card_has_it_natively(card, requested, expected):
    device = "cpu" if card is None else "cuda"
    choice = gpu.decide_precision(requested, device, card)
    assert choice.precision == expected
    if card is T4 and requested == "auto":
        assert choice.reason == "Tesla T4 (sm75): no native bf16, training in fp16 mixed precision"


def test_the_precision_line_says_why_a_run_is_on_the_cpu():
    assert gpu.decide_precision("auto", "cpu", None, "auto").reason == "CPU (no CUDA GPU visible): training in fp32"
    assert gpu.decide_precision("auto", "cpu", None, "cpu").reason == "CPU (train.device: cpu): training in fp32"
    assert (gpu.decide_precision("bf16", "cpu", None, "cpu").reason
            == "CPU (train.device: cpu): training in bf16 (train.precision: bf16)")


def test_a_runs_log_and_events_name_its_device_precision_and_why(lora_run):
    """On this machine's device (the CPU here; the GPU's own line is describe_device's, tested above)."""
    outcome, events = lora_run
    config = rundir.load_run_config(outcome.run_dir)
    [ready] = [e for e in events if isinstance(e, ModelReady)]
    expected = gpu.decide_precision(config.train.precision, ready.device, gpu.current_card(ready.device),
                                    config.train.device)
    assert ready.precision == expected.precision
    on_disk = [e.message for e in read_events(outcome.run_dir / rundir.EVENTS_FILE) if isinstance(e, LogLine)]
    assert expected.reason in on_disk
    if ready.device == "cpu":
        assert expected.reason == "CPU (no CUDA GPU visible): training in fp32"
    else:
        assert any(m.startswith("Training on ") for m in on_disk)


def test_bf16_asked_for_on_a_card_without_it_is_a_user_error():
    with pytest.raises(TuneError) as err:
        gpu.decide_precision("bf16", "cuda", V100)
    assert "no native bf16" in err.value.message and "sm70" in err.value.message
    with pytest.raises(TuneError):
        gpu.decide_precision("fp16", "cpu", None)


def test_a_t4_that_emulates_bf16_gets_fp16_from_both_the_runner_and_the_loader(fake_cuda):
    import torch

    from core.training.models import resolve_dtype
    from core.training.trainargs import resolve_precision

    fake_cuda(T4)
    assert torch.cuda.is_bf16_supported()  # the trap: emulation counts by default
    assert resolve_precision("auto", "cuda") == "fp16"
    assert resolve_dtype("auto", "cuda") == torch.float16
    fake_cuda(A100)
    assert resolve_precision("auto", "cuda") == "bf16" and resolve_dtype("auto", "cuda") == torch.bfloat16


@pytest.mark.parametrize("model_dtype, method, precision, weights", [
    # fp16 AMP: Full trains every weight, so they load in fp32; the others keep frozen weights in half.
    ("auto", "full", "fp16", "float32"), ("auto", "freeze", "fp16", "float16"), ("auto", "lora", "fp16", "float16"),
    ("auto", "full", "bf16", "bfloat16"), ("auto", "lora", "bf16", "bfloat16"),
    # model.dtype auto follows train.precision: fp32 on a GPU means fp32 weights.
    ("auto", "full", "fp32", "float32"), ("auto", "lora", "fp32", "float32"),
    ("float16", "lora", "fp32", "float16"), ("bfloat16", "full", "bf16", "bfloat16"),
])
def test_weight_dtype_per_method_and_precision(model_dtype, method, precision, weights):
    assert gpu.weight_dtype_name(model_dtype, method, precision) == weights


@pytest.mark.parametrize("compute, precision, expected", [
    ("auto", "fp16", "float16"), ("auto", "bf16", "bfloat16"), ("auto", "fp32", "float32"),
    ("float16", "bf16", "float16"),
])
def test_qlora_compute_dtype_follows_the_precision(compute, precision, expected):
    assert gpu.compute_dtype_name(compute, precision) == expected


def _unscale(model):
    """What fp16 AMP's GradScaler does to the gradients before every optimizer step."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.zeros_like(p)
    scaler = torch.amp.GradScaler("cpu")
    scaler.scale(torch.ones(()))
    scaler.unscale_(torch.optim.SGD(params, lr=0.1))


@pytest.mark.parametrize("kind", ["lora", "freeze"])
def test_fp16_weights_get_fp32_trainable_params_and_the_grad_scaler_accepts_them(kind, demo_model_dir):
    import torch

    from core.config import MethodSpec, ModelSpec
    from core.methods import apply as apply_method
    from core.training.models import load_model

    method = MethodSpec(kind=kind)
    model = load_model(ModelSpec(name_or_path=str(demo_model_dir)), method, "classification", 3, "cpu",
                       label_names=["a", "b", "c"], dtype=torch.float16)
    model, _ = apply_method(model, method, "classification")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(model.get_parameter(n).dtype == torch.float16 for n in trainable)  # the classification head
    with pytest.raises(ValueError, match="Attempting to unscale FP16 gradients"):
        _unscale(model)

    assert gpu.upcast_trainable(model) > 0
    for name, p in model.named_parameters():
        assert p.dtype == (torch.float32 if p.requires_grad else torch.float16), name
    _unscale(model)


@pytest.mark.parametrize("kind, frozen", [("freeze", "float16"), ("lora", "float16"), ("full", None)])
def test_a_run_in_fp16_loads_half_weights_and_trains_fp32_ones(kind, frozen, tmp_path, small_config):
    """The runner's model preparation under fp16 AMP (precision set by hand: the CPU refuses fp16)."""
    import torch

    from core.control import RunControl
    from core.training.runner import _Session

    config = small_config(tmp_path, method={"kind": kind})
    events = []
    session = _Session(config, events.append, RunControl(), False)
    session.run_dir, session.precision = tmp_path, "fp16"
    _, _, model, _ = session._prepare(config, "cpu")
    dtypes = {(p.requires_grad, p.dtype) for p in model.parameters()}
    assert (True, torch.float32) in dtypes and (True, torch.float16) not in dtypes
    if frozen:
        assert (False, torch.float16) in dtypes and (False, torch.float32) not in dtypes
    [ready] = [e for e in events if isinstance(e, ModelReady)]
    assert ready.dtype == (frozen or "float32") and ready.precision == "fp16"


def test_the_memory_check_counts_a_t4_run_in_fp16_not_bf16(tmp_path):
    from dataclasses import replace

    from core.config import RunConfig, with_overrides
    from core.resources.preflight import preflight

    (tmp_path / "config.json").write_text(json.dumps(LLAMA_1B))
    config = with_overrides(RunConfig(), [f"model.name_or_path={tmp_path}", "method.kind=full",
                                          "data.max_length=512", "train.gradient_checkpointing=true"])

    def card(capability):
        snap = fake_snapshot([80])
        return replace(snap, gpus=(replace(snap.gpus[0], compute_capability=capability),))

    on_t4, on_a100 = preflight(config, card((7, 5))), preflight(config, card((8, 0)))
    pinned = preflight(with_overrides(config, ["train.precision=fp16"]), card((8, 0)))
    # Full on a T4 trains fp32 weights under fp16 AMP: far more than the bf16 weights an A100 holds.
    assert on_t4.estimate_gib == pytest.approx(pinned.estimate_gib) and on_t4.estimate_gib > on_a100.estimate_gib


# ---------------------------------------------------------------- 4. peak memory

def test_step_events_carry_the_step_window_peak_and_reserved_memory(fake_cuda, monkeypatch):
    import torch
    from transformers import TrainerControl, TrainerState

    from core.training.callbacks import EventCallback
    from tui.session import RunState

    fake_cuda(A100)
    peaks = iter([3 * GIB, 5 * GIB, 2 * GIB])
    resets = []
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 1 * GIB)  # the step's end: no activations
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: next(peaks))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 6 * GIB)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: resets.append(1))

    events = []
    callback = EventCallback(events.append)
    args = SimpleNamespace(device=SimpleNamespace(type="cuda"))
    state, control = TrainerState(), TrainerControl()
    state.max_steps = 3
    callback.on_train_begin(args, state, control)
    for step in (1, 2):
        state.global_step = step
        callback.on_step_end(args, state, control)
    steps = [e for e in events if isinstance(e, StepEnded)]
    assert [(e.gpu_memory_gib, e.peak_allocated_gib, e.reserved_gib) for e in steps] == [(1.0, 3.0, 6.0),
                                                                                       (1.0, 5.0, 6.0)]
    assert len(resets) == 3  # at the start and after each read: every window has its own peak
    assert callback.memory.run_peak_gib == 5.0

    folded = RunState()
    for event in steps:
        folded.fold(event)
    assert folded.peak_gpu_memory_gib == 5.0
    # A log written before these fields existed still reads, and still folds its end-of-step figure.
    old = from_dict({"event": "StepEnded", "step": 1, "max_steps": 3, "epoch": 0.1, "gpu_memory_gib": 1.5})
    assert old.peak_allocated_gib is None and old.reserved_gib is None


def test_the_run_view_and_the_cli_put_the_measured_peak_beside_the_estimate(capsys):
    from rich.console import Console

    from core.events import RunFinished
    from tui.commands.progress import Display
    from tui.session import RunState
    from tui.widgets.run_metrics import metrics_table

    def table(state) -> str:
        console = Console(width=40, record=True, color_system=None)
        console.print(metrics_table(state))
        return " ".join(console.export_text().split())

    step = StepEnded(step=1, max_steps=2, epoch=0.5, gpu_memory_gib=1.0, peak_allocated_gib=19.8, reserved_gib=20.5)
    done = RunFinished(run_dir="runs/r", final_dir="runs/r/final", step=2, max_steps=2, peak_gpu_memory_gib=19.8,
                       estimated_peak_gib=21.4, reserved_gib=21.0)
    running = table(RunState.from_events([step]))
    assert "GPU mem 1.0 GiB (peak 19.8)" in running and "reserved 20.5 GiB" in running
    assert "estimate" not in running  # the estimate arrives with RunFinished
    finished = table(RunState.from_events([step, done]))
    assert "GPU mem 1.0 GiB (peak 19.8) reserved 21.0 GiB estimate 21.4 GiB peak" in finished

    Display().on_event(done)
    assert ("GPU memory: estimated 21.4 GiB, measured 19.8 GiB peak allocated (21.0 GiB reserved by torch; "
            "nvidia-smi adds the CUDA context)") in " ".join(capsys.readouterr().err.split())
    # A CPU run measured nothing: no GPU line, no estimate row.
    on_cpu = RunFinished(run_dir="runs/r", final_dir="runs/r/final", step=2, max_steps=2, estimated_peak_gib=0.8)
    Display().on_event(on_cpu)
    assert "GPU memory" not in capsys.readouterr().err
    assert "estimate" not in table(RunState.from_events([on_cpu]))


def test_a_run_peak_counts_the_window_in_progress(fake_cuda, monkeypatch):
    import torch

    fake_cuda(A100)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 7 * GIB)
    tracker = gpu.PeakMemory()
    tracker.run_peak_gib = 5.0
    assert gpu.cuda_peak_gib(tracker) == 7.0  # the OOM struck in a window not read yet
    tracker.run_peak_gib = 9.0
    assert gpu.cuda_peak_gib(tracker) == 9.0


# ---------------------------------------------------------------- 5. MIG and unreadable GPUs

class NVMLLibraryMismatchError(Exception):  # pynvml: not an NVMLError
    pass


def _fake_nvml(monkeypatch, *, init_error=None):
    """GPU 0: an A100 in MIG mode with two slices; GPU 1: its handle cannot be read; GPU 2: a whole A100 whose
    utilization call raises NVMLLibraryMismatchError (not an NVMLError)."""
    import pynvml

    class NVMLError(Exception):
        pass

    class GpuIsLost(NVMLError):
        pass

    migs = {("mig", 0, 0): ("MIG-aaaa0000-1111", 20, 5), ("mig", 0, 2): ("MIG-bbbb0000-2222", 10, 1)}

    def handle(i):
        if i == 1:
            raise GpuIsLost("GPU is lost")
        return ("gpu", i)

    def mig_handle(h, j):
        if ("mig", h[1], j) not in migs:
            raise NVMLError("Not Found")
        return ("mig", h[1], j)

    def memory(h):
        total, used = {("gpu", 0): (40, 6), ("gpu", 2): (80, 10)}.get(h) or migs[h][1:]
        return SimpleNamespace(total=total * GIB, used=used * GIB, free=(total - used) * GIB)

    def uuid(h):
        return migs[h][0] if h in migs else f"GPU-{h[1]:04d}-cccc"

    def utilization(h):
        raise NVMLLibraryMismatchError("Unversioned function called and the pyNVML version does not match the NVML lib version")

    def init():
        if init_error:
            raise init_error

    fake = SimpleNamespace(
        NVMLError=NVMLError, NVMLLibraryMismatchError=NVMLLibraryMismatchError, NVML_DEVICE_MIG_ENABLE=1, NVML_TEMPERATURE_GPU=0,
        nvmlInit=init, nvmlShutdown=lambda: None, nvmlDeviceGetCount=lambda: 3, nvmlDeviceGetHandleByIndex=handle,
        nvmlDeviceGetName=lambda h: "NVIDIA A100-SXM4-40GB MIG 3g.20gb" if h[0] == "mig" else "NVIDIA A100",
        nvmlDeviceGetUUID=uuid, nvmlDeviceGetMemoryInfo=memory, nvmlDeviceGetUtilizationRates=utilization,
        nvmlDeviceGetTemperature=lambda h, kind: 40, nvmlDeviceGetPowerUsage=lambda h: 100_000,
        nvmlDeviceGetEnforcedPowerLimit=lambda h: 400_000,
        nvmlDeviceGetComputeRunningProcesses=lambda h: [], nvmlDeviceGetGraphicsRunningProcesses=lambda h: [],
        nvmlDeviceGetMigMode=lambda h: [1, 1] if h == ("gpu", 0) else [0, 0],
        nvmlDeviceGetMaxMigDeviceCount=lambda h: 7, nvmlDeviceGetMigDeviceHandleByIndex=mig_handle,
        nvmlDeviceGetCudaComputeCapability=lambda h: (8, 0),
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert pynvml is not fake


def test_a_mig_slice_in_cuda_visible_devices_is_the_gpu_a_run_uses(monkeypatch, small_config, tmp_path):
    _fake_nvml(monkeypatch)
    snap = SystemSampler(env={"CUDA_VISIBLE_DEVICES": "MIG-bbbb0000-2222"}).sample()
    assert snap.gpu_status == "ok"
    [slice_] = snap.run_gpus()
    assert slice_.uuid == "MIG-bbbb0000-2222" and slice_.index == 0 and slice_.mig_index == 2
    assert slice_.memory_total_gib == 10.0 and snap.free_gib() == 9.0  # the slice's memory, not the card's
    assert slice_.compute_capability == (8, 0)  # its GPU's

    from core.resources.preflight import preflight

    check = preflight(small_config(tmp_path, train={"device": "auto"}), snap)
    assert check.free_gib == 9.0


def test_tunetui_gpus_lists_the_mig_slices_and_marks_the_one_a_run_uses(monkeypatch, capsys):
    import argparse

    from tui.commands import gpus as command

    _fake_nvml(monkeypatch)
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    sampler = SystemSampler(env={"CUDA_VISIBLE_DEVICES": "MIG-bbbb0000-2222"})
    assert command.run(parser.parse_args([]), sampler=sampler) == 0
    lines = capsys.readouterr().out.splitlines()
    [used] = [line for line in lines if "│ 0:2 │" in line]
    [other] = [line for line in lines if "│ 0:0 │" in line]
    assert "1.0 / 10.0" in used and "9.0" in used and "✓" in used and "✓" not in other
    assert "CUDA_VISIBLE_DEVICES: a run uses MIG slice 0:2" in lines


def test_one_unreadable_gpu_leaves_the_others_found_with_their_indices(monkeypatch):
    _fake_nvml(monkeypatch)
    snap = SystemSampler(env={"CUDA_VISIBLE_DEVICES": "GPU-0002-cccc"}).sample()
    assert [g.index for g in snap.gpus] == [0, 1, 2] and "unreadable" in snap.gpus[1].name
    [a100] = snap.run_gpus()
    assert a100.index == 2 and a100.memory_free_gib == 70.0
    assert a100.utilization_pct is None  # NVMLLibraryMismatchError on one field leaves only it unknown
    # No CUDA_VISIBLE_DEVICES: the MIG GPU stands for its slices.
    every = SystemSampler(env={}).sample().run_gpus()
    assert [(g.index, g.mig_index) for g in every] == [(0, 0), (0, 2), (1, None), (2, None)]


def test_a_library_mismatch_at_init_is_the_no_gpu_state_not_a_crash(monkeypatch):
    _fake_nvml(monkeypatch, init_error=NVMLLibraryMismatchError("Unversioned function called"))
    snap = SystemSampler().sample()
    assert snap.gpus == () and snap.gpu_status.startswith("no NVIDIA GPU found (NVML: the driver library")


# ---------------------------------------------------------------- 6. memory check of a model not downloaded yet

def test_the_memory_check_of_a_hub_model_not_downloaded_waits_for_the_download(tmp_path, small_config, monkeypatch,
                                                                            demo_model_dir):
    from huggingface_hub import constants

    from core.resources import preflight as pf
    from core.training import models
    from core.training.runner import run

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    checked = []
    real = pf.preflight
    monkeypatch.setattr(pf, "preflight", lambda config, snapshot=None: checked.append(config.model.name_or_path)
                        or real(config, fake_snapshot([24])))
    monkeypatch.setattr(models, "resolve_model_dir", lambda spec: demo_model_dir)  # "downloaded"

    def stop_here(*args, **kwargs):
        raise TuneError("stop after the check", None, "")

    monkeypatch.setattr(models, "load_tokenizer", stop_here)
    config = small_config(tmp_path / "runs", model={"name_or_path": "someone/not-downloaded-yet"},
                          train={"device": "auto"})
    events = []
    run(config, events.append)
    logs = [e.message for e in events if isinstance(e, LogLine)]
    deferred = [m for m in logs if m.startswith("Memory preflight deferred")]
    assert deferred and "HF_HUB_OFFLINE" in deferred[0] and "someone/not-downloaded-yet" in deferred[0]
    assert checked == [str(demo_model_dir)]  # once, after the model was resolved, from its folder
    assert any(m.startswith("Memory preflight: Estimated peak") for m in logs)
    assert isinstance(events[-1], RunFailed) and "stop after the check" in events[-1].message


def test_a_hub_model_not_downloaded_gets_its_config_json_first(tmp_path, small_config, monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    from core.resources import preflight as pf

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    fetched = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo, name, **kw: fetched.append((repo, name)))
    config = small_config(tmp_path, model={"name_or_path": "someone/model"}, train={"device": "auto"})
    assert pf.fetch_hub_config(config) is None and fetched == [("someone/model", "config.json")]

    def unreachable(repo, name, **kw):
        raise OSError("no route to host")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)
    assert "could not fetch someone/model's config.json" in pf.fetch_hub_config(config)


# ---------------------------------------------------------------- 7. out of memory

@pytest.mark.parametrize("error, oom", [
    (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 14.75 GiB total capacity; 12.1 GiB "
                  "already allocated)"), True),
    (RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported at some other "
                  "API call, so the stacktrace below might be incorrect."), True),
    (RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"), True),
    (RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"), True),
    (RuntimeError("CUDA driver error: out of memory"), True),
    (RuntimeError("HIP out of memory. Tried to allocate 1.00 GiB"), True),
    (RuntimeError("Error cudaErrorMemoryAllocation at csrc/pythonInterface.cpp"), True),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried to "
                  "allocate 9437184 bytes. Error code 12 (Cannot allocate memory)"), False),
    (RuntimeError("CUDA error: device-side assert triggered"), False),
    (RuntimeError("CUDA error: no kernel image is available for execution on the device"), False),
    (ValueError("out of memory budget for the cache"), False),
])
def test_out_of_memory_errors_are_recognised(error, oom):
    from core.training.failures import is_oom  # what the runner reports as kind="out_of_memory"

    assert is_oom(error) is oom


def test_torch_out_of_memory_and_wrapped_ones_count_too():
    import torch

    assert gpu.is_cuda_oom(torch.OutOfMemoryError("CUDA out of memory."))
    try:
        try:
            raise RuntimeError("CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`")
        except RuntimeError as inner:
            raise KeyError("while loading") from inner
    except KeyError as outer:
        assert gpu.is_cuda_oom(outer)
    assert gpu.tried_to_allocate_gib(RuntimeError("Tried to allocate 512.00 MiB (GPU 0)")) == 0.5


def test_an_oom_while_loading_qlora_is_not_reported_as_broken_bitsandbytes(monkeypatch):
    import bitsandbytes.functional as bnbf
    import torch

    from core.training.models import check_bitsandbytes

    def full(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")

    monkeypatch.setattr(bnbf, "quantize_4bit", full)
    with pytest.raises(torch.OutOfMemoryError):
        check_bitsandbytes("cpu", 4)

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA Setup failed despite GPU being available")

    monkeypatch.setattr(bnbf, "quantize_4bit", broken)
    with pytest.raises(TuneError, match="kernels cannot run"):
        check_bitsandbytes("cpu", 4)


LLAMA_1B = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 2048,
            "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
            "vocab_size": 128256, "tie_word_embeddings": True}


def test_oom_advice_aims_from_the_measured_peak_not_the_estimate(tmp_path):
    from core.config import RunConfig, with_overrides
    from core.resources.preflight import oom_advice
    from core.resources.recommend import FIT_FRACTION

    (tmp_path / "config.json").write_text(json.dumps(LLAMA_1B))
    config = with_overrides(RunConfig(), [f"model.name_or_path={tmp_path}", "method.kind=full",
                                          "data.max_length=512", "train.gradient_checkpointing=true"])
    blind = oom_advice(config, fake_snapshot([24]))
    estimate = float(blind.split("estimated peak was ")[1].split(" GiB")[0])
    measured = 1.6 * estimate
    advice = oom_advice(config, fake_snapshot([24]), measured_gib=measured, tried_gib=0.4 * estimate)
    assert f"had {measured:.1f} GiB allocated when it failed" in advice
    assert f"asked for {0.4 * estimate:.1f} GiB more" in advice and "2.0x too low" in advice
    figures = [float(x.split(" GiB")[0]) for x in advice.split("about ")[1:]]
    # Each suggestion's figure is its estimate scaled by how far off the estimate was: all fit the card's budget.
    assert figures and max(figures) <= FIT_FRACTION * 24
    blind_figures = [float(x.split(" GiB")[0]) for x in blind.split("about ")[1:]]
    assert blind_figures != figures


# ---------------------------------------------------------------- 8. paged optimizer buffers

def test_paged_buffers_are_dropped_from_the_global_page_manager():
    import bitsandbytes.functional as bnbf
    import torch

    manager = bnbf.GlobalPageManager.get_instance()
    manager.paged_tensors.append(torch.zeros(1024, dtype=torch.float32))
    manager.paged_tensors.append(torch.zeros(512, dtype=torch.uint8))
    count, gib = gpu.free_paged_buffers()
    assert count == 2 and gib == pytest.approx((4096 + 512) / GIB)
    assert manager.paged_tensors == [] and bnbf.GlobalPageManager.get_instance() is manager
    assert gpu.free_paged_buffers() == (0, 0.0)


# ---------------------------------------------------------------- 9. a torch build without the card's kernels

@pytest.mark.parametrize("card, arch_list, missing", [
    (gpu.Card("NVIDIA B200", (10, 0)), ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"], True),
    (gpu.Card("Tesla P100", (6, 0)), ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"], True),
    (T4, ["sm_75", "sm_80"], False),
    (gpu.Card("NVIDIA RTX A6000", (8, 6)), ["sm_80", "sm_90"], False),  # sm_80 binaries run on sm_86
    (gpu.Card("NVIDIA B200", (10, 0)), ["sm_80", "sm_90", "compute_90"], False),  # PTX JIT-compiles
    (None, ["sm_80"], False),
])
def test_a_torch_build_without_the_cards_architecture_is_named(card, arch_list, missing):
    message = gpu.missing_arch(card, arch_list)
    assert (message is not None) is missing
    if missing:
        assert f"sm_{card.capability[0]}{card.capability[1]}" in message and card.name in message
        assert "Install a torch wheel" in message


def test_merging_on_a_gpu_that_runs_out_of_memory_says_so_without_a_traceback(tmp_path, small_config, fake_cuda,
                                                                             monkeypatch, demo_model_dir):
    import torch

    from core import config as cfg
    from core import rundir
    from core.training import models
    from core.training.export import merge_run

    run_dir = tmp_path / "run"
    (run_dir / rundir.FINAL).mkdir(parents=True)
    cfg.save(small_config(tmp_path, method={"kind": "qlora"}), run_dir / rundir.CONFIG_FILE)
    (run_dir / rundir.FINAL / "adapter_config.json").write_text("{}")
    fake_cuda(T4)
    monkeypatch.setattr(models, "resolve_model_dir", lambda spec: demo_model_dir)

    def too_big(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 500.00 MiB")

    monkeypatch.setattr(models, "load_model", too_big)
    with pytest.raises(TuneError) as err:
        merge_run(run_dir, tmp_path / "merged", device="cuda")
    assert "Out of GPU memory while merging" in err.value.message and "--device cpu" in err.value.fix


def test_the_log_names_the_gpu_of_a_mig_slice(monkeypatch):
    _fake_nvml(monkeypatch)
    snap = SystemSampler(env={}).sample()
    text = gpu.describe_device(0, A100, "MIG-bbbb0000-2222", snap.gpus, 1, snap.migs)
    assert text.startswith("Training on GPU 0 (") and "stay idle" not in text


def test_a_gpu_runs_log_line_reads_cuda_and_nvml(fake_cuda, monkeypatch, caplog):
    """What the runner logs when training starts on a GPU (trainargs.log_device), from faked CUDA and NVML."""
    from core.training.trainargs import log_device

    _fake_nvml(monkeypatch)
    fake_cuda(A100, count=1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-0002-cccc")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with caplog.at_level("INFO", logger="core.training.trainargs"):
        log_device()
    assert ("Training on GPU 2 (NVIDIA A100-SXM4-80GB, sm80; CUDA device 0 with CUDA_VISIBLE_DEVICES=GPU-0002-cccc)"
            in caplog.messages)


def test_a_cublas_allocation_failure_is_reported_as_out_of_memory_with_the_measured_peak(tmp_path, small_config,
                                                                                      fake_cuda, monkeypatch):
    import torch

    from core.control import RunControl
    from core.training.runner import _Session
    from tui.session import RunState

    fake_cuda(T4)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 13 * GIB)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 14 * GIB)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    events = []
    session = _Session(small_config(tmp_path, train={"device": "auto"}), events.append, RunControl(), False)
    try:
        raise RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`")
    except RuntimeError as exc:
        outcome = session._fail(exc)
    failed = outcome.event
    assert failed.kind == "out_of_memory" and failed.peak_gpu_memory_gib == 13.0 and failed.reserved_gib == 14.0
    assert "had 13.0 GiB allocated when it failed" in failed.message and "x too low" in failed.message
    state = RunState()
    state.fold(failed)
    assert state.peak_gpu_memory_gib == 13.0


def test_a_run_that_ends_empties_bitsandbytes_page_manager(tmp_path, small_config):
    import bitsandbytes.functional as bnbf
    import torch

    from core.control import RunControl
    from core.training.liblogs import forward_logs
    from core.training.runner import _Session

    manager = bnbf.GlobalPageManager.get_instance()
    manager.paged_tensors.append(torch.zeros(256))
    events = []
    session = _Session(small_config(tmp_path), events.append, RunControl(), False)
    session.run_dir = tmp_path
    with forward_logs(events.append):
        session._finish(stopped=False, final_dir=None)
    assert manager.paged_tensors == []
    assert any(isinstance(e, LogLine) and e.message.startswith("Dropped 1 paged optimizer buffers") for e in events)
