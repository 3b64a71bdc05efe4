"""End to end with the real engine on the demo model: pick demo → LoRA → alpaca demo → launch → progress and
loss arrive → pause → resume → stop → the run shows in Runs with its checkpoint → resume it. CPU only, offline."""
from __future__ import annotations

from pathlib import Path

import pytest

from core import config as cfg
from core.events import StepEnded, read_events
from helpers_gpus import fake_snapshot
from helpers_run import isolate, make_app, screen_text, wait_for

pytestmark = pytest.mark.slow

# What the user starts from: not yet the choices the test makes on the set-up screens (full, no data), and short
# steps (batch 2, 64 tokens) so the run moves quickly on one CPU thread. 500 steps: it never ends on its own here.
START = cfg.RunConfig(
    method=cfg.MethodSpec(kind="full"),
    data=cfg.DataSpec(path="", max_length=64, val_size=0),
    train=cfg.TrainSpec(max_steps=500, batch_size=2, save_steps=1000, eval_steps=0, warmup_ratio=0.0, lr=1e-3),
)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    import torch

    torch.set_num_threads(1)
    restore = isolate(monkeypatch, tmp_path)  # (the demo weights live in the session's temp cache: see conftest)
    yield
    restore()


async def press_until(pilot, key: str, done, tries: int = 6) -> None:
    for _ in range(tries):
        if done():
            return
        await pilot.press(key)
        await pilot.pause(0.05)
    assert done(), f"pressing {key} {tries} times did not get there"


async def test_demo_run_from_setup_to_resume(tmp_path):
    app = make_app(tmp_path, [fake_snapshot(())], start_screen="model", config=START)
    session = app.session
    async with app.run_test(size=(100, 30)) as pilot:
        # Model: the built-in demo is listed and highlighted; Enter takes it and goes on.
        await wait_for(pilot, lambda: "demo:tiny-llama" in screen_text(app), what="the model list")
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.current_mode == "method", what="the method screen")
        assert app.config.model.name_or_path == "demo:tiny-llama"

        # Method: from Full, → to LoRA; Enter goes on.
        await press_until(pilot, "right", lambda: app.config.method.kind == "lora")
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.current_mode == "data", what="the data screen")

        # Data: type the built-in alpaca demo (a copy of the shared alpaca_en_demo.json), then on to Review.
        await pilot.press("slash")
        await pilot.press(*"demo:alpaca_en", "enter")
        await wait_for(pilot, lambda: app.config.data.path == "demo:alpaca_en", what="the data path")
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.current_mode == "review", what="the review screen")

        # Launch: the run screen shows the phases, then progress and loss.
        await pilot.press("l")
        await wait_for(pilot, lambda: app.current_mode == "run", what="the run screen")
        await wait_for(pilot, lambda: session.state.losses, timeout=180, what="the first loss")
        assert {"loading_model", "preparing_data", "training"} <= set(session.state.phases_seen)
        await wait_for(pilot, lambda: "/500" in screen_text(app) and "tokens/s" in screen_text(app),
                       what="progress on screen")
        run_dir = Path(session.state.run_dir)

        # Pause: steps stop coming; resume: they come again.
        await pilot.press("p")
        await wait_for(pilot, lambda: session.state.status == "paused", timeout=30, what="the pause")
        paused_at = session.state.step
        await pilot.pause(1.0)
        assert session.state.step == paused_at
        assert "paused" in screen_text(app)
        await pilot.press("p")
        await wait_for(pilot, lambda: session.state.step >= paused_at + 2, timeout=60, what="steps after resume")

        # Stop: asked first, then a checkpoint is saved and the run ends as stopped.
        await pilot.press("s")
        await wait_for(pilot, lambda: "Stop the run?" in screen_text(app), what="the stop question")
        await pilot.press("y")
        await wait_for(pilot, lambda: session.state.status == "stopped", timeout=120, what="the stop")
        assert session.wait(30)
        stopped_at = session.state.step
        checkpoint = run_dir / "checkpoints" / f"checkpoint-{stopped_at}"
        assert (checkpoint / "trainer_state.json").is_file()

        # Runs: the run is listed as stopped with its checkpoint; r resumes it.
        await pilot.press("7")
        await wait_for(pilot, lambda: app.current_mode == "runs", what="the runs screen")
        await wait_for(pilot, lambda: "r resumes it" in screen_text(app), what="the stopped run")
        assert run_dir.name in screen_text(app) and f"checkpoint-{stopped_at}" in screen_text(app)
        await pilot.press("r")
        await wait_for(pilot, lambda: app.current_mode == "run", what="the run screen again")
        await wait_for(pilot, lambda: session.state.resumed_from and session.state.step > stopped_at,
                       timeout=180, what="steps after the resume")
        assert session.state.run_dir == str(run_dir)
        # The curve carries on from the first segment: the history was kept and nothing is drawn twice.
        steps = [s for s, _ in session.state.losses]
        assert steps == sorted(set(steps)) and steps[0] == 1

        session.stop(save=False)
        assert session.wait(60)

    resumed = [e.step for e in read_events(run_dir / "events.jsonl") if isinstance(e, StepEnded)]
    assert stopped_at + 1 in resumed and resumed.count(stopped_at + 1) == 1
