"""The same fine-tuning work timed in tunetui and in LLaMA-Factory, side by side in one run.

Work, the same on both sides: a ~5 M-parameter Llama (random weights, built here) with the demo's byte-level BPE
tokenizer and ChatML template; SFT on the alpaca demo (1,000 rows, prompt tokens masked); batch 8, cutoff 256,
30 steps; AdamW (torch), lr 1e-4 constant, no warm-up, gradient clipping 1.0; gradient checkpointing on (LLaMA-Factory's
default); fp32 on the CPU with one torch thread (OMP_NUM_THREADS=1); no checkpoint before the final save. Methods:
full, freeze (top 1 block), lora (all linear layers, r 8, alpha 16, dropout 0), qlora (NF4, double quantization,
the same LoRA). Every run starts from cold caches (tokenization included), as a first run of a new data set does.

Runs alternate (tunetui, LLaMA-Factory, tunetui, ...) for --rounds rounds; medians are printed per method:
- loop: the training loop as each tool logs it: tunetui's events.jsonl (elapsed seconds at the last step, counted
  from the Trainer's on_train_begin), LLaMA-Factory's train_runtime (HF Trainer, all_results.json);
- wall: the whole command, process start to exit;
- fixed: wall - loop, the cost outside the loop (imports, data, model load, Trainer set-up, final save);
- cpu: the whole command's CPU time (user + system), which other load on a shared machine moves less than wall;
- ratios tunetui / LLaMA-Factory (below 1: tunetui is faster).

LLaMA-Factory lives in its own virtual environment, outside the project:
    python3 -m venv /work/lfvenv && /work/lfvenv/bin/pip install torch==2.13.0 &&
    /work/lfvenv/bin/pip install llamafactory bitsandbytes -c <(echo torch==2.13.0)
    .venv/bin/python bench/bench_vs_llamafactory.py [--lf-python /work/lfvenv/bin/python] [--rounds 3]
                                                    [--methods full,freeze,lora,qlora] [--steps 30]
Without LLaMA-Factory at --lf-python it says so and exits 0.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METHODS = ("full", "freeze", "lora", "qlora")
DATA = ROOT.parent / "shared" / "data" / "alpaca_en_demo.json"
# ~5.3 M parameters; sizes are multiples of 64 so bitsandbytes' 4-bit blocks tile every linear layer.
MODEL_CONFIG = {"vocab_size": 4096, "hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4,
                "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 2048,
                "tie_word_embeddings": False, "eos_token_id": 2, "pad_token_id": 3, "bos_token_id": None}


def build_model(folder: Path) -> int:
    """A random-weight Llama and the demo's BPE tokenizer (trained on the demo data sets) as a model folder."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    from core.demo import TOKENIZER_DIR

    hf_logging.disable_progress_bar()
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**MODEL_CONFIG))
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(TOKENIZER_DIR).save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def tunetui_config(method: str, model: Path, data: Path, out: Path, steps: int) -> dict:
    return {
        "model": {"name_or_path": str(model)},
        "method": {"kind": method, "freeze": {"trainable_layers": 1},
                   "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"},
                   "quant": {"bits": 4, "type": "nf4", "double_quant": True}},
        "data": {"path": str(data), "format": "alpaca", "max_length": 256},
        "train": {"max_steps": steps, "batch_size": 8, "lr": 1e-4, "scheduler": "constant", "warmup_ratio": 0.0,
                  "weight_decay": 0.0, "max_grad_norm": 1.0, "gradient_checkpointing": True, "optim": "adamw",
                  "logging_steps": 1, "save_steps": 100_000, "seed": 0, "device": "cpu"},
        "output": {"dir": str(out)},
    }


def lf_config(method: str, model: Path, dataset_dir: Path, out: Path, steps: int) -> dict:
    config = {
        "model_name_or_path": str(model), "stage": "sft", "do_train": True,
        "finetuning_type": "lora" if method == "qlora" else method,
        "dataset": "alpaca_en_demo", "dataset_dir": str(dataset_dir), "template": "chatml", "cutoff_len": 256,
        "overwrite_cache": True, "output_dir": str(out), "overwrite_output_dir": True,
        "per_device_train_batch_size": 8, "gradient_accumulation_steps": 1, "max_steps": steps,
        "learning_rate": 1e-4, "lr_scheduler_type": "constant", "warmup_ratio": 0.0, "weight_decay": 0.0,
        "max_grad_norm": 1.0, "optim": "adamw_torch", "logging_steps": 1, "save_steps": 100_000, "seed": 0,
        "report_to": "none", "plot_loss": False, "dataloader_num_workers": 0,
        # tunetui counts the real tokens of each step for its tokens/s; the same work here (and the same count).
        "include_num_input_tokens_seen": "non_padding",
    }
    if method == "freeze":
        config.update(freeze_trainable_layers=1, freeze_trainable_modules="all")
    if method in ("lora", "qlora"):
        config.update(lora_rank=8, lora_alpha=16, lora_dropout=0.0, lora_target="all")
    if method == "qlora":
        config.update(quantization_bit=4, quantization_method="bnb", quantization_type="nf4",
                      double_quantization=True)
    return config


def timed(cmd: list[str], env: dict, log: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds: the command's user + system time, which other work on the machine moves less)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with log.open("w") as fh:
        code = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=log.parent).returncode
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise RunError(f"{cmd[-2]} {cmd[-1]} failed with exit code {code}; the end of its output:\n{tail}")
    return wall, cpu


class RunError(Exception):
    pass


def run_tunetui(method: str, work: Path, model: Path, data: Path, steps: int, env: dict) -> dict:
    import yaml

    folder = Path(tempfile.mkdtemp(prefix=f"tt-{method}-", dir=work))
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(tunetui_config(method, model, data, folder / "runs", steps)))
    env = {**env, "TUNETUI_CACHE": str(folder / "cache")}  # cold: tokenized here, not read from an earlier run
    wall, cpu = timed([sys.executable, "-m", "tui.cli", "train", str(path)], {**env, "PYTHONPATH": str(ROOT)},
                 folder / "log.txt")
    events = [json.loads(line) for line in next((folder / "runs").rglob("events.jsonl")).read_text().splitlines()]
    steps_done = [e for e in events if e.get("event") == "StepEnded"]
    last = steps_done[-1]
    tokens = sum((e.get("tokens_per_second") or 0) * (e.get("step_seconds") or 0) for e in steps_done)
    shutil.rmtree(folder, ignore_errors=True)
    return {"loop": last["elapsed_seconds"], "wall": wall, "cpu": cpu, "loss": last.get("loss"),
            "tokens": round(tokens), "steps": last["step"]}


def run_lf(method: str, work: Path, model: Path, dataset_dir: Path, steps: int, env: dict, lf_cli: list[str]) -> dict:
    import yaml

    folder = Path(tempfile.mkdtemp(prefix=f"lf-{method}-", dir=work))
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(lf_config(method, model, dataset_dir, folder / "out", steps)))
    env = {**env, "HF_DATASETS_CACHE": str(folder / "cache")}  # cold, as for tunetui
    wall, cpu = timed([*lf_cli, "train", str(path)], env, folder / "log.txt")
    results = json.loads((folder / "out" / "all_results.json").read_text())
    history = json.loads((folder / "out" / "trainer_state.json").read_text())["log_history"]
    steps_logged = [h for h in history if "loss" in h]
    shutil.rmtree(folder, ignore_errors=True)
    return {"loop": results["train_runtime"], "wall": wall, "cpu": cpu, "loss": steps_logged[-1]["loss"],
            "tokens": history[-1].get("num_input_tokens_seen"), "steps": history[-1].get("step")}


def has_llamafactory(python: str) -> bool:
    try:
        return subprocess.run([python, "-c", "import llamafactory.cli"], capture_output=True,
                              timeout=300).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def load_text() -> str:
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "n/a"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lf-python", default="/work/lfvenv/bin/python",
                        help="the python of a virtual environment with llamafactory installed")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--data", type=Path, default=DATA if DATA.is_file() else ROOT / "core" / "assets" /
                        "alpaca_en_demo.json", help="an alpaca-format JSON file (default: the alpaca demo)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write every run's figures as JSON")
    args = parser.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in methods:
        if m not in METHODS:
            parser.error(f"--methods: unknown {m!r}; choose from {', '.join(METHODS)}")
    if not args.data.is_file():
        parser.error(f"--data: {args.data} is not a file; give the alpaca demo JSON")
    if not has_llamafactory(args.lf_python):
        print(f"LLaMA-Factory not found at {args.lf_python} (import llamafactory failed): nothing run. Install it in "
              "its own venv (see this file's docstring) and pass --lf-python.")
        return 0
    lf_cli = [args.lf_python, "-c", "import sys; from llamafactory.cli import main; sys.exit(main())"]

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", CUDA_VISIBLE_DEVICES="", DISABLE_VERSION_CHECK="1")
    results: dict[str, dict[str, list[dict]]] = {m: {"tunetui": [], "lf": []} for m in methods}
    loads = [load_text()]
    failed: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="tunetui-vs-lf-") as tmp:
        work = Path(tmp)
        n_params = build_model(work / "model")
        dataset_dir = work / "dataset"
        dataset_dir.mkdir()
        shutil.copy(args.data, dataset_dir / "alpaca_en_demo.json")
        (dataset_dir / "dataset_info.json").write_text(json.dumps({"alpaca_en_demo": {
            "file_name": "alpaca_en_demo.json"}}))
        print(f"{n_params / 1e6:.1f} M-parameter Llama, batch 8 x cutoff 256, {args.steps} steps, checkpointing, "
              f"fp32 CPU, 1 thread; {args.rounds} alternating rounds; load average at start {loads[0]}", flush=True)
        for r in range(args.rounds):
            for method in methods:
                try:
                    tt = run_tunetui(method, work, work / "model", dataset_dir / "alpaca_en_demo.json", args.steps,
                                     env)
                    lf = run_lf(method, work, work / "model", dataset_dir, args.steps, env, lf_cli)
                except RunError as exc:  # the other methods still run
                    print(f"round {r + 1} {method:6} {exc}", flush=True)
                    failed.add(method)
                    continue
                results[method]["tunetui"].append(tt)
                results[method]["lf"].append(lf)
                loads.append(load_text())
                line = " | ".join(f"{name} loop {x['loop']:6.2f} s wall {x['wall']:6.2f} s cpu {x['cpu']:6.2f} s "
                                  f"(loss {x['loss']:.3f}, {x['tokens']} tokens)"
                                  for name, x in (("tunetui", tt), ("LLaMA-Factory", lf)))
                print(f"round {r + 1} {method:6} {line} | load {loads[-1]}", flush=True)

    med = statistics.median
    print(f"\nmedians of {args.rounds} rounds (seconds); ratio = tunetui / LLaMA-Factory; load averages seen: "
          f"{min(loads)}-{max(loads)}")
    print(f"{'method':7} {'loop tt':>8} {'loop LF':>8} {'ratio':>6}  {'wall tt':>8} {'wall LF':>8} {'ratio':>6}  "
          f"{'fixed tt':>8} {'fixed LF':>8} {'ratio':>6}  {'cpu tt':>8} {'cpu LF':>8} {'ratio':>6}")
    for method in methods:
        if not results[method]["tunetui"]:
            print(f"{method:7} failed in every round")
            continue
        row = []
        for key in ("loop", "wall", "fixed", "cpu"):
            tt = med([x["wall"] - x["loop"] if key == "fixed" else x[key] for x in results[method]["tunetui"]])
            lf = med([x["wall"] - x["loop"] if key == "fixed" else x[key] for x in results[method]["lf"]])
            row.append(f"{tt:8.2f} {lf:8.2f} {tt / lf:6.2f}")
        print(f"{method:7} " + "  ".join(row))
    if args.json:
        args.json.write_text(json.dumps({"params": n_params, "steps": args.steps, "loads": loads,
                                         "runs": results}, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
