"""`tunetui export RUN_DIR --merge OUT_DIR`: merge a LoRA/QLoRA run's adapter into its base and save the model."""
from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run folder (see `tunetui runs`)")
    parser.add_argument("--merge", metavar="OUT_DIR", required=True,
                        help="write the base model with the adapter merged in here (must not exist or be empty)")
    parser.add_argument("--checkpoint", metavar="DIR",
                        help="merge this checkpoint's adapter instead of the run's final/ (e.g. a stopped run)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                        help="where to merge (default: cpu; needs RAM for the base in its own dtype)")


def run(args: argparse.Namespace) -> int:
    from core.training.export import merge_run

    out = merge_run(args.run_dir, args.merge, checkpoint=args.checkpoint, device=args.device,
                    progress=lambda text: print(text, file=sys.stderr))
    print(out)
    return 0
