"""Runs on several GPUs from the app: the GPU choice on Review, the headless line it implies, launching `tunetui
train --nproc N` in processes of its own and following its run folder, and the per-process throughput and per-rank
GPU peaks on the Run view."""
from __future__ import annotations

import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from core import config as cfg
from core import rundir
from core.errors import TuneError
from core.events import RunFinished, RunStarted, StepEnded
from core.spawn import GpuPlan, plan_gpus, read_run_dir_file, train_arguments, write_run_dir_file
from helpers_gpus import ScriptedSampler, fake_snapshot
from helpers_run import DEMO_CONFIG, scripted_run, start_events, step_events
from helpers_setup import isolate, screen_text, wait_for
from tui.app import create_app
from tui.screens.review import train_command
from tui.session import RunState
from tui.widgets.run_metrics import group_throughput, metrics_table


# ------------------------------------------------------------------ the plan: which GPUs, which arguments

@pytest.mark.parametrize("choice, available, gpus, arguments", [
    ("all", ["0", "1"], ("0", "1"), ["--nproc", "2"]),
    ("ALL ", ["0", "1", "2"], ("0", "1", "2"), ["--nproc", "3"]),
    ("", ["0"], ("0",), []),
    ("all", [], (), []),
    ("1,0", ["0", "1"], ("0", "1"), ["--nproc", "2"]),  # every GPU, in any order: all of them
    ("0,2", ["0", "1", "2"], ("0", "2"), ["--gpus", "0,2"]),
    ("1", ["0", "1"], ("1",), ["--gpus", "1"]),  # one GPU, not the first: CUDA_VISIBLE_DEVICES in a process of its own
    ("0,3", None, ("0", "3"), ["--gpus", "0,3"]),  # not sampled yet: the form alone is checked
])
def test_the_gpu_choice_becomes_processes_and_arguments(choice, available, gpus, arguments):
    plan = plan_gpus(choice, available)
    assert plan.gpus == gpus and plan.arguments() == arguments
    assert plan.nproc == max(1, len(gpus))
    assert plan.separate_process == (arguments != [])


@pytest.mark.parametrize("choice, available, words", [
    ("2", ["0", "1"], "GPU 2 is not among this machine's GPUs (0,1)"),
    ("0", [], "this machine shows no GPU"),
    ("zero", ["0"], "'zero' is neither all nor a list of distinct GPU numbers"),
    ("0,0", ["0", "1"], "neither all nor a list of distinct GPU numbers"),
])
def test_a_bad_gpu_choice_says_what_and_what_to_do(choice, available, words):
    with pytest.raises(TuneError) as caught:
        plan_gpus(choice, available)
    assert words in str(caught.value) and caught.value.where == "GPUs" and caught.value.fix


def test_plans_describe_themselves():
    assert GpuPlan(gpus=()).describe() == "no GPU here: trains on the CPU in one process"
    assert GpuPlan(gpus=("0", "1")).describe() == "GPUs 0,1: 2 processes, one per GPU"
    assert GpuPlan(gpus=("3",), subset=True).describe(named=False) == "3: one process"


def test_train_arguments_and_the_run_dir_file(tmp_path):
    plan = GpuPlan(gpus=("0", "1"))
    assert train_arguments("c.yaml", plan, run_dir_file="f") == ["c.yaml", "--nproc", "2", "--run-dir-file", "f"]
    assert train_arguments("c.yaml", plan, resume="runs/r") == ["--resume", "runs/r", "--nproc", "2"]
    path = tmp_path / "run-dir"
    assert read_run_dir_file(path) is None
    write_run_dir_file(path, tmp_path / "runs" / "r1")
    assert read_run_dir_file(path) == (tmp_path / "runs" / "r1").resolve()
    write_run_dir_file(None, tmp_path)  # no file asked for: nothing written


def test_the_headless_line_names_the_gpus():
    changed = replace(DEMO_CONFIG, train=replace(DEMO_CONFIG.train, max_steps=7))
    line = train_command(changed, "presets/demo.yaml", DEMO_CONFIG, GpuPlan(gpus=("0", "1")))
    assert line == "tunetui train presets/demo.yaml --nproc 2 --set train.max_steps=7"
    assert "--gpus 2,3" in train_command(DEMO_CONFIG, "a.yaml", DEMO_CONFIG, GpuPlan(gpus=("2", "3"), subset=True))
    assert train_command(DEMO_CONFIG, "a.yaml", DEMO_CONFIG, GpuPlan(gpus=())) == "tunetui train a.yaml"


# ------------------------------------------------------------------ throughput per process, peaks per rank

def _table_text(state) -> str:
    console = Console(width=40, record=True, color_system=None)
    console.print(metrics_table(state))
    return console.export_text()


def test_several_processes_show_the_group_rate_shared_out_and_each_gpu_peak():
    started = RunStarted(run_id="r", run_dir="runs/r", config={}, world_size=2, global_batch_size=16)
    steps = [StepEnded(step=1, max_steps=10, epoch=0.1, tokens_per_second=1234.0,
                       tokens_per_second_per_process=617.0, peak_gib_per_rank=[12.34, 11.0]),
             StepEnded(step=2, max_steps=10, epoch=0.2, tokens_per_second=1000.0,
                       tokens_per_second_per_process=500.0, peak_gib_per_rank=[12.0, 11.5])]
    state = RunState.from_events([started, *steps])
    assert state.world_size == 2 and state.tokens_per_second_per_process == 500.0
    assert state.peak_gib_per_rank == [12.34, 11.5]  # each rank's largest
    assert group_throughput(state) == "2 · 500 tok/s each"
    text = _table_text(state)
    assert "1,000" in text and "2 · 500 tok/s each" in text
    assert "rank 0 peak 12.3 GiB" in " ".join(text.split()) and "rank 1 peak 11.5 GiB" in " ".join(text.split())


def test_one_process_shows_what_it_always_did():
    state = RunState.from_events([*start_events(), *step_events(1, 3)])
    assert state.world_size == 1 and state.peak_gib_per_rank == []
    text = _table_text(state)
    assert "processes" not in text and "rank 0" not in text
    # An older log of a group run (no per-process field): the rate is shared out evenly.
    older = RunState.from_events([RunStarted(run_id="r", run_dir="d", config={}, world_size=4),
                                  StepEnded(step=1, max_steps=2, epoch=0.5, tokens_per_second=400.0)])
    assert group_throughput(older) == "4 · 100 tok/s each"


# ------------------------------------------------------------------ the app launches a group and follows it

class _FakeLauncher:
    """Stands in for core.spawn.start_train: records the command, and plays a run as `tunetui train --nproc 2`
    would leave it (the run folder named in --run-dir-file, events.jsonl written as the app polls)."""

    def __init__(self, output_dir: Path) -> None:
        self.output_dir = output_dir
        self.calls: list[list[str]] = []
        self.process = _FakeProcess()

    def __call__(self, arguments, log_path):
        self.calls.append(list(arguments))
        self.config = cfg.load(arguments[0])
        run_dir = self.output_dir / "r-group"
        run_dir.mkdir(parents=True)
        self.run_dir = run_dir
        write_run_dir_file(arguments[arguments.index("--run-dir-file") + 1], run_dir)
        Path(log_path).write_text("tunetui train: 2 processes (torch.distributed.run)\n")
        return self.process

    def play(self, events) -> None:
        with open(self.run_dir / rundir.EVENTS_FILE, "a", encoding="utf-8") as fh:
            for event in events:
                fh.write(event.to_json() + "\n")


class _FakeProcess:
    pid = 4242
    returncode = None

    def __init__(self) -> None:
        self.signals: list[int] = []

    def poll(self):
        return self.returncode

    def send_signal(self, signum) -> None:
        self.signals.append(signum)


async def test_two_gpus_launch_tunetui_train_with_nproc_2_and_the_run_view_follows_it(tmp_path, monkeypatch):
    isolate(monkeypatch, tmp_path)
    fake = _FakeLauncher(tmp_path / "runs")
    monkeypatch.setattr("core.spawn.start_train", fake)
    draft = replace(DEMO_CONFIG, train=replace(DEMO_CONFIG.train, max_steps=30))
    app = create_app(draft, sampler=ScriptedSampler([fake_snapshot((80, 80), (1, 1))]),
                     output_dir=str(tmp_path / "runs"), start_screen="review")
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: "0,1: 2 processes, one per GPU" in screen_text(app), what="the GPU line")
        assert "--nproc 2" in screen_text(app)
        await pilot.press("l")
        await wait_for(pilot, lambda: fake.calls, what="the launch")
        assert fake.calls[0][1:3] == ["--nproc", "2"]
        assert fake.config == app.config  # the draft, as a config file the processes read
        assert not app.session.owns_process and app.session.running
        await wait_for(pilot, lambda: app.session.state.run_dir == str(fake.run_dir), what="the run folder")

        run = str(fake.run_dir)
        started = start_events(run_dir=run)
        fake.play([replace(started[0], world_size=2, global_batch_size=16), *started[1:],
                   *step_events(1, 5), StepEnded(step=6, max_steps=30, epoch=0.2, tokens_per_second=900.0,
                                                 tokens_per_second_per_process=450.0, peak_gib_per_rank=[3.0, 2.5])])
        await wait_for(pilot, lambda: "step 6/30" in screen_text(app), what="the group's steps")
        assert "2 · 450 tok/s each" in screen_text(app)

        await pilot.press("p")  # pause reaches every rank through the run folder (rank 0 reads it)
        await wait_for(pilot, lambda: (fake.run_dir / rundir.CONTROL_FILE).exists(), what="the pause request")

        fake.play([RunFinished(run_dir=run, final_dir=f"{run}/final", step=30, max_steps=30, train_loss=1.0)])
        fake.process.returncode = 0
        await wait_for(pilot, lambda: app.session.state.status == "finished", what="RunFinished")
        assert not app.session.running
        assert app.session.leaving_words() is None


async def test_a_gpu_the_machine_lacks_is_refused_on_review(tmp_path, monkeypatch):
    isolate(monkeypatch, tmp_path)
    monkeypatch.setattr("core.spawn.start_train", lambda *a: pytest.fail("launched with a bad GPU choice"))
    app = create_app(sampler=ScriptedSampler([fake_snapshot((80, 80), (1, 1))]), output_dir="runs",
                     start_screen="review")
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.snapshot is not None and "2 processes" in screen_text(app),
                       what="the GPUs")
        field = app.screen.query_one("#launch-gpus")
        field.value = "0,5"
        box = app.screen.error_box
        await wait_for(pilot, lambda: box.display and "GPU 5 is not among this machine's GPUs (0,1)" in str(
            box.content), what="the message in place")
        assert field.has_class("-invalid") and "Type all, or GPU numbers" in str(box.content)
        app.screen.action_launch()
        await pilot.pause()
        assert app.session.state.status == "idle"
        field.value = "1"
        await wait_for(pilot, lambda: "--gpus 1" in screen_text(app), what="the subset on the headless line")
        assert not field.has_class("-invalid") and not box.display
        assert "1: one process" in screen_text(app)


async def test_stop_before_the_run_folder_exists_interrupts_the_launcher(tmp_path, monkeypatch):
    isolate(monkeypatch, tmp_path)
    process = _FakeProcess()
    monkeypatch.setattr("core.spawn.start_train", lambda arguments, log_path: process)  # never names its folder
    app = create_app(sampler=ScriptedSampler([fake_snapshot((80, 80))]), output_dir="runs", start_screen="review")
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.snapshot is not None, what="the GPUs")
        assert app.launch()
        assert app.session.state.status == "starting" and app.session.running
        app.session.stop()
        assert process.signals == [signal.SIGINT]  # the launcher asks every process to stop and save
        assert "starting in process 4242" in app.session.leaving_words()
        process.returncode = 2
        Path(app.session.log_path).write_text("tunetui train: Unknown config key (config.yaml)\n")
        await wait_for(pilot, lambda: app.session.state.status == "failed", what="the launcher's end")
        assert "Unknown config key" in app.session.state.error


async def test_the_estimates_are_per_gpu_for_the_gpus_a_launch_will_use(tmp_path, monkeypatch):
    """Two GPUs chosen: Method, Review and Monitor read per-GPU figures (DDP here); one chosen: one GPU's."""
    isolate(monkeypatch, tmp_path)
    app = create_app(sampler=ScriptedSampler([fake_snapshot((80, 80), (1, 1))]), output_dir="runs",
                     start_screen="review")
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.snapshot is not None and app.draft.facts().estimates, what="the facts")
        both = app.draft.facts().estimates["lora"]
        assert (both.gpus, both.strategy) == (2, "ddp")
        app.launch_gpus = "1"
        one = app.draft.facts().estimates["lora"]
        assert (one.gpus, one.strategy) == (1, "single")
        assert both.peak_gib > one.peak_gib  # DDP's gradient buckets: a replica plus its buckets on each GPU
