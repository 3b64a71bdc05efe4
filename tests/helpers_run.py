"""Shared by the run-view tests: scripted engine events, fake run folders, building the app, waiting on it."""
from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Callable, Iterable

from core import config as cfg
from helpers_setup import screen_text, wait_for  # noqa: F401 - shared by all UI tests
from core.events import (
    CheckpointSaved, DataReady, EvalEnded, Event, LogLine, ModelReady, PhaseChanged, RunFailed, RunFinished,
    RunStarted, StepEnded,
)

T0 = 1_700_000_000.0
"""A fixed clock for scripted events, so snapshots never depend on the time of day."""
DEMO_CONFIG = cfg.RunConfig(data=cfg.DataSpec(path="demo:alpaca_en"), train=cfg.TrainSpec(max_steps=30))


def isolate(monkeypatch, tmp_path: Path) -> Callable[[], None]:
    """No real HF cache, no user config, UTC clock: what the app shows depends only on the test.

    Returns the function that puts the process's time zone back (call it when the test ends)."""
    (tmp_path / "hf").mkdir(exist_ok=True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TUNETUI_CONFIG_DIR", str(tmp_path / "config"))
    old_tz = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()

    def restore() -> None:
        if old_tz is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old_tz
        time.tzset()

    return restore


def loss_at(step: int) -> float:
    return 2.0 + 6.0 * math.exp(-step / 8) + 0.15 * math.sin(step)


def start_events(run_dir: str = "runs/demo", run_id: str = "20231114-221320-tiny-llama-lora",
                 config: cfg.RunConfig = DEMO_CONFIG, resumed_from: str | None = None) -> list[Event]:
    return [
        RunStarted(run_id=run_id, run_dir=run_dir, config=cfg.to_dict(config), resumed_from=resumed_from, time=T0),
        PhaseChanged(phase="loading_model", message="demo:tiny-llama", time=T0),
        LogLine(level="INFO", message="loaded demo:tiny-llama (LlamaForCausalLM, 4 layers)", logger="core", time=T0),
        ModelReady(trainable_params=1_212_416, total_params=6_361_216,
                   trainable_modules=["lora: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj"],
                   method="lora", device="cpu", dtype="float32", time=T0),
        PhaseChanged(phase="preparing_data", done=640, total=999, message="tokenizing", time=T0),
    ]


def data_ready_events() -> list[Event]:
    return [
        PhaseChanged(phase="preparing_data", done=999, total=999, time=T0),
        DataReady(format="alpaca", train_examples=949, val_examples=50,
                  token_stats={"min": 21, "median": 96, "p95": 310, "max": 730, "truncated": 3, "dropped": 0},
                  time=T0),
        LogLine(level="INFO", message="data: alpaca, 949 train / 50 val examples", logger="core", time=T0),
        PhaseChanged(phase="training", time=T0),
    ]


def step_events(first: int, last: int, max_steps: int = 30, *, eval_every: int = 10,
                loss: Callable[[int], float] = loss_at) -> list[Event]:
    out: list[Event] = []
    for step in range(first, last + 1):
        out.append(StepEnded(step=step, max_steps=max_steps, epoch=step * 4 / 949, loss=loss(step),
                             learning_rate=2e-4 * (1 - step / max_steps / 2), grad_norm=1.5 / math.sqrt(step),
                             tokens_per_second=5210.0, step_seconds=0.42, elapsed_seconds=step * 0.42 + 3,
                             eta_seconds=(max_steps - step) * 0.42, time=T0 + step))
        out.append(LogLine(level="INFO", message=f"step {step}: loss {loss(step):.4f}", logger="core",
                           time=T0 + step))
        if eval_every and step % eval_every == 0:
            out.append(EvalEnded(step=step, eval_loss=loss(step) + 0.25, time=T0 + step))
    return out


def scripted_run(steps: int = 20, max_steps: int = 30, **kw) -> list[Event]:
    """A run as the engine reports it, up to `steps` steps (not finished)."""
    return start_events(**kw) + data_ready_events() + step_events(1, steps, max_steps)


def write_run(output_dir: Path, run_id: str, events: Iterable[Event], config: cfg.RunConfig = DEMO_CONFIG,
              checkpoint_step: int | None = None, final: bool = False) -> Path:
    """A run folder as the engine leaves it: config.yaml, events.jsonl, checkpoints/, final/."""
    run_dir = Path(output_dir) / run_id
    run_dir.mkdir(parents=True)
    cfg.save(config, run_dir / "config.yaml")
    with open(run_dir / "events.jsonl", "w", encoding="utf-8") as fh:
        for event in events:
            fh.write(event.to_json() + "\n")
    if checkpoint_step is not None:
        ckpt = run_dir / "checkpoints" / f"checkpoint-{checkpoint_step}"
        ckpt.mkdir(parents=True)
        (ckpt / "trainer_state.json").write_text("{}")
        (ckpt / "adapter_model.safetensors").write_bytes(b"")  # a checkpoint without weights is not one (rundir)
    if final:
        (run_dir / "final").mkdir()
    return run_dir


def history_runs(output_dir: Path) -> dict[str, Path]:
    """Three runs: finished, stopped with a checkpoint, failed (oldest first in time)."""
    finished = scripted_run(30, run_dir=str(output_dir / "r-finished"), run_id="r-finished") + [
        CheckpointSaved(step=30, path="checkpoints/checkpoint-30", time=T0 + 40),
        RunFinished(run_dir=str(output_dir / "r-finished"), final_dir=str(output_dir / "r-finished" / "final"),
                    step=30, max_steps=30, train_loss=2.9, time=T0 + 41)]
    stopped = [_shift(e, 3600) for e in scripted_run(12, run_dir=str(output_dir / "r-stopped"), run_id="r-stopped")]
    stopped += [CheckpointSaved(step=12, path=str(output_dir / "r-stopped/checkpoints/checkpoint-12"), time=T0 + 3700),
                RunFinished(run_dir=str(output_dir / "r-stopped"), final_dir=None, step=12, max_steps=30,
                            stopped=True, time=T0 + 3701)]
    failed = [_shift(e, 7200) for e in start_events(run_dir=str(output_dir / "r-failed"), run_id="r-failed")]
    failed += [RunFailed(message="The data file data/missing.json does not exist (data.path). Check the path.",
                         kind="user_error", run_dir=str(output_dir / "r-failed"), time=T0 + 7201)]
    return {
        "finished": write_run(output_dir, "r-finished", finished, checkpoint_step=30, final=True),
        "stopped": write_run(output_dir, "r-stopped", stopped, checkpoint_step=12),
        "failed": write_run(output_dir, "r-failed", failed),
    }


def _shift(event: Event, seconds: float) -> Event:
    from dataclasses import replace

    return replace(event, time=event.time + seconds)


def make_app(tmp_path: Path, snapshots=None, start_screen: str = "run", config: cfg.RunConfig | None = None,
             output_dir: str | None = None):
    """The real app (create_app) with a scripted GPU sampler and a temp output folder."""
    from helpers_gpus import ScriptedSampler, fake_snapshot
    from tui.app import create_app

    snapshots = snapshots or [fake_snapshot((24,), (2,), utilization=35.0)]
    return create_app(config, sampler=ScriptedSampler(snapshots), output_dir=output_dir or str(tmp_path / "runs"),
                      start_screen=start_screen)


def feed(app, events: Iterable[Event]) -> None:
    """Hand events to the session as the App does for the training thread's messages."""
    for event in events:
        app.session.handle(event)
