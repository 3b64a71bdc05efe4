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
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from core.rundir import list_runs

    console = Console(highlight=False)
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
    table = Table(title=f"Runs in {escape(str(args.output_dir))}", title_justify="left", box=box.SIMPLE_HEAD)
    for column in COLUMNS:
        # The id (it starts with the date) folds on narrow terminals; the short columns never do.
        table.add_column(column, justify="right" if column in ("step", "last loss") else "left",
                         overflow="fold" if column in ("id", "model") else "ellipsis",
                         no_wrap=column not in ("id", "model"), min_width=len(column))
    for row in rows:
        status = f"[{STATUS_STYLE.get(row[3], 'white')}]{row[3]}[/]"
        table.add_row(escape(row[0]), escape(row[1]), row[2], status, *row[4:])
    console.print(table)
    return 0
