"""Task names: what a run trains its model to do. One vocabulary per layer, and the one mapping between them.

- Data and training (core.training: data, model loading, methods; core.chattarget and core.chat): `sft`
  (instruction and chat data: the alpaca, sharegpt and messages formats), `pretrain` (plain text, packed into
  blocks) and `classification` (text → label). The data format decides it: TASKS.
- The memory estimate (core.resources.estimate) only tells the model's heads apart: `causal_lm` (SFT and
  pre-training both train the LM head on every position, so they cost the same memory) or `classification` (a small
  head replaces the LM head). ESTIMATE_TASKS maps one vocabulary to the other.

Imports nothing heavy.
"""
from __future__ import annotations

from core.errors import TuneError

TASKS = {"alpaca": "sft", "sharegpt": "sft", "messages": "sft", "text": "pretrain", "classification": "classification"}
"""Data format → training task. Its keys are the data formats (core.config.FORMATS adds `auto`)."""
ESTIMATE_TASKS = {"sft": "causal_lm", "pretrain": "causal_lm", "classification": "classification"}
"""Training task → the memory estimator's task."""


def task_for_format(fmt: str) -> str:
    """sft | pretrain | classification."""
    if fmt not in TASKS:
        raise TuneError(f"Unknown data format {fmt!r}", "data.format", f"Use one of: auto, {', '.join(TASKS)}")
    return TASKS[fmt]


def estimate_task(fmt: str) -> str:
    """The memory estimator's task for a data.format: causal_lm | classification. `auto` (the format is known only
    once the rows are read) counts as causal_lm."""
    return ESTIMATE_TASKS[TASKS.get(fmt, "sft")]


__all__ = ["TASKS", "ESTIMATE_TASKS", "task_for_format", "estimate_task"]
