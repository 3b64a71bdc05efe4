"""Benchmark: training tokens/s of the demo run inside the app vs the same run headless (runner.run), in one process.

The two are run alternately (app, headless, headless, app, ...) so that drift on a shared machine hits both alike;
each run's throughput is read from its own events.jsonl (the engine's per-step token counts and step times, first
steps skipped as warm-up), so both sides are measured the same way. It also prints the UI thread's CPU time while
steps come in: a figure that does not depend on what else the machine runs. The app is the real one (create_app, real
GPU/host sampler polling, the run screen redrawing), driven headless by Textual's Pilot. Target: ratio >= 0.95.

    .venv/bin/python bench/bench_app_throughput.py [--pairs 3] [--steps 20] [--threads 1]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WARMUP_STEPS = 3


def run_throughput(run_dir: Path) -> tuple[float, int]:
    """(tokens per second over the steps after warm-up, steps counted) from a run folder's events.jsonl."""
    from core.events import StepEnded, read_events

    steps = [e for e in read_events(run_dir / "events.jsonl") if isinstance(e, StepEnded)]
    steps = [e for e in steps if e.step > WARMUP_STEPS and e.tokens_per_second and e.step_seconds]
    tokens = sum(e.tokens_per_second * e.step_seconds for e in steps)
    seconds = sum(e.step_seconds for e in steps)
    return (tokens / seconds if seconds else float("nan")), len(steps)


def newest_run(output_dir: Path) -> Path:
    return max((p for p in output_dir.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)


def headless(config) -> Path:
    from core.training.runner import run

    outcome = run(config, lambda event: None)
    if outcome.status != "finished":
        raise SystemExit(f"headless run did not finish: {outcome.event}")
    return Path(outcome.run_dir)


def in_app(config) -> tuple[Path, float]:
    """Run in the app; returns the run folder and the UI thread's CPU share while steps were coming in."""
    from tui.app import create_app

    async def drive() -> tuple[Path, float]:
        app = create_app(config, output_dir=config.output.dir, start_screen="run")
        async with app.run_test(size=(100, 30)) as pilot:
            app.launch(config)
            state = app.session.state
            while state.step <= WARMUP_STEPS and not state.final:
                await pilot.pause(0.05)
            # The UI runs on this (main) thread: its CPU time while training is what the app costs the trainer.
            cpu0, wall0 = time.thread_time(), time.perf_counter()
            while not app.session.state.final:
                await pilot.pause(0.2)
            ui_share = (time.thread_time() - cpu0) / max(time.perf_counter() - wall0, 1e-9)
            if app.session.state.status != "finished":
                raise SystemExit(f"app run did not finish: {app.session.state.error}")
            app.session.wait(30)
            return Path(app.session.state.run_dir), ui_share

    return asyncio.run(drive())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3, help="app/headless pairs (default 3)")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per run (default 20)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: steady timings)")
    args = parser.parse_args()

    os.environ.setdefault("TUNETUI_CACHE", tempfile.mkdtemp(prefix="tunetui-bench-cache-"))
    import torch

    torch.set_num_threads(args.threads)
    from core import config as cfg

    out = Path(tempfile.mkdtemp(prefix="tunetui-bench-"))
    config = cfg.load(ROOT / "presets" / "demo.yaml", [
        f"train.max_steps={args.steps}", f"train.save_steps={args.steps * 10}", "data.val_size=0",
        "train.eval_steps=0", f"output.dir={out}"])
    print(f"demo run: {config.model.name_or_path}, {config.method.kind}, batch {config.train.batch_size}, "
          f"max_length {config.data.max_length}, {args.steps} steps (first {WARMUP_STEPS} skipped), "
          f"torch threads {args.threads}, {args.pairs} pairs")
    headless(cfg.replace(config, train=cfg.replace(config.train, max_steps=2)))  # build the demo model, warm caches

    ratios, app_tps, headless_tps, ui_shares = [], [], [], []
    for pair in range(args.pairs):
        order = ("app", "headless") if pair % 2 == 0 else ("headless", "app")
        measured = {}
        for side in order:
            started = time.perf_counter()
            extra = ""
            if side == "app":
                run_dir, ui_share = in_app(config)
                ui_shares.append(ui_share)
                extra = f", UI thread {ui_share:.1%} of a core"
            else:
                run_dir = headless(config)
            measured[side], counted = run_throughput(run_dir)
            print(f"  pair {pair + 1} {side:8s} {measured[side]:8.0f} tokens/s over {counted} steps "
                  f"({time.perf_counter() - started:.1f} s wall{extra})")
        app_tps.append(measured["app"])
        headless_tps.append(measured["headless"])
        ratios.append(measured["app"] / measured["headless"])
        print(f"  pair {pair + 1} ratio app/headless {ratios[-1]:.3f}")

    print(f"app      median {statistics.median(app_tps):8.0f} tokens/s (range {min(app_tps):.0f}–{max(app_tps):.0f})")
    print(f"headless median {statistics.median(headless_tps):8.0f} tokens/s "
          f"(range {min(headless_tps):.0f}–{max(headless_tps):.0f})")
    print(f"UI thread CPU while training: median {statistics.median(ui_shares):.1%} of one core "
          "(the most the app can take from the trainer)")
    ratio = statistics.median(ratios)
    print(f"ratio app/headless: median {ratio:.3f} (pairs {', '.join(f'{r:.3f}' for r in ratios)}); "
          f"target >= 0.95: {'met' if ratio >= 0.95 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
