"""GPU check: each method trained through tunetui's own engine on real model shapes, measured against the estimate.

For each model (random weights built from a real config in bench/configs/: Qwen2.5-0.5B, Llama-3.2-1B,
Llama-3.2-3B), each method (full, freeze: top 2 blocks, lora/qlora: all linear layers, r 8) and each batch x
length setting, it runs core.training.runner.run for --steps steps on packed text (every sequence exactly the
setting's length) and prints one row:
- prec: what the engine trains in (bf16 on sm80+, fp16 mixed precision on older cards, fp32 on the CPU; the
  engine's ModelReady), with the engine's own lines naming the GPU and why that precision printed once above the
  table;
- est card / NVML: the estimated peak (core.resources.estimate) beside the most memory NVML saw in use on the
  card during the run (sampled every 50 ms; includes the CUDA context and anything else on the card);
- est alloc / torch: the estimate less its CUDA context and allocator slack, beside torch.cuda.max_memory_allocated;
- tok/s over the steps after the first two (warm-up), and MFU = 6 * N * tok/s / the card's dense bf16 peak
  (N = the base model's parameters; attention FLOPs and checkpointing's recompute are not counted; LoRA, QLoRA
  and freeze skip most weight gradients, so 6N overstates their work and their MFU reads high).

    .venv/bin/python bench/gpu_check.py [--quick] [--models qwen2.5-0.5b,...] [--methods full,lora] [--steps 30]
                                        [--peak-tflops 989] [--json OUT]
    .venv/bin/python bench/gpu_check.py --cpu-smoke     # the whole path on the CPU with a tiny model

Without a CUDA GPU (and without --cpu-smoke) it prints one line saying so and exits 0. On the CPU (--cpu-smoke) the
measured memory columns and MFU read n/a; the estimate columns are what the same run would need on a GPU in fp32.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIGS = Path(__file__).resolve().parent / "configs"
MODELS = ("qwen2.5-0.5b", "llama-3.2-1b", "llama-3.2-3b")
METHODS = ("full", "freeze", "lora", "qlora")
# (batch, length, gradient checkpointing)
SETTINGS = ((8, 512, False), (4, 2048, True))
QUICK_SETTING = (4, 1024, False)
WARMUP = 2
# Dense bf16 tensor-core peaks from the vendors' data sheets (TFLOP/s, without 2:4 sparsity), by device name.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0,
                    "A10G": 70.0, "A10": 125.0, "RTX 4090": 165.0, "B200": 2250.0}
# A 2-layer Llama for --cpu-smoke; sizes are multiples of 64 so bitsandbytes' 4-bit blocks tile every layer.
TINY_CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 4096, "hidden_size": 128,
               "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
               "max_position_embeddings": 512, "tie_word_embeddings": False}


def peak_tflops(name: str, override: float | None) -> tuple[float | None, str]:
    if override:
        return override, f"{override:g} TFLOP/s (--peak-tflops)"
    for key, value in PEAK_BF16_TFLOPS.items():  # longest names first where one contains another (H100 PCIe)
        if key in name:
            return value, f"{value:g} TFLOP/s dense bf16 ({key} data sheet)"
    return None, "unknown for this card: MFU not shown (give --peak-tflops)"


def device_log_line(message: str) -> bool:
    """The engine's log lines naming the GPU, the precision and why (core.training.gpu: describe_device,
    decide_precision, the fp16 upcast)."""
    return message.startswith(("Training on ", "fp16 mixed precision:")) or ": training in " in message


def build_model_dir(raw_config: dict, folder: Path, device: str) -> int:
    """Random weights of the given architecture plus the demo tokenizer, saved as an ordinary model folder.
    Returns the parameter count."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from transformers.utils import logging as hf_logging

    from core.demo import TOKENIZER_DIR

    hf_logging.disable_progress_bar()

    raw = dict(raw_config)
    config = AutoConfig.for_model(raw.pop("model_type"), **raw)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.device(device):  # initialising billions of weights is much faster on the GPU
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    n_params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(folder)
    del model
    # The demo's 4,096-token BPE: its ids are valid in any larger vocabulary, and text is all these runs need.
    AutoTokenizer.from_pretrained(TOKENIZER_DIR).save_pretrained(folder)
    if device == "cuda":
        torch.cuda.empty_cache()
    return n_params


def text_file(folder: Path) -> Path:
    """The alpaca demo as plain documents, packed by the engine into blocks of exactly max_length tokens."""
    rows = json.loads((ROOT / "core" / "assets" / "alpaca_en_demo.json").read_text(encoding="utf-8"))
    path = folder / "docs.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps({"text": f"{row['instruction']}\n{row['input']}\n{row['output']}".strip()}) + "\n")
    return path


class NvmlPeak:
    """The most memory NVML reports in use on the card, sampled in a thread (torch's counters miss the context)."""

    def __init__(self, index: int):
        import pynvml

        pynvml.nvmlInit()
        self.nvml, self.handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(index)
        self.peak, self._stop = 0, threading.Event()

    def __enter__(self):
        self.peak = 0
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run_one(model_dir: Path, data_path: Path, out_dir: Path, method: str, setting, steps: int, device: str) -> dict:
    from core import config as cfg
    from core.events import LogLine, ModelReady, RunFailed, StepEnded
    from core.training.runner import run

    batch, length, checkpointing = setting
    config = cfg.from_dict({
        "model": {"name_or_path": str(model_dir)},
        "method": {"kind": method, "freeze": {"trainable_layers": 2}, "lora": {"r": 8, "dropout": 0.0}},
        "data": {"path": str(data_path), "format": "text", "max_length": length},
        "train": {"max_steps": steps, "batch_size": batch, "lr": 1e-5, "warmup_ratio": 0.0, "scheduler": "constant",
                  "save_steps": 1_000_000, "gradient_checkpointing": checkpointing, "device": device, "seed": 0},
        "output": {"dir": str(out_dir)},
    })
    steps_seen: list[StepEnded] = []
    failure: list[str] = []

    row = {"method": method, "batch": batch, "length": length, "checkpointing": checkpointing, "precision": None,
           "device_log": [],
           "est_card_gib": None, "nvml_gib": None, "est_alloc_gib": None, "torch_gib": None, "tokens_per_s": None}

    def emit(event):
        if isinstance(event, StepEnded):
            steps_seen.append(event)
        elif isinstance(event, ModelReady):
            row["precision"] = event.precision
        elif isinstance(event, LogLine) and device_log_line(event.message):
            row["device_log"].append(event.message)  # "Training on GPU 0 (...)", "...: training in bf16 ..."
        elif isinstance(event, RunFailed):
            failure.append(event.message)
    from core.resources.estimate import EstimateSettings, estimate
    try:
        from core.resources.shape import load_shape
    except ImportError:  # before the shape code had its own module
        from core.resources.estimate import load_shape

    est = estimate(load_shape(str(model_dir)), EstimateSettings.from_config(config))
    row["est_card_gib"] = est.peak_gib
    row["est_alloc_gib"] = est.peak_gib - est.context_gib - est.allocator_gib
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        with NvmlPeak(torch.cuda.current_device()) as nvml:
            run(config, emit)
        row["nvml_gib"] = nvml.peak / 2**30
        row["torch_gib"] = torch.cuda.max_memory_allocated() / 2**30
    else:
        run(config, emit)
    if failure:
        row["error"] = failure[0].splitlines()[0]
        return row
    timed = [e for e in steps_seen if e.step > WARMUP and e.tokens_per_second and e.step_seconds]
    if timed:
        tokens = sum(e.tokens_per_second * e.step_seconds for e in timed)
        row["tokens_per_s"] = tokens / sum(e.step_seconds for e in timed)
    return row


def fmt(value, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def print_row(model: str, row: dict) -> None:
    setting = f"{row['batch']}x{row['length']}{' gc' if row['checkpointing'] else ''}"
    err = None
    if row["torch_gib"] and row["est_alloc_gib"]:
        err = (row["est_alloc_gib"] - row["torch_gib"]) / row["torch_gib"] * 100
    mfu = None if row.get("mfu") is None else row["mfu"] * 100
    tail = f"   failed: {row['error']}" if row.get("error") else ""
    print(f"{model:14} {row['method']:7} {setting:12} {row['precision'] or 'n/a':>4} {fmt(row['est_card_gib']):>8} "
          f"{fmt(row['nvml_gib']):>8} {fmt(row['est_alloc_gib']):>9} {fmt(row['torch_gib']):>8} {fmt(err, '+.0f'):>6} "
          f"{fmt(row['tokens_per_s'], ',.0f'):>9} {fmt(mfu, '.1f'):>6}{tail}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"one model ({MODELS[0]}), one setting "
                        f"({QUICK_SETTING[0]}x{QUICK_SETTING[1]})")
    parser.add_argument("--models", default=",".join(MODELS), help=f"from {', '.join(MODELS)}")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--peak-tflops", type=float, help="the card's dense bf16 peak, where the table lacks it")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the rows as JSON")
    parser.add_argument("--cpu-smoke", action="store_true", help="run the whole path on the CPU with a tiny model")
    args = parser.parse_args(argv)

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    models = [MODELS[0]] if args.quick else [m.strip() for m in args.models.split(",") if m.strip()]
    for name, known, option in [(m, METHODS, "--methods") for m in methods] + [(m, MODELS, "--models")
                                                                               for m in models]:
        if name not in known:
            parser.error(f"{option}: unknown {name!r}; choose from {', '.join(known)}")
    settings = [QUICK_SETTING] if args.quick else list(SETTINGS)

    import torch

    if args.cpu_smoke:
        device, models, settings, steps = "cpu", ["tiny-llama"], [(2, 64, False)], min(args.steps, WARMUP + 2)
        torch.set_num_threads(1)
        card, peak, peak_text = "CPU", None, "n/a on the CPU"
    elif not torch.cuda.is_available():
        print(f"No CUDA GPU here: nothing run. On a GPU this trains {', '.join(methods)} on random-weight "
              f"{', '.join(models)} for {args.steps} steps at {len(settings)} batch x length setting(s) and prints "
              "the GPU and precision the engine chose, peak memory (torch, NVML) against the estimate, tokens/s and "
              "MFU. --cpu-smoke runs the path on the CPU.")
        return 0
    else:
        device, steps = "cuda", args.steps
        card = torch.cuda.get_device_name()
        peak, peak_text = peak_tflops(card, args.peak_tflops)

    print(f"{card}; MFU against {peak_text}; {steps} steps per run, tok/s after {WARMUP} warm-up steps; "
          "memory in GiB; err = (est alloc - torch) / torch", flush=True)
    print(f"{'model':14} {'method':7} {'batch x len':12} {'prec':>4} {'est card':>8} {'NVML':>8} {'est alloc':>9} "
          f"{'torch':>8} {'err %':>6} {'tok/s':>9} {'MFU %':>6}", flush=True)
    rows = []
    device_log = None
    with tempfile.TemporaryDirectory(prefix="tunetui-gpu-check-") as tmp:
        tmp = Path(tmp)
        data_path = text_file(tmp)
        for model in models:
            raw = TINY_CONFIG if model == "tiny-llama" else json.loads((CONFIGS / f"{model}.json").read_text())
            model_dir = tmp / model
            n_params = build_model_dir(raw, model_dir, device)
            for setting in settings:
                for method in methods:
                    row = run_one(model_dir, data_path, tmp / "runs", method, setting, steps, device)
                    if row["device_log"] and row["device_log"] != device_log:  # the engine's GPU and precision
                        device_log = row["device_log"]
                        print("\n".join(f"  {line}" for line in device_log), flush=True)
                    row.update(model=model, params=n_params, device=card,
                               mfu=6 * n_params * row["tokens_per_s"] / (peak * 1e12)
                               if peak and row["tokens_per_s"] else None)
                    print_row(model, row)
                    rows.append(row)
    if args.json:
        args.json.write_text(json.dumps({"card": card, "peak_tflops": peak, "steps": steps, "rows": rows}, indent=1))
        print(f"wrote {args.json}")
    medians = [r["tokens_per_s"] for r in rows if r["tokens_per_s"]]
    if medians:
        print(f"{len(rows)} runs, median {statistics.median(medians):,.0f} tok/s")
    return 1 if any(r.get("error") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
