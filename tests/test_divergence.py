"""A run whose loss blows up ends as a failure that says so, keeps its last good checkpoint, and writes no NaN
weights; a loss that only climbs gets a warning."""
from __future__ import annotations

import math

import pytest

from core import rundir
from core.events import CheckpointSaved, LogLine, RunFailed, RunFinished, StepEnded, read_events
from core.training.runner import run
from tui.cli import main

BLOW_UP = {"lr": 1000.0, "max_grad_norm": 0.0, "warmup_ratio": 0.0, "max_steps": 20, "save_steps": 1,
           "logging_steps": 1, "eval_steps": 0}


def _all_finite(folder) -> bool:
    from safetensors.torch import load_file

    files = list(folder.rglob("*.safetensors"))
    return all(bool(t.float().isfinite().all()) for f in files for t in load_file(f).values())


def test_a_diverging_full_fine_tune_fails_and_keeps_only_finite_weights(output_dir, small_config):
    config = small_config(output_dir, method={"kind": "full"}, train=BLOW_UP)
    events: list = []
    outcome = run(config, events.append)

    last = events[-1]
    assert isinstance(last, RunFailed) and last.kind == "diverged", last
    assert outcome.status == "failed" and not (outcome.run_dir / rundir.FINAL).exists()
    assert f"at step {last.step}" in last.message and "--set train.lr=" in last.message
    assert "gradient clipping (--set train.max_grad_norm=1.0)" in last.message
    # The Trainer's NaN filter would have logged 0.0 for dead steps: every logged loss is a real, finite one.
    losses = [e.loss for e in events if isinstance(e, StepEnded) and e.loss is not None]
    assert all(math.isfinite(x) and x > 0 for x in losses)
    assert not any(isinstance(e, RunFinished) for e in events)
    assert _all_finite(outcome.run_dir)
    saved = [e for e in events if isinstance(e, CheckpointSaved)]
    if saved:  # the newest good checkpoint stays, named in the message
        assert rundir.latest_checkpoint(outcome.run_dir).name in last.message


def test_tunetui_train_exits_1_on_divergence(output_dir, small_config, capsys, tmp_path):
    from core import config as cfg

    path = tmp_path / "blowup.yaml"
    cfg.save(small_config(output_dir, method={"kind": "full"}, train=BLOW_UP), path)
    assert main(["train", str(path)]) == 1
    err = capsys.readouterr().err
    assert "Training diverged" in err and "Traceback" not in err

    # The next thing a user tries: resume with a lower learning rate. The checkpoint restores its optimizer and
    # schedule (lr 1000 included), so that would diverge again while config.yaml said 0.1: it is refused instead,
    # and nothing in the run folder changes.
    [run_dir] = list(output_dir.iterdir())
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    assert main(["train", "--resume", str(run_dir), "--set", "train.lr=0.1"]) == 2
    err = " ".join(capsys.readouterr().err.split())  # unwrapped: terminals may fold long lines
    assert "cannot change train.lr (1000 -> 0.1)" in err and "--resume" in err
    assert f"tunetui train {run_dir / rundir.CONFIG_FILE} --set train.lr=0.1" in err
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before


def test_a_climbing_loss_is_warned_about_once():
    from core.training.guard import ClimbWatch

    watch = ClimbWatch()
    said = [watch.observe(step, loss) for step, loss in enumerate([2.0, 2.1, 1.9, 3.0, 5.0, 6.0, 7.0, 8.0, 9.0, 9.5],
                                                                  start=1)]
    warnings = [s for s in said if s]
    assert len(warnings) == 1 and "climbed" in warnings[0] and "train.lr" in warnings[0]
    assert ClimbWatch().observe(1, float("nan")) is None


async def test_the_app_shows_a_diverged_run_as_failed(output_dir, small_config, monkeypatch, tmp_path):
    """In the app: the Run view shows the divergence in its error panel, and the chart holds only real losses (no
    filtered NaN drawn as 0.0)."""
    from helpers_run import make_app, screen_text, wait_for

    monkeypatch.setenv("TUNETUI_CONFIG_DIR", str(tmp_path / "config"))
    config = small_config(output_dir, method={"kind": "full"}, train=BLOW_UP)
    app = make_app(tmp_path, config=config, output_dir=str(output_dir))
    async with app.run_test(size=(120, 36)) as pilot:
        assert app.launch(config)
        await wait_for(pilot, lambda: app.session.state.status == "failed", timeout=240, what="the run to fail")
        state = app.session.state
        assert state.error_kind == "diverged"
        await wait_for(pilot, lambda: "Training diverged" in screen_text(app), what="the failure on the Run view")
        assert all(math.isfinite(loss) and loss > 0 for _step, loss in state.losses)
        await wait_for(pilot, lambda: not app.session.running, what="the training thread to end")
