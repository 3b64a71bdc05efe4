"""Accuracy of core.resources.estimate against published fine-tuning memory figures.

Reads shared/reference/vram_reference_public.csv and, for every row that states its settings (a model with a
config in shared/reference/configs, batch, sequence length, method, precision, checkpointing), prints the
published figure beside the estimate and the error. Then the median and worst absolute error over the *measured*
rows that the estimator can model (rows that offload to CPU, use Unsloth's kernels, or report a paged optimizer's
GPU share are printed but left out, with the reason: docs/estimator.md §5).

Each source is a training stack with its own fixed behaviour, set once per stack in `stack_of`, never per row:
- torchtune: NF4 from torchao (no fp32 upcast of embeddings/norms), lora_dropout 0, chunked cross-entropy where the
  row says so and in its Llama 3.x recipes (CEWithChunkedOutputLoss; assumed, the rows do not say it), counter
  "reserved" or "active".
- LitGPT (2023): lm_head and loss in chunks of 128 tokens, lora_dropout 0.05, no fp32 upcast, torch max allocated,
  bitsandbytes 0.41 (its 4-bit matmul kept its input for backward).
- transformers docs (BERT, 4.2x, torch 1.x): eager attention, zero_grad() kept gradients, 1343 MB CUDA context
  as the docs measured, nvidia-smi.
- Unsloth's HF+FA2 baseline and Axolotl: the HF/PEFT defaults tunetui itself uses; the figure is the card.

Held-out rows: the rows are split by model (a CRC-32 of the config folder's name, so the split never changes):
models whose hash is even form the calibration part, the others the held-out part. Whoever changes a term of the
estimator may look at the calibration rows; the held-out figures are the ones to quote, since nothing was tuned
on them. The summary prints both parts and all rows.

Run: .venv/bin/python bench/bench_estimate_accuracy.py
(about a second; no torch import). Set TUNETUI_REFERENCE to the folder if it is not ../shared/reference.
"""
from __future__ import annotations

import csv
import os
import re
import statistics
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.resources.estimate import GIB, EstimateSettings, estimate  # noqa: E402
from core.resources.shape import load_shape  # noqa: E402

REFERENCE = Path(os.environ.get("TUNETUI_REFERENCE") or ROOT.parent / "shared" / "reference")

# CSV model name -> config folder. Variants share the architecture (Instruct, 3 vs 3.1 vs 3.3 differ in weights and
# RoPE scaling only, which changes no memory term).
CONFIGS = {
    "Llama-2-7B": "llama-2-7b", "Llama-2-13B": "llama-2-13b", "LLaMA-65B": "llama-65b",
    "Llama-3-8B": "llama-3.1-8b", "Llama-3.1-8B": "llama-3.1-8b", "Llama-3.1-8B-Instruct": "llama-3.1-8b",
    "Llama-3.3-70B-Instruct": "llama-3.1-70b", "Llama-3.2-3B": "llama-3.2-3b", "Mistral-7B": "mistral-7b-v0.1",
    "CodeLlama-34B": "codellama-34b", "phi-1.5": "phi-1.5", "bert-large-uncased": "bert-large-uncased",
}


def held_out(config: str) -> bool:
    """The deterministic split: True for the held-out models."""
    return zlib.crc32(config.encode()) % 2 == 1


def summary(name: str, errors: list[float]) -> str:
    if not errors:
        return f"{name}: no rows"
    absolute = [abs(e) for e in errors]
    return (f"{name}: {len(errors)} rows; median |error| {statistics.median(absolute):.1f}%; worst |error| "
            f"{max(absolute):.1f}%; mean error {statistics.mean(errors):+.1f}%")


@dataclass(frozen=True)
class Stack:
    """How a training stack behaves, fixed for all its rows."""
    name: str
    counter: str
    """What the figure includes: card (nvidia-smi / the GPU's size), reserved (torch, no CUDA context) or
    allocated (torch max allocated / active: no context, no allocator slack)."""
    chunked_loss: bool = False
    upcast_non_quantized: bool = True
    lora_dropout: float = 0.0
    attention: str = "sdpa"
    grads_freed: bool = True
    """False for torch 1.x-era stacks: zero_grad() kept gradient tensors between steps."""
    quant_saves_input: bool = False
    """bitsandbytes of 2023 kept each 4-bit matmul's input for backward."""
    context_gib: float | None = None
    """The CUDA context the source measured on its machine, where it says."""


def stack_of(row: dict) -> Stack:
    src, notes = row["source"], row["notes"]
    if "torchtune" in src:
        # torchtune's NF4 (torchao) keeps embeddings/norms in bf16; recipes set lora_dropout 0.0. Its Llama 3.x
        # configs use CEWithChunkedOutputLoss unless the row says it measured the full loss; the Llama 2 table
        # predates chunked loss.
        counter = "allocated" if "Peak Memory Active" in notes else "reserved"
        chunked = "chunked" in notes.lower() or (row["model"].startswith("Llama-3") and "full CE" not in notes)
        return Stack("torchtune", counter, chunked_loss=chunked, upcast_non_quantized=False)
    if "litgpt" in src:
        # LitGPT: lm_head + cross-entropy in chunks of 128 tokens, lora_dropout 0.05, 'Max GPU RAM' = allocated.
        # The table dates from October 2023: bitsandbytes 0.41, whose MatMul4Bit saved its input.
        return Stack("litgpt", "allocated", chunked_loss=True, upcast_non_quantized=False, lora_dropout=0.05,
                     quant_saves_input=True)
    if "transformers docs" in src:
        # transformers 4.2x on torch 1.x: BERT ran eager attention, zero_grad() kept the gradients, and the docs
        # measured the CUDA kernels alone at 1343 MB; the figure is nvidia-smi's.
        return Stack("hf-docs", "card", attention="eager", grads_freed=False, context_gib=1343 * 1024 ** 2 / GIB)
    if "unsloth" in src.lower():
        return Stack("hf+peft (unsloth bench)", "card")
    if "axolotl" in src:
        return Stack("axolotl", "card", chunked_loss="Cut Cross Entropy" in notes or "CCE" in notes,
                     lora_dropout=0.05)
    return Stack("other", "card")


def unmodelled(row: dict) -> str | None:
    """Why the estimator cannot reproduce this row's GPU figure, or None."""
    text = " ".join(row[k] for k in ("optimizer", "grad_ckpt", "notes", "source"))
    if "offload" in text:
        return "activations/checkpoints offloaded to CPU"
    if "impl=Unsloth" in text or "with Unsloth" in text:
        return "Unsloth's own kernels"
    if "optimizer_in_bwd" in text or "opt_in_bwd" in text:
        return "optimizer in backward frees gradients layer by layer"
    if "paged" in row["optimizer"].lower() and row["method"] == "full":
        return "paged optimizer state spills to CPU (docs/estimator.md §5)"
    return None


def settings_of(row: dict) -> tuple[EstimateSettings | None, str]:
    """The row's settings, or None and why not."""
    if not row["batch"].strip().isdigit():
        return None, "batch not stated"
    seq = re.match(r"\s*(\d+)", row["seq_len"])
    if not seq:
        return None, "sequence length not stated"
    ckpt = row["grad_ckpt"].strip().lower()
    if not ckpt or ckpt == "unknown":
        return None, "checkpointing not stated"
    opt = row["optimizer"].lower()
    if "adafactor" in opt:
        return None, "Adafactor is not an option here"
    optim = "adamw"
    if "8bit" in opt.replace("-", "").replace("_", "") or "adam8bit" in opt:
        optim = "paged_adamw8bit" if "paged" in opt else "adamw8bit"
    bits, notes, method = row["bits"], row["notes"], row["method"]
    stack = stack_of(row)
    kw: dict = dict(method=method, batch_size=int(row["batch"]), seq_len=int(seq.group(1)),
                    gradient_checkpointing=ckpt.startswith(("yes", "likely yes")), optim=optim,
                    chunked_loss=stack.chunked_loss, upcast_non_quantized=stack.upcast_non_quantized,
                    lora_dropout=stack.lora_dropout, attention=stack.attention,
                    grads_freed_after_step=stack.grads_freed, quant_saves_input=stack.quant_saves_input)
    if "fp32" in bits.lower():
        kw["precision"] = "fp32"
    elif "fp16" in bits.lower():
        kw.update(precision="fp16", weights_dtype="float32")  # AMP on an fp32 model
    if "LLM.int8" in bits:
        kw.update(method="qlora", quant_bits=8)  # LoRA over an 8-bit base is our qlora with 8 bits
    elif method == "qlora":
        kw.update(quant_bits=4, double_quant="DQ" in bits or "torchao" in bits)  # torchao NF4 quantizes scales
    ga = re.search(r"GA\s*(\d+)", notes)
    if ga:
        kw["grad_accum"] = int(ga.group(1))
    if method in ("lora", "qlora"):
        rank = re.search(r"\br\s*=?\s*(\d+)|rank (\d+)", notes, re.IGNORECASE)
        kw["lora_r"] = int(next(g for g in rank.groups() if g)) if rank else 8
        low = notes.lower()
        if "q,v only" in low or "q,v r" in low or "lora q,v" in low:
            kw["lora_targets"] = ("q_proj", "v_proj")
        elif "q,v,o + mlp" in low:
            kw["lora_targets"] = ("q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    if "seq-classification" in notes:
        kw["task"] = "classification"
    return EstimateSettings(**kw), ""


def published_gib(row: dict) -> float:
    value = float(row["vram_gb"])
    notes = row["notes"]
    if "MiB->shown /1000" in notes:
        return value * 1000 * 1024 ** 2 / GIB
    if "GiB" in notes:
        return value
    return value * 1e9 / GIB


def comparable_gib(est, stack: Stack) -> float:
    counter = stack.counter
    if counter == "card":
        return est.peak_gib - est.context_gib + (stack.context_gib or est.context_gib)
    if counter == "reserved":
        return est.peak_gib - est.context_gib
    return est.peak_gib - est.context_gib - est.allocator_gib


def main() -> int:
    table = REFERENCE / "vram_reference_public.csv"
    if not table.is_file():
        print(f"skipped: {table} not found (set TUNETUI_REFERENCE to the reference folder)")
        return 0
    rows = list(csv.DictReader(table.open(encoding="utf-8")))
    errors: dict[bool, list[float]] = {False: [], True: []}
    skipped: dict[str, int] = {}
    print(f"{'row':>3} {'part':<5} {'model':<22} {'method':<6} {'b':>2} {'seq':>6} {'gc':<3} {'counter':<9} "
          f"{'published':>9} {'estimate':>8} {'error':>7}  note")
    for i, row in enumerate(rows, start=2):  # CSV line numbers (header is line 1)
        if "same stack as" in row["notes"]:  # "QLoRA, same stack as LoRA row": the row above states the stack
            row = {**row, "notes": row["notes"] + "; " + rows[i - 3]["notes"]}
        config = CONFIGS.get(row["model"].split(" (")[0])
        if config is None:
            skipped["no config for the model"] = skipped.get("no config for the model", 0) + 1
            continue
        settings, why = settings_of(row)
        if settings is None:
            skipped[why] = skipped.get(why, 0) + 1
            continue
        stack = stack_of(row)
        est = estimate(load_shape(str(REFERENCE / "configs" / config)), settings)
        ours, theirs = comparable_gib(est, stack), published_gib(row)
        err = (ours - theirs) / theirs * 100
        measured = row["measured_or_estimated"].startswith("measured")
        reason = unmodelled(row)
        counted = measured and reason is None
        part = held_out(config)
        if counted:
            errors[part].append(err)
        note = "" if counted else (reason or f"not measured ({row['measured_or_estimated']})")
        print(f"{i:>3} {'held' if part else 'calib':<5} {row['model'][:22]:<22} {settings.method:<6} {settings.batch_size:>2} {settings.seq_len:>6} "
              f"{'yes' if settings.gradient_checkpointing else 'no':<3} {stack.counter:<9} {theirs:>9.2f} "
              f"{ours:>8.2f} {err:>+6.1f}%  {stack.name}{'; excluded: ' + note if note else ''}")
    print()
    print("rows without stated settings: " + "; ".join(f"{why}: {n}" for why, n in sorted(skipped.items())))
    print(summary("held-out measured rows", errors[True]) + " (goal: median <= 8%, worst <= 20%)")
    print(summary("calibration measured rows", errors[False]))
    print(summary("all measured rows", errors[True] + errors[False]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
