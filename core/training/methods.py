"""Apply a fine-tuning method (full, freeze, LoRA, QLoRA) to a loaded model and report what trains.

Heavy libraries are imported inside functions; this module never imports the UI.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from core.config import MethodSpec
from core.errors import TuneError

log = logging.getLogger(__name__)

FINAL_NORM_NAMES = ("norm", "final_layernorm", "final_layer_norm", "ln_f", "norm_f")


@dataclass
class TrainableReport:
    trainable_params: int
    total_params: int
    trainable_modules: list[str] = field(default_factory=list)
    """Short descriptions of what trains, e.g. ['layers.2-3', 'norm'] or ['lora r=8: q_proj, v_proj']."""

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable_params / max(self.total_params, 1)


# ---------------------------------------------------------------- model anatomy

def find_blocks(model):
    """(dotted name, ModuleList) of the transformer blocks: the ModuleList holding the most parameters."""
    import torch.nn as nn

    best, best_name, best_size = None, "", -1
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            size = sum(p.numel() for p in module.parameters())
            if size > best_size:
                best, best_name, best_size = module, name, size
    if best is None:
        raise TuneError(f"Cannot find the transformer blocks of {type(model).__name__}", "method.kind",
                        "Use method.kind: full or lora with explicit method.lora.target_modules")
    return best_name, best


def _linear_types():
    import torch.nn as nn

    types: list[type] = [nn.Linear]
    try:
        from transformers.pytorch_utils import Conv1D  # GPT-2 style "linear" layers

        types.append(Conv1D)
    except ImportError:
        pass
    return tuple(types)  # bnb Linear4bit / Linear8bitLt subclass nn.Linear


def linear_target_names(model) -> list[str]:
    """Leaf names of the linear layers inside the transformer blocks (never lm_head or a classifier head)."""
    _, blocks = find_blocks(model)
    linear = _linear_types()
    names = {name.rsplit(".", 1)[-1] for name, module in blocks.named_modules() if isinstance(module, linear)}
    return sorted(names)


def _block_regex(model, leaf_names: list[str]) -> str:
    """A peft target regex matching these leaf names only inside the blocks (BERT's pooler.dense stays out)."""
    prefix, _ = find_blocks(model)
    leaves = "|".join(re.escape(n) for n in leaf_names)
    return rf"{re.escape(prefix)}\.\d+\.(?:.*\.)?(?:{leaves})"


def head_names(model) -> list[str]:
    """Top-level modules outside the base model that hold weights: the task head (`score`, `classifier`)."""
    prefix = getattr(model, "base_model_prefix", "")
    names = []
    for name, child in model.named_children():
        if name == prefix or not any(True for _ in child.parameters()):
            continue
        names.append(name)
    return names


def count_params(model) -> tuple[int, int]:
    trainable = total = 0
    for p in model.parameters():
        n = _numel(p)
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total


def _numel(p) -> int:
    # bnb packs two 4-bit values per byte into a uint8 tensor; count the real parameter number.
    shape = getattr(p, "quant_state", None)
    if shape is not None and getattr(shape, "shape", None) is not None:
        n = 1
        for s in shape.shape:
            n *= int(s)
        return n
    return p.numel()


# ---------------------------------------------------------------- methods

def apply_method(model, method: MethodSpec, task: str, *, gradient_checkpointing: bool = False):
    """Set what trains for `method`; returns (model, TrainableReport). LoRA/QLoRA return a PeftModel."""
    kind = method.kind
    if kind == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        described = ["all"]
    elif kind == "freeze":
        described = _apply_freeze(model, method, task)
    elif kind in ("lora", "qlora"):
        if kind == "qlora":
            from peft import prepare_model_for_kbit_training

            # Casts norms to fp32 and makes inputs require grad so gradients reach the adapters.
            model = prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=gradient_checkpointing,
                gradient_checkpointing_kwargs={"use_reentrant": False} if gradient_checkpointing else None)
        model, described = _apply_lora(model, method, task)
    else:
        raise TuneError(f"Unknown method {kind!r}", "method.kind", "Use one of: full, freeze, lora, qlora")
    trainable, total = count_params(model)
    report = TrainableReport(trainable, total, described)
    log.info("Method %s: %s of %s parameters train (%.2f%%): %s", kind, f"{trainable:,}", f"{total:,}",
             report.percent, "; ".join(described))
    return model, report


def _apply_freeze(model, method: MethodSpec, task: str) -> list[str]:
    spec = method.freeze
    prefix, blocks = find_blocks(model)
    n_blocks = len(blocks)
    n = spec.trainable_layers
    if abs(n) > n_blocks:
        raise TuneError(f"`method.freeze.trainable_layers` is {n} but the model has only {n_blocks} blocks",
                        "method.freeze.trainable_layers",
                        f"Use a value from 1 to {n_blocks} (top blocks) or -1 to -{n_blocks} (bottom blocks)")
    chosen = list(range(n_blocks - n, n_blocks)) if n > 0 else list(range(0, -n))
    for p in model.parameters():
        p.requires_grad_(False)
    for i in chosen:
        for p in blocks[i].parameters():
            p.requires_grad_(True)
    short = prefix.rsplit(".", 1)[-1]
    described = [f"{short}.{chosen[0]}-{chosen[-1]}" if len(chosen) > 1 else f"{short}.{chosen[0]}"]

    for extra in spec.extra_modules:
        module = _extra_module(model, extra, prefix)
        if module is None:
            raise TuneError(f"The model has no `{extra}` module to train", "method.freeze.extra_modules",
                            "Remove it from method.freeze.extra_modules")
        for p in module.parameters():
            p.requires_grad_(True)
        described.append(extra)
    if task == "classification":
        # A new head starts random: it must always train.
        for name in head_names(model):
            for p in getattr(model, name).parameters():
                p.requires_grad_(True)
            described.append(f"head: {name}")
    return described


def _extra_module(model, extra: str, blocks_prefix: str):
    if extra == "embed_tokens":
        return model.get_input_embeddings()
    if extra == "lm_head":
        return model.get_output_embeddings()
    # The final norm: a norm-named module outside the blocks.
    for name, module in model.named_modules():
        if name.startswith(blocks_prefix + "."):
            continue
        if name.rsplit(".", 1)[-1] in FINAL_NORM_NAMES and any(True for _ in module.parameters()):
            return module
    return None


def _apply_lora(model, method: MethodSpec, task: str):
    from peft import LoraConfig, TaskType, get_peft_model

    spec = method.lora
    if spec.target_modules == "all-linear":
        leaves = linear_target_names(model)
        if not leaves:
            raise TuneError("The model's blocks contain no linear layers for LoRA", "method.lora.target_modules",
                            "Name the modules to adapt in method.lora.target_modules")
        target = _block_regex(model, leaves)
    else:
        leaves = [spec.target_modules] if isinstance(spec.target_modules, str) else list(spec.target_modules)
        present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
        missing = [n for n in leaves if n not in present]
        if missing:
            raise TuneError(f"`method.lora.target_modules` names {', '.join(missing)}, which the model does not have",
                            "method.lora.target_modules",
                            "Use all-linear, or some of: " + ", ".join(linear_target_names(model)))
        target = leaves
    heads = head_names(model) if task == "classification" else []
    config = LoraConfig(
        r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=target,
        use_rslora=spec.use_rslora, use_dora=spec.use_dora, bias="none",
        task_type=TaskType.SEQ_CLS if task == "classification" else TaskType.CAUSAL_LM,
        # The classification head is new: train it fully and save it with the adapter.
        modules_to_save=list(heads) or None,
    )
    model = get_peft_model(model, config)
    flavour = "dora" if spec.use_dora else "lora"
    described = [f"{flavour} r={spec.r}{' rslora' if spec.use_rslora else ''}: {', '.join(leaves)}"]
    described += [f"head: {h}" for h in heads]
    return model, described


__all__ = ["apply_method", "TrainableReport", "linear_target_names", "find_blocks", "head_names", "count_params"]
