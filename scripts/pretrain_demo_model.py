"""Rebuild core/assets/tiny-llama/model.safetensors: the demo model, briefly pre-trained with tunetui itself.

A random-initialised model barely moves under LoRA (its frozen random LM head caps the logits), so the demo would
show a flat loss. Two full fine-tuning runs give it some English first: plain text (c4) then tool-calling chats
(glaive). The English alpaca set the demo trains on is left unseen. Run once; the output is committed.
"""
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from core import config as cfg
from core.demo import TOKENIZER_DIR
from core.events import RunFailed, RunFinished, StepEnded
from core.training.runner import run

DATA = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data").resolve()


def phase(model: str, data: str, fmt: str, epochs: float, out: Path) -> Path:
    config = cfg.from_dict({
        "model": {"name_or_path": model},
        "method": {"kind": "full"},
        "data": {"path": data, "format": fmt, "max_length": 256},
        "train": {"epochs": epochs, "batch_size": 16, "lr": 3e-3, "warmup_ratio": 0.05, "save_steps": 10_000,
                  "weight_decay": 0.01},
        "output": {"dir": str(out)},
    })

    def emit(event):
        if isinstance(event, StepEnded) and event.step % 20 == 0:
            print(f"  step {event.step}/{event.max_steps} loss {event.loss}", flush=True)
        if isinstance(event, RunFailed):
            raise SystemExit(event.message + "\n" + (event.traceback or ""))
        if isinstance(event, RunFinished):
            print(f"  done: train loss {event.train_loss}", flush=True)

    outcome = run(config, emit)
    return Path(outcome.final_dir)


def main():
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        first = phase("demo:tiny-llama", str(DATA / "c4_demo.jsonl"), "text", 4, Path(tmp))
        second = phase(str(first), str(DATA / "glaive_toolcall_en_demo.json"), "sharegpt", 2, Path(tmp))
        shutil.copy2(second / "model.safetensors", TOKENIZER_DIR / "model.safetensors")
    print("saved", TOKENIZER_DIR / "model.safetensors")


if __name__ == "__main__":
    main()
