"""A model's shape from its config.json alone (no weights loaded): where the config is (a folder, a config.json, a
hub id in the local Hugging Face cache, the demo), its layer sizes, and the parameter counts that follow.

Counts are exact for Llama / Mistral / Qwen2 / Qwen3 / Phi / BERT configs (checked against transformers in the
tests); other architectures are counted by building the model on PyTorch's meta device, or (for the UI thread, which
never imports torch) approximated with a Llama-style formula. Imports nothing heavy at module level: the UI imports
this before its first paint.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from core.errors import TuneError
from core.hub import hf_cache_dir, is_hub_id

# Families whose parameter layout is written out below; anything else is counted on the meta device.
_LLAMA_LIKE = ("llama", "mistral", "qwen2", "qwen3")


@dataclass(frozen=True)
class LinearShape:
    """One linear layer inside a transformer block."""
    name: str
    """Path inside the block, e.g. `self_attn.q_proj` (peft matches LoRA targets against its end)."""
    in_features: int
    out_features: int
    bias: bool = False

    @property
    def leaf(self) -> str:
        return self.name.rsplit(".", 1)[-1]

    def matches(self, target: str) -> bool:
        return self.name == target or self.name.endswith("." + target)


@dataclass(frozen=True)
class ModelShape:
    name: str
    model_type: str
    architecture: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    vocab_size: int
    tie_embeddings: bool
    total_params: int
    dtype: str | None
    is_encoder: bool
    linear_names: tuple[str, ...]
    """Distinct names of the linear layers in a block (what LoRA can target), e.g. q_proj … down_proj."""
    head_dim: int = 0
    linears: tuple[LinearShape, ...] = ()
    block_vectors: tuple[int, ...] = ()
    """Sizes of a block's other parameters (norm weights and biases)."""
    embed_tensors: tuple[int, ...] = ()
    """Sizes of the input-side parameters: token (and position/type) embeddings and their norm."""
    final_tensors: tuple[int, ...] = ()
    """Backbone parameters after the last block (final norm)."""
    head_tensors: tuple[int, ...] = ()
    """The LM head's own parameters (empty when tied to the embeddings)."""
    gated_mlp: bool = True
    norms_per_layer: int = 2
    exact: bool = True
    """False when the counts come from a generic formula (unknown architecture, no transformers)."""

    @property
    def layer_params(self) -> int:
        return sum(lin.in_features * lin.out_features + (lin.out_features if lin.bias else 0)
                   for lin in self.linears) + sum(self.block_vectors)

    @property
    def linear_weight_params(self) -> int:
        """Weights of every block linear: what 4-/8-bit quantization stores in low precision."""
        return self.num_layers * sum(lin.in_features * lin.out_features for lin in self.linears)

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    def classification_head(self, num_labels: int) -> tuple[int, ...]:
        """The new head of *ForSequenceClassification (replaces the LM head): `classifier` with a bias for
        encoders, `score` without one for decoders."""
        h = self.hidden_size
        return (h * num_labels, num_labels) if self.is_encoder else (h * num_labels,)

    def classification_pooler(self) -> tuple[int, ...]:
        """An encoder's pooler, part of the backbone for classification but absent from MLM configs."""
        h = self.hidden_size
        return (h * h, h) if self.is_encoder and not self.final_tensors else ()

    def block_tensors(self) -> list[int]:
        """Sizes of one transformer block's parameter tensors (linear weights, biases, norm vectors)."""
        return ([lin.in_features * lin.out_features for lin in self.linears]
                + [lin.out_features for lin in self.linears if lin.bias] + list(self.block_vectors))

    def new_head(self, task: str, num_labels: int) -> list[int]:
        """The head a task adds from scratch (it always trains): the classifier, or nothing for a causal LM."""
        return list(self.classification_head(num_labels)) if task == "classification" else []

    def task_head(self, task: str, num_labels: int) -> list[int]:
        """Every head tensor of the task's model: pooler and classifier for classification, else the LM head."""
        if task == "classification":
            return list(self.classification_pooler()) + self.new_head(task, num_labels)
        return list(self.head_tensors)


# ------------------------------------------------------------------ reading a model's config

def find_config(name_or_path: str) -> tuple[dict[str, Any], Path | None]:
    """The config dict of a demo name, a folder, a config.json file or a hub id in the local HF cache."""
    from core import demo

    if demo.is_demo(name_or_path):
        if demo.demo_name(name_or_path) not in demo.DEMO_NAMES:
            raise TuneError(f"Unknown demo model {name_or_path!r}", None,
                            "Use " + " or ".join(demo.DEMO_PREFIX + n for n in demo.DEMO_NAMES))
        return dict(demo.TINY_LLAMA_CONFIG), None
    path = Path(os.path.expanduser(name_or_path))
    if path.is_dir():
        config_path = path / "config.json"
        if not config_path.is_file():
            adapter = path / "adapter_config.json"
            if adapter.is_file():  # a LoRA output folder: size it by its base model
                base = _read_json(adapter).get("base_model_name_or_path")
                if base:
                    return find_config(base)
            raise TuneError(f"No config.json in {path}", str(path),
                            "Point at the model folder that holds config.json (a Hugging Face model)")
    elif path.is_file():
        config_path = path
    elif not is_hub_id(name_or_path) or name_or_path.endswith(".json"):  # a mistyped path (or config.json)
        raise TuneError(f"Model folder {name_or_path} does not exist", None, "Check the path")
    else:
        config_path = _cached_config(name_or_path)
    return _read_json(config_path), config_path


def _cached_config(repo_id: str) -> Path:
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json", cache_dir=hf_cache_dir())
    except Exception:  # noqa: BLE001 - an invalid repo id is the same user error as a missing one
        found = None
    if not isinstance(found, str):
        raise TuneError(f"{repo_id!r} is not a local folder and is not in the Hugging Face cache ({hf_cache_dir()})",
                        None, f"Download it first (`hf download {repo_id}`), or give a folder holding config.json")
    return Path(found)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise TuneError(f"Cannot read {path}: {exc.strerror or exc}", str(path)) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TuneError(f"{path} is not valid JSON: {exc}", str(path), "Restore the file from the model's source") \
            from None
    if not isinstance(data, dict):
        raise TuneError(f"{path} does not hold a JSON object", str(path))
    return data


def load_shape(name_or_path: str, trust_remote_code: bool = False, *, allow_transformers: bool = True) -> ModelShape:
    """The model's shape and parameter counts from its config.json alone.

    `allow_transformers=False` never imports transformers/torch (for the UI thread): an unknown architecture
    then gets an approximate Llama-style count (`exact=False`)."""
    cfg, config_path = find_config(name_or_path)
    return shape_from_config(cfg, name_or_path, config_path=config_path, trust_remote_code=trust_remote_code,
                             allow_transformers=allow_transformers)


def shape_from_config(cfg: dict[str, Any], name: str = "model", *, config_path: Path | None = None,
                      trust_remote_code: bool = False, allow_transformers: bool = True) -> ModelShape:
    if "hidden_size" not in cfg and isinstance(cfg.get("text_config"), dict):  # multimodal: size the language model
        cfg = {**cfg["text_config"], "architectures": cfg.get("architectures")}
    model_type = str(cfg.get("model_type") or "")
    if model_type in _LLAMA_LIKE:
        return _llama_like(cfg, name)
    if model_type == "phi":
        return _phi(cfg, name)
    if model_type == "bert":
        return _bert(cfg, name)
    if allow_transformers:
        return _via_meta_device(cfg, name, config_path, trust_remote_code)
    return replace(_llama_like(cfg, name), exact=False)


def _get(cfg: dict, *keys: str, default: Any = None) -> Any:
    for key in keys:
        if cfg.get(key) is not None:
            return cfg[key]
    if default is None:
        raise TuneError(f"The model config has no `{keys[0]}`", None, "Is this a Hugging Face transformers config?")
    return default


def _architecture(cfg: dict, fallback: str) -> str:
    archs = cfg.get("architectures") or []
    return str(archs[0]) if archs else fallback


def _dtype(cfg: dict) -> str | None:
    value = cfg.get("dtype") or cfg.get("torch_dtype")
    return str(value) if value else None


def _llama_like(cfg: dict, name: str) -> ModelShape:
    h = int(_get(cfg, "hidden_size", "n_embd", "d_model"))
    inter = int(_get(cfg, "intermediate_size", "n_inner", "ffn_dim", default=4 * h))
    layers = int(_get(cfg, "num_hidden_layers", "n_layer", "num_layers"))
    heads = int(_get(cfg, "num_attention_heads", "n_head", "num_heads"))
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or h // heads)
    vocab = int(_get(cfg, "vocab_size"))
    model_type = str(cfg.get("model_type") or "llama")
    tied = bool(cfg.get("tie_word_embeddings", False))
    # qwen2 has q/k/v biases without a flag; llama/mistral say so with attention_bias / mlp_bias.
    qkv_bias = model_type == "qwen2" or bool(cfg.get("attention_bias", False))
    o_bias = bool(cfg.get("attention_bias", False)) and model_type != "qwen2"
    mlp_bias = bool(cfg.get("mlp_bias", False))
    q, kv = heads * head_dim, kv_heads * head_dim
    linears = (
        LinearShape("self_attn.q_proj", h, q, qkv_bias),
        LinearShape("self_attn.k_proj", h, kv, qkv_bias),
        LinearShape("self_attn.v_proj", h, kv, qkv_bias),
        LinearShape("self_attn.o_proj", q, h, o_bias),
        LinearShape("mlp.gate_proj", h, inter, mlp_bias),
        LinearShape("mlp.up_proj", h, inter, mlp_bias),
        LinearShape("mlp.down_proj", inter, h, mlp_bias),
    )
    vectors = (h, h) + ((head_dim, head_dim) if model_type == "qwen3" else ())  # qwen3: q_norm, k_norm
    return _finish(name=name, model_type=model_type, architecture=_architecture(cfg, "LlamaForCausalLM"),
                   hidden_size=h, intermediate_size=inter, num_layers=layers, num_heads=heads, num_kv_heads=kv_heads,
                   vocab_size=vocab, tie_embeddings=tied, dtype=_dtype(cfg), is_encoder=False, head_dim=head_dim,
                   linears=linears, block_vectors=vectors, embed_tensors=(vocab * h,), final_tensors=(h,),
                   head_tensors=() if tied else (vocab * h,), gated_mlp=True, norms_per_layer=2)


def _phi(cfg: dict, name: str) -> ModelShape:
    h, inter = int(cfg["hidden_size"]), int(cfg["intermediate_size"])
    layers, heads = int(cfg["num_hidden_layers"]), int(cfg["num_attention_heads"])
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    head_dim, vocab = h // heads, int(cfg["vocab_size"])
    tied = bool(cfg.get("tie_word_embeddings", False))
    linears = (
        LinearShape("self_attn.q_proj", h, heads * head_dim, True),
        LinearShape("self_attn.k_proj", h, kv_heads * head_dim, True),
        LinearShape("self_attn.v_proj", h, kv_heads * head_dim, True),
        LinearShape("self_attn.dense", heads * head_dim, h, True),
        LinearShape("mlp.fc1", h, inter, True),
        LinearShape("mlp.fc2", inter, h, True),
    )
    qk_norm = (head_dim, head_dim, head_dim, head_dim) if cfg.get("qk_layernorm") else ()
    # One LayerNorm (weight + bias) per block: attention and MLP run in parallel on the same input.
    return _finish(name=name, model_type="phi", architecture=_architecture(cfg, "PhiForCausalLM"), hidden_size=h,
                   intermediate_size=inter, num_layers=layers, num_heads=heads, num_kv_heads=kv_heads,
                   vocab_size=vocab, tie_embeddings=tied, dtype=_dtype(cfg), is_encoder=False, head_dim=head_dim,
                   linears=linears, block_vectors=(h, h) + qk_norm, embed_tensors=(vocab * h,), final_tensors=(h, h),
                   head_tensors=() if tied else (vocab * h, vocab), gated_mlp=False, norms_per_layer=1)


def _bert(cfg: dict, name: str) -> ModelShape:
    h = int(cfg["hidden_size"])
    inter = int(cfg.get("intermediate_size") or 4 * h)
    layers, heads = int(cfg["num_hidden_layers"]), int(cfg["num_attention_heads"])
    vocab = int(cfg["vocab_size"])
    positions, types = int(cfg.get("max_position_embeddings", 512)), int(cfg.get("type_vocab_size", 2))
    arch = _architecture(cfg, "BertModel")
    linears = (
        LinearShape("attention.self.query", h, h, True),
        LinearShape("attention.self.key", h, h, True),
        LinearShape("attention.self.value", h, h, True),
        LinearShape("attention.output.dense", h, h, True),
        LinearShape("intermediate.dense", h, inter, True),
        LinearShape("output.dense", inter, h, True),
    )
    if arch == "BertForMaskedLM":  # transform dense + LayerNorm, decoder bias; decoder weight tied to embeddings
        final, head = (), (h * h, h, h, h, vocab)
    else:  # BertModel and task heads built on it keep the pooler
        final, head = (h * h, h), ()
    return _finish(name=name, model_type="bert", architecture=arch, hidden_size=h, intermediate_size=inter,
                   num_layers=layers, num_heads=heads, num_kv_heads=heads, vocab_size=vocab, tie_embeddings=True,
                   dtype=_dtype(cfg), is_encoder=True, head_dim=h // heads, linears=linears,
                   block_vectors=(h, h, h, h), embed_tensors=(vocab * h, positions * h, types * h, h, h),
                   final_tensors=final, head_tensors=head, gated_mlp=False, norms_per_layer=2)


def _finish(**kw: Any) -> ModelShape:
    names = tuple(dict.fromkeys(lin.leaf for lin in kw["linears"]))
    shape = ModelShape(total_params=0, linear_names=names, **kw)
    total = (sum(shape.embed_tensors) + shape.num_layers * shape.layer_params + sum(shape.final_tensors)
             + sum(shape.head_tensors))
    return replace(shape, total_params=total)


def _via_meta_device(cfg: dict, name: str, config_path: Path | None, trust_remote_code: bool) -> ModelShape:
    """Build the model with no storage (meta device) and read its layout: exact for any transformers model."""
    try:
        import torch
        from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

        if config_path is not None and trust_remote_code:
            config = AutoConfig.from_pretrained(config_path.parent, trust_remote_code=True)
        else:
            config = AutoConfig.for_model(**cfg)
        with torch.device("meta"):
            try:
                model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
            except ValueError:
                model = AutoModel.from_config(config, trust_remote_code=trust_remote_code)
    except TuneError:
        raise
    except Exception as exc:  # noqa: BLE001 - unknown or broken architecture: say so in words
        raise TuneError(f"Cannot work out the size of model type {cfg.get('model_type')!r}: {exc}", name,
                        "Give a model whose architecture transformers knows (or set trust_remote_code if you trust "
                        "its code)") from None
    blocks = max((m for m in model.modules() if isinstance(m, torch.nn.ModuleList)), key=len, default=None)
    if not blocks:
        raise TuneError(f"Cannot find the transformer blocks of {name}", name)
    block_params = {id(p) for p in blocks.parameters()}
    linears = []
    for mod_name, module in blocks[0].named_modules():
        kind = type(module).__name__
        if isinstance(module, torch.nn.Linear):
            linears.append(LinearShape(mod_name, module.in_features, module.out_features, module.bias is not None))
        elif kind == "Conv1D":  # GPT-2 style linear, weight stored (in, out)
            fan_in, fan_out = module.weight.shape
            linears.append(LinearShape(mod_name, int(fan_in), int(fan_out), module.bias is not None))
    linear_ids = {id(p) for n, m in blocks[0].named_modules() if n in {lin.name for lin in linears}
                  for p in m.parameters(recurse=False)}
    vectors = [p.numel() for p in blocks[0].parameters() if id(p) not in linear_ids]
    out_emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    head_ids = {id(p) for p in out_emb.parameters()} if out_emb is not None else set()
    seen: set[int] = set()
    embed, head = [], []
    for param in model.parameters():  # parameters() yields a tied weight once
        if id(param) in block_params or id(param) in seen:
            continue
        seen.add(id(param))
        (head if id(param) in head_ids else embed).append(param.numel())
    c = config.get_text_config() if hasattr(config, "get_text_config") else config
    h = int(getattr(c, "hidden_size", 0) or getattr(c, "n_embd", 0))
    heads = int(getattr(c, "num_attention_heads", 0) or getattr(c, "n_head", 0) or 1)
    inter = int(getattr(c, "intermediate_size", 0) or getattr(c, "n_inner", 0) or 4 * h)
    shape = ModelShape(
        name=name, model_type=str(c.model_type), architecture=type(model).__name__, hidden_size=h,
        intermediate_size=inter, num_layers=len(blocks), num_heads=heads,
        num_kv_heads=int(getattr(c, "num_key_value_heads", 0) or heads), vocab_size=int(getattr(c, "vocab_size", 0)),
        tie_embeddings=not head, total_params=sum(p.numel() for p in model.parameters()), dtype=_dtype(cfg),
        is_encoder=not bool(getattr(c, "is_decoder", False)) and "CausalLM" not in type(model).__name__,
        linear_names=tuple(dict.fromkeys(lin.leaf for lin in linears)),
        head_dim=int(getattr(c, "head_dim", 0) or h // heads), linears=tuple(linears), block_vectors=tuple(vectors),
        embed_tensors=tuple(embed), final_tensors=(), head_tensors=tuple(head),
        gated_mlp=sum(1 for lin in linears if lin.in_features == h and lin.out_features == inter) >= 2,
        norms_per_layer=2)
    return shape


__all__ = ["ModelShape", "LinearShape", "load_shape", "shape_from_config", "find_config"]
