"""The Runs screen's Compare view (space marks runs, v compares them) and its merge-and-save dialog (e), with
snapshots of both at 80x24 and 160x48.

Deterministic: scripted run folders with a fixed clock, a relative output folder inside a temp working directory,
no real GPU, HF cache or user config. Regenerate the pictures with `--snapshot-update`, then read them.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
from rich.text import Text

from core import config as cfg
from core.events import RunFinished
from helpers_run import (
    DEMO_CONFIG, T0, data_ready_events, isolate, make_app, screen_text, start_events, step_events, wait_for, write_run,
)

SIZES = {"80x24": (80, 24), "160x48": (160, 48)}


@pytest.fixture(autouse=True)
def _deterministic(monkeypatch, tmp_path):
    restore = isolate(monkeypatch, tmp_path)
    monkeypatch.chdir(tmp_path)
    import tui.app

    monkeypatch.setattr(tui.app, "POLL_SECONDS", 3600.0)  # one GPU poll, right after the first frame
    yield
    restore()


def _config(lr: float, r: int = 8) -> cfg.RunConfig:
    return cfg.RunConfig(data=cfg.DataSpec(path="demo:alpaca_en"),
                         method=cfg.MethodSpec(kind="lora", lora=cfg.LoraSpec(r=r)),
                         train=cfg.TrainSpec(max_steps=30, lr=lr))


def _finished_run(output_dir: Path, run_id: str, config: cfg.RunConfig, scale: float, hours: int) -> Path:
    """A finished 30-step run whose loss falls at a rate set by `scale` (so the curves differ), started `hours`
    after T0 (distinct start times: the list's order never depends on the file system's)."""
    from dataclasses import replace

    def loss(step: int) -> float:
        return 2.0 + 6.0 * math.exp(-step * scale / 8) + 0.1 * math.sin(step)

    run_dir = str(Path("runs") / run_id)
    events = (start_events(run_dir=run_dir, run_id=run_id, config=config) + data_ready_events()
              + step_events(1, 30, 30, loss=loss)
              + [RunFinished(run_dir=run_dir, final_dir=f"{run_dir}/final", step=30, max_steps=30,
                             train_loss=loss(30), time=T0 + 40)])
    events = [replace(e, time=e.time + hours * 3600) for e in events]
    return write_run(output_dir, run_id, events, config=config, checkpoint_step=30, final=True)


def three_runs(tmp_path: Path) -> dict[str, Path]:
    out = tmp_path / "runs"
    return {"a": _finished_run(out, "run-a-lr2e-4", _config(2e-4), 1.0, 0),
            "b": _finished_run(out, "run-b-lr1e-3", _config(1e-3), 2.0, 1),
            "c": _finished_run(out, "run-c-r16", _config(2e-4, r=16), 0.5, 2)}


def runs_app(tmp_path):
    return make_app(tmp_path, start_screen="runs", output_dir="runs")


async def _listed(pilot, app) -> None:
    # The first GPU sample reaches only the screen in front: one that lands after a dialog opens would leave the Runs
    # screen's top bar at "GPU: checking…" in the picture.
    await wait_for(pilot, lambda: app.snapshot is not None, what="the first GPU sample")
    await wait_for(pilot, lambda: all(r in screen_text(app) for r in ("run-a-lr2e-4", "run-b-lr1e-3", "run-c-r16")),
                   what="the run list")


async def _mark_rows(pilot, app, run_ids: list[str]) -> None:
    """Mark the rows holding these runs (whatever order the list shows them in)."""
    from textual.widgets import DataTable

    table = app.screen.query_one("#runs-table", DataTable)
    order = [run.run_id for run in app.screen.runs]
    for run_id in run_ids:
        table.move_cursor(row=order.index(run_id))
        await wait_for(pilot, lambda: app.screen.selected is not None and app.screen.selected.run_id == run_id,
                       what=f"{run_id} highlighted")
        await pilot.press("space")


def _cell_texts(app) -> list[str]:
    from textual.widgets import DataTable

    table = app.screen.query_one("#runs-table", DataTable)
    return [str(table.get_cell_at((row, 0))) for row in range(table.row_count)]


# ------------------------------------------------------------------ compare


async def test_marking_two_runs_and_pressing_v_compares_their_curves_and_configs(tmp_path):
    from tui.screens.compare import DIFF_STYLE, CompareScreen
    from tui.widgets.compare_chart import OverlayChart

    runs = three_runs(tmp_path)
    app = runs_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await _listed(pilot, app)
        await pilot.press("v")  # nothing marked: no Compare view
        await pilot.pause()
        assert not isinstance(app.screen, CompareScreen)

        await _mark_rows(pilot, app, ["run-a-lr2e-4", "run-b-lr1e-3", "run-c-r16"])
        await _mark_rows(pilot, app, ["run-c-r16"])  # space again unmarks
        cells = _cell_texts(app)
        assert sorted(cells) == ["run-c-r16", "✓ run-a-lr2e-4", "✓ run-b-lr1e-3"]
        # The column fits the marked ids (the widths rule): nothing cut.
        from textual.widgets import DataTable

        column = app.screen.query_one("#runs-table", DataTable).columns["run"]
        assert column.width == len("✓ run-a-lr2e-4")
        assert "✓ run-a-lr2e-4" in screen_text(app)

        await pilot.press("v")
        await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen) and len(app.screen.runs) == 2,
                       what="the compare view")
        screen = app.screen
        assert [r.run_id for r in screen.runs] == ["run-b-lr1e-3", "run-a-lr2e-4"]  # the list's order: newest first
        assert {Path(d).resolve() for d in screen.run_dirs} == {runs["a"].resolve(), runs["b"].resolve()}
        await pilot.pause()
        text = screen_text(app)
        assert "run-a-lr2e-4" in text and "run-b-lr1e-3" in text and "run-c-r16" not in text

        # Both runs' curves, train and eval, each in its own colour.
        chart = screen.query_one(OverlayChart)
        assert [c.name for c in chart.curves] == [r.run_id for r in screen.runs]
        assert all(len(c.train) == 30 and len(c.evals) == 3 for c in chart.curves)
        assert len({c.style for c in chart.curves}) == 2
        assert chart.curves[0].train != chart.curves[1].train
        rendered = chart.render()
        assert {span.style for span in rendered.spans} >= {c.style for c in chart.curves}

        # The config side by side: train.lr differs and is highlighted; method.lora.r is the same and is not.
        rows = _table_rows(screen)
        assert rows["train.lr"][0].style == DIFF_STYLE
        assert [cell.plain for cell in rows["train.lr"][1:]] != [rows["train.lr"][1].plain] * 2
        assert {cell.plain for cell in rows["train.lr"][1:]} == {"0.0002", "0.001"}
        assert rows["method.lora.r"][0].style != DIFF_STYLE
        # On screen, without scrolling: the differing key comes first in the config rows.
        await wait_for(pilot, lambda: "train.lr" in screen_text(app), what="train.lr on screen")
        assert "1 of" in screen_text(app) and "keys differ" in screen_text(app)

        await pilot.press("d")  # only the differing keys
        await pilot.pause()
        assert set(_table_rows(screen)) & {k for k in _table_rows(screen) if "." in k} == {"train.lr"}

        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, CompareScreen), what="back to the runs")
        assert "✓ run-a-lr2e-4" in screen_text(app)


async def test_marks_typed_at_once_land_on_the_rows_under_the_cursor(tmp_path):
    """Keys that arrive together (typed fast, pasted, sent by tmux): each space marks the row under the cursor at
    that moment, not the one highlighted before the last arrow key (which unmarked the first row again)."""
    from textual import events

    three_runs(tmp_path)
    app = runs_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await _listed(pilot, app)
        await wait_for(pilot, lambda: app.screen.selected is not None, what="a run highlighted")
        # Posted in one go, as a terminal delivers them (pilot.press would wait for each key to be handled).
        for key, character in [("space", " "), ("down", None), ("space", " "), ("down", None), ("space", " ")]:
            app.post_message(events.Key(key, character))
        await wait_for(pilot, lambda: len(app.screen.marked) == 3, timeout=10, what="three marks")
        await pilot.pause()
        assert app.screen.query_one("#runs-table").cursor_row == 2 and app.screen.selected is app.screen.runs[2]
        assert sorted(_cell_texts(app)) == ["✓ run-a-lr2e-4", "✓ run-b-lr1e-3", "✓ run-c-r16"]


def _table_rows(screen) -> dict[str, list[Text]]:
    """The comparison table's rows by their first cell: [key cell, run 1 cell, run 2 cell, ...]."""
    from tui.screens.compare import comparison_table

    table = comparison_table(screen.runs, only_differences=screen.only_differences)
    cells = [list(column.cells) for column in table.columns]
    rows = {}
    for n in range(len(cells[0])):
        key = cells[0][n]
        key = key.plain if isinstance(key, Text) else str(key)
        if key:
            rows[key] = [cells[c][n] for c in range(len(cells))]
    return rows


def test_flatten_and_differing_keys():
    from tui.screens.compare import ComparedRun, differing_keys, flatten

    flat = flatten({"train": {"lr": 0.0002, "bf16": True}, "lora": {"targets": ["q", "v"]}, "x": None})
    assert flat == {"train.lr": "0.0002", "train.bf16": "true", "lora.targets": "[q, v]", "x": "null"}

    def run(config):
        return ComparedRun("r", "finished", "1", None, None, {}, [], [], config)

    assert differing_keys([run({"a": "1", "b": "2"}), run({"a": "1", "b": "3", "c": "4"})]) == {"b", "c"}


async def test_merge_and_save_is_offered_only_for_a_finished_lora_run(tmp_path):
    from helpers_run import history_runs

    from tui.widgets.export_dialog import ExportDialog

    history_runs(tmp_path / "runs")  # LoRA runs: failed (newest), stopped with a checkpoint, finished with final/
    app = runs_app(tmp_path)
    async with app.run_test(size=(120, 30)) as pilot:
        await wait_for(pilot, lambda: "data/missing.json does not exist" in screen_text(app), what="the failed run")
        for expected in ("r-failed", "r-stopped"):
            assert app.screen.selected.run_id == expected
            assert "Merge and save" not in screen_text(app)
            await pilot.press("e")
            await pilot.pause()
            assert not isinstance(app.screen, ExportDialog)
            await pilot.press("down")
        await wait_for(pilot, lambda: "Merge and save" in screen_text(app), what="e for the finished run")
        assert app.screen.selected.run_id == "r-finished"
        assert "Compare" not in screen_text(app)  # nothing marked


# ------------------------------------------------------------------ snapshots


@pytest.mark.parametrize("size", SIZES)
def test_compare_view_snapshot(snap_compare, tmp_path, size):
    from tui.screens.compare import CompareScreen

    three_runs(tmp_path)
    app = runs_app(tmp_path)

    async def run_before(pilot):
        await _listed(pilot, app)
        await _mark_rows(pilot, app, ["run-a-lr2e-4", "run-b-lr1e-3", "run-c-r16"])
        await pilot.press("v")
        await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen) and len(app.screen.runs) == 3,
                       what="the compare view")
        await wait_for(pilot, lambda: "method.lora.r" in screen_text(app) and "train.lr" in screen_text(app),
                       what="the config rows")

    assert snap_compare(app, terminal_size=SIZES[size], run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_export_dialog_snapshot(snap_compare, tmp_path, size):
    from textual.widgets import Input

    from tui.widgets.export_dialog import ExportDialog

    three_runs(tmp_path)
    app = runs_app(tmp_path)

    async def run_before(pilot):
        await _listed(pilot, app)
        await wait_for(pilot, lambda: app.screen.selected is not None, what="a run highlighted")
        # The run's config and curve behind the dialog load in a worker: wait for them, or the picture races it.
        await wait_for(pilot, lambda: "name_or_path" in screen_text(app), what="the run's config")
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, ExportDialog), what="the dialog")
        field = app.screen.query_one("#export-target", Input)
        field.cursor_blink = False  # a blinking cursor would be caught on or off depending on the machine's load
        await wait_for(pilot, lambda: "runs/run-c-r16/merged" in screen_text(app), what="the default folder")

    assert snap_compare(app, terminal_size=SIZES[size], run_before=run_before)


# ------------------------------------------------------------------ merge and save


async def test_merge_and_save_from_the_runs_screen_writes_a_loadable_model(tmp_path, lora_run):
    import shutil

    from textual.widgets import Input, Static

    from tui.widgets.export_dialog import ExportDialog

    outcome, _ = lora_run
    assert outcome.status == "finished"
    run_id = Path(outcome.run_dir).name
    # A copy of the shared run, so the merged folder is written into this test's own folder.
    shutil.copytree(outcome.run_dir, tmp_path / "runs" / run_id)
    app = runs_app(tmp_path)

    def status() -> str:
        return str(app.screen.query_one("#export-status", Static).render())

    from tui.messages import ExportProgress

    progress: list[str] = []

    def hook(message) -> None:
        if isinstance(message, ExportProgress):
            progress.append(message.text)

    async with app.run_test(size=(120, 40), message_hook=hook) as pilot:
        await wait_for(pilot, lambda: run_id in screen_text(app), what="the run list")
        await wait_for(pilot, lambda: app.screen.selected is not None, what="the run highlighted")
        # Offered in the footer for a finished LoRA run.
        await wait_for(pilot, lambda: "Merge and save" in screen_text(app), what="e in the footer")
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, ExportDialog), what="the dialog")
        dialog = app.screen
        assert dialog.query_one("#export-target", Input).value == f"runs/{run_id}/merged"
        await pilot.press("enter")  # accept the default folder
        # The merge runs in a thread worker (the status shows its progress); it has ended when the dialog is no
        # longer busy and says something.
        await wait_for(pilot, lambda: not dialog.busy and status() != "", timeout=300, what="the merge to end")
        assert dialog.written == f"runs/{run_id}/merged", status()
        assert [p.split()[0] for p in progress] == ["loading", "merging", "merged"]  # the engine's steps, as they came
        merged = tmp_path / "runs" / run_id / "merged"
        from tui.widgets.export_dialog import folder_bytes
        from core.units import size as human_bytes

        size = human_bytes(folder_bytes(merged))
        assert f"Wrote {size} to runs/{run_id}/merged" in status()
        assert f"Wrote {size}" in screen_text(app) and "MiB" in size

        # The same folder again: the engine's error is shown in place and the dialog stays open.
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, ExportDialog), what="the dialog to close")
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, ExportDialog), what="the dialog again")
        again = app.screen
        await pilot.press("enter")
        await wait_for(pilot, lambda: "already exists and is not empty" in status(), timeout=120,
                       what="the error in place")
        assert again.written is None and not again.busy
        assert app.screen is again and again.query_one("#export-status").region.height >= 1

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(merged)  # a plain model: no PEFT needed to load it
    assert not any("lora" in name for name, _ in model.named_parameters())
