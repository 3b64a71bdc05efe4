"""What every fine-tuning method answers; each method (full.py, freeze.py, lora.py, qlora.py) is one subclass.

Code elsewhere asks the method (`methods.get(config.method.kind)`) and never compares its name. Adding a method is
one new subclass here, its entry in `core.methods.ALL`, its name in `core.config.MethodSpec.kind`, and its tests.
This module is light: heavy libraries are imported inside `prepare` and friends.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from core.config import MethodSpec
    from core.resources.shape import ModelShape


class Method:
    name: ClassVar[str]
    """The config value (`method.kind`)."""
    title: ClassVar[str]
    """The display name, e.g. "LoRA"."""
    blurb: ClassVar[str]
    """One line for a method card."""
    noun: ClassVar[str]
    """What a run of it made, in a few words ("LoRA", "full fine-tune"): "full fine-tune of Qwen/…"."""
    adapter: ClassVar[bool] = False
    """final/ holds a PEFT adapter for the unchanged base (reloaded onto it; `tunetui export --merge` folds it in);
    otherwise final/ holds the whole model."""
    quantized: ClassVar[bool] = False
    """The base is loaded quantized (bitsandbytes), so it needs a bitsandbytes build for the device."""
    trains_every_weight: ClassVar[bool] = False
    """Every weight trains (so, under fp16 AMP, every weight must be held in fp32)."""
    option_groups: ClassVar[tuple[str, ...]] = ()
    """The `method.*` sections whose settings it reads (the Method screen shows those groups)."""

    @property
    def saves(self) -> str:
        """What final/ holds, in a word."""
        return "adapter" if self.adapter else "model"

    def describe(self, spec: MethodSpec) -> str:
        """The method with its main settings, for a summary line, e.g. "LoRA (r=16, alpha=32, all-linear)"."""
        return self.title

    # ------------------------------------------------------------ loading and training

    def quantization_config(self, spec: MethodSpec, compute_dtype, skip_modules, *, sharded: bool = False):
        """The transformers quantization config to load the base with; None loads it as it is. `sharded`: FSDP
        will shard the base."""
        return None

    def prepare(self, model, spec: MethodSpec, task: str, *, gradient_checkpointing: bool = False):
        """Set what trains on a loaded model; returns (model, short descriptions of what trains)."""
        raise NotImplementedError

    # ------------------------------------------------------------ what the memory estimator counts

    def trainable_tensors(self, shape: ModelShape, settings) -> list[int]:
        """Sizes of the tensors that train (what `requires_grad` would be True for)."""
        raise NotImplementedError

    def backward_blocks(self, num_layers: int, settings) -> int:
        """How many transformer blocks the backward pass runs through (and checkpointing keeps inputs of)."""
        return num_layers

    def __repr__(self) -> str:
        return f"<method {self.name}>"


def lora_words(spec: MethodSpec) -> str:
    """LoRA's settings in a few words, shared by LoRA and QLoRA: "r=16, alpha=32, all-linear"."""
    lora = spec.lora
    targets = "all-linear" if lora.target_modules == "all-linear" else ", ".join(lora.target_modules)
    return f"r={lora.r}, alpha={lora.alpha}, {targets}"


__all__ = ["Method", "lora_words"]
