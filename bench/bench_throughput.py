"""Engine throughput vs a bare PyTorch loop, per method: tokens/s measured side by side (A B A B) in one process.

A = core.training.runner.run (what `tunetui train` runs: Trainer + event callback + events.jsonl).
B = a plain loop: same model and method set-up (load_model + methods.apply), same tokenized batches and collator,
    same batch size, AdamW with the same settings, gradient clipping, loss.item() each step, and the engine's
    host-memory setting (core.training.hostmem), so the ratio measures what the engine adds to the step.
A' (unless --no-allocator) = A without that setting: what it gains.
Both train packed text blocks (every sequence is exactly data.max_length tokens), so batch composition cannot
favour either side. Timed: steps WARMUP+1 .. WARMUP+STEPS of each run, one torch thread, by wall clock and by the
training thread's CPU time (the CPU-time ratio holds steady while other work shares the machine).

    .venv/bin/python bench/bench_throughput.py [--methods full,freeze,lora,qlora] [--rounds 3] [--steps 20]

Then (unless --no-padding) real tokens/s of SFT on the alpaca demo at max length 1024, padded vs padding-free.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WARMUP = 2


def make_config(method: str, data_path: Path, output_dir: Path, args):
    from core import config as cfg

    return cfg.from_dict({
        "model": {"name_or_path": "demo:tiny-llama"},
        "method": {"kind": method, "freeze": {"trainable_layers": 2}},
        "data": {"path": str(data_path), "format": "text", "max_length": args.seq},
        "train": {"max_steps": WARMUP + args.steps, "batch_size": args.batch, "lr": 1e-4, "warmup_ratio": 0.0,
                  "scheduler": "constant", "save_steps": 10_000, "seed": 0},
        "output": {"dir": str(output_dir)},
    })


def engine_tokens_per_second(config) -> tuple[float, float]:
    """A: the real runner; tokens per second of wall time and of the training thread's CPU time between StepEnded
    events, tokens from the steps they report."""
    from core.events import RunFailed, StepEnded
    from core.training.runner import run

    marks: list[tuple[int, float, float]] = []

    def emit(event):
        if isinstance(event, StepEnded):
            tokens = (event.tokens_per_second or 0.0) * (event.step_seconds or 0.0)
            marks.append((event.step, time.perf_counter(), time.thread_time(), tokens))
        elif isinstance(event, RunFailed):
            raise SystemExit(f"engine run failed: {event.message}\n{event.traceback or ''}")

    run(config, emit)
    start = next(m for m in marks if m[0] == WARMUP)
    tokens = sum(m[3] for m in marks if m[0] > WARMUP)
    return tokens / (marks[-1][1] - start[1]), tokens / (marks[-1][2] - start[2])


def untuned_engine_tokens_per_second(config) -> tuple[float, float]:
    """A without its host-memory setting (core.training.hostmem): glibc returns freed memory to the system."""
    from core.training import runner

    kept = runner.keep_freed_memory
    runner.keep_freed_memory = lambda device: (lambda: None)
    try:
        return engine_tokens_per_second(config)
    finally:
        runner.keep_freed_memory = kept


def bare_tokens_per_second(config) -> tuple[float, float]:
    """B: the same model/method/batches/optimizer in a plain loop; tokens per second of wall and of CPU time."""
    import torch
    from torch.utils.data import DataLoader

    from core.methods import apply as apply_method
    from core.training.encode import tokenize
    from core.training.hostmem import keep_freed_memory
    from core.training.models import load_model, load_tokenizer
    from core.training.rawdata import load_raw

    torch.manual_seed(config.train.seed)
    tokenizer = load_tokenizer(config.model)
    prepared = tokenize(load_raw(config.data), tokenizer, config.data)
    model = load_model(config.model, config.method, prepared.task, device="cpu")
    model, _ = apply_method(model, config.method, prepared.task)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.train.lr, weight_decay=config.train.weight_decay)
    loader = DataLoader(prepared.train, batch_size=config.train.batch_size, shuffle=True,
                        collate_fn=prepared.collator(tokenizer))
    batches = iter(loader)
    tokens, start, cpu_start = 0, None, None
    restore = keep_freed_memory("cpu")  # the engine's host-memory setting, so the ratio measures the engine alone
    for step in range(1, config.train.max_steps + 1):
        batch = next(batches)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.train.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()  # any real loop reads the loss to show it
        if step == WARMUP:
            start, cpu_start = time.perf_counter(), time.thread_time()
        elif step > WARMUP:
            tokens += int(batch["attention_mask"].sum())
    wall, cpu = time.perf_counter() - start, time.thread_time() - cpu_start
    restore()
    return tokens / wall, tokens / cpu


def text_file(folder: Path) -> Path:
    """The alpaca demo as plain documents (instruction + output), for packed continued pre-training."""
    from core.training.sources import ASSETS_DIR

    rows = json.loads((ASSETS_DIR / "alpaca_en_demo.json").read_text(encoding="utf-8"))
    path = folder / "docs.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps({"text": f"{row['instruction']}\n{row['input']}\n{row['output']}".strip()}) + "\n")
    return path


def padding_table(args, tmp: Path) -> None:
    """Real (non-padding) tokens/s of LoRA SFT on the alpaca demo at max length --padding-seq, batches padded to
    their longest example vs padding-free (concatenated, data.padding_free: true), alternated; and the padding
    share of the padded runs. On a CPU with the tiny demo model the concatenated batch's dense block mask (attention
    over every token of the batch) can cost more than the padding saves; on a GPU-sized model the linear layers
    dominate and the saving is the padding share."""
    from core import config as cfg
    from core.training.encode import padding_share, token_lengths, tokenize
    from core.training.models import load_tokenizer
    from core.training.rawdata import load_raw

    def sft_config(padding_free: bool):
        return cfg.from_dict({
            "model": {"name_or_path": "demo:tiny-llama"}, "method": {"kind": "lora"},
            "data": {"path": "demo:alpaca_en", "max_length": args.padding_seq, "padding_free": padding_free},
            "train": {"max_steps": WARMUP + args.steps, "batch_size": args.batch, "lr": 1e-4, "warmup_ratio": 0.0,
                      "scheduler": "constant", "save_steps": 10_000, "seed": 0},
            "output": {"dir": str(tmp / "sft-runs")}})

    config = sft_config(False)
    prepared = tokenize(load_raw(config.data, seed=0), load_tokenizer(config.model), config.data)
    share = padding_share(token_lengths(prepared.train), args.batch, 0)
    runs: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.rounds):
        for free in (False, True):
            runs[free].append(engine_tokens_per_second(sft_config(free))[0])
    padded, flat = statistics.median(runs[False]), statistics.median(runs[True])
    print(f"\nSFT, LoRA, alpaca demo at max length {args.padding_seq}, batch {args.batch}: padding is "
          f"{100 * share:.0f}% of the tokens of padded batches", flush=True)
    print(f"  real tokens/s padded {padded:,.0f} ({', '.join(f'{x:,.0f}' for x in runs[False])}); padding-free "
          f"{flat:,.0f} ({', '.join(f'{x:,.0f}' for x in runs[True])}); ratio {flat / padded:.2f}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="full,freeze,lora,qlora")
    parser.add_argument("--rounds", type=int, default=3, help="A B pairs per method")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per run (after warm-up)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--padding-seq", type=int, default=1024, help="max length of the padding comparison")
    parser.add_argument("--no-padding", action="store_true", help="skip the padding-free comparison")
    parser.add_argument("--no-allocator", dest="allocator", action="store_false",
                        help="skip the engine run without its host-memory setting (core.training.hostmem)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    print(f"torch threads: {torch.get_num_threads()}; demo:tiny-llama; batch {args.batch} x {args.seq} tokens "
          f"(packed text); {args.steps} timed steps after {WARMUP} warm-up; {args.rounds} A/B rounds per method",
          flush=True)
    print(f"{'method':8} {'engine tok/s (median, min-max)':>34} {'bare tok/s (median, min-max)':>34} {'ratio':>7} "
          f"{'CPU-time ratio':>15}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data_path = text_file(tmp)
        for method in args.methods.split(","):
            config = make_config(method, data_path, tmp / "runs", args)
            engine, bare, untuned = [], [], []
            for _ in range(args.rounds):
                engine.append(engine_tokens_per_second(config))
                bare.append(bare_tokens_per_second(config))
                if args.allocator:
                    untuned.append(untuned_engine_tokens_per_second(config))
            e, b = statistics.median(x for x, _ in engine), statistics.median(x for x, _ in bare)
            # Tokens per second of the training thread's CPU time: what each side computes, whatever else the
            # machine runs at the same time (wall-clock ratios on a shared 2-core machine move by 10% between runs).
            cpu = statistics.median(x for _, x in engine) / statistics.median(x for _, x in bare)
            print(f"{method:8} {e:12,.0f} ({min(x for x, _ in engine):,.0f}-{max(x for x, _ in engine):,.0f}){'':8} "
                  f"{b:12,.0f} ({min(x for x, _ in bare):,.0f}-{max(x for x, _ in bare):,.0f}){'':8} {e / b:7.3f} "
                  f"{cpu:15.3f}", flush=True)
            print(f"         engine runs: {', '.join(f'{x:,.0f}' for x, _ in engine)}; "
                  f"bare runs: {', '.join(f'{x:,.0f}' for x, _ in bare)}", flush=True)
            if untuned:
                u = statistics.median(x for x, _ in untuned)
                print(f"         engine without its host-memory setting: {u:,.0f} tok/s "
                      f"({', '.join(f'{x:,.0f}' for x, _ in untuned)}); with it {e / u:.2f}x", flush=True)
        if not args.no_padding:
            padding_table(args, tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
