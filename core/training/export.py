"""Merge a LoRA/QLoRA run's adapter into its (unquantized) base and save a standalone model, atomically.

Heavy libraries are imported inside functions; never imports the UI.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

from core import methods, rundir
from core.errors import TuneError


def merge_run(run_dir: str | Path, out_dir: str | Path, *, checkpoint: str | Path | None = None,
              device: str = "cpu", progress: Callable[[str], None] | None = None) -> Path:
    """Write base + adapter merged to OUT_DIR (safetensors, tokenizer, labels); returns OUT_DIR.

    The model is written to a temp folder beside OUT_DIR and renamed, so a failure leaves nothing half-written.
    """
    from peft import PeftModel

    from core.training.models import load_model, load_tokenizer, resolve_device, resolve_model_dir

    say = progress or (lambda text: None)
    run_dir = Path(run_dir).expanduser()
    config = rundir.load_run_config(run_dir)
    if not methods.get(config.method.kind).adapter:
        raise TuneError(f"{run_dir} is a {config.method.kind} run: there is no adapter to merge", "--merge",
                        f"Its final/ folder already holds the whole model: load {run_dir / rundir.FINAL} directly")
    adapter = _adapter_dir(run_dir, checkpoint)
    out = Path(out_dir).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise TuneError(f"{out} already exists and is not empty", "--merge", "Choose a new folder for the merged model")

    labels = rundir.read_labels(adapter, run_dir / rundir.FINAL, run_dir)
    task = "classification" if labels else "sft"
    device = resolve_device(device)
    say(f"loading the base model {config.model.name_or_path} (unquantized)")
    model_dir = resolve_model_dir(config.model)
    tokenizer_src = adapter if (adapter / "tokenizer_config.json").is_file() else None
    tokenizer = (_tokenizer(tokenizer_src, config.model.trust_remote_code) if tokenizer_src
                 else load_tokenizer(config.model, model_dir))
    # The base's own dtype (bf16 for most hub models) unless the run pinned one: QLoRA merges into a full copy.
    dtype = "auto" if config.model.dtype == "auto" else None
    try:
        base = load_model(config.model, config.method, task, len(labels) if labels else None, device,
                          label_names=labels, pad_token_id=tokenizer.pad_token_id, model_dir=model_dir,
                          quantize=False, dtype=dtype)
        say(f"merging the adapter from {adapter}")
        merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    except Exception as exc:
        from core.training.gpu import is_cuda_oom

        if not (device.startswith("cuda") and is_cuda_oom(exc)):
            raise
        # The merge holds the whole unquantized base model on the GPU (a QLoRA run trained it in 4 bits).
        raise TuneError(f"Out of GPU memory while merging on {device}: the unquantized base model "
                        f"{config.model.name_or_path} does not fit in the GPU's free memory", "--device",
                        "Merge on the CPU (--device cpu, the default; it needs RAM, not GPU memory), or free the "
                        "GPU first") from None

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp_dir(out)
    try:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if labels:
            rundir.write_labels(tmp, labels)
        rundir.apply_umask(tmp)
        if out.exists():
            out.rmdir()  # empty (checked above)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    say(f"merged model written to {out}")
    return out


def _new_temp_dir(out: Path) -> Path:
    """An empty folder beside OUT, created with the umask's permissions (mkdtemp's are owner-only, and the folder is
    renamed into the user's merged model, which others on the box may need to read)."""
    n = 0
    while True:
        tmp = out.parent / f".{out.name}.{os.getpid()}.{n}.tmp"
        try:
            tmp.mkdir()
            return tmp
        except FileExistsError:
            n += 1


def _adapter_dir(run_dir: Path, checkpoint) -> Path:
    if checkpoint is not None:
        adapter = Path(checkpoint).expanduser()
        if not (adapter / "adapter_config.json").is_file():
            raise TuneError(f"{adapter} holds no LoRA adapter (no adapter_config.json)", "--checkpoint",
                            "Pass a checkpoints/checkpoint-N folder of this run")
        if not any((adapter / name).is_file() for name in ("adapter_model.safetensors", "adapter_model.bin")):
            latest = rundir.latest_checkpoint(run_dir)
            raise TuneError(f"{adapter} has no adapter weights: it was cut short while saving", "--checkpoint",
                            f"Merge a complete checkpoint{f' such as {latest}' if latest else ''}, or final/")
        return adapter
    final = run_dir / rundir.FINAL
    if (final / "adapter_config.json").is_file():
        return final
    latest = rundir.latest_checkpoint(run_dir)
    hint = f" --checkpoint {latest}" if latest else ""
    raise TuneError(f"{run_dir} has no final adapter (the run did not finish)", "RUN_DIR",
                    "Resume it to the end with `tunetui train --resume RUN_DIR`"
                    + (f", or merge its newest checkpoint with{hint}" if hint else ""))


def _tokenizer(folder: Path, trust_remote_code: bool):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)


__all__ = ["merge_run"]
