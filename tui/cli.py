"""`tunetui` entry point: no arguments (or a CONFIG.yaml) opens the app; subcommands run headless.

Headless subcommands never import textual; the app path never imports torch before the first frame.
"""
from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys

# name -> (module under tui.commands, one-line help)
SUBCOMMANDS = {
    "train": ("train", "train headless from a YAML config"),
    "runs": ("runs", "list the runs in an output folder"),
    "export": ("export", "merge a LoRA/QLoRA run into a standalone model"),
    "gpus": ("gpus", "show GPUs, their processes and the host"),
    "estimate": ("estimate", "estimate peak GPU memory per method and recommend one"),
    "pause": ("control", "pause a running run (in the app, detached or headless) after its current step"),
    "resume": ("control", "resume a paused run"),
    "stop": ("control", "stop a running run after its current step, saving a checkpoint"),
    "attach": ("attach", "watch and control a run trained by another process, live in the app"),
    "chat": ("chat", "talk to a trained run (or its base model) in the terminal; classify with a classifier"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunetui",
        description="Fine-tune language models from the terminal. Without a subcommand, opens the app.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(f"tui.commands.{module}").add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in (*SUBCOMMANDS, "-h", "--help"):
        return _open_app(argv)
    args = build_parser().parse_args(argv)
    if args.command is None:
        return _open_app([])
    from core.errors import TuneError

    module = importlib.import_module(f"tui.commands.{SUBCOMMANDS[args.command][0]}")
    try:
        code = int(module.run(args) or 0)
        sys.stdout.flush()  # a reader that went away shows here, inside the try, not in the flush at exit
        return code
    except BrokenPipeError:
        return _reader_went_away()
    except TuneError as exc:
        print(f"tunetui {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _reader_went_away() -> int:
    """`tunetui runs | head -1`: the reader closed the pipe. Python ignores SIGPIPE, so the write raised instead of
    the process ending quietly as other tools do. The recipe from the `signal` module docs ("Note on SIGPIPE"):
    point stdout at /dev/null so the flush at exit cannot raise again, and end as a SIGPIPE would (128 + 13)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout is no real file (a test's capture): nothing to flush
        pass
    return 128 + getattr(signal, "SIGPIPE", 13)


def _open_app(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tunetui", description="Open the tunetui app.")
    parser.add_argument("config", nargs="?", help="a run config (YAML) to open on the review screen")
    parser.add_argument("--output-dir", default=None, help="where runs are written and listed (default: runs)")
    args = parser.parse_args(argv)
    from tui.app import main as app_main

    return app_main(config_path=args.config, output_dir=args.output_dir)


if __name__ == "__main__":
    sys.exit(main())
