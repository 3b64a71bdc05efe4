"""The fine-tuning methods, each defined once (one module per method), and the registry code asks by name.

    from core import methods
    method = methods.get(config.method.kind)
    if method.adapter: ...

Light to import: no torch, peft or bitsandbytes until a method prepares a model.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from core.errors import TuneError
from core.methods.base import Method
from core.methods.freeze import Freeze
from core.methods.full import Full
from core.methods.lora import LoRA
from core.methods.qlora import QLoRA

FULL, FREEZE, LORA, QLORA = Full(), Freeze(), LoRA(), QLoRA()
ALL: tuple[Method, ...] = (FULL, FREEZE, LORA, QLORA)
"""In the order screens and tables list them: most memory first."""
NAMES: tuple[str, ...] = tuple(m.name for m in ALL)
DEFAULT = LORA
_BY_NAME = {m.name: m for m in ALL}
log = logging.getLogger(__name__)


def get(name: str) -> Method:
    """The method called `name` (a `method.kind` value)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise TuneError(f"Unknown method {name!r}", "method.kind", "Use one of: " + ", ".join(NAMES)) from None


@dataclass
class TrainableReport:
    trainable_params: int
    total_params: int
    trainable_modules: list[str] = field(default_factory=list)
    """Short descriptions of what trains, e.g. ['layers.2-3', 'norm'] or ['lora r=8: q_proj, v_proj']."""

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable_params / max(self.total_params, 1)


def apply(model, spec, task: str, *, gradient_checkpointing: bool = False):
    """Prepare a loaded model for `spec` (a MethodSpec); returns (model, TrainableReport). Adapter methods return
    a PeftModel."""
    from core.training.anatomy import count_params

    method = get(spec.kind)
    model, described = method.prepare(model, spec, task, gradient_checkpointing=gradient_checkpointing)
    trainable, total = count_params(model)
    report = TrainableReport(trainable, total, described)
    log.info("Method %s: %s of %s parameters train (%.2f%%): %s", method.name, f"{trainable:,}", f"{total:,}",
             report.percent, "; ".join(described))
    return model, report


__all__ = ["TrainableReport", "apply", "Method", "ALL", "NAMES", "DEFAULT", "FULL", "FREEZE", "LORA", "QLORA", "get"]
