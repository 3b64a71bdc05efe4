"""Events the engine emits while a run goes: small frozen dataclasses, one JSON line each.

The same schema is written to events.jsonl and shown live, so a run can be replayed or re-attached.
Must not import torch, transformers, peft, bitsandbytes, datasets or textual.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable

PHASES = ("loading_model", "preparing_data", "training", "saving")


def _now() -> float:
    return time.time()


@dataclass(frozen=True)
class Event:
    time: float = field(default_factory=_now, kw_only=True)
    """Unix time when it happened."""

    def to_dict(self) -> dict[str, Any]:
        return {"event": type(self).__name__, **asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, default=str)


@dataclass(frozen=True)
class RunStarted(Event):
    run_id: str
    run_dir: str
    config: dict
    """The full resolved config."""
    resumed_from: str | None = None
    """Checkpoint dir this run continues from, if any."""
    world_size: int = 1
    """How many processes train the run together (torchrun / `tunetui train --nproc N`), one GPU each."""
    global_batch_size: int | None = None
    """Examples per optimizer step over the whole group: per-device batch x grad accumulation x world size."""


@dataclass(frozen=True)
class PhaseChanged(Event):
    phase: str
    """One of PHASES."""
    done: int | None = None
    total: int | None = None
    """Progress within the phase, when countable (e.g. examples tokenized)."""
    message: str = ""


@dataclass(frozen=True)
class ModelReady(Event):
    trainable_params: int
    total_params: int
    trainable_modules: list[str]
    """Short description of what trains, e.g. ['layers.2-3', 'lora: q_proj, v_proj']."""
    method: str
    device: str
    dtype: str
    """The base weights' dtype (QLoRA: its compute dtype), e.g. float16."""
    distributed: str | None = None
    """How the processes share the model: ddp | fsdp; None for one process."""
    precision: str | None = None
    """What the Trainer trains in: bf16 | fp16 (mixed precision) | fp32, as chosen for the card (the log says
    why); None from an older engine."""


@dataclass(frozen=True)
class DataReady(Event):
    format: str
    train_examples: int
    val_examples: int
    token_stats: dict
    """min / median / p95 / max tokens, truncated and dropped counts."""


@dataclass(frozen=True)
class StepEnded(Event):
    step: int
    max_steps: int
    epoch: float
    loss: float | None = None
    learning_rate: float | None = None
    grad_norm: float | None = None
    tokens_per_second: float | None = None
    """Input tokens (not padding) trained per second by the whole run: under several processes, the group's sum."""
    step_seconds: float | None = None
    elapsed_seconds: float = 0.0
    eta_seconds: float | None = None
    gpu_memory_gib: float | None = None
    """Memory allocated by this process on its GPU at the step's end (None without CUDA). Under several processes:
    rank 0's."""
    peak_allocated_gib: float | None = None
    """Peak memory allocated since the previous StepEnded, activations included (None without CUDA, or from an
    older engine)."""
    reserved_gib: float | None = None
    """Memory held by torch's caching allocator at the step's end (what nvidia-smi shows for this process, less
    the CUDA context)."""
    tokens_per_second_per_process: float | None = None
    """Under several processes: `tokens_per_second` shared out over them (None with one process)."""
    peak_gib_per_rank: list[float] | None = None
    """Under several processes on GPUs, at logging steps: each rank's peak memory allocated on its GPU so far in the
    run, by rank (None otherwise)."""


@dataclass(frozen=True)
class EvalEnded(Event):
    step: int
    eval_loss: float | None
    metrics: dict = field(default_factory=dict)
    """Numbers besides the loss, e.g. classification runs' `accuracy` and `macro_f1` (fractions in 0..1)."""
    confusion_matrix: list[list[int]] | None = None
    """Classification runs: counts, row = true class, column = predicted, in the order of the run's labels.json."""


@dataclass(frozen=True)
class CheckpointSaved(Event):
    step: int
    path: str


@dataclass(frozen=True)
class RunPaused(Event):
    step: int


@dataclass(frozen=True)
class RunResumed(Event):
    step: int


@dataclass(frozen=True)
class LogLine(Event):
    level: str
    message: str
    logger: str = ""


@dataclass(frozen=True)
class RunFinished(Event):
    run_dir: str
    final_dir: str | None
    """Where the adapter / model was saved (None when stopped before the end)."""
    step: int
    max_steps: int
    stopped: bool = False
    """True when the user stopped the run early (it can be resumed)."""
    train_loss: float | None = None
    peak_gpu_memory_gib: float | None = None
    estimated_peak_gib: float | None = None
    reserved_gib: float | None = None
    """The most memory torch's caching allocator held at a step's end."""


@dataclass(frozen=True)
class RunFailed(Event):
    message: str
    """What went wrong and what to do, in words."""
    kind: str = "error"
    """user_error | out_of_memory | diverged (loss or gradient norm NaN/inf) | disk_full (a save ran out of space)
    | error (a bug: see traceback) | peer_failed (under `tunetui train --nproc`: another rank broke the group;
    this rank only reports it to the launcher, which names the rank that failed first)."""
    run_dir: str | None = None
    step: int | None = None
    traceback: str | None = None
    peak_gpu_memory_gib: float | None = None
    """Out of memory: the peak allocated when it failed (what the run really needed, at least)."""
    reserved_gib: float | None = None


EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls for cls in (RunStarted, PhaseChanged, ModelReady, DataReady, StepEnded, EvalEnded,
                                  CheckpointSaved, RunPaused, RunResumed, LogLine, RunFinished, RunFailed)
}

Emit = Callable[[Event], None]


def from_dict(data: dict[str, Any]) -> Event:
    """Rebuild an event from its JSON form; unknown fields are ignored so old logs stay readable."""
    cls = EVENT_TYPES[data["event"]]
    names, defaults, factories, required = _SHAPES.get(cls) or _shape(cls)
    keys = data.keys()
    if keys <= names and required <= keys:  # the common case: written by this version
        # Filled in directly rather than through the frozen dataclass's __init__, which sets each field with
        # object.__setattr__: three times slower, and opening a long run parses a hundred thousand events. The
        # events have no __post_init__ and no __slots__, so the result is the same object.
        values = defaults.copy()
        for name, factory in factories:
            if name not in keys:
                values[name] = factory()
        values.update(data)
        del values["event"]
        event = object.__new__(cls)
        event.__dict__.update(values)
        return event
    return cls(**{k: v for k, v in data.items() if k in names and k != "event"})  # TypeError: a field is missing


_SHAPES: dict[type, tuple] = {}


def _shape(cls) -> tuple[frozenset, dict, tuple, frozenset]:
    """(the names a line of it may hold, plain defaults, (name, default_factory) pairs, required names)."""
    from dataclasses import MISSING

    found = fields(cls)
    shape = _SHAPES[cls] = (
        frozenset(f.name for f in found) | {"event"},
        {f.name: f.default for f in found if f.default is not MISSING},
        tuple((f.name, f.default_factory) for f in found if f.default_factory is not MISSING),
        frozenset(f.name for f in found if f.default is MISSING and f.default_factory is MISSING))
    return shape


def from_json(line: str) -> Event:
    return from_dict(json.loads(line))


def parse_lines(lines: list[bytes]) -> list[Event]:
    """Events from complete events.jsonl lines. Lines that do not parse (a torn write, an event from a newer
    engine) are skipped. Parsed as one JSON array first: on a 100 k-event log that is several times faster than a
    json.loads per line, which is what opening a long run costs."""
    lines = [line for line in (raw.strip() for raw in lines) if line]
    try:
        records = json.loads(b"[" + b",".join(lines) + b"]")
    except ValueError:  # one bad line spoils the batch: line by line, skipping the bad ones
        records = []
        for line in lines:
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    out = []
    for data in records:
        try:
            out.append(from_dict(data))
        except (KeyError, TypeError):
            continue
    return out


def read_events(path) -> list[Event]:
    """All events of an events.jsonl; a torn last line (crash mid-write) is skipped."""
    with open(path, "rb") as fh:
        return parse_lines(fh.read().splitlines())


