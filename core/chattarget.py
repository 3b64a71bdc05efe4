"""What a RUN_OR_MODEL argument points at, found from the files alone: a run folder, its final/ or checkpoint-N, a
model or adapter folder, a hub id or a demo name (`resolve_target`), and the memory loading it would take
(`load_estimate`). Nothing heavy is imported, so the UI can call these on its own thread; core.chat loads and runs
the model. Never imports the UI.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from core import demo, methods, rundir, units
from core.config import MethodSpec, ModelSpec, RunConfig
from core.errors import TuneError
from core.hub import is_hub_id
from core.tasks import TASKS

log = logging.getLogger(__name__)

WHERE = "RUN_OR_MODEL"
PICK_FIX = ("Pass a run folder (see `tunetui runs`), its final/ or a checkpoints/checkpoint-N folder, a model folder "
            "written by save_pretrained, or a hub id in the Hugging Face cache")


@dataclass(frozen=True)
class Target:
    """What a RUN_OR_MODEL argument points at, found from the files alone (nothing loaded)."""

    source: str
    """What the user gave."""
    model: ModelSpec
    """The base model of a run (what an adapter sits on, what a full run started from), or the model itself."""
    weights: Path | None = None
    """The folder with the trained adapter or model (final/, checkpoints/checkpoint-N, a model folder); None for a
    hub id or demo name (then `model` is all there is)."""
    run_dir: Path | None = None
    config: RunConfig | None = None
    adapter: bool = False
    """`weights` holds a LoRA/QLoRA adapter for `model`."""
    task: str = "sft"
    """sft (chat) | pretrain (plain text continuation) | classification."""
    labels: list[str] | None = None
    system_prompt: str | None = None
    """The run's data.system_prompt: replies get it too, as in training."""

    @property
    def method(self) -> MethodSpec:
        if self.config is not None:
            return self.config.method
        return MethodSpec(kind=(methods.LORA if self.adapter else methods.FULL).name)

    @property
    def has_base(self) -> bool:
        """A base model to compare with: a run's starting point, or the base of a bare adapter."""
        return self.run_dir is not None or self.adapter

    @property
    def label(self) -> str:
        """A short name for people: run id (and checkpoint), or the model."""
        if self.run_dir is not None:
            where = "" if self.weights is None or self.weights.name == rundir.FINAL else f" ({self.weights.name})"
            return self.run_dir.name + where
        return str(self.weights or self.model.name_or_path)

    @property
    def description(self) -> str:
        """What will be loaded, in a few words."""
        kind = methods.get(self.method.kind).noun
        if self.run_dir is not None:
            return f"{kind} of {self.model.name_or_path}, {self.weights.name if self.weights else ''}".rstrip(", ")
        if self.adapter:
            return f"adapter on {self.model.name_or_path}"
        return self.model.name_or_path


# ================================================================== finding the model (files only)

def resolve_target(text: str | Path) -> Target:
    """A run folder, its final/ or checkpoint-N, a model or adapter folder, a hub id or demo name → Target.

    Raises TuneError (what, where, what to do) for a folder without a model or a run with nothing saved yet."""
    source = str(text).strip()
    if not source:
        raise TuneError("No run or model given", WHERE, PICK_FIX)
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise TuneError(f"{source} is a file, not a run or model folder", WHERE, PICK_FIX)
        return _from_folder(source, path.resolve())
    if demo.is_demo(source) or is_hub_id(source):
        return Target(source=source, model=ModelSpec(name_or_path=source))
    raise TuneError(f"{source} does not exist", WHERE, PICK_FIX)


def _from_folder(source: str, path: Path) -> Target:
    if (path / rundir.CONFIG_FILE).is_file():
        return _from_run(source, path, _run_weights(path))
    if path.name == rundir.FINAL and (path.parent / rundir.CONFIG_FILE).is_file():
        return _from_run(source, path.parent, _checked_weights(path))
    if path.parent.name == rundir.CHECKPOINTS and (path.parent.parent / rundir.CONFIG_FILE).is_file():
        return _from_run(source, path.parent.parent, _checked_weights(path))
    weights = _checked_weights(path)
    if (weights / "adapter_config.json").is_file():
        base = _read_json(weights / "adapter_config.json").get("base_model_name_or_path")
        if not base:
            raise TuneError(f"The adapter in {path} does not name its base model (base_model_name_or_path)", WHERE,
                            "Chat with the run folder it came from; its config.yaml names the base")
        labels = rundir.read_labels(weights)
        return Target(source=source, model=ModelSpec(name_or_path=base), weights=weights, adapter=True,
                      task="classification" if labels else "sft", labels=labels)
    labels = rundir.read_labels(weights) or _config_labels(weights)
    return Target(source=source, model=ModelSpec(name_or_path=str(weights)), weights=weights,
                  task="classification" if labels else "sft", labels=labels)


def _has_weights(folder: Path) -> bool:
    return (folder / "adapter_config.json").is_file() or (folder / "config.json").is_file()


def _checked_weights(folder: Path) -> Path:
    if not _has_weights(folder):
        raise TuneError(f"{folder} holds no model: no config.json (a model) and no adapter_config.json (an adapter)",
                        WHERE, PICK_FIX)
    return folder


def _run_weights(run_dir: Path) -> Path:
    final = run_dir / rundir.FINAL
    if _has_weights(final):
        return final
    latest = rundir.latest_checkpoint(run_dir)
    if latest is not None and _has_weights(latest):
        log.info("%s has no final/ yet; using its newest checkpoint %s", run_dir.name, latest.name)
        return latest
    raise TuneError(f"The run {run_dir} has no trained model yet: no final/ and no checkpoints", WHERE,
                    "Let it reach a checkpoint (train.save_steps) or its end, resume it with "
                    f"`tunetui train --resume {run_dir}`, or pick another run")


def _from_run(source: str, run_dir: Path, weights: Path) -> Target:
    config = rundir.load_run_config(run_dir)
    labels = rundir.read_labels(weights, run_dir)
    if labels:
        task = "classification"
    elif TASKS.get(_data_format(run_dir, config)) == "pretrain":
        task = "pretrain"
    else:
        task = "sft"
    return Target(source=source, model=config.model, weights=weights, run_dir=run_dir, config=config,
                  adapter=(weights / "adapter_config.json").is_file(), task=task, labels=labels,
                  system_prompt=config.data.system_prompt)


def _data_format(run_dir: Path, config: RunConfig) -> str:
    """The format the run trained on: `auto` is resolved in its DataReady event."""
    if config.data.format != "auto":
        return config.data.format
    try:
        from core.events import DataReady, read_events

        found = [e.format for e in read_events(run_dir / rundir.EVENTS_FILE) if isinstance(e, DataReady)]
    except OSError:
        found = []
    return found[-1] if found else "auto"


def _config_labels(folder: Path) -> list[str] | None:
    """A plain sequence-classification model folder names its classes in config.json."""
    config = _read_json(folder / "config.json")
    if not any(str(a).endswith("ForSequenceClassification") for a in config.get("architectures") or []):
        return None
    id2label = config.get("id2label") or {}
    return [str(id2label[k]) for k in sorted(id2label, key=int)] or None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TuneError(f"Cannot read {path}: {exc}", WHERE, "Check that the file is complete") from None
    return data if isinstance(data, dict) else {}


# ================================================================== what loading costs (files only)

@dataclass(frozen=True)
class LoadEstimate:
    bytes: int
    """Memory the weights take once loaded (both models for Full/Freeze runs with their base)."""
    text: str
    """In words, e.g. "~1.2 GiB: 0.5 B parameters × 2 bytes (bf16), twice (tuned and base)"."""


def load_estimate(target: Target, device: str = "cpu", with_base: bool = True) -> LoadEstimate:
    """Parameters × bytes per parameter, as `ChatModel.load` would hold them on `device` (cpu | cuda)."""
    from core.resources.shape import load_shape

    shape = load_shape(target.model.name_or_path, target.model.trust_remote_code, allow_transformers=False)
    dtype = target.model.dtype
    if dtype == "auto":
        dtype = "float32" if device == "cpu" else "bfloat16"
    width = {"float32": 4, "bfloat16": 2, "float16": 2}[dtype]
    method = target.method
    if methods.get(method.kind).quantized:
        quant = 0.5 if method.quant.bits == 4 else 1.0  # NF4 packs two weights a byte; LLM.int8 one
        linear = shape.linear_weight_params
        total = linear * quant + (shape.total_params - linear) * width
        how = f"{units.count(shape.total_params)} parameters, block linears in {method.quant.bits}-bit"
    else:
        total = shape.total_params * width
        how = f"{units.count(shape.total_params)} parameters × {width} bytes"
    copies = 2 if with_base and target.run_dir is not None and not target.adapter else 1
    if target.adapter and target.weights is not None:
        total += sum(p.stat().st_size for p in target.weights.glob("adapter_model*"))
    total *= copies
    text = f"~{units.size(total)} ({how}" + (", tuned and base" if copies == 2 else "") + ")"
    return LoadEstimate(bytes=int(total), text=text)


__all__ = ["Target", "resolve_target", "LoadEstimate", "load_estimate", "WHERE", "PICK_FIX"]
