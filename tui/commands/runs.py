"""`tunetui runs [--output-dir D]`: a table of the runs in an output folder (id, model, method, status, step, loss).

Reads config.yaml and events.jsonl only (core.rundir); never imports torch or textual.
"""
from __future__ import annotations

import argparse

COLUMNS = ("id", "model", "method", "status", "step", "last loss")
STATUS_STYLE = {"running": "cyan", "finished": "green", "stopped": "yellow", "failed": "red", "crashed": "red"}


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
    rows = []
    for r in runs:
        rows.append((r.run_id, r.model, r.method, r.status, f"{r.step}/{r.max_steps}" if r.max_steps else str(r.step),
                     f"{r.last_loss:.4f}" if r.last_loss is not None else "-"))
    if not console.is_terminal:
        # Piped or redirected: whole values, tab-separated, for scripts (a table would be cut to 80 columns).
        print("\t".join(COLUMNS))
        for row in rows:
            print("\t".join(row))
        return 0
    for line in _layout(rows, console.width, f"Runs in {escape(str(args.output_dir))}"):
        console.print(line)
    return 0


MODEL_MIN = 10
"""Narrowest model column worth showing (ellipsized names shorter than this say little)."""


def _layout(rows: list[tuple[str, ...]], width: int, title: str) -> list:
    """The runs table at `width` columns without folding an id or cutting a header. What gives way, in order: the
    model names (ellipsized), the model column (the id carries the model's short name), the method column (when
    every id names its method), and last the table itself (one run per two lines: the id, then the rest)."""
    need = {c: max([len(c)] + [len(row[i]) for row in rows]) for i, c in enumerate(COLUMNS)}
    names_method = all(row[2] in row[0] for row in rows)
    for columns in (COLUMNS, _without(COLUMNS, "model"), _without(COLUMNS, "model", "method")):
        if "method" not in columns and not names_method:
            break
        # Without edges, a column takes its cell plus a space either side and a (blank) rule between columns.
        fixed = sum(need[c] for c in columns if c != "model") + 3 * (len(columns) - 1)
        if "model" in columns:
            room = width - fixed
            if room >= min(need["model"], MODEL_MIN):
                return [_table(rows, columns, title, model_width=room)]
        elif fixed <= width:
            return [_table(rows, columns, title)]
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
                 "status": f"[{STATUS_STYLE.get(cells['status'], 'white')}]{cells['status']}[/]"}
        table.add_row(*(cells[c] for c in columns))
    return table


def _blocks(rows, title) -> list[str]:
    from rich.markup import escape

    out = [title]
    for run_id, model, method, status, step, loss in rows:
        out.append(f"[bold]{escape(run_id)}[/]")
        out.append(f"  {escape(model)} · {method} · [{STATUS_STYLE.get(status, 'white')}]{status}[/] · step {step}"
                   f" · last loss {loss}")
    return out
