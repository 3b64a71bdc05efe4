"""What the headless commands print: tables that fit 80 columns without folding an id or cutting a header, and a
reader that closes the pipe early (`tunetui runs | head -1`) ends the command quietly with 141, never a traceback."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from core import config as cfg
from helpers_run import scripted_run, write_run
from tui.cli import main
from tui.commands.runs import COLUMNS, _layout

ROOT = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
LONG_ID = "20250101-120000-Llama-3.1-8B-Instruct-qlora"
LONGER_ID = "20250101-120000-Mistral-7B-Instruct-v0.3-qlora-2"
SHORT_ID = "20231114-221320-tiny-llama-lora"


def _row(run_id, model, method, status="finished", step="30/30", loss="1.2345"):
    return (run_id, model, method, status, step, loss)


def _render(rows, width: int) -> list[str]:
    console = Console(width=width, record=True, file=open(os.devnull, "w"))
    for part in _layout(rows, width, "Runs in runs"):
        console.print(part)
    return console.export_text().splitlines()


def _check_fits(lines: list[str], width: int, ids: list[str]) -> None:
    assert all(len(line.rstrip()) <= width for line in lines), "\n".join(lines)
    for run_id in ids:  # each id whole on one line
        assert any(run_id in line for line in lines), f"{run_id} folded:\n" + "\n".join(lines)
    assert "…" not in "".join(line for line in lines if run_id_free(line, ids))


def run_id_free(line: str, ids: list[str]) -> bool:
    """A line that is a header or title (no run's values on it)."""
    return not any(run_id in line for run_id in ids) and "·" not in line


@pytest.mark.parametrize("rows, width, columns_shown", [
    # Wide: every column, the long model name ellipsized only as far as needed.
    ([_row(SHORT_ID, "demo:tiny-llama", "lora")], 120, COLUMNS),
    # 80 with a short id: the model column goes before anything is cut.
    ([_row(SHORT_ID, "demo:tiny-llama", "lora"), _row(LONG_ID, "meta-llama/Llama-3.1-8B-Instruct", "qlora")], 80,
     ("id", "status", "step", "last loss")),
])
def test_the_runs_table_fits_without_folding_ids_or_cutting_headers(rows, width, columns_shown):
    lines = _render(rows, width)
    _check_fits(lines, width, [r[0] for r in rows])
    header = next(line for line in lines if line.startswith("id "))
    assert re.split(r"\s{2,}", header.strip()) == list(columns_shown)
    for row in rows:
        line = next(line for line in lines if row[0] in line)
        assert row[3] in line and row[4] in line and row[5] in line


def test_a_model_name_is_ellipsized_before_the_model_column_goes():
    rows = [_row(SHORT_ID, "meta-llama/Llama-3.1-8B-Instruct-and-then-some", "lora")]
    lines = _render(rows, 100)
    _check_fits(lines, 100, [SHORT_ID])
    line = next(line for line in lines if SHORT_ID in line)
    assert "meta-llama/Llama" in line and "…" in line and "finished" in line


def test_ids_too_long_for_a_table_get_a_line_each():
    # 48 + 8 + 9 + 9 characters of id, status, step and loss, and the gaps: more than 80 even with the least.
    rows = [_row(LONGER_ID, "mistralai/Mistral-7B-Instruct-v0.3", "qlora", step="1000/1000"),
            _row(SHORT_ID, "demo:tiny-llama", "lora")]
    lines = _render(rows, 80)
    _check_fits(lines, 80, [LONGER_ID, SHORT_ID])
    assert [line.strip() for line in lines if line.strip() in (LONGER_ID, SHORT_ID)] == [LONGER_ID, SHORT_ID]
    text = " ".join(lines)
    assert "mistralai/Mistral-7B-Instruct-v0.3" in text and "demo:tiny-llama" in text


def test_tunetui_runs_on_an_80_column_terminal(tmp_path, monkeypatch, capsys):
    out = tmp_path / "runs"
    long_model = cfg.RunConfig(model=cfg.ModelSpec(name_or_path="meta-llama/Llama-3.1-8B-Instruct"))
    write_run(out, LONG_ID, scripted_run(3, run_id=LONG_ID, run_dir=str(out / LONG_ID)), config=long_model)
    write_run(out, SHORT_ID, scripted_run(3, run_id=SHORT_ID, run_dir=str(out / SHORT_ID)))
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich's switch for "this is a terminal": the table path, not TSV
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["runs", "--output-dir", str(out)]) == 0
    lines = ANSI.sub("", capsys.readouterr().out).splitlines()
    _check_fits(lines, 80, [LONG_ID, SHORT_ID])
    assert any(line.startswith("id ") and "last loss" in line for line in lines)


def test_tunetui_runs_names_a_live_runs_process_and_watchers(tmp_path, monkeypatch, capsys):
    """A run another process trains says which process (and how many apps follow it), as the Runs screen does;
    the table still fits 80 columns. Piped, the status stays one word and the pid has a column of its own."""
    from core import rundir

    out = tmp_path / "runs"
    long_model = cfg.RunConfig(model=cfg.ModelSpec(name_or_path="meta-llama/Llama-3.1-8B-Instruct"))
    live = write_run(out, LONG_ID, scripted_run(3, run_id=LONG_ID, run_dir=str(out / LONG_ID)), config=long_model)
    write_run(out, SHORT_ID, scripted_run(3, run_id=SHORT_ID, run_dir=str(out / SHORT_ID)))
    rundir.write_pid(live)  # this process trains it
    rundir.add_viewer(live)  # and one app watches
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("COLUMNS", "120")
    assert main(["runs", "--output-dir", str(out)]) == 0
    lines = ANSI.sub("", capsys.readouterr().out).splitlines()
    _check_fits(lines, 120, [LONG_ID, SHORT_ID])
    assert f"running · pid {os.getpid()} · 1 watching" in next(line for line in lines if LONG_ID in line)

    monkeypatch.setenv("COLUMNS", "80")  # too narrow for that on one line: the status takes a line per part
    assert main(["runs", "--output-dir", str(out)]) == 0
    lines = ANSI.sub("", capsys.readouterr().out).splitlines()
    _check_fits(lines, 80, [LONG_ID, SHORT_ID])
    at = next(n for n, line in enumerate(lines) if LONG_ID in line)
    assert lines[at].split()[1:] == ["running", "3/30", lines[at].split()[-1]]
    assert [line.strip() for line in lines[at + 1:at + 3]] == [f"pid {os.getpid()}", "1 watching"]

    monkeypatch.setenv("TTY_COMPATIBLE", "0")
    assert main(["runs", "--output-dir", str(out)]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert rows[0] == [*COLUMNS, "pid"]
    assert {row[0]: (row[3], row[-1]) for row in rows[1:]} == {LONG_ID: ("running", str(os.getpid())),
                                                                 SHORT_ID: ("crashed", "-")}


def test_tunetui_estimate_table_keeps_every_header_at_80_columns(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")
    for extra in ([], ["--vram", "0.5"]):  # CPU wording, and the GPU wording with every method too big
        assert main(["estimate", "demo:tiny-llama", *extra]) == 0
        lines = capsys.readouterr().out.splitlines()
        header = next(line for line in lines if line.startswith("method"))
        assert re.split(r"\s{2,}", header.strip()) == [
            "method", "peak GiB", "fit", "weights", "grad+opt", "activ.", "logits", "other", "trains"]
        table = lines[lines.index(header):lines.index(header) + 6]
        assert all(len(line) <= 80 and "…" not in line for line in table), "\n".join(table)
        assert [line.split()[0] for line in table[2:]] == ["Full", "Freeze", "LoRA", "QLoRA"]


# ------------------------------------------------------------------ a reader that goes away

def _cli(*argv: str) -> list[str]:
    return [sys.executable, "-m", "tui.cli", *argv]


ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}


def _assert_quiet_end(code: int, stderr: str, allowed=(141,)) -> None:
    assert code in allowed, f"exit {code}: {stderr}"
    for text in ("Traceback", "BrokenPipe", "Exception ignored"):
        assert text not in stderr, stderr


@pytest.fixture
def two_runs(tmp_path) -> Path:
    out = tmp_path / "runs"
    for run_id in (LONG_ID, SHORT_ID):
        write_run(out, run_id, scripted_run(3, run_id=run_id, run_dir=str(out / run_id)))
    return out


@pytest.mark.parametrize("argv", [
    ("runs", "--output-dir", "no-runs-here"),  # printed by rich
    ("runs", "--output-dir", "{runs}"),  # printed as tab-separated lines
    ("estimate", "demo:tiny-llama", "--json"),
    ("estimate", "demo:tiny-llama"),
])
def test_a_pipe_closed_before_the_first_write_ends_with_141_and_no_traceback(tmp_path, two_runs, argv):
    # The reader is gone before the command writes anything: every write fails, whichever path it takes.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(_cli(*(a.format(runs=two_runs) for a in argv)), cwd=tmp_path, env=ENV,
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)
    _assert_quiet_end(proc.returncode, proc.stderr)


@pytest.mark.parametrize("argv", [("runs", "--output-dir", "{runs}"), ("estimate", "demo:tiny-llama", "--json")])
def test_head_1_never_gets_a_traceback(tmp_path, two_runs, argv):
    # `| head -1`: one line read, then the pipe closes while the command may still be writing. Whether it was done
    # by then is a race; repeated, so that a traceback on either side of it would show.
    for _ in range(3):
        proc = subprocess.Popen(_cli(*(a.format(runs=two_runs) for a in argv)), cwd=tmp_path, env=ENV,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline()
            proc.stdout.close()
            stderr = proc.stderr.read()
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        _assert_quiet_end(proc.returncode, stderr, allowed=(0, 141))
