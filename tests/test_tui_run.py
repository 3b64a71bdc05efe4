"""The run view, Monitor and Runs screens with scripted engine events and scripted GPU samplers (no torch)."""
from __future__ import annotations

import math
import re
import sys
import threading
import types

import pytest

from core.events import (
    CheckpointSaved, PhaseChanged, RunFailed, RunFinished, RunPaused, RunResumed, RunStarted, StepEnded,
)
from helpers_gpus import fake_snapshot
from helpers_run import (
    T0, data_ready_events, feed, history_runs, isolate, loss_at, make_app, screen_text, scripted_run, start_events,
    step_events, wait_for,
)
from tui.session import RunState


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    restore = isolate(monkeypatch, tmp_path)
    yield
    restore()


def notes(app) -> list[tuple[str, str, str]]:
    return [(n.title, n.message, n.severity) for n in app._notifications]


# ------------------------------------------------------------------ the run state


def test_run_state_replays_a_stopped_then_resumed_run():
    events = scripted_run(12) + [
        CheckpointSaved(step=10, path="r/checkpoints/checkpoint-10", time=T0),
        RunFinished(run_dir="r", final_dir=None, step=12, max_steps=30, stopped=True, time=T0)]
    state = RunState.from_events(events)
    assert state.status == "stopped"
    assert [s for s, _ in state.losses] == list(range(1, 13))
    assert state.eval_losses == [(10, pytest.approx(loss_at(10) + 0.25))]
    assert state.checkpoint.endswith("checkpoint-10")
    assert state.log_count == 2 + 12

    # Resuming from checkpoint-10 runs steps 11 and 12 again: the chart must not draw them twice.
    state.fold(RunStarted(run_id="r", run_dir="r", config={}, resumed_from="r/checkpoints/checkpoint-10", time=T0))
    assert state.status == "running" and state.step == 10
    assert [s for s, _ in state.losses] == list(range(1, 11))
    for event in step_events(11, 13):
        state.fold(event)
    assert [s for s, _ in state.losses] == list(range(1, 14))
    version = state.version
    state.fold(PhaseChanged(phase="saving", time=T0))
    assert state.version == version + 1


# ------------------------------------------------------------------ the run screen


async def test_run_screen_shows_phases_then_live_training(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.snapshot is not None, what="the first GPU sample")
        app.session.state.status = "starting"
        feed(app, start_events())
        await wait_for(pilot, lambda: "preparing data 640/999" in screen_text(app), what="the data phase")
        text = screen_text(app)
        assert "✓ load model" in text and "▸ prepare data" in text
        assert "GPU0" in text and "2.0/24.0 GiB" in text  # the scripted 24 GiB GPU

        feed(app, data_ready_events() + step_events(1, 20))
        # The progress line, chart and log pane repaint independently: wait for the last of them.
        await wait_for(pilot, lambda: "step 20/30" in screen_text(app) and "step 20: loss" in screen_text(app)
                       and "● eval" in screen_text(app), what="step 20 on every panel")
        text = screen_text(app)
        assert "▸ train" in text
        assert "5,210" in text                     # tokens/s
        assert "step 20: loss" in text             # the engine's log lines reach the log pane
        assert "● eval" in text                    # eval losses are on the chart
        assert f"{step_events(20, 20)[0].loss:.4f}" in text


@pytest.mark.parametrize("stage, failed, done", [
    ("preparing data", "✗ prepare data", "✓ load model"),  # a broken data file: the step that failed, not a tick
    ("training", "✗ train", "✓ prepare data"),
], ids=["data", "training"])
async def test_a_failed_run_marks_the_phase_it_failed_in(tmp_path, stage, failed, done):
    events = start_events()
    if stage == "training":
        events += data_ready_events() + step_events(1, 3)
    events.append(RunFailed(message="Something broke.", kind="error", run_dir="runs/demo", time=T0))
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.snapshot is not None, what="the first GPU sample")
        app.session.state.status = "starting"
        feed(app, events)
        await wait_for(pilot, lambda: "✗ failed" in screen_text(app), what="the failure drawn")
        text = screen_text(app)
        assert failed in text and done in text
        assert failed.replace("✗", "✓") not in text and "✓ save" not in text


async def test_run_screen_redraws_at_most_ten_times_a_second(tmp_path, monkeypatch):
    from tui.screens.run import RunScreen

    draws = []
    original = RunScreen._draw
    monkeypatch.setattr(RunScreen, "_draw", lambda self, state: (draws.append(state.version), original(self, state)))
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.2)
        draws.clear()
        events = scripted_run(0) + step_events(1, 3000, max_steps=3000, eval_every=100)
        # Events arrive faster than any screen could paint them: 6,000 in one second.
        for chunk in range(10):
            feed(app, events[chunk * len(events) // 10:(chunk + 1) * len(events) // 10])
            await pilot.pause(0.1)
        await wait_for(pilot, lambda: "step 3000/3000" in screen_text(app), what="the last step")
        assert len(draws) <= 14, f"{len(draws)} redraws for one second of events"
        assert draws[-1] == app.session.state.version


async def test_notifications_on_finish_failure_and_nan(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        feed(app, scripted_run(3))
        feed(app, [StepEnded(step=4, max_steps=30, epoch=0.1, loss=math.nan, time=T0),
                   StepEnded(step=5, max_steps=30, epoch=0.1, loss=math.inf, time=T0)])
        feed(app, [RunFailed(message="CUDA out of memory. Try method.kind=qlora (6.1 GiB) or train.batch_size=1.",
                             kind="out_of_memory", run_dir="runs/x", step=5, time=T0)])
        await wait_for(pilot, lambda: len(notes(app)) >= 2, what="notifications")
        titles = [t for t, _, _ in notes(app)]
        assert titles.count("Loss is not finite") == 1  # once per run, not on every bad step
        assert ("Out of GPU memory", "CUDA out of memory. Try method.kind=qlora (6.1 GiB) or train.batch_size=1.",
                "error") in notes(app)
        await wait_for(pilot, lambda: "Try method.kind=qlora" in screen_text(app), what="the error in place")
        assert "✗ failed" in screen_text(app)

        app.session.state = RunState(status="starting")
        feed(app, scripted_run(30) + [RunFinished(run_dir="runs/y", final_dir="runs/y/final", step=30,
                                                   max_steps=30, time=T0)])
        await wait_for(pilot, lambda: any(t == "Run finished" for t, _, _ in notes(app)), what="finish note")
        assert any("runs/y/final" in m for t, m, _ in notes(app) if t == "Run finished")


async def test_a_failure_longer_than_its_panel_ends_the_log_whole(tmp_path):
    """At 80x24 the error panel holds four lines; a divergence's advice comes after them. The log holds it all."""
    advice = ("Training diverged: the gradient norm became nan at step 2. The loss of that step was 8.318. Nothing of "
              "that step was written: the newest checkpoint (checkpoint-1) is intact. To change the settings, start "
              "again with `tunetui train runs/20261202-182405-tiny-llama-full/config.yaml --set ...`. Try a lower "
              "learning rate (--set train.lr=100), gradient clipping (--set train.max_grad_norm=1.0) or a warm-up "
              "(--set train.warmup_ratio=0.05).")
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        feed(app, scripted_run(2) + [RunFailed(message=advice, kind="diverged", run_dir="runs/x", step=2, time=T0)])
        log = app.screen.query_one("#run-log")

        def logged() -> str:  # without the wrapping, which depends on the pane's width
            return "".join("".join(strip.text for strip in log.lines).split())

        await wait_for(pilot, lambda: "".join(advice.split()) in logged(), what="the whole failure in the log")
        assert logged().count("Trainingdiverged") == 1
        await wait_for(pilot, lambda: "warmup_ratio=0.05)." in screen_text(app), what="the advice's end on screen")


async def test_run_view_shows_a_classifiers_accuracy_and_macro_f1(tmp_path):
    from core.events import EvalEnded

    app = make_app(tmp_path)
    async with app.run_test(size=(160, 48)) as pilot:
        feed(app, scripted_run(10) + [EvalEnded(step=10, eval_loss=0.41, metrics={"accuracy": 0.875,
                                                                                 "macro_f1": 0.861}, time=T0)])
        await wait_for(pilot, lambda: "macro-F1" in screen_text(app), what="the classifier's metrics")
        assert re.search(r"accuracy +0\.875", screen_text(app)) and re.search(r"macro-F1 +0\.861", screen_text(app))


async def test_c_on_a_finished_run_opens_it_on_the_chat_screen(tmp_path, monkeypatch):
    """The finish notice offers a chat; c (on the Run view, once there is a final model) opens the Chat screen
    loading that run."""
    import tui.screens.chat as chat_screen
    from core.errors import TuneError

    asked: list[str] = []

    def describe(text, device):  # what the Chat screen's worker reads first: stop there, nothing heavy loads
        asked.append(text)
        raise TuneError("scripted: no model here", None, "none")

    monkeypatch.setattr(chat_screen, "describe_target", describe)
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        feed(app, scripted_run(30, run_dir="runs/y"))
        await pilot.pause()
        await pilot.press("c")  # no final model yet: not offered
        await pilot.pause()
        assert app.current_mode == "run" and not asked
        feed(app, [RunFinished(run_dir="runs/y", final_dir="runs/y/final", step=30, max_steps=30, time=T0)])
        await wait_for(pilot, lambda: any("Press c to chat" in m for _, m, _ in notes(app)), what="the offer")
        await pilot.press("c")
        await wait_for(pilot, lambda: asked, what="the Chat screen reading the run")
        assert app.current_mode == "chat" and asked == ["runs/y"]


def fake_runner(max_steps: int = 2_000):
    """An engine stand-in honouring RunControl like the real Trainer callback: pause between steps, stop saves."""
    calls = []

    def run(config, emit, control=None, *, resume_from=None, strict=False):
        calls.append((config, resume_from, threading.current_thread() is not threading.main_thread()))
        emit(RunStarted(run_id="fake", run_dir="runs/fake", config={}, resumed_from=resume_from))
        emit(PhaseChanged(phase="training"))
        step = 0
        while step < max_steps:
            if control.stop_requested:
                emit(CheckpointSaved(step=step, path=f"runs/fake/checkpoints/checkpoint-{step}"))
                emit(RunFinished(run_dir="runs/fake", final_dir=None, step=step, max_steps=max_steps, stopped=True))
                return
            if control.paused:
                emit(RunPaused(step=step))
                control.wait_while_paused()
                if not control.stop_requested:
                    emit(RunResumed(step=step))
                continue
            step += 1
            emit(StepEnded(step=step, max_steps=max_steps, epoch=0.0, loss=5.0 / step ** 0.5))
            threading.Event().wait(0.01)
        emit(RunFinished(run_dir="runs/fake", final_dir="runs/fake/final", step=step, max_steps=max_steps))

    return types.SimpleNamespace(run=run, calls=calls)


async def test_pause_resume_and_stop_with_confirmation(tmp_path, monkeypatch):
    runner = fake_runner()
    monkeypatch.setitem(sys.modules, "core.training.runner", runner)
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        app.launch()
        session = app.session
        await wait_for(pilot, lambda: session.state.step >= 3, what="steps")
        assert runner.calls[0][2], "the engine must run in a worker thread"

        await pilot.press("p")
        await wait_for(pilot, lambda: session.state.status == "paused", what="paused")
        paused_at = session.state.step
        await pilot.pause(0.3)
        assert session.state.step == paused_at
        assert "⏸ paused" in screen_text(app)

        await pilot.press("p")
        await wait_for(pilot, lambda: session.state.step > paused_at + 2, what="resumed steps")

        await pilot.press("s")
        await wait_for(pilot, lambda: "Stop the run?" in screen_text(app), what="the stop question")
        await pilot.press("n")                  # changed their mind: still training
        steps = session.state.step
        await wait_for(pilot, lambda: session.state.step > steps, what="more steps")
        assert session.running

        await pilot.press("s")
        await wait_for(pilot, lambda: "Stop the run?" in screen_text(app), what="the stop question")
        await pilot.press("y")
        await wait_for(pilot, lambda: session.state.status == "stopped", what="stopped")
        assert session.wait(5)
        assert session.state.checkpoint.endswith(f"checkpoint-{session.state.step}")
        assert any(t == "Run stopped" for t, _, _ in notes(app))
        assert not session.running


async def test_engine_import_failure_is_a_failed_run_not_a_crash(tmp_path, monkeypatch):
    broken = types.ModuleType("core.training.runner")  # has no `run`: the import inside the worker fails
    monkeypatch.setitem(sys.modules, "core.training.runner", broken)
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        app.launch()
        await wait_for(pilot, lambda: app.session.state.status == "failed", what="the failure")
        assert app.is_running
        await wait_for(pilot, lambda: "The training engine could not run" in screen_text(app), what="the error")
        # The traceback goes to the log pane, never over the screen.
        await wait_for(pilot, lambda: "ImportError" in screen_text(app), what="the traceback in the log")


async def test_log_keeps_its_last_line_in_view_when_the_error_panel_shrinks_it(tmp_path):
    # The error panel appears after the log has scrolled to its end; the log must still end on its last line.
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        log = screen.query_one("#run-log")
        screen.remove_class("-idle")
        screen.add_class("-failed")
        for i in range(20):
            log.write(f"log line {i}")
        await wait_for(pilot, lambda: "log line 19" in screen_text(app), what="the log's end")
        screen.query_one("#run-error").update("one\ntwo\nthree\nfour", layout=True)
        await wait_for(pilot, lambda: "four" in screen_text(app), what="the taller error panel")
        await wait_for(pilot, lambda: "log line 19" in screen_text(app), timeout=5, what="the log's end, still")


# ------------------------------------------------------------------ monitor


async def test_monitor_without_gpu_is_a_normal_state(tmp_path):
    app = make_app(tmp_path, [fake_snapshot(())], start_screen="monitor")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: "CPU 12%" in screen_text(app), what="the host line")
        text = screen_text(app)
        assert "No NVIDIA GPU found (NVML: driver library not found)" in text
        assert "RAM 12.0/64.0 GiB" in text
        await wait_for(pilot, lambda: "Recommended:" in screen_text(app), timeout=20, what="the recommendation")


async def test_monitor_shows_each_gpu_with_history_and_processes(tmp_path):
    samples = [fake_snapshot((80, 80), (used, 10), utilization=(util, 0), time=T0 + n)
               for n, (used, util) in enumerate([(20, 10), (40, 50), (60, 90)])]
    app = make_app(tmp_path, samples, start_screen="monitor")
    async with app.run_test(size=(100, 40)) as pilot:
        monitor = app.screen
        await wait_for(pilot, lambda: len(monitor.memory_history.get(0, ())) >= 3, timeout=15, what="3 samples")
        await wait_for(pilot, lambda: "GPU 1 · NVIDIA Fake GPU" in screen_text(app), what="both GPU cards")
        text = screen_text(app)
        assert "GPU 0 · NVIDIA Fake GPU" in text
        assert "python other_job.py" in text and "4242" in text
        assert "40°C" in text and "60/300 W" in text
        history = list(monitor.memory_history[0])
        assert {20.0, 40.0, 60.0} <= set(history)
        await wait_for(pilot, lambda: "Recommended:" in screen_text(app), timeout=20, what="the recommendation")


def test_monitor_advice_names_what_would_make_a_method_fit(tmp_path):
    """The real estimator on an 8B Llama (config only) with 22 GiB free: nothing fits as set, so the advice
    must say which change makes which method fit."""
    import json

    from core import config as cfg
    from core.resources.estimate import EstimateSettings
    from core.resources.shape import load_shape
    from core.resources.recommend import recommend
    from tui.screens.monitor import advice_text

    model_dir = tmp_path / "llama-8b"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
        "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "vocab_size": 128256, "tie_word_embeddings": False, "torch_dtype": "bfloat16", "hidden_act": "silu"}))
    config = cfg.RunConfig(model=cfg.ModelSpec(name_or_path=str(model_dir)), method=cfg.MethodSpec(kind="full"))
    advice = recommend(load_shape(str(model_dir)), EstimateSettings.from_config(config), 22.0, 5000)
    text = advice_text(config, advice, None).plain
    assert "Recommended: " in text and "▸Full" in text and "won't fit" in text
    assert "To fit " in text and " GiB" in text.split("To fit ")[1]


# ------------------------------------------------------------------ runs


async def test_runs_lists_opens_resumes_and_reuses_configs(tmp_path):
    app = make_app(tmp_path, start_screen="runs")
    runs = history_runs(tmp_path / "runs")
    launched, shown = [], []
    app.launch = lambda config=None, resume_from=None: launched.append((config, resume_from)) or True
    app.show = shown.append
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: all(r in screen_text(app) for r in ("r-failed", "r-stopped", "r-finished")),
                       what="the run list")
        text = screen_text(app)
        for run_id, status in (("r-failed", "failed"), ("r-stopped", "stopped"), ("r-finished", "finished")):
            assert run_id in text and status in text
        # Newest first: the failed run is selected and its message shown.
        await wait_for(pilot, lambda: "data/missing.json does not exist" in screen_text(app), what="the failure")

        await pilot.press("down")               # the stopped run: its curve, config and how to resume
        await wait_for(pilot, lambda: "r resumes it" in screen_text(app), what="the stopped run")
        await wait_for(pilot, lambda: "name_or_path: demo:tiny-llama" in screen_text(app), what="its config")
        assert "step 12" in screen_text(app)
        await pilot.press("r")
        assert launched and launched[-1][1] == str(runs["stopped"])
        assert launched[-1][0].model.name_or_path == "demo:tiny-llama"

        await pilot.press("down")               # the finished one cannot resume, but can seed a new run
        await wait_for(pilot, lambda: "model saved in" in screen_text(app), what="the finished run")
        await pilot.press("r")
        assert len(launched) == 1
        await pilot.press("n")
        assert shown[-1] == "review" and app.config.train.max_steps == 30


@pytest.mark.parametrize("width, columns, model_width", [
    (140, ("run", "status", "step", "loss", "eta", "method", "model", "started"), 15),
    (100, ("run", "status", "step", "loss", "eta", "method", "model"), 15),  # started gives way first
    (86, ("run", "status", "step", "loss", "method", "model"), 15),    # then eta, while no run has one
    (78, ("run", "status", "step", "loss", "method", "model"), 10),    # then the model name is ellipsized
    (72, ("run", "status", "step", "loss", "model"), 12),              # then method (every id names it)
    (60, ("run", "status", "step", "loss"), 0),                        # then model (the id names it too)
])
def test_the_runs_table_gives_way_column_by_column(width, columns, model_width):
    from tui.screens.runs import fit_columns

    rows = [("20231114-221320-tiny-llama-lora", "finished", "30/30", "2.9000", "–", "lora", "demo:tiny-llama",
             "2023-11-14 22:13")]
    assert fit_columns(rows, width) == (columns, model_width)


async def test_runs_at_80_columns_cuts_no_value_and_shows_a_failed_runs_whole_message(tmp_path):
    """Run ids as the engine names them (31 characters): at 80x24 the table keeps every id and status whole, a
    model name too long for its column ends in an ellipsis, and the failed run's message (with the command that
    starts it again) is on screen to its last word. At 160 columns the same runs show every column whole."""
    from helpers_run import write_run

    out = tmp_path / "runs"
    message = ("Training diverged: the gradient norm became nan at step 3. The loss of that step was 8.318. No "
               "checkpoint was written before it; start again with `tunetui train runs/x/config.yaml --set ...`. "
               "Try a lower learning rate (--set train.lr=1e+07).")
    ids = {"finished": "20231114-221320-tiny-llama-lora", "failed": "20231114-231320-tiny-llama-lora"}
    write_run(out, ids["finished"], scripted_run(30, run_dir=str(out / ids["finished"]), run_id=ids["finished"]) + [
        RunFinished(run_dir=str(out / ids["finished"]), final_dir=None, step=30, max_steps=30, time=T0 + 41)])
    write_run(out, ids["failed"], scripted_run(2, run_dir=str(out / ids["failed"]), run_id=ids["failed"]) + [
        RunFailed(message=message, kind="diverged", run_dir=str(out / ids["failed"]), step=3, time=T0 + 3600)])
    app = make_app(tmp_path, start_screen="runs")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: "lower learning rate" in screen_text(app) and "name_or_path" in screen_text(app),
                       what="the failed run's message and config")
        lines = screen_text(app).splitlines()
        rows = [line for line in lines if line.startswith(" 2023")][:2]
        assert [row.split()[:2] for row in rows] == [[ids["failed"], "failed"], [ids["finished"], "finished"]]
        assert all(row.rstrip().endswith(("demo:tiny-llama", "…")) for row in rows), rows
        flat = " ".join(" ".join(lines).split())
        assert " ".join(message.split()) in flat
        assert "name_or_path: demo:tiny-l…" in flat  # the config pane ellipsizes what it cannot show

        await pilot.resize_terminal(160, 48)
        await wait_for(pilot, lambda: "started" in screen_text(app), what="the wide table")
        assert "demo:tiny-llama  2023-11-1" in screen_text(app)


# ------------------------------------------------------------------ the footer


async def test_footer_keeps_its_keys_across_screen_switches_and_follows_a_run_starting(tmp_path, monkeypatch):
    from textual.widgets._footer import FooterKey

    release = threading.Event()
    engine = types.ModuleType("core.training.runner")  # an engine that trains until released
    engine.run = lambda config, emit, control, **kwargs: release.wait(30)
    monkeypatch.setitem(sys.modules, "core.training.runner", engine)
    app = make_app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        def stop_keys() -> list:
            return [k for k in app.screen.query(FooterKey) if k.action == "stop"]

        await wait_for(pilot, lambda: len(stop_keys()) == 1, what="the run screen's footer")
        first = stop_keys()[0]
        assert first.has_class("-disabled")  # no run: Stop is greyed
        for name in ("monitor", "run", "runs", "run"):
            app.show(name)
            await pilot.pause()
        assert stop_keys() == [first]  # the same keys: an unchanged footer is not rebuilt

        app.launch()
        try:
            await wait_for(pilot, lambda: [k.has_class("-disabled") for k in stop_keys()] == [False], what="Stop enabled during the run")
        finally:
            release.set()
        await wait_for(pilot, lambda: not app.session.running and [k.has_class("-disabled") for k in stop_keys()] == [True], what="Stop greyed again")
