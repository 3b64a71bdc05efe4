"""Attaching to a run trained by another process: the Run view rebuilds the run from its events.jsonl, follows new
lines as they are appended, and p/s become requests in the run folder's control file; closing the viewer leaves the
run alone."""
from __future__ import annotations

import json
import os

from core import rundir
from helpers_run import scripted_run, start_events, step_events, write_run
from helpers_setup import screen_text, wait_for
from tui.app import create_app
from tui.cli import main


def _append(run_dir, events) -> None:
    with open(run_dir / rundir.EVENTS_FILE, "a", encoding="utf-8") as fh:
        for event in events:
            fh.write(event.to_json() + "\n")


async def test_attach_follows_the_file_and_controls_the_run_through_its_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNETUI_CONFIG_DIR", str(tmp_path / "config"))
    run_dir = write_run(tmp_path / "runs", "r-live", scripted_run(12, run_dir=str(tmp_path / "runs/r-live")))
    rundir.write_pid(run_dir)  # "another process" that is alive: this one
    app = create_app(output_dir=str(tmp_path / "runs"), attach_dir=str(run_dir))
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_for(pilot, lambda: "step 12/30" in screen_text(app), what="the run's history on the Run view")
        assert not app.session.owns_process and app.session.running
        assert [s for s, _ in app.session.state.losses][:1] == [1]  # the curve from step 1

        _append(run_dir, step_events(13, 15))
        await wait_for(pilot, lambda: "step 15/30" in screen_text(app), what="steps appended after attaching")

        await pilot.press("p")
        await wait_for(pilot, lambda: (run_dir / rundir.CONTROL_FILE).exists(), what="the pause request")
        assert json.loads((run_dir / rundir.CONTROL_FILE).read_text())["command"] == "pause"
        assert (run_dir / rundir.CONTROL_FILE).stat().st_mode & 0o777 == 0o600
        (run_dir / rundir.CONTROL_FILE).unlink()  # as the runner does once it has read it

        await pilot.press("s")  # stop asks first, as for the app's own run, then becomes a request too
        await wait_for(pilot, lambda: "Stop the run?" in screen_text(app), what="the stop question")
        await pilot.press("y")
        await wait_for(pilot, lambda: (run_dir / rundir.CONTROL_FILE).exists(), what="the stop request")
        assert json.loads((run_dir / rundir.CONTROL_FILE).read_text())["command"] == "stop"
        (run_dir / rundir.CONTROL_FILE).unlink()

        await pilot.press("ctrl+q")  # a viewer leaves without asking: the run is not its to stop
        await pilot.pause()
    assert not (run_dir / rundir.CONTROL_FILE).exists()
    assert (run_dir / rundir.EVENTS_FILE).read_text().count("\n") == len(
        scripted_run(12)) + len(step_events(13, 15))  # the viewer never wrote to the events file


async def test_an_attached_run_whose_process_is_gone_shows_as_crashed(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNETUI_CONFIG_DIR", str(tmp_path / "config"))
    run_dir = write_run(tmp_path / "runs", "r-gone", scripted_run(5, run_dir=str(tmp_path / "runs/r-gone")))
    app = create_app(output_dir=str(tmp_path / "runs"), attach_dir=str(run_dir))
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_for(pilot, lambda: app.session.state.status == "crashed", what="the crashed status")
        assert not app.session.running
        await wait_for(pilot, lambda: "ended without finishing it" in screen_text(app), what="the crash explained")
        assert "saved no checkpoint" in screen_text(app)

        # Started again from another shell while the viewer is open: it follows the new process.
        rundir.write_pid(run_dir)
        _append(run_dir, start_events(run_dir=str(run_dir)) + step_events(1, 2))
        await wait_for(pilot, lambda: app.session.state.status == "running" and app.session.running,
                       what="the new process followed")
        await wait_for(pilot, lambda: f"running (pid {os.getpid()})" in screen_text(app), what="its pid")


async def test_a_viewer_follows_a_resume_in_a_new_process_and_shows_its_pid(tmp_path, monkeypatch):
    """Stopped from a shell, then `tunetui train --resume` in another process: the open viewer goes on with the new
    segment and names the process that trains it now, not the one that stopped."""
    import socket
    import subprocess
    import sys

    from core.events import RunFinished

    monkeypatch.setenv("TUNETUI_CONFIG_DIR", str(tmp_path / "config"))
    out = tmp_path / "runs"
    first = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])  # the process that trains it
    try:
        run_dir = write_run(out, "r-live", scripted_run(12, run_dir=str(out / "r-live")), checkpoint_step=12)
        (run_dir / rundir.PID_FILE).write_text(json.dumps({"pid": first.pid, "host": socket.gethostname()}))
        app = create_app(output_dir=str(out), attach_dir=str(run_dir))
        async with app.run_test(size=(120, 36)) as pilot:
            await wait_for(pilot, lambda: f"running (pid {first.pid})" in screen_text(app), what="the first pid")
            _append(run_dir, [RunFinished(run_dir=str(run_dir), final_dir=None, step=12, max_steps=30, stopped=True)])
            await wait_for(pilot, lambda: "stopped" in screen_text(app), what="the stop")
            first.kill()
            rundir.write_pid(run_dir)  # the resuming process (this one) writes run.pid before its RunStarted
            resumed_from = str(run_dir / "checkpoints" / "checkpoint-12")
            _append(run_dir, start_events(run_dir=str(run_dir), resumed_from=resumed_from) + step_events(13, 14))
            await wait_for(pilot, lambda: "step 14/30" in screen_text(app), what="the resumed steps")
            assert f"running (pid {os.getpid()})" in screen_text(app) and app.session.running
    finally:
        first.kill()
        first.wait()


def test_attach_without_a_live_run_says_so(tmp_path, capsys):
    assert main(["attach", "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "No run is training" in err and "Traceback" not in err
    assert main(["attach", str(tmp_path / "nothing")]) == 2
    assert "is not a run folder" in capsys.readouterr().err


async def test_runs_screen_lists_live_runs_first_and_enter_attaches(tmp_path, monkeypatch):
    """A run trained by another process sits above the finished ones, with its pid and who watches it; Enter opens
    it live on the Run view."""
    from core.events import RunFinished

    monkeypatch.setenv("TUNETUI_CONFIG_DIR", str(tmp_path / "config"))
    out = tmp_path / "runs"
    done = write_run(out, "r-done", scripted_run(30, run_dir=str(out / "r-done")) + [
        RunFinished(run_dir=str(out / "r-done"), final_dir=None, step=30, max_steps=30)], final=True)
    run_dir = write_run(out, "r-live", scripted_run(7, run_dir=str(out / "r-live")))
    rundir.write_pid(run_dir)
    os.utime(done, (2e9, 2e9))  # the finished run is the newer folder: live runs still come first
    app = create_app(output_dir=str(out), start_screen="runs")
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_for(pilot, lambda: "r-live" in screen_text(app), what="the live run in the list")
        assert [r.run_id for r in app.screen.runs] == ["r-live", "r-done"]
        assert f"running · pid {os.getpid()}" in screen_text(app)
        await pilot.press("enter")
        await wait_for(pilot, lambda: "step 7/30" in screen_text(app), what="the attached Run view")
        assert not app.session.owns_process
        assert rundir.summarize(run_dir).viewers == 1  # this app, watching
    assert rundir.summarize(run_dir).viewers == 0  # gone with the app


async def test_runs_screen_attach_key(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNETUI_CONFIG_DIR", str(tmp_path / "config"))
    run_dir = write_run(tmp_path / "runs", "r-live", scripted_run(7, run_dir=str(tmp_path / "runs/r-live")))
    rundir.write_pid(run_dir)
    app = create_app(output_dir=str(tmp_path / "runs"), start_screen="runs")
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_for(pilot, lambda: "Attach" in screen_text(app), what="the Attach key for a live run")
        await pilot.press("a")
        await wait_for(pilot, lambda: "step 7/30" in screen_text(app), what="the attached Run view")
        assert not app.session.owns_process


def test_quitting_a_run_says_how_to_resume_it(tmp_path):
    from core.events import RunFinished
    from tui.app import _stopped_words

    out = tmp_path / "runs"
    stopped = scripted_run(12, run_dir=str(out / "r")) + [
        RunFinished(run_dir=str(out / "r"), final_dir=None, step=12, max_steps=30, stopped=True)]
    run_dir = write_run(out, "r", stopped, checkpoint_step=12)
    words = _stopped_words(str(run_dir))
    assert "Stopped at step 12 with a checkpoint" in words and f"tunetui train --resume {run_dir}" in words
    early = write_run(out, "e", scripted_run(0, run_dir=str(out / "e")) + [
        RunFinished(run_dir=str(out / "e"), final_dir=None, step=0, max_steps=30, stopped=True)])
    assert "nothing to resume" in _stopped_words(str(early))


async def test_runs_screen_offers_chat_with_a_finished_run(tmp_path, monkeypatch):
    from core.events import RunFinished

    monkeypatch.setenv("TUNETUI_CONFIG_DIR", str(tmp_path / "config"))
    out = tmp_path / "runs"
    write_run(out, "r-done", scripted_run(30, run_dir=str(out / "r-done")) + [
        RunFinished(run_dir=str(out / "r-done"), final_dir=str(out / "r-done/final"), step=30, max_steps=30)],
        final=True)
    app = create_app(output_dir=str(out), start_screen="runs")
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_for(pilot, lambda: "Chat" in screen_text(app) and app.screen.selected is not None,
                       what="the Chat key for a finished run")
        await pilot.press("c")
        await wait_for(pilot, lambda: app.current_mode == "chat", what="the Chat screen")


async def test_runs_screen_shows_a_classifiers_accuracy_and_macro_f1(tmp_path, monkeypatch):
    from core.events import EvalEnded, RunFinished

    monkeypatch.setenv("TUNETUI_CONFIG_DIR", str(tmp_path / "config"))
    out = tmp_path / "runs"
    write_run(out, "r-cls", scripted_run(10, run_dir=str(out / "r-cls")) + [
        EvalEnded(step=10, eval_loss=0.41, metrics={"accuracy": 0.875, "macro_f1": 0.861},
                  confusion_matrix=[[4, 1], [0, 3]]),
        RunFinished(run_dir=str(out / "r-cls"), final_dir=None, step=10, max_steps=10)])
    write_run(out, "r-sft", scripted_run(10, run_dir=str(out / "r-sft")) + [
        RunFinished(run_dir=str(out / "r-sft"), final_dir=None, step=10, max_steps=10)])
    app = create_app(output_dir=str(out), start_screen="runs")
    async with app.run_test(size=(120, 36)) as pilot:
        def summary() -> str:  # the widget's own text: where the screen wraps it depends on the folder's name
            return str(app.screen.query_one("#runs-summary").content) if app.current_mode == "runs" else ""

        await wait_for(pilot, lambda: app.screen.selected is not None, what="a run selected")
        table, order = app.screen.query_one("#runs-table"), [run.run_id for run in app.screen.runs]
        table.move_cursor(row=order.index("r-cls"))
        await wait_for(pilot, lambda: "accuracy 0.875" in summary(), what="the classifier's metrics")
        assert "macro-F1 0.861" in summary() and "eval 0.4100" in summary()
        # The last evaluation's confusion matrix below it: true classes down, predicted across (class names
        # unknown here: the scripted run saved no labels, so the indices stand in).
        confusion = app.screen.query_one("#runs-confusion")
        assert confusion.display
        assert [line.split() for line in str(confusion.content).splitlines()] == [
            ["true", "\\", "predicted", "0", "1"], ["0", "4", "1"], ["1", "0", "3"]]
        # A run that is not a classifier has no matrix to show.
        table.move_cursor(row=order.index("r-sft"))
        await wait_for(pilot, lambda: "r-sft" in summary(), what="the other run's summary")
        assert "accuracy" not in summary()
        assert not confusion.display


def test_following_reads_only_what_was_appended(tmp_path):
    """EventTail: the whole file once, then only new complete lines (a half-written last line waits for its end);
    a file cut short under it (a run started over in place) is read again from its top."""
    from core.events import StepEnded
    from core.follow import EventTail

    path = tmp_path / rundir.EVENTS_FILE
    path.write_text("".join(e.to_json() + "\n" for e in step_events(1, 3)), encoding="utf-8")
    with EventTail(path) as tail:
        assert [e.step for e in tail.read_new() if isinstance(e, StepEnded)] == [1, 2, 3]
        assert tail.read_new() == [] and tail.offset == path.stat().st_size
        line = step_events(4, 4)[0].to_json() + "\n"
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line[:20])
            fh.flush()
            assert tail.read_new() == []  # torn: nothing yet
            fh.write(line[20:])
        assert [e.step for e in tail.read_new()] == [4]
        path.write_text(step_events(9, 9)[0].to_json() + "\n", encoding="utf-8")
        assert [e.step for e in tail.read_new()] == [9]


def test_events_read_back_equal_to_what_the_engine_wrote():
    """What a viewer folds is what the run emitted: every event type, defaults filled, unknown fields (a newer
    engine's) ignored, a line missing a required field skipped."""
    from core.events import (EVENT_TYPES, CheckpointSaved, DataReady, EvalEnded, LogLine, ModelReady, PhaseChanged,
                             RunFailed, RunFinished, RunPaused, RunResumed, RunStarted, StepEnded, parse_lines)

    written = [
        RunStarted(run_id="r", run_dir="runs/r", config={"a": 1}),
        PhaseChanged(phase="training"),
        ModelReady(trainable_params=1, total_params=2, trainable_modules=["q"], method="lora", device="cpu",
                   dtype="float32"),
        DataReady(train_examples=3, val_examples=1, format="alpaca", token_stats={"mean": 5}),
        StepEnded(step=1, max_steps=2, epoch=0.5, loss=1.5),
        EvalEnded(step=1, eval_loss=1.2, metrics={"accuracy": 0.5}),
        EvalEnded(step=2, eval_loss=1.1),
        CheckpointSaved(step=1, path="runs/r/checkpoints/checkpoint-1"),
        RunPaused(step=1), RunResumed(step=1), LogLine(level="INFO", logger="core", message="hi"),
        RunFinished(run_dir="runs/r", final_dir="runs/r/final", step=2, max_steps=2),
        RunFailed(message="m", kind="error"),
    ]
    assert {type(e).__name__ for e in written} == set(EVENT_TYPES)
    lines = [e.to_json().encode() for e in written]
    newer = json.loads(lines[4]) | {"from_a_newer_engine": 1}
    broken = json.loads(lines[4])
    del broken["step"]
    read = parse_lines(lines + [json.dumps(newer).encode(), json.dumps(broken).encode()])
    assert read[:len(written)] == written and read[len(written):] == [written[4]]
    assert read[6].metrics == {} and read[6].metrics is not read[5].metrics  # a default of its own, as __init__
