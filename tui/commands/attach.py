"""`tunetui attach [RUN_DIR]`: open the app on the live Run view of a run trained by another process.

No RUN_DIR: the newest running run in the output folder. The run is followed through its events.jsonl (the curve
from step 1, then each new step); p pauses/resumes and s stops it through the run folder's control file.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from core.errors import TuneError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", nargs="?", default=None,
                        help="the run's folder (default: the newest running run in --output-dir)")
    parser.add_argument("--output-dir", metavar="DIR", default="runs", help="folder holding the runs (default: runs)")


def resolve_run_dir(run_dir: str | None, output_dir: str) -> Path:
    """The folder to follow: RUN_DIR when it is a run, else the newest live run under OUTPUT_DIR."""
    from core import rundir

    if run_dir is None:
        live = rundir.live_runs(output_dir)
        if not live:
            raise TuneError(f"No run is training in {output_dir}", "RUN_DIR",
                            "Pass a run folder (see `tunetui runs`), or --output-dir where your runs are")
        return live[0].run_dir
    path = Path(run_dir).expanduser()
    if not (path / rundir.EVENTS_FILE).is_file():
        raise TuneError(f"{path} is not a run folder (it has no {rundir.EVENTS_FILE})", "RUN_DIR",
                        "Pass a folder listed by `tunetui runs`")
    return path


def run(args: argparse.Namespace) -> int:
    run_dir = resolve_run_dir(args.run_dir, args.output_dir)
    from tui.app import main as app_main

    return app_main(output_dir=args.output_dir, attach_dir=str(run_dir))


__all__ = ["add_arguments", "resolve_run_dir", "run"]
