"""`tunetui estimate MODEL`: peak GPU memory per method from the model's config, whether it fits, and a pick."""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from core.methods import DEFAULT as DEFAULT_METHOD
from core.config import METHODS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL",
                        help="a model folder (a folder with only config.json is enough), a config.json, a hub id "
                             "in the local HF cache, or demo:tiny-llama")
    parser.add_argument("--method", choices=METHODS, default=None, help="show only this method")
    parser.add_argument("--batch-size", type=int, default=4, metavar="B", help="per-device batch (default 4)")
    parser.add_argument("--grad-accum", type=int, default=1, metavar="N", help="gradient accumulation (default 1)")
    parser.add_argument("--max-length", type=int, default=1024, metavar="S",
                        help="tokens per example (default 1024)")
    parser.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=False,
                        help="recompute activations in backward (default: off)")
    parser.add_argument("--optim", choices=("adamw", "adamw8bit", "paged_adamw8bit"), default="adamw")
    parser.add_argument("--precision", choices=("bf16", "fp16", "fp32"), default="bf16")
    parser.add_argument("--lora-r", type=int, default=8, metavar="R", help="LoRA/QLoRA rank (default 8)")
    parser.add_argument("--lora-targets", default="all-linear", metavar="all-linear|NAME,NAME",
                        help="LoRA target modules (default all-linear)")
    parser.add_argument("--trainable-layers", type=int, default=2, metavar="N",
                        help="Freeze: top N blocks train, -N the bottom N (default 2)")
    parser.add_argument("--quant-bits", type=int, choices=(4, 8), default=4, help="QLoRA base weights (default 4)")
    parser.add_argument("--gpus", type=int, default=1, metavar="N",
                        help="spread the run over N GPUs (data parallel); figures are per GPU (default 1)")
    parser.add_argument("--distributed", choices=("auto", "ddp", "fsdp"), default="auto",
                        help="with --gpus above 1: DDP (a full copy per GPU) or FSDP (weights, gradients and "
                             "optimizer state split over the GPUs); auto: DDP when it fits one GPU (default)")
    parser.add_argument("--rows", type=int, default=None, metavar="N",
                        help="dataset size in examples (guides full vs freeze vs LoRA)")
    parser.add_argument("--vram", type=float, default=None, metavar="GIB",
                        help="plan for this much free GPU memory instead of this machine's GPU")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow the model's own code when transformers does not know its architecture")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from core.errors import TuneError
    from core.resources.estimate import EstimateSettings
    from core.resources.shape import load_shape
    from core.resources.recommend import recommend

    for name in ("batch_size", "grad_accum", "max_length", "lora_r", "gpus"):
        if getattr(args, name) < 1:
            raise TuneError(f"--{name.replace('_', '-')} is {getattr(args, name)}", None, "Use 1 or more")
    if args.vram is not None and args.vram <= 0:
        raise TuneError(f"--vram is {args.vram}", None, "Give the free GPU memory in GiB, e.g. --vram 24")
    targets = args.lora_targets if args.lora_targets == "all-linear" else tuple(
        t.strip() for t in args.lora_targets.split(",") if t.strip())
    settings = EstimateSettings(
        method=args.method or DEFAULT_METHOD.name, trainable_layers=args.trainable_layers, lora_r=args.lora_r,
        lora_targets=targets, quant_bits=args.quant_bits, batch_size=args.batch_size, grad_accum=args.grad_accum,
        seq_len=args.max_length, gradient_checkpointing=args.gradient_checkpointing, precision=args.precision,
        optim=args.optim, gpus=args.gpus, distributed=args.distributed)
    shape = load_shape(args.model, trust_remote_code=args.trust_remote_code)
    if args.vram is not None:
        free, where = args.vram, f"--vram {args.vram:g} GiB"
    else:
        free, where = _machine_free(args.gpus)
    rec = recommend(shape, settings, free, args.rows)
    methods = [args.method] if args.method else list(METHODS)
    if args.json:
        print(json.dumps(_as_json(args, shape, settings, rec, methods, free, where), indent=2))
    else:
        _print(shape, settings, rec, methods, free, where)
    return 0


def _machine_free(count: int = 1) -> tuple[float | None, str]:
    """The free memory of the GPU the run would use; with several, of the fullest of the first `count`."""
    from core.resources.gpus import SystemSampler

    sampler = SystemSampler()
    try:
        snapshot = sampler.sample()
    finally:
        sampler.close()
    gpus = snapshot.run_gpus()
    if not gpus:
        return None, snapshot.gpu_status
    if count > 1:
        used = gpus[:count]
        least = min(used, key=lambda g: g.memory_free_gib)
        more = f"; only {len(gpus)} GPU{'s' if len(gpus) != 1 else ''} found" if len(gpus) < count else ""
        return least.memory_free_gib, f"the least free of GPUs {', '.join(str(g.index) for g in used)}{more}"
    return gpus[0].memory_free_gib, f"GPU {gpus[0].index} ({gpus[0].name})"


def _as_json(args, shape, settings, rec, methods, free, where) -> dict:
    out_methods = []
    for m in methods:
        e = rec.estimates[m]
        out_methods.append({
            "method": m, "peak_gib": round(e.peak_gib, 2), "fit": rec.fit[m],
            "weights_gib": round(e.weights_gib, 3), "trainable_state_gib": round(e.trainable_state_gib, 3),
            "gradients_gib": round(e.gradients_gib, 3), "optimizer_gib": round(e.optimizer_gib, 3),
            "activations_gib": round(e.activations_gib, 3), "logits_gib": round(e.logits_gib, 3),
            "overhead_gib": round(e.overhead_gib, 3), "total_params": e.total_params,
            "trainable_params": e.trainable_params, "strategy": e.strategy, "gpus": e.gpus,
            "gathered_gib": round(e.gathered_gib, 3), "buckets_gib": round(e.buckets_gib, 3),
            "notes": list(e.notes)})
    settings_dict = asdict(settings)
    settings_dict.pop("method")
    settings_dict.pop("gpu_free_gib")
    return {
        "model": args.model, "architecture": shape.architecture, "params": shape.total_params,
        "layers": shape.num_layers, "hidden_size": shape.hidden_size, "vocab_size": shape.vocab_size,
        "settings": settings_dict, "gpus": settings.gpus, "per_gpu": settings.gpus > 1,
        "free_gib": None if free is None else round(free, 2), "memory_source": where,
        "no_gpu": rec.no_gpu, "methods": out_methods, "recommended": rec.method, "reason": rec.reason,
        "suggestions": [{"method": s.method, "change": s.change, "peak_gib": round(s.peak_gib, 2), "fits": s.fits,
                         "overrides": list(s.overrides)} for s in rec.suggestions],
    }


def _print(shape, settings, rec, methods, free, where) -> None:
    from rich import box
    from rich.table import Table

    from tui.commands.output import StdoutConsole

    from core.units import count
    from core.resources.recommend import NAMES

    console = StdoutConsole()
    gc = "on" if settings.gradient_checkpointing else "off"
    console.print(f"[bold]{shape.name}[/] — {shape.architecture}, {count(shape.total_params)} parameters, "
                  f"{shape.num_layers} layers")
    console.print(f"batch {settings.batch_size} × accumulation {settings.grad_accum}, max length {settings.seq_len}, "
                  f"{settings.precision}, {settings.optim}, gradient checkpointing {gc}")
    per = " per GPU" if settings.gpus > 1 else ""
    console.print(f"free GPU memory{per}: " + (f"{free:.1f} GiB ({where})" if free is not None else where))
    # Nine columns in 80 (the headers set the widths; the figures are short): no vertical rules, and two spaces
    # between columns (a blank rule and one space of padding) instead of rich's default three.
    table = Table(title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
    for col in ("method", "peak GiB", "fit", "weights", "grad+opt", "activ.", "logits", "other", "trains"):
        table.add_column(col, justify="left" if col in ("method", "fit") else "right", no_wrap=True,
                         min_width=len(col))
    style = {"fits": "green", "tight": "yellow", "no": "red"}
    for m in methods:
        e = rec.estimates[m]
        # Without a GPU the line above the table says so; the cell only says whether the CPU copes.
        fit = rec.fit[m] if not rec.no_gpu else ("CPU ok" if rec.fit[m] == "fits" else "too big")
        mark = " *" if m == rec.method else ""
        table.add_row(NAMES[m] + mark, f"{e.peak_gib:.1f}", f"[{style[rec.fit[m]]}]{fit}[/]", f"{e.weights_gib:.1f}",
                      f"{e.trainable_state_gib:.1f}", f"{e.activations_gib:.1f}", f"{e.logits_gib:.1f}",
                      f"{e.overhead_gib:.1f}", count(e.trainable_params).replace(" ", ""))
    console.print(table)
    if settings.gpus > 1:
        ways = ", ".join(f"{NAMES[m]} with {rec.estimates[m].strategy.upper()}" for m in methods)
        console.print(f"[bold]Figures per GPU over {settings.gpus} GPUs:[/] {ways}")
    console.print("[dim]GiB; weights: the model on the GPU; grad+opt: gradients and optimizer state; other: CUDA "
                  "context and allocator slack" + (", FSDP's gathered unit and DDP's gradient buckets"
                                                   if settings.gpus > 1 else "") + ". * recommended[/]")
    console.print(f"[bold]Recommended: {NAMES[rec.method]}.[/] {rec.reason}")
    for s in rec.suggestions:
        ok = "" if s.fits else " (still too much)"
        console.print(f"  • {NAMES[s.method]} with {s.change}: {s.peak_gib:.1f} GiB{ok}   "
                      f"[dim]{' '.join('--set ' + o for o in s.overrides)}[/]")
    notes: dict[str, list[str]] = {}
    for m in methods:
        for note in rec.estimates[m].notes:
            notes.setdefault(note, []).append(NAMES[m])
    for note, names in notes.items():
        console.print(f"[dim]{', '.join(names)}: {note}[/]")
