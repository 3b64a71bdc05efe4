"""Freeze: only the top (or bottom) N transformer blocks train; the rest stay exactly as pre-trained.

Fast, cheap, keeps general knowledge; for small data and modest hardware.
"""
from __future__ import annotations

from core.errors import TuneError
from core.methods.base import Method


class Freeze(Method):
    name = "freeze"
    title = "Freeze"
    blurb = "Top blocks train; cheap, for small data."
    noun = "freeze"
    option_groups = ("freeze",)

    def describe(self, spec) -> str:
        n = spec.freeze.trainable_layers
        return f"Freeze ({'top' if n > 0 else 'bottom'} {abs(n)} blocks train)"

    def prepare(self, model, spec, task, *, gradient_checkpointing=False):
        from core.training.anatomy import extra_module, find_blocks, head_names

        n = spec.freeze.trainable_layers
        prefix, blocks = find_blocks(model)
        n_blocks = len(blocks)
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

        for extra in spec.freeze.extra_modules:
            module = extra_module(model, extra, prefix)
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
        return model, described

    def trainable_tensors(self, shape, s) -> list[int]:
        out = shape.block_tensors() * min(abs(s.trainable_layers), shape.num_layers) + shape.new_head(s.task,
                                                                                                     s.num_labels)
        if "norm" in s.freeze_extra:
            out += list(shape.final_tensors)
        if "embed_tokens" in s.freeze_extra:
            out.append(shape.embed_tensors[0])
        if "lm_head" in s.freeze_extra and s.task != "classification":
            # A tied head is the embedding matrix: it trains once, whichever name asked for it.
            if shape.head_tensors:
                out += list(shape.head_tensors)
            elif "embed_tokens" not in s.freeze_extra:
                out.append(shape.embed_tensors[0])
        return out

    def backward_blocks(self, num_layers: int, s) -> int:
        # Backward flows down to the lowest block that trains: the top N, or every block when the bottom ones train.
        return min(abs(s.trainable_layers), num_layers) if s.trainable_layers > 0 else num_layers


__all__ = ["Freeze"]
