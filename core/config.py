"""Run configuration: frozen dataclasses, YAML load/save, dotted overrides, validation.

Must not import torch, transformers, peft, bitsandbytes, datasets or textual: the UI imports this first.
Over 400 lines on purpose: the schema and the one way text becomes a RunConfig (file lines, --set, foreign key
names, range checks) change together, and every caller uses them as one module (`cfg.load`, `cfg.RunConfig`).
"""
from __future__ import annotations

import difflib
import functools
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Literal, Union

from core import methods
from core.errors import TuneError

METHODS = methods.NAMES
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
    padding_free: Union[bool, Literal["auto"]] = "auto"
    """true: chat/instruction batches are concatenated without padding (position ids restart at each example, and
    the attention mask keeps every example to itself), where the model's attention supports it; false pads each
    batch to its longest example; auto: true on a GPU, false on the CPU, where the dense block-diagonal mask of
    a concatenated batch costs more than the padding it saves. Plain text is packed into full blocks either way."""
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
    distributed: Literal["auto", "ddp", "fsdp"] = "auto"
    """With several processes (--nproc): ddp keeps a whole replica on each GPU; fsdp shards weights, gradients and
    optimizer state across the GPUs (CUDA only); auto: DDP when the run fits one GPU, FSDP when it does not."""


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


# ---------------------------------------------------------------- foreign key names

ALIASES: dict[str, str] = {
    # HF Trainer (TrainingArguments) names
    "learning_rate": "train.lr",
    "num_train_epochs": "train.epochs",
    "per_device_train_batch_size": "train.batch_size",
    "gradient_accumulation_steps": "train.grad_accum",
    "lr_scheduler_type": "train.scheduler",
    "warmup_ratio": "train.warmup_ratio",
    "weight_decay": "train.weight_decay",
    "max_grad_norm": "train.max_grad_norm",
    "max_steps": "train.max_steps",
    "seed": "train.seed",
    "logging_steps": "train.logging_steps",
    "eval_steps": "train.eval_steps",
    "save_steps": "train.save_steps",
    "save_total_limit": "train.save_total_limit",
    "gradient_checkpointing": "train.gradient_checkpointing",
    "bf16": "train.precision",
    "fp16": "train.precision",
    # LLaMA-Factory names
    "model_name_or_path": "model.name_or_path",
    "trust_remote_code": "model.trust_remote_code",
    "finetuning_type": "method.kind",
    "lora_rank": "method.lora.r",
    "lora_alpha": "method.lora.alpha",
    "lora_dropout": "method.lora.dropout",
    "lora_target": "method.lora.target_modules",
    "use_rslora": "method.lora.use_rslora",
    "use_dora": "method.lora.use_dora",
    "cutoff_len": "data.max_length",
    "max_samples": "data.max_samples",
    "val_size": "data.val_size",
}
"""Key names people bring from the HF Trainer and LLaMA-Factory -> our dotted key. Each is accepted bare (flat, as
LLaMA-Factory writes its YAML: `learning_rate: 1e-4`) or inside a section on the way to its target
(`train.learning_rate`, `method.lora_rank`), in files and in --set."""


def _precision_flag(name: str):
    def convert(value):
        # `bf16: true` picks that precision. `false` says "not this one" and names no other, so it sets nothing and
        # train.precision keeps its value (HF configs often carry `bf16: false` beside `fp16: true`).
        if isinstance(value, bool):
            return name if value else _UNSET
        return value  # not a boolean: left for the type check on train.precision to explain
    return convert


def _lora_target(value):
    # LLaMA-Factory writes `lora_target: all` or a comma-separated string; we take all-linear or a list.
    if value == "all":
        return "all-linear"
    if isinstance(value, str) and "," in value:
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


_UNSET = object()
_ALIAS_VALUES = {"bf16": _precision_flag("bf16"), "fp16": _precision_flag("fp16"), "lora_target": _lora_target}


def canonical_key(key: str) -> str:
    """Our dotted key for `key`: the target of a foreign alias when it is written bare or inside a section on the way
    to that target (`learning_rate`, `train.learning_rate` -> `train.lr`); any other key unchanged."""
    prefix, _, name = key.rpartition(".")
    target = ALIASES.get(name)
    if target is None or key == target:
        return key
    if not prefix or target.startswith(prefix + "."):
        return target
    return key


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
    import yaml  # imported when used: ~40 ms the app's first frame need not pay

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


def _build(cls, raw: dict, prefix: str, where: str | None, origins: dict | None = None):
    known = {f.name for f in fields(cls)}
    hints = _hints(cls)
    kwargs = {}
    for key, value in raw.items():
        dotted = prefix + str(key)
        at = _where(where, origins, dotted)
        if key not in known:
            raise TuneError(f"Unknown config key `{dotted}`", at, _suggest(str(key), known, prefix))
        hint = hints[key]
        if is_dataclass(hint):
            if not isinstance(value, dict):
                raise TuneError(f"`{dotted}` must be a section (a mapping of keys), got {value!r}", at)
            kwargs[key] = _build(hint, value, dotted + ".", where, origins)
        else:
            kwargs[key] = _coerce(value, hint, dotted, at)
    return cls(**kwargs)


def _suggest(key: str, known: set[str], prefix: str) -> str:
    """The nearest key valid here, counting the foreign names accepted here (`learnig_rate` -> `train.lr`)."""
    pool = {name: prefix + name for name in known}
    for alias, target in ALIASES.items():
        if alias not in pool and canonical_key(prefix + alias) == target:
            pool[alias] = target
    near = difflib.get_close_matches(key, sorted(pool), n=1, cutoff=0.5)
    if near:
        return f"Did you mean `{pool[near[0]]}`?"
    return f"Valid keys here: {', '.join(prefix + k for k in sorted(known))}"


# Where a key came from, for error messages: origins map a dotted key (ours) to ("line", N, key as written) for a
# config file, or ("set", "key=value") for a --set. A bare int is a line number (the older form).
def _where(where: str | None, origins: dict | None, dotted: str) -> str | None:
    key = dotted
    while origins and key:
        origin = origins.get(key)
        if isinstance(origin, int):
            origin = ("line", origin, key)
        if origin is not None and origin[0] == "set":
            return f"--set {origin[1]}"  # a --set covers every key below the one it set
        if origin is not None and key == dotted:
            return f"{where}, line {origin[1]}, key {origin[2]}" if where else f"line {origin[1]}, key {origin[2]}"
        key = key.rpartition(".")[0]
    if where:
        return f"{where}, key {dotted}"
    return f"key {dotted}"


def _key_lines(text: str) -> dict[str, tuple]:
    """Map dotted keys to their 1-based line numbers (as origins), so errors can point at the line."""
    import yaml

    out: dict[str, tuple] = {}

    def walk(node, prefix):
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                dotted = prefix + str(k.value)
                out[dotted] = ("line", k.start_mark.line + 1, dotted)
                walk(v, dotted + ".")
    try:
        walk(yaml.compose(text), "")
    except yaml.YAMLError:
        pass
    return out


def _canonicalize(raw: dict, where: str | None = None, origins: dict | None = None) -> dict:
    """A copy of `raw` with foreign keys (ALIASES) moved to our keys; a value given under two names is refused.
    `origins` follows the moves, so an error about the value still names the line and the name as written."""
    out = _deep_copy(raw)
    moves = []

    def walk(node: dict, cls, prefix: str):
        hints = _hints(cls)
        for key in list(node):
            dotted = prefix + str(key)
            if key in hints:
                if is_dataclass(hints[key]) and isinstance(node[key], dict):
                    walk(node[key], hints[key], dotted + ".")
            elif canonical_key(dotted) != dotted:
                moves.append((node, key, dotted))

    walk(out, RunConfig, "")
    moved: dict[str, str] = {}  # our key -> the foreign name that set it, for the message when two names meet
    for node, key, dotted in moves:
        target = canonical_key(dotted)
        value = _alias_value(str(key), node.pop(key))
        origin = (origins or {}).pop(dotted, None)
        if value is _UNSET:
            continue
        parent = _section(out, target, where, origins)
        leaf = target.rpartition(".")[2]
        if leaf in parent:
            first = (origins or {}).get(target)
            first_name = moved.get(target) or (first[2] if isinstance(first, tuple) and first[0] == "line" else target)
            what = (f"`{dotted}` is another name for `{target}`, which is set too" if first_name == target
                    else f"`{dotted}` and `{first_name}` both set `{target}`")
            raise TuneError(what,
                            _where(where, {dotted: origin} if origin else None, dotted), "Keep one of them")
        parent[leaf] = value
        moved[target] = dotted
        if origin is not None and origins is not None:
            origins[target] = origin
    return out


def _alias_value(name: str, value):
    convert = _ALIAS_VALUES.get(name)
    return convert(value) if convert else value


def _section(raw: dict, dotted: str, where: str | None, origins: dict | None) -> dict:
    """The dict that holds `dotted`'s last part, made on the way when missing."""
    node, done = raw, []
    for part in dotted.split(".")[:-1]:
        done.append(part)
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            key = ".".join(done)
            raise TuneError(f"`{key}` must be a section (a mapping of keys), got {child!r}",
                            _where(where, origins, key))
        node = child
    return node


def from_dict(raw: dict | None, where: str | None = None, origins: dict | None = None) -> RunConfig:
    """Build and validate a RunConfig; every problem is a TuneError naming the dotted key and where it came from."""
    raw = raw or {}
    if not isinstance(raw, dict):
        raise TuneError("A config must be a mapping of sections (model, method, data, train, output)", where)
    config = _build(RunConfig, _canonicalize(raw, where, origins), "", where, origins)
    validate(config, where, origins)
    return config


def load(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a YAML config file, apply `--set key=value` overrides, validate."""
    import yaml

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
    if raw is not None and not isinstance(raw, dict):
        raise TuneError("A config must be a mapping of sections (model, method, data, train, output)", str(path))
    origins = _key_lines(text)
    raw = apply_overrides(raw or {}, overrides, str(path), origins)
    return from_dict(raw, str(path), origins)


def apply_overrides(raw: dict, overrides: list[str] | tuple[str, ...], where: str | None = None,
                    origins: dict | None = None) -> dict:
    """Apply `dotted.key=value` strings; values are parsed as YAML scalars (`30`, `true`, `[q_proj, v_proj]`).
    Foreign key names are accepted (`learning_rate=1e-4` sets train.lr). `origins`, when given, records each key
    set here, so an error about it names the --set and not the file the key was first read from."""
    import yaml

    raw = _canonicalize(raw, where, origins)
    for item in overrides:
        if "=" not in item:
            raise TuneError(f"`--set {item}` has no `=`", None, "Write it as --set section.key=value")
        key, _, text = item.partition("=")
        key = key.strip()
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        target = canonical_key(key)
        if target != key:
            value = _alias_value(key.rpartition(".")[2], value)
            if value is _UNSET:
                continue
        node = raw
        parts = target.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = value
        if origins is not None:
            for dotted in [k for k in origins if k == target or k.startswith(target + ".")]:
                del origins[dotted]
            origins[target] = ("set", item.strip())
    return raw


def _deep_copy(raw):
    if isinstance(raw, dict):
        return {k: _deep_copy(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return [_deep_copy(v) for v in raw]
    return raw


def with_overrides(config: RunConfig, overrides: list[str] | tuple[str, ...]) -> RunConfig:
    """A new RunConfig with dotted overrides applied (validated); errors name the --set."""
    origins: dict = {}
    return from_dict(apply_overrides(to_dict(config), overrides, None, origins), None, origins)


def validate(config: RunConfig, where: str | None = None, origins: dict | None = None) -> None:
    """Range checks that types alone cannot express."""
    def check(ok: bool, key: str, what: str, fix: str):
        if not ok:
            raise TuneError(what, _where(where, origins, key), fix)

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
    "validate", "replace", "canonical_key", "ALIASES", "METHODS", "FORMATS", "DEMO_MODEL",
]
