"""Snapshots of the Run, Monitor and Runs screens at 80x24 and 160x48 with scripted events and GPU samplers.

Deterministic by construction: scripted events carry a fixed clock, the App's sampler polls once (POLL_SECONDS is
pushed out of reach) and the Monitor's history is fed explicitly, no real GPU, HF cache or user config is read,
and the output folder is the relative `runs` inside a temp working directory. Regenerate with
`.venv/bin/pytest tests/test_snapshots_run.py --snapshot-update`, then look at the SVGs before committing them.
"""
from __future__ import annotations

import pytest

from core import config as cfg
from core.events import RunFailed
from helpers_gpus import fake_snapshot
from helpers_run import T0, feed, history_runs, isolate, make_app, scripted_run, screen_text, start_events, wait_for

SAMPLERS = {
    "none": [fake_snapshot(())],
    "24gib": [fake_snapshot((24,), (2,), utilization=35.0)],
    "2x80gib": [fake_snapshot((80, 80), (61.5, 10), utilization=(97.0, 0.0))],
}
SIZES = {"80x24": (80, 24), "160x48": (160, 48)}


@pytest.fixture(autouse=True)
def _deterministic(monkeypatch, tmp_path):
    restore = isolate(monkeypatch, tmp_path)
    monkeypatch.chdir(tmp_path)
    import tui.app

    monkeypatch.setattr(tui.app, "POLL_SECONDS", 3600.0)  # one poll, right after the first frame
    yield
    restore()


def build(tmp_path, sampler: str, screen: str, config=None):
    # A relative output folder (the test runs in tmp_path), so the path on screen is the same on every machine.
    return make_app(tmp_path, SAMPLERS[sampler], start_screen=screen, output_dir="runs", config=config)


async def sampled(pilot) -> None:
    await wait_for(pilot, lambda: pilot.app.snapshot is not None, what="the first GPU sample")


# ------------------------------------------------------------------ run


@pytest.mark.parametrize("stage,size,sampler", [
    ("phases", "80x24", "24gib"),
    ("training", "80x24", "none"),
    ("training", "160x48", "2x80gib"),
    ("failed", "80x24", "24gib"),
    ("failed", "160x48", "none"),
])
def test_run_screen(snap_compare, tmp_path, stage, size, sampler):
    app = build(tmp_path, sampler, "run")

    async def run_before(pilot):
        await sampled(pilot)
        app.session.state.status = "starting"
        if stage == "phases":
            feed(app, start_events())
        elif stage == "training":
            feed(app, scripted_run(20))
        else:
            feed(app, scripted_run(7) + [RunFailed(
                message="Out of GPU memory at step 7 (23.4 GiB in use). Try method.kind=qlora (est. 9.8 GiB) or "
                        "train.batch_size=2 with train.grad_accum=2.", kind="out_of_memory", run_dir="runs/x",
                step=7, time=T0 + 8)])
        await wait_for(pilot, lambda: app.screen._seen == (id(app.session.state), app.session.state.version),
                       what="the redraw")

    assert snap_compare(app, terminal_size=SIZES[size], run_before=run_before)


# ------------------------------------------------------------------ monitor


def fixed_advice(shape, settings, free_gib, dataset_rows):
    """An 8B-model recommendation with fixed figures: the snapshots show how advice is laid out, and must not
    change when the estimator's model is refined (test_tui_run checks the real estimator reaches the screen)."""
    from core.resources.estimate import Estimate
    from core.resources.recommend import Recommendation, Suggestion, fit_of

    peaks = {"full": 80.2, "freeze": 26.7, "lora": 21.0, "qlora": 9.8}
    estimates = {m: Estimate(method=m, peak_gib=p, weights_gib=p / 2, trainable_state_gib=p / 4, activations_gib=p / 8,
                             logits_gib=p / 16, overhead_gib=p / 16, total_params=8_030_261_248,
                             trainable_params=20_971_520, notes=()) for m, p in peaks.items()}
    if free_gib is None:
        return Recommendation("qlora", "No NVIDIA GPU found: an 8B model is too big to train on the CPU. On a GPU "
                              "these settings need about 9.8 GiB with QLoRA.", {m: "no" for m in peaks}, estimates,
                              (), None, True)
    fit = {m: fit_of(p, free_gib) for m, p in peaks.items()}
    suggestions = () if fit["lora"] == "fits" else (
        Suggestion("lora", "gradient checkpointing + batch 2 × accumulation 2", settings, 15.1),)
    method = "lora" if fit["lora"] == "fits" else "qlora"
    reason = (f"LoRA fits ({peaks['lora']} of {free_gib:.1f} GiB free): the usual default." if method == "lora" else
              f"QLoRA fits ({peaks['qlora']} of {free_gib:.1f} GiB free); LoRA would need {peaks['lora']} GiB.")
    return Recommendation(method, reason, fit, estimates, suggestions, free_gib, False)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_monitor_screen(snap_compare, tmp_path, monkeypatch, sampler, size):
    import core.resources.recommend
    import tui.draft
    from core.resources.shape import shape_from_config

    # An 8B shape without the hub (the figures shown are fixed_advice's).
    shape = shape_from_config({"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
                               "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                               "vocab_size": 128256}, "meta-llama/Llama-3.1-8B-Instruct")
    monkeypatch.setattr(tui.draft, "load_model_shape", lambda name, trust_remote_code: shape)
    monkeypatch.setattr(core.resources.recommend, "recommend", fixed_advice)
    model = cfg.ModelSpec(name_or_path="meta-llama/Llama-3.1-8B-Instruct")
    app = build(tmp_path, sampler, "monitor", cfg.RunConfig(model=model, data=cfg.DataSpec(path="demo:alpaca_en")))

    async def run_before(pilot):
        await sampled(pilot)
        monitor = app.screen
        monitor.poll()  # take in the App's one real sample now, then replace the history with a fixed one
        for history in (monitor.memory_history, monitor.util_history):
            history.clear()
        monitor.cpu_history.clear()
        # A fixed history: utilisation ramping up while memory fills, as when a run starts.
        for n in range(40):
            snapshot = SAMPLERS[sampler][0]
            monitor._record(_scaled(snapshot, min(1.0, (n + 1) / 30)))
        monitor.poll(force=True)
        await wait_for(pilot, lambda: "Recommended:" in screen_text(app), timeout=20, what="the recommendation")
        await pilot.pause(0.2)
        monitor.poll(force=True)

    assert snap_compare(app, terminal_size=SIZES[size], run_before=run_before)


def _scaled(snapshot, fraction: float):
    from dataclasses import replace

    gpus = tuple(replace(g, memory_used_gib=(g.memory_used_gib or 0) * fraction,
                         utilization_pct=(g.utilization_pct or 0) * fraction) for g in snapshot.gpus)
    return replace(snapshot, gpus=gpus, host=replace(snapshot.host, cpu_pct=10 + 60 * fraction))


# ------------------------------------------------------------------ runs


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("selected", ["stopped", "failed"])
def test_runs_screen(snap_compare, tmp_path, size, selected):
    history_runs(tmp_path / "runs")
    app = build(tmp_path, "24gib", "runs")

    async def run_before(pilot):
        await wait_for(pilot, lambda: "r-finished" in screen_text(app), what="the run list")
        if selected == "stopped":
            await pilot.press("down")  # the stopped run: its curve and config
            await wait_for(pilot, lambda: "r resumes it" in screen_text(app), what="the stopped run")
        else:  # the newest, selected as the screen opens: its error message
            await wait_for(pilot, lambda: "does not exist" in screen_text(app), what="the failed run's message")
        await wait_for(pilot, lambda: "name_or_path" in screen_text(app), what="its config")

    assert snap_compare(app, terminal_size=SIZES[size], run_before=run_before)
