"""Full fine-tuning: every weight trains. Best with lots of data and a big GPU; costliest; overfits small data."""
from __future__ import annotations

from core.methods.base import Method


class Full(Method):
    name = "full"
    title = "Full"
    blurb = "Every weight trains; most memory."
    noun = "full fine-tune"
    trains_every_weight = True
    option_groups = ("full",)

    def describe(self, spec) -> str:
        return "Full (every weight trains)"

    def prepare(self, model, spec, task, *, gradient_checkpointing=False):
        for p in model.parameters():
            p.requires_grad_(True)
        return model, ["all"]

    def trainable_tensors(self, shape, s) -> list[int]:
        return (list(shape.embed_tensors) + shape.block_tensors() * shape.num_layers + list(shape.final_tensors)
                + shape.task_head(s.task, s.num_labels))


__all__ = ["Full"]
