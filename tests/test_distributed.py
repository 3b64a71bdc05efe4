"""One run over several processes: `tunetui train --nproc 2` and torchrun itself, on the CPU (gloo).

Each test starts real process groups (torch.distributed.run) on the demo model: a few steps, max_length 64, one
thread per process.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core import rundir
from core.control import request
from core.events import RunFailed, RunFinished, RunPaused, RunResumed, RunStarted, StepEnded, read_events

ROOT = Path(__file__).resolve().parents[1]


def _gloo_available() -> bool:
    try:
        import torch.distributed as dist
    except ImportError:
        return False
    return dist.is_available() and dist.is_gloo_available()


needs_gloo = pytest.mark.skipif(not _gloo_available(), reason="torch.distributed with gloo is not available")

# A short run: 24 training rows, 64 tokens each, no evaluation during training.
# 40 alpaca rows and no validation split: 8 rows per optimizer step divide them evenly, so one process and two
# ranks see the same examples each step (with a ragged last batch DistributedSampler pads by repeating rows).
FAST = ["--set", "data.path=demo:alpaca_en", "--set", "data.val_size=0", "--set", "data.max_length=64",
        "--set", "data.max_samples=40", "--set", "train.eval_steps=0",
        "--set", "train.lr=5e-3", "--set", "train.warmup_ratio=0.0"]


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["OMP_NUM_THREADS"] = "1"
    env.pop("WORLD_SIZE", None)
    env.pop("LOCAL_RANK", None)
    env.pop("RANK", None)
    return env


def _tunetui(*args: str) -> list[str]:
    return [sys.executable, "-m", "tui.cli", *args]


def _run(command: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)


def _only_run(output_dir: Path) -> Path:
    runs = [p for p in output_dir.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def _losses(run_dir: Path) -> list[float]:
    return [e.loss for e in read_events(run_dir / rundir.EVENTS_FILE) if isinstance(e, StepEnded) and e.loss]


def _steps(run_dir: Path) -> int:
    return len([e for e in read_events(run_dir / rundir.EVENTS_FILE) if isinstance(e, StepEnded)])


def _finals(events) -> list:
    return [e for e in events if isinstance(e, (RunFinished, RunFailed))]


def _wait_for(predicate, timeout: float, what: str, process: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if process is not None and process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"the run ended (rc {process.returncode}) before {what}:\n{err[-3000:]}")
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def _first_step_of(output_dir: Path):
    def seen():
        if not output_dir.is_dir():
            return None
        for run in output_dir.iterdir():
            path = run / rundir.EVENTS_FILE
            if path.is_file() and any(isinstance(e, StepEnded) for e in read_events(path)):
                return run
        return None
    return seen


@pytest.mark.slow
@needs_gloo
def test_nproc_2_is_one_run_with_the_loss_of_one_process_at_the_same_global_batch(tmp_path):
    two = tmp_path / "two"
    result = _run(_tunetui("train", "presets/demo.yaml", "--nproc", "2", "--output-dir", str(two), *FAST,
                           "--set", "train.max_steps=4", "--set", "train.batch_size=4"))
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = _only_run(two)
    events = read_events(run_dir / rundir.EVENTS_FILE)
    started = [e for e in events if isinstance(e, RunStarted)]
    assert len(started) == 1 and started[0].world_size == 2 and started[0].global_batch_size == 8
    finals = _finals(events)
    assert len(finals) == 1 and isinstance(finals[0], RunFinished) and not finals[0].stopped
    assert finals[0].step == 4
    # One writer: each step reported once, by rank 0.
    assert [e.step for e in events if isinstance(e, StepEnded)] == [1, 2, 3, 4]
    # The rate is the group's; shared out over the two processes (no GPU: no per-rank peaks).
    rated = [e for e in events if isinstance(e, StepEnded) and e.tokens_per_second]
    assert rated and all(e.tokens_per_second_per_process == pytest.approx(e.tokens_per_second / 2) for e in rated)
    assert all(e.peak_gib_per_rank is None for e in rated)
    assert sorted(p.name for p in run_dir.iterdir() if not p.name.startswith(".")) == sorted(
        ["checkpoints", "config.yaml", "events.jsonl", "final"])

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from core.config import ModelSpec
    from core.training.models import resolve_model_dir

    base = AutoModelForCausalLM.from_pretrained(resolve_model_dir(ModelSpec()), dtype=torch.float32)
    model = PeftModel.from_pretrained(base, run_dir / "final")
    assert any("lora_A" in name for name, _ in model.named_parameters())

    one = tmp_path / "one"
    result = _run(_tunetui("train", "presets/demo.yaml", "--output-dir", str(one), *FAST,
                           "--set", "train.max_steps=4", "--set", "train.batch_size=8"))
    assert result.returncode == 0, result.stderr[-3000:]
    single = _losses(_only_run(one))
    double = _losses(run_dir)
    assert len(single) == len(double) == 4
    # The same seed and the same 8 examples per optimizer step (4 on each rank): the same curve, up to the order
    # in which floating-point sums are taken.
    assert double == pytest.approx(single, rel=1e-2)
    assert len(set(double)) == 4  # the weights moved step to step (4 steps are too few to promise a lower loss)


@pytest.mark.slow
@needs_gloo
def test_torchrun_runs_the_same_command_unchanged(tmp_path):
    out = tmp_path / "runs"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "tui.cli", "train", "presets/demo.yaml", "--output-dir", str(out), *FAST,
               "--set", "train.max_steps=3", "--set", "train.batch_size=4"]
    result = _run(command)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = _only_run(out)  # rank 0 picked the folder and told rank 1: one run, not two
    events = read_events(run_dir / rundir.EVENTS_FILE)
    assert [e.world_size for e in events if isinstance(e, RunStarted)] == [2]
    finals = _finals(events)
    assert len(finals) == 1 and isinstance(finals[0], RunFinished) and finals[0].step == 3
    assert (run_dir / "final" / "adapter_model.safetensors").is_file()


@pytest.mark.slow
@needs_gloo
def test_stop_reaches_every_rank_and_resume_with_nproc_2_completes_the_run(tmp_path):
    out = tmp_path / "runs"
    train = _tunetui("train", "presets/demo.yaml", "--nproc", "2", "--output-dir", str(out), *FAST,
                     "--set", "train.max_steps=60", "--set", "train.batch_size=2", "--set", "train.save_steps=100")
    process = subprocess.Popen(train, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        run_dir = _wait_for(_first_step_of(out), 180, "the first step", process)
        paused = _run(_tunetui("pause", str(run_dir), "--timeout", "120"))
        assert paused.returncode == 0, paused.stderr
        at = _steps(run_dir)
        time.sleep(3)  # paused: no rank takes a step (and none times out waiting)
        assert _steps(run_dir) == at
        resumed = _run(_tunetui("resume", str(run_dir), "--timeout", "120"))
        assert resumed.returncode == 0, resumed.stderr
        _wait_for(lambda: _steps(run_dir) > at, 60, "a step after resuming", process)
        # What `tunetui stop` writes, written here at once: a busy machine can take seconds to start a CLI, and
        # the run must still be going when the stop arrives (the pause and resume above went through the CLI).
        request(run_dir, "stop")
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err[-3000:]
    events = read_events(run_dir / rundir.EVENTS_FILE)
    assert [type(e).__name__ for e in events if isinstance(e, (RunPaused, RunResumed))] == ["RunPaused", "RunResumed"]
    finals = _finals(events)
    assert len(finals) == 1 and isinstance(finals[0], RunFinished) and finals[0].stopped
    stopped_at = finals[0].step
    assert 0 < stopped_at < 60
    checkpoint = rundir.latest_checkpoint(run_dir)
    assert checkpoint is not None and rundir.checkpoint_step(checkpoint) == stopped_at
    # Both ranks saved at the same step: each wrote its RNG state into the one checkpoint.
    assert {p.name for p in checkpoint.glob("rng_state_*.pth")} == {"rng_state_0.pth", "rng_state_1.pth"}
    assert not rundir.is_running(run_dir)

    resumed = _run(_tunetui("train", "--resume", str(run_dir), "--nproc", "2"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    events = read_events(run_dir / rundir.EVENTS_FILE)
    starts = [e for e in events if isinstance(e, RunStarted)]
    assert len(starts) == 2 and starts[1].resumed_from == str(checkpoint) and starts[1].world_size == 2
    last_segment = events[events.index(starts[1]):]
    steps = [e.step for e in last_segment if isinstance(e, StepEnded)]
    assert steps == list(range(stopped_at + 1, 61))
    finals = _finals(last_segment)
    assert len(finals) == 1 and isinstance(finals[0], RunFinished) and not finals[0].stopped
    assert finals[0].step == 60 and (run_dir / "final").is_dir()
    assert _only_run(out) == run_dir


@pytest.mark.slow
@needs_gloo
def test_ctrl_c_on_the_launcher_stops_the_group_with_a_checkpoint(tmp_path):
    out = tmp_path / "runs"
    train = _tunetui("train", "presets/demo.yaml", "--nproc", "2", "--output-dir", str(out), *FAST,
                     "--set", "train.max_steps=200", "--set", "train.batch_size=2", "--set", "train.save_steps=1000")
    process = subprocess.Popen(train, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        run_dir = _wait_for(_first_step_of(out), 180, "the first step", process)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signal.SIGINT, err[-3000:]
    finals = _finals(read_events(run_dir / rundir.EVENTS_FILE))
    assert len(finals) == 1 and isinstance(finals[0], RunFinished) and finals[0].stopped
    checkpoint = rundir.latest_checkpoint(run_dir)
    assert checkpoint is not None and rundir.checkpoint_step(checkpoint) == finals[0].step


@pytest.mark.slow
@needs_gloo
def test_sigterm_to_torchrun_itself_stops_every_rank_at_one_step(tmp_path):
    out = tmp_path / "runs"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "tui.cli", "train", "presets/demo.yaml", "--output-dir", str(out), *FAST,
               "--set", "train.max_steps=200", "--set", "train.batch_size=2", "--set", "train.save_steps=1000"]
    process = subprocess.Popen(command, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        run_dir = _wait_for(_first_step_of(out), 180, "the first step", process)
        # torchrun passes SIGTERM on to each rank, each at its own moment: they agree on one step all the same.
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    finals = _finals(read_events(run_dir / rundir.EVENTS_FILE))
    assert len(finals) == 1 and isinstance(finals[0], RunFinished) and finals[0].stopped, err[-3000:]
    checkpoint = rundir.latest_checkpoint(run_dir)
    assert checkpoint is not None and rundir.checkpoint_step(checkpoint) == finals[0].step
    assert {p.name for p in checkpoint.glob("rng_state_*.pth")} == {"rng_state_0.pth", "rng_state_1.pth"}


@pytest.mark.slow
@needs_gloo
def test_a_killed_rank_ends_the_run_with_run_failed_naming_it(tmp_path):
    psutil = pytest.importorskip("psutil")
    out = tmp_path / "runs"
    train = _tunetui("train", "presets/demo.yaml", "--nproc", "2", "--output-dir", str(out), *FAST,
                     "--set", "train.max_steps=500", "--set", "train.batch_size=2", "--set", "train.save_steps=1000")
    process = subprocess.Popen(train, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        run_dir = _wait_for(_first_step_of(out), 180, "the first step", process)

        def rank_one():
            for child in psutil.Process(process.pid).children(recursive=True):
                try:
                    if child.environ().get("RANK") == "1" and child.environ().get("LOCAL_RANK") == "1":
                        return child
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            return None

        victim = _wait_for(rank_one, 30, "the rank-1 worker", process)
        victim.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        _, err = process.communicate(timeout=60)
        took = time.monotonic() - killed
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1, err[-3000:]
    assert took < 60
    events = read_events(run_dir / rundir.EVENTS_FILE)
    finals = _finals(events)
    assert len(finals) == 1 and isinstance(finals[0], RunFailed), finals
    assert "rank 1" in finals[0].message and "SIGKILL" in finals[0].message
    assert not rundir.is_running(run_dir)
    assert rundir.summarize(run_dir).status == "failed"


@pytest.mark.slow
@needs_gloo
def test_a_bad_data_file_under_nproc_is_a_user_error_and_leaves_no_run_behind(tmp_path):
    out = tmp_path / "runs"
    result = _run(_tunetui("train", "presets/demo.yaml", "--nproc", "2", "--output-dir", str(out), *FAST,
                           "--set", f"data.path={tmp_path / 'missing.json'}"))
    assert result.returncode == 2, result.stderr[-3000:]
    assert "missing.json" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(out.iterdir()) == []


# ---------------------------------------------------------------- the launcher's own decisions (no processes)

def test_gpus_and_nproc_are_checked_before_anything_starts(tmp_path):
    from core.errors import TuneError
    from core.launch import parse_gpus

    assert parse_gpus("0,2,3") == ["0", "2", "3"]
    assert parse_gpus(" 1 , MIG-abc ") == ["1", "MIG-abc"]
    for bad in ("", "0,0", "a,1", "0,,x"):
        with pytest.raises(TuneError, match="--gpus"):
            parse_gpus(bad)
    result = _run(_tunetui("train", "presets/demo.yaml", "--nproc", "2", "--gpus", "0", "--output-dir",
                           str(tmp_path / "runs")), timeout=60)
    assert result.returncode == 2
    assert "--nproc 2 but --gpus names 1 GPU(s)" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_the_launcher_names_the_failed_rank_only_when_rank_0_wrote_no_final_event(tmp_path):
    from core import config as cfg
    from core.events import RunFinished as Finished
    from core.launch import PEER_FAILED_EXIT, Failure, exit_code, first_failure, record_failure

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    started = RunStarted(run_id="run", run_dir=str(run_dir), config=cfg.to_dict(cfg.from_dict({})), world_size=2)
    step = StepEnded(step=3, max_steps=9, epoch=0.1)
    (run_dir / rundir.EVENTS_FILE).write_text(started.to_json() + "\n" + step.to_json() + "\n")
    failures = [Failure(rank=2, pid=30, exitcode=1, timestamp=20.0),
                Failure(rank=1, pid=20, exitcode=-9, timestamp=10.0)]
    assert first_failure(failures).rank == 1
    # CI saw this: rank 1 killed, rank 0 then lost its peer, and torchrun stamped both with the same whole second.
    lost_peer = Failure(rank=0, pid=10, exitcode=PEER_FAILED_EXIT, timestamp=10.0)
    assert first_failure([lost_peer, Failure(rank=1, pid=20, exitcode=-9, timestamp=11.0)]).rank == 1
    assert first_failure([Failure(rank=0, pid=10, exitcode=1, timestamp=10.0),
                          Failure(rank=1, pid=20, exitcode=-9, timestamp=10.0)]).rank == 1
    assert first_failure([lost_peer]).rank == 0  # nothing else failed: it is all there is to say
    event = record_failure(run_dir, 1, failures, nproc=3)
    assert isinstance(event, RunFailed) and event.step == 3
    assert "rank 1 (pid 20) was killed by SIGKILL" in event.message
    assert "It saved no checkpoint" in event.message
    assert exit_code(event, 1, None) == 1
    # Called again (or after rank 0 wrote its own final event): nothing more is written.
    assert record_failure(run_dir, 1, failures, nproc=3) == event
    assert len(_finals(read_events(run_dir / rundir.EVENTS_FILE))) == 1

    finished = Finished(run_dir=str(run_dir), final_dir=None, step=5, max_steps=9, stopped=True)
    with open(run_dir / rundir.EVENTS_FILE, "a", encoding="utf-8") as fh:
        fh.write(started.to_json() + "\n" + finished.to_json() + "\n")
    assert record_failure(run_dir, 0, [], nproc=3) == finished
    assert exit_code(finished, 0, signal.SIGINT) == 128 + signal.SIGINT
    assert exit_code(finished, 0, None) == 0
    assert Failure(rank=0, pid=1, exitcode=4).describe() == "rank 0 (pid 1) exited with code 4"


def test_the_strategy_follows_the_config_and_refuses_fsdp_on_the_cpu():
    from core.errors import TuneError
    from core.training.distributed import choose_strategy

    assert choose_strategy("auto", 1, "cuda:0", fits_one_gpu=False) is None  # one process: nothing to share
    assert choose_strategy("auto", 4, "cuda:0", fits_one_gpu=True) == "ddp"
    assert choose_strategy("auto", 4, "cuda:0", fits_one_gpu=False) == "fsdp"
    assert choose_strategy("auto", 2, "cpu", fits_one_gpu=False) == "ddp"
    assert choose_strategy("ddp", 4, "cuda:0", fits_one_gpu=False) == "ddp"
    assert choose_strategy("fsdp", 4, "cuda:0", fits_one_gpu=True) == "fsdp"
    with pytest.raises(TuneError, match="CUDA GPUs") as info:
        choose_strategy("fsdp", 2, "cpu")
    assert info.value.where == "train.distributed" and "ddp" in info.value.fix


def test_fsdp_shards_by_transformer_block_and_gathers_full_weights_to_save():
    from transformers import LlamaConfig, LlamaForCausalLM

    from core.training.distributed import fsdp_arguments

    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2))
    kw = fsdp_arguments(model, gradient_checkpointing=True)
    assert kw["fsdp"] is True
    assert kw["fsdp_config"]["transformer_layer_cls_to_wrap"] == ["LlamaDecoderLayer"]
    assert kw["fsdp_config"]["activation_checkpointing"] is True
    assert kw["fsdp_config"]["state_dict_type"] == "FULL_STATE_DICT"


def test_fsdp_on_the_cpu_is_refused_before_any_process_starts(tmp_path):
    out = tmp_path / "runs"
    result = _run(_tunetui("train", "presets/demo.yaml", "--nproc", "2", "--output-dir", str(out),
                           "--set", "train.distributed=fsdp", "--set", "train.device=cpu"), timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "fsdp shards the model across CUDA GPUs" in result.stderr and "train.distributed: ddp" in result.stderr
    assert "processes (torch.distributed.run)" not in result.stderr  # nothing was launched
    assert not out.exists() or not any(out.iterdir())


def test_a_sharded_qlora_base_stores_its_4bit_weights_in_the_compute_dtype():
    import torch

    from core import methods
    from core.config import MethodSpec

    spec = MethodSpec(kind="qlora")
    plain = methods.QLORA.quantization_config(spec, torch.bfloat16, None)
    sharded = methods.QLORA.quantization_config(spec, torch.bfloat16, None, sharded=True)
    assert plain.bnb_4bit_quant_storage == torch.uint8
    assert sharded.bnb_4bit_quant_storage == torch.bfloat16 and sharded.bnb_4bit_compute_dtype == torch.bfloat16


@pytest.mark.slow
@needs_gloo
async def test_the_app_launches_nproc_2_and_follows_the_group_to_its_end(tmp_path, monkeypatch):
    """The app on a machine it takes for one with two GPUs (a scripted snapshot): Launch starts `tunetui train
    --nproc 2` (here on the CPU, gloo) and the Run view follows the group's run folder to RunFinished."""
    from dataclasses import replace

    from core import config as cfg
    from helpers_gpus import ScriptedSampler, fake_snapshot
    from helpers_setup import wait_for
    from tui.app import create_app

    for name, value in _env().items():
        monkeypatch.setenv(name, value)
    for name in ("WORLD_SIZE", "LOCAL_RANK", "RANK"):
        monkeypatch.delenv(name, raising=False)
    base = cfg.load(ROOT / "presets" / "demo.yaml")
    draft = replace(base, data=replace(base.data, path="demo:alpaca_en", val_size=0, max_length=64, max_samples=40),
                    train=replace(base.train, max_steps=3, eval_steps=0, batch_size=4, save_steps=50))
    app = create_app(draft, sampler=ScriptedSampler([fake_snapshot((80, 80))]), output_dir=str(tmp_path / "runs"),
                     start_screen="review")
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.snapshot is not None, what="the GPUs")
        assert app.launch()
        assert app.session.plan.arguments() == ["--nproc", "2"]
        await wait_for(pilot, lambda: app.session.state.final, timeout=240, what="the group's final event")
        state = app.session.state
        assert state.status == "finished", (state.error, app.session.log_path.read_text()[-3000:])
        assert state.world_size == 2 and state.step == 3
        assert state.tokens_per_second_per_process is not None
        assert Path(state.run_dir).parent == tmp_path / "runs"
