"""Run configuration: frozen dataclasses, YAML load/save, dotted overrides, validation.

Must not import torch, transformers, peft, bitsandbytes, datasets or textual: the UI imports this first.
"""
from __future__ import annotations

import difflib
import functools
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from core.errors import TuneError

METHODS = ("full", "freeze", "lora", "qlora")
FORMATS = ("auto", "alpaca", "sharegpt", "messages", "text", "classification")
DEMO_MODEL = "demo:tiny-llama"


@dataclass(frozen=True)
class ModelSpec:
    name_or_path: str = DEMO_MODEL
    """A local Hugging Face model dir, a hub id (resolved through the HF cache) or `demo:tiny-llama`."""
    revision: str | None = None
    """Hub revision (branch, tag or commit); ignored for local dirs."""
    trust_remote_code: bool = False
    """Run model code shipped with the checkpoint. Off unless you trust its author."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weight dtype for full/freeze/lora. `auto` follows train.precision: bf16 → bfloat16, fp32 → float32, fp16 →
    float16 (float32 for full; trainable weights are always fp32 under fp16)."""


@dataclass(frozen=True)
class FreezeSpec:
    trainable_layers: int = 2
    """Top N transformer blocks train (+N); -N trains the bottom N. Never 0."""
    extra_modules: tuple[str, ...] = ()
    """Also train these: any of `norm` (final norm), `embed_tokens`, `lm_head`."""


@dataclass(frozen=True)
class LoraSpec:
    r: int = 8
    """Adapter rank."""
    alpha: int = 16
    """Scaling numerator: the update is scaled by alpha / r (alpha / sqrt(r) with rsLoRA)."""
    dropout: float = 0.05
    """Dropout on the adapter input."""
    target_modules: Union[str, tuple[str, ...]] = "all-linear"
    """`all-linear` (every linear layer inside the transformer blocks) or a list of module names."""
    use_rslora: bool = False
    """Rank-stabilised scaling (alpha / sqrt(r))."""
    use_dora: bool = False
    """Weight-decomposed LoRA (DoRA)."""


@dataclass(frozen=True)
class QuantSpec:
    bits: Literal[4, 8] = 4
    """4-bit (NF4/FP4) or 8-bit (LLM.int8) base weights."""
    type: Literal["nf4", "fp4"] = "nf4"
    """4-bit data type."""
    double_quant: bool = True
    """Quantize the quantization constants too (saves ~0.37 bit/param)."""
    compute_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """dtype of the matmuls. `auto` follows train.precision: bfloat16, float16, or float32 for fp32."""


@dataclass(frozen=True)
class MethodSpec:
    kind: Literal["full", "freeze", "lora", "qlora"] = "lora"
    """full | freeze | lora | qlora."""
    freeze: FreezeSpec = field(default_factory=FreezeSpec)
    lora: LoraSpec = field(default_factory=LoraSpec)
    quant: QuantSpec = field(default_factory=QuantSpec)


@dataclass(frozen=True)
class DataSpec:
    path: str = ""
    """A data file (.json .jsonl .csv .tsv .parquet .txt), a `save_to_disk` folder or a hub dataset id."""
    format: Literal["auto", "alpaca", "sharegpt", "messages", "text", "classification"] = "auto"
    """How to read the rows; `auto` detects it from the columns."""
    val_size: float = 0.0
    """Validation split: a fraction (< 1) or a row count (>= 1). 0: none."""
    val_path: str | None = None
    """A separate validation file (same format); overrides val_size."""
    max_length: int = 1024
    """Token limit per example; longer prompts are dropped, longer responses truncated."""
    max_samples: int | None = None
    """Use only the first N rows (quick experiments)."""
    text_column: str | None = None
    """Column holding the text (text / classification); detected when unset."""
    label_column: str | None = None
    """Column holding the label (classification); detected when unset."""
    system_prompt: str | None = None
    """Default system prompt for chat formats when a row has none."""


@dataclass(frozen=True)
class TrainSpec:
    max_steps: int = -1
    """Stop after this many optimizer steps; -1 means run `epochs` epochs."""
    epochs: float = 1.0
    """Passes over the training data (when max_steps is -1)."""
    batch_size: int = 4
    """Examples per device per forward pass."""
    grad_accum: int = 1
    """Forward passes per optimizer step (effective batch = batch_size x grad_accum x GPUs)."""
    lr: float = 2e-4
    """Peak learning rate."""
    seed: int = 42
    """Seed for init, shuffling and dropout."""
    scheduler: str = "cosine"
    """LR schedule (any transformers SchedulerType: linear, cosine, constant, ...)."""
    warmup_ratio: float = 0.03
    """Fraction of steps spent warming up the LR."""
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    """Gradient clipping norm; 0 turns clipping off."""
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    """Mixed precision. `auto`: bf16 on GPUs that have it natively (compute capability 8.0+), fp16 on older GPUs
    (T4, V100), fp32 on CPU."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward: much less memory, ~30% slower."""
    optim: Literal["adamw", "adamw8bit", "paged_adamw8bit"] = "adamw"
    """Optimizer: torch AdamW or bitsandbytes 8-bit AdamW (paged: may spill to CPU)."""
    logging_steps: int = 1
    eval_steps: int = 0
    """Evaluate every N steps (0: at the end only, when there is validation data)."""
    save_steps: int = 100
    """Checkpoint every N steps (a checkpoint is also written on stop)."""
    save_total_limit: int = 2
    """Keep at most this many checkpoints."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to train: `auto` uses CUDA when available."""


@dataclass(frozen=True)
class OutputSpec:
    dir: str = "runs"
    """Runs go to DIR/<run-id>/ (config.yaml, events.jsonl, checkpoints/, final/)."""
    run_name: str | None = None
    """Run id prefix; defaults to the model and method."""


@dataclass(frozen=True)
class RunConfig:
    model: ModelSpec = field(default_factory=ModelSpec)
    method: MethodSpec = field(default_factory=MethodSpec)
    data: DataSpec = field(default_factory=DataSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    output: OutputSpec = field(default_factory=OutputSpec)


# ---------------------------------------------------------------- conversion

def to_dict(config: Any) -> dict:
    """Plain nested dict (tuples become lists) suitable for YAML/JSON."""
    def conv(value):
        if is_dataclass(value):
            return {f.name: conv(getattr(value, f.name)) for f in fields(value)}
        if isinstance(value, tuple):
            return [conv(v) for v in value]
        return value
    return conv(config)


def dump_yaml(config: RunConfig) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False, allow_unicode=True)


def save(config: RunConfig, path: str | Path) -> None:
    """Write atomically so an interrupted save never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(dump_yaml(config), encoding="utf-8")
    tmp.replace(path)


@functools.cache  # the Method screen rebuilds the draft on every key press: resolving hints was a third of that
def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, hint: Any, key: str, where: str | None) -> Any:
    """Check `value` against a type hint and convert what YAML gives (lists → tuples, ints → floats)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if is_dataclass(hint):
        if not isinstance(value, dict):
            raise TuneError(f"`{key}` must be a section (a mapping of keys), got {value!r}", where,
                            f"Write it as `{key}:` followed by indented keys")
        return _build(hint, value, key + ".", where)
    if origin is Literal:
        if value not in args:
            choices = ", ".join(str(a) for a in args)
            near = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
            fix = f"Use one of: {choices}" + (f" (did you mean {near[0]}?)" if near else "")
            raise TuneError(f"`{key}` is {value!r}, which is not a valid choice", where, fix)
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, where)
            except TuneError as exc:
                errors.append(exc)
        raise errors[0] if len(errors) == 1 else TuneError(
            f"`{key}` has the wrong type: got {value!r}", where,
            "Expected " + " or ".join(_type_name(a) for a in args if a is not type(None)))
    if origin is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise TuneError(f"`{key}` must be a list, got {value!r}", where)
        return tuple(_coerce(v, args[0], key, where) for v in value)
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `2e-4` as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    elif hint is Any:
        return value
    raise TuneError(f"`{key}` must be {_type_name(hint)}, got {value!r}", where)


def _type_name(hint) -> str:
    return {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}.get(
        hint, getattr(hint, "__name__", str(hint)))


def _build(cls, raw: dict, prefix: str, where: str | None, lines: dict | None = None):
    known = {f.name for f in fields(cls)}
    hints = _hints(cls)
    kwargs = {}
    for key, value in raw.items():
        dotted = prefix + str(key)
        at = _where(where, lines, dotted)
        if key not in known:
            near = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.5)
            fix = (f"Did you mean `{prefix}{near[0]}`?" if near
                   else f"Valid keys here: {', '.join(prefix + k for k in sorted(known))}")
            raise TuneError(f"Unknown config key `{dotted}`", at, fix)
        hint = hints[key]
        if is_dataclass(hint):
            if not isinstance(value, dict):
                raise TuneError(f"`{dotted}` must be a section (a mapping of keys), got {value!r}", at)
            kwargs[key] = _build(hint, value, dotted + ".", where, lines)
        else:
            kwargs[key] = _coerce(value, hint, dotted, at)
    return cls(**kwargs)


def _where(where: str | None, lines: dict | None, dotted: str) -> str | None:
    if where and lines and dotted in lines:
        return f"{where}, line {lines[dotted]}, key {dotted}"
    if where:
        return f"{where}, key {dotted}"
    return f"key {dotted}"


def _key_lines(text: str) -> dict[str, int]:
    """Map dotted keys to 1-based line numbers, so errors can point at the line."""
    out: dict[str, int] = {}

    def walk(node, prefix):
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                dotted = prefix + str(k.value)
                out[dotted] = k.start_mark.line + 1
                walk(v, dotted + ".")
    try:
        walk(yaml.compose(text), "")
    except yaml.YAMLError:
        pass
    return out


def from_dict(raw: dict | None, where: str | None = None, lines: dict | None = None) -> RunConfig:
    """Build and validate a RunConfig; every problem is a TuneError naming the dotted key."""
    raw = raw or {}
    if not isinstance(raw, dict):
        raise TuneError("A config must be a mapping of sections (model, method, data, train, output)", where)
    config = _build(RunConfig, raw, "", where, lines)
    validate(config, where, lines)
    return config


def load(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a YAML config file, apply `--set key=value` overrides, validate."""
    path = Path(path)
    if not path.is_file():
        raise TuneError(f"Config file {path} does not exist", None, "Check the path, or start from presets/demo.yaml")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TuneError(f"Cannot read config file {path}: {exc}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{path}, line {mark.line + 1}" if mark else str(path)
        raise TuneError(f"The config is not valid YAML: {getattr(exc, 'problem', exc)}", at,
                        "Fix the indentation or quoting on that line") from None
    raw = apply_overrides(raw or {}, overrides)
    return from_dict(raw, str(path), _key_lines(text))


def apply_overrides(raw: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """Apply `dotted.key=value` strings; values are parsed as YAML scalars (`30`, `true`, `[q_proj, v_proj]`)."""
    raw = _deep_copy(raw)
    for item in overrides:
        if "=" not in item:
            raise TuneError(f"`--set {item}` has no `=`", None, "Write it as --set section.key=value")
        key, _, text = item.partition("=")
        key = key.strip()
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = value
    return raw


def _deep_copy(raw):
    if isinstance(raw, dict):
        return {k: _deep_copy(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return [_deep_copy(v) for v in raw]
    return raw


def with_overrides(config: RunConfig, overrides: list[str] | tuple[str, ...]) -> RunConfig:
    """A new RunConfig with dotted overrides applied (validated)."""
    return from_dict(apply_overrides(to_dict(config), overrides))


def validate(config: RunConfig, where: str | None = None, lines: dict | None = None) -> None:
    """Range checks that types alone cannot express."""
    def check(ok: bool, key: str, what: str, fix: str):
        if not ok:
            raise TuneError(what, _where(where, lines, key), fix)

    m, d, t = config.method, config.data, config.train
    check(bool(config.model.name_or_path.strip()), "model.name_or_path", "No model is set",
          "Set model.name_or_path to a model folder, a hub id or demo:tiny-llama")
    check(m.freeze.trainable_layers != 0, "method.freeze.trainable_layers",
          "`method.freeze.trainable_layers` is 0, so nothing would train",
          "Use N > 0 for the top N blocks or -N for the bottom N")
    for name in m.freeze.extra_modules:
        check(name in ("norm", "embed_tokens", "lm_head"), "method.freeze.extra_modules",
              f"`method.freeze.extra_modules` has {name!r}", "Use any of: norm, embed_tokens, lm_head")
    check(m.lora.r >= 1, "method.lora.r", f"`method.lora.r` is {m.lora.r}; the rank must be at least 1",
          "Typical ranks are 8, 16 or 64")
    check(m.lora.alpha > 0, "method.lora.alpha", f"`method.lora.alpha` is {m.lora.alpha}; it must be positive",
          "A common choice is alpha = 2 x r")
    check(0 <= m.lora.dropout < 1, "method.lora.dropout", f"`method.lora.dropout` is {m.lora.dropout}",
          "Use a value in [0, 1), e.g. 0.05")
    if isinstance(m.lora.target_modules, tuple):
        check(len(m.lora.target_modules) > 0, "method.lora.target_modules",
              "`method.lora.target_modules` is an empty list", "Use all-linear or name modules, e.g. [q_proj, v_proj]")
    check(d.max_length >= 8, "data.max_length", f"`data.max_length` is {d.max_length}",
          "Use at least 8 tokens; 512-4096 is typical")
    check(d.val_size >= 0, "data.val_size", f"`data.val_size` is {d.val_size}", "Use 0, a fraction like 0.1, or a count")
    check(d.max_samples is None or d.max_samples >= 1, "data.max_samples",
          f"`data.max_samples` is {d.max_samples}", "Use a positive count or leave it unset")
    check(t.lr > 0, "train.lr", f"`train.lr` is {t.lr}; the learning rate must be positive",
          "Typical: 1e-5 to 5e-5 for full, 1e-4 to 3e-4 for LoRA")
    check(t.batch_size >= 1, "train.batch_size", f"`train.batch_size` is {t.batch_size}", "Use 1 or more")
    check(t.grad_accum >= 1, "train.grad_accum", f"`train.grad_accum` is {t.grad_accum}", "Use 1 or more")
    check(t.max_steps == -1 or t.max_steps >= 1, "train.max_steps", f"`train.max_steps` is {t.max_steps}",
          "Use a positive step count, or -1 to train by epochs")
    check(t.epochs > 0, "train.epochs", f"`train.epochs` is {t.epochs}", "Use a positive number, e.g. 1 or 3")
    check(0 <= t.warmup_ratio < 1, "train.warmup_ratio", f"`train.warmup_ratio` is {t.warmup_ratio}",
          "Use a fraction in [0, 1)")
    check(t.weight_decay >= 0, "train.weight_decay", f"`train.weight_decay` is {t.weight_decay}", "Use 0 or more")
    check(t.max_grad_norm >= 0, "train.max_grad_norm", f"`train.max_grad_norm` is {t.max_grad_norm}", "Use 0 or more")
    for key in ("logging_steps", "save_steps", "save_total_limit"):
        value = getattr(t, key)
        check(value >= 1, f"train.{key}", f"`train.{key}` is {value}", "Use 1 or more")
    check(t.eval_steps >= 0, "train.eval_steps", f"`train.eval_steps` is {t.eval_steps}", "Use 0 or more")


__all__ = [
    "RunConfig", "ModelSpec", "MethodSpec", "FreezeSpec", "LoraSpec", "QuantSpec", "DataSpec", "TrainSpec",
    "OutputSpec", "load", "save", "from_dict", "to_dict", "dump_yaml", "apply_overrides", "with_overrides",
    "validate", "replace", "METHODS", "FORMATS", "DEMO_MODEL",
]
