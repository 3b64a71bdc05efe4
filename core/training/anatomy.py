"""A loaded model's anatomy, as the methods need it: its transformer blocks, their linear layers, the task head,
the final norm, and parameter counts (4-bit weights counted as parameters, not packed bytes).

Heavy libraries are imported inside functions.
"""
from __future__ import annotations

import re

from core.errors import TuneError

FINAL_NORM_NAMES = ("norm", "final_layernorm", "final_layer_norm", "ln_f", "norm_f")


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


def block_regex(model, leaf_names: list[str]) -> str:
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


def extra_module(model, extra: str, blocks_prefix: str):
    """The module a Freeze run trains beside its blocks: embed_tokens, lm_head or the final norm."""
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


__all__ = ["find_blocks", "linear_target_names", "block_regex", "head_names", "count_params", "extra_module",
           "FINAL_NORM_NAMES"]
