"""`tunetui runs [--output-dir D]`: a table of the runs in an output folder (id, model, method, status, step, loss);
a live run's status names its training process and how many apps watch it (`running · pid 4242 · 1 watching`).

Reads config.yaml and events.jsonl only (core.rundir); never imports torch or textual.
"""
from __future__ import annotations

import argparse

COLUMNS = ("id", "model", "method", "status", "step", "last loss")
STATUS_STYLE = {"running": "cyan", "finished": "green", "stopped": "yellow", "failed": "red", "crashed": "red"}


def _styled(status: str) -> str:
    """A status cell in its colour, which its first word picks (`running · pid 4242` is running's)."""
    return f"[{STATUS_STYLE.get(status.split()[0] if status else '', 'white')}]{status}[/]"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", metavar="DIR", default="runs", help="folder holding the runs (default: runs)")


def run(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from tui.commands.output import StdoutConsole

    from core.rundir import list_runs

    console = StdoutConsole(highlight=False)
    runs = list_runs(args.output_dir)
    if not runs:
        console.print(f"No runs in {escape(str(args.output_dir))}. Start one with: tunetui train presets/demo.yaml")
        return 0
    rows = [(r.run_id, r.model, r.method, r.status_words(), f"{r.step}/{r.max_steps}" if r.max_steps else str(r.step),
             f"{r.last_loss:.4f}" if r.last_loss is not None else "-") for r in runs]
    if not console.is_terminal:
        # Piped or redirected: whole values, tab-separated, for scripts (a table would be cut to 80 columns); the
        # status is one word there, and a live run's training process has a column of its own.
        print("\t".join(COLUMNS + ("pid",)))
        for r, row in zip(runs, rows):
            pid = str(r.pid) if r.status == "running" and r.pid else "-"
            print("\t".join(row[:3] + (r.status,) + row[4:] + (pid,)))
        return 0
    for line in _layout(rows, console.width, f"Runs in {escape(str(args.output_dir))}"):
        console.print(line)
    return 0


MODEL_MIN = 10
"""Narrowest model column worth showing (ellipsized names shorter than this say little)."""


def _layout(rows: list[tuple[str, ...]], width: int, title: str) -> list:
    """The runs table at `width` columns without folding an id or cutting a header. What gives way, in order: the
    model names (ellipsized), a live run's status (`running · pid 4242 · 1 watching` takes a line per part), the
    model column (the id carries the model's short name), the method column (when every id names its method), and
    last the table itself (one run per two lines: the id, then the rest)."""
    folded = [row[:3] + (row[3].replace(" · ", "\n"),) + row[4:] for row in rows]
    names_method = all(row[2] in row[0] for row in rows)
    for columns in (COLUMNS, _without(COLUMNS, "model"), _without(COLUMNS, "model", "method")):
        if "method" not in columns and not names_method:
            break
        for cells in (rows, folded):
            need = {c: max([len(c)] + [len(line) for row in cells for line in row[i].split("\n")])
                    for i, c in enumerate(COLUMNS)}
            # Without edges, a column takes its cell plus a space either side and a (blank) rule between columns.
            fixed = sum(need[c] for c in columns if c != "model") + 3 * (len(columns) - 1)
            if "model" in columns:
                room = width - fixed
                if room >= min(need["model"], MODEL_MIN):
                    return [_table(cells, columns, title, model_width=room)]
            elif fixed <= width:
                return [_table(cells, columns, title)]
    return _blocks(rows, title)


def _without(columns: tuple[str, ...], *names: str) -> tuple[str, ...]:
    return tuple(c for c in columns if c not in names)


def _table(rows, columns, title, model_width: int | None = None):
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in columns:
        table.add_column(column, justify="right" if column in ("step", "last loss") else "left", no_wrap=True,
                         overflow="ellipsis", min_width=len(column),
                         max_width=model_width if column == "model" else None)
    for row in rows:
        cells = dict(zip(COLUMNS, row))
        cells = {**cells, "id": escape(cells["id"]), "model": escape(cells["model"]),
                 "status": _styled(cells["status"])}
        table.add_row(*(cells[c] for c in columns))
    return table


def _blocks(rows, title) -> list[str]:
    from rich.markup import escape

    out = [title]
    for run_id, model, method, status, step, loss in rows:
        out.append(f"[bold]{escape(run_id)}[/]")
        out.append(f"  {escape(model)} · {method} · {_styled(status)} · step {step} · last loss {loss}")
    return out
