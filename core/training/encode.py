"""Tokenizing: rows → token ids with loss masks (chat templates for SFT, packed blocks for text, label ids for
classification), cached under the tunetui cache so an unchanged rerun loads the result; length statistics.

The runner calls rawdata.load_raw → tokenize. datasets and transformers are imported inside functions. Never
imports textual or tui. Avoids the name `tokenize`, which would shadow the standard library module.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from core.config import DataSpec
from core.errors import TuneError
from core.tasks import TASKS, task_for_format
from core.training import formats, rawdata, rowchecks, sources, templates
from core.training.rawdata import RawData, label_text
from core.training.sources import ROW_COLUMN, Origin, cache_root
from core.training.templates import IGNORE_INDEX

if TYPE_CHECKING:
    from datasets import Dataset

log = logging.getLogger(__name__)

_PACK_BATCH = 10_000         # documents per packing batch: bigger batches waste less of each batch's tail
# Part of every cache key, so editing this pipeline (any of its modules) never serves tokenization made by older code.
_PIPELINE = (sources, formats, rowchecks, rawdata, templates)
_CODE_VERSION = hashlib.sha256(b"".join(Path(module.__file__).read_bytes() for module in _PIPELINE)
                               + Path(__file__).read_bytes()).hexdigest()[:16]


@dataclass
class PreparedData:
    format: str
    task: str
    train: "Dataset"
    val: "Dataset | None"
    """Columns input_ids, attention_mask, labels (token list for causal tasks, class id for classification)."""
    label_names: list[str] | None
    stats: dict
    """examples, min, median, p95, max (token lengths before truncation), truncated, dropped; text adds blocks."""

    def collator(self, tokenizer, padding_free: bool = False) -> Callable:
        """Pads a batch: input_ids with the pad token, attention_mask with 0, causal labels with -100. With
        `padding_free` (causal examples only; see can_flatten), concatenates it into one row instead:
        transformers' DataCollatorWithFlattening, position ids restarting at each example."""
        from transformers import DataCollatorForSeq2Seq, DataCollatorWithPadding

        if padding_free and self.task != "classification":
            return _flattening_collator()

        if tokenizer.pad_token_id is None:
            # Padded positions are masked out of attention and loss, so reusing EOS as padding is harmless.
            if tokenizer.eos_token is None:
                raise TuneError("The tokenizer has neither a pad token nor an EOS token, so batches cannot be padded",
                                getattr(tokenizer, "name_or_path", None),
                                "Set pad_token in the tokenizer's tokenizer_config.json")
            tokenizer.pad_token = tokenizer.eos_token
            log.info("Tokenizer has no pad token; padding with EOS (%s)", tokenizer.eos_token)
        if self.task == "classification":
            return DataCollatorWithPadding(tokenizer)
        return DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX, padding=True)


def _flattening_collator():
    from transformers import DataCollatorWithFlattening

    class FlatteningCollator(DataCollatorWithFlattening):
        """transformers' padding-free collator, plus `use_cache: False` in every batch: masking_utils only reads
        restarting position ids as separate examples when the forward has no KV cache, and a model whose config
        says use_cache: true would make one (and let the examples attend to each other)."""

        def __call__(self, features, return_tensors=None, separator_id=None):
            batch = super().__call__(features, return_tensors, separator_id)
            batch["use_cache"] = False
            return batch

    return FlatteningCollator(return_position_ids=True, separator_id=IGNORE_INDEX)


def can_flatten(model_dir, trust_remote_code: bool = False) -> bool:
    """Whether the model in `model_dir` keeps the examples of a flattened batch apart. transformers' own causal
    LMs build their attention mask with masking_utils, which reads restarting position ids as separate sequences (a
    block-diagonal causal mask, for SDPA and eager attention too); code shipped with a model may not."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    try:
        config = AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    except (OSError, ValueError):
        return False
    native = not getattr(config, "auto_map", None)
    return native and config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and not config.is_encoder_decoder


def token_lengths(dataset) -> list[int]:
    """Tokens per example of a tokenized dataset (its input_ids lists), read from the Arrow offsets."""
    import pyarrow.compute as pc

    column = dataset.with_format("arrow")[:].column("input_ids")
    return pc.list_value_length(column).to_pylist()


def padding_share(lengths, batch_size: int, seed: int = 0) -> float:
    """The share of a padded run's tokens that would be padding: random batches of `batch_size`, each padded to
    its longest example (what DataCollatorForSeq2Seq does). 0 for an empty set."""
    import numpy as np

    lengths = np.random.default_rng(seed).permutation(np.asarray(lengths, dtype=np.int64))
    if len(lengths) == 0:
        return 0.0
    pad = len(lengths) % batch_size
    if pad:
        lengths = np.concatenate([lengths, np.zeros(batch_size - pad, dtype=np.int64)])
    batches = lengths.reshape(-1, batch_size)
    padded = int((batches.max(axis=1) * (batches > 0).sum(axis=1)).sum())
    return 1.0 - int(lengths.sum()) / padded if padded else 0.0


class Encoder:
    """Per-batch tokenization for one format: the map function for tokenize() and the sampler for preview()."""

    def __init__(self, fmt: str, columns: dict[str, str], tokenizer, spec: DataSpec, label_names: list[str] | None):
        self.fmt, self.columns, self.tokenizer, self.spec = fmt, columns, tokenizer, spec
        self.max_length = spec.max_length
        self.label_ids = {name: i for i, name in enumerate(label_names or [])}
        self.chat = templates.ChatEncoder(tokenizer) if TASKS[fmt] == "sft" else None
        limit = getattr(tokenizer, "model_max_length", None)
        if isinstance(limit, int) and spec.max_length > limit:
            log.warning("data.max_length is %d but the tokenizer says the model takes at most %d tokens",
                        spec.max_length, limit)
        warned = getattr(tokenizer, "deprecation_warnings", None)
        if isinstance(warned, dict):
            # Lengths are measured before truncating to data.max_length on purpose; the tokenizer's warning about
            # "sequence length longer than the maximum" would only alarm (the real limit is checked just above).
            warned["sequence-length-is-longer-than-the-specified-maximum"] = True
        if fmt == "text" and tokenizer.eos_token_id is None:
            raise TuneError("The tokenizer has no EOS token to separate documents",
                            getattr(tokenizer, "name_or_path", None), "Use a tokenizer with an eos_token")

    def messages(self, row: dict) -> tuple[list[dict], list | None]:
        if self.fmt == "alpaca":
            return templates.alpaca_messages(row, self.spec.system_prompt), None
        c = self.columns
        roles = templates.SHAREGPT_ROLES if self.fmt == "sharegpt" else templates.MESSAGE_ROLES
        return (templates.chat_messages(row[c["chat"]], c["role"], c["content"], roles,
                                        row.get("system") or self.spec.system_prompt),
                templates.parse_tools(row.get("tools")))

    def sft(self, batch: dict, indices: list[int], origin: Origin) -> dict:
        from jinja2.exceptions import TemplateError

        out = {"input_ids": [], "attention_mask": [], "labels": [], "_length": [], "_prompt": [], "_keep": []}
        names = list(batch)
        for n, index in enumerate(indices):
            row = {name: batch[name][n] for name in names}
            file_row = row.pop(ROW_COLUMN, index)  # after a shuffled split, the position is not the file's row
            messages, tools = self.messages(row)
            try:
                ids, labels = self.chat.encode(messages, tools)
            except TemplateError as exc:
                # The template's own raise_exception (e.g. "roles must alternate"): its words are for the user.
                # Types were checked before any template ran, so this is about the conversation's shape.
                raise TuneError(f"The model's chat template refuses this conversation: {exc}", origin.row(file_row),
                                "Reorder or merge its turns as the template asks (many templates want user and "
                                "assistant turns to alternate, starting with user, after at most one system turn)"
                                ) from exc
            except Exception as exc:  # not the user's data (its types were checked): a bug, so keep the traceback
                exc.add_note(f"while formatting {origin.row(file_row)}")
                raise
            prompt = next((i for i, label in enumerate(labels) if label != IGNORE_INDEX), len(ids))
            out["_length"].append(len(ids))
            out["_prompt"].append(prompt)
            # An example whose prompt alone fills max_length would train on nothing: drop it instead.
            out["_keep"].append(prompt < min(len(ids), self.max_length))
            ids, labels = ids[:self.max_length], labels[:self.max_length]
            out["input_ids"].append(ids)
            out["attention_mask"].append([1] * len(ids))
            out["labels"].append(labels)
        return out

    def classification(self, batch: dict, indices: list[int]) -> dict:
        texts = [str(t) for t in batch[self.columns["text"]]]
        enc = self.tokenizer(texts)
        ids = enc["input_ids"]
        lengths = [len(x) for x in ids]
        long_ = [i for i, n in enumerate(lengths) if n > self.max_length]
        if long_:  # re-encode only the long ones, so special tokens such as [SEP] survive truncation
            cut = self.tokenizer([texts[i] for i in long_], truncation=True, max_length=self.max_length)["input_ids"]
            for i, row in zip(long_, cut):
                ids[i] = row
        return {"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids],
                "labels": [self.label_ids[label_text(v)] for v in batch[self.columns["label"]]],
                "_length": lengths, "_keep": [True] * len(ids)}

    def documents(self, batch: dict, indices: list[int]) -> dict:
        texts = [t if isinstance(t, str) else "" for t in batch[self.columns["text"]]]
        enc = self.tokenizer(texts)["input_ids"]
        eos = self.tokenizer.eos_token_id
        ids = [row + [eos] if text.strip() else [] for row, text in zip(enc, texts)]
        return {"input_ids": ids, "_length": [len(x) for x in ids], "_keep": [bool(x) for x in ids]}

    def encode(self, batch: dict, indices: list[int], origin: Origin) -> dict:
        if self.fmt == "text":
            return self.documents(batch, indices)
        if self.fmt == "classification":
            return self.classification(batch, indices)
        return self.sft(batch, indices, origin)


def _pack(batch: dict, block: int) -> dict:
    """Concatenate documents (each already ending in EOS) and cut into max_length blocks; the tail is dropped."""
    flat = [t for row in batch["input_ids"] for t in row]
    usable = len(flat) // block * block
    blocks = [flat[i:i + block] for i in range(0, usable, block)]
    return {"input_ids": blocks, "attention_mask": [[1] * block for _ in blocks], "labels": [list(b) for b in blocks]}


def _tokenizer_key(tokenizer) -> str:
    """A stable hash of everything about the tokenizer that changes token ids or templates."""
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        state.pop("truncation", None)  # call-time settings, not part of the vocabulary
        state.pop("padding", None)
        h.update(json.dumps(state, sort_keys=True).encode())
    else:
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    try:
        template = tokenizer.get_chat_template()
    except ValueError:
        template = None
    h.update(json.dumps([type(tokenizer).__name__, template, tokenizer.special_tokens_map,
                         getattr(tokenizer, "add_bos_token", None), getattr(tokenizer, "add_eos_token", None)],
                        sort_keys=True, default=str).encode())
    return h.hexdigest()


def lengths_stats(lengths, keep, max_length: int) -> dict:
    import numpy as np

    lengths = np.asarray(lengths, dtype=np.int64)
    keep = np.asarray(keep, dtype=bool)
    seen = lengths[keep] if keep.any() else lengths
    if len(seen) == 0:
        return {"examples": 0, "min": 0, "median": 0, "p95": 0, "max": 0, "truncated": 0, "dropped": 0}
    return {"examples": int(keep.sum()), "min": int(seen.min()), "median": int(round(float(np.median(seen)))),
            "p95": int(round(float(np.percentile(seen, 95)))), "max": int(seen.max()),
            "truncated": int((lengths[keep] > max_length).sum()), "dropped": int((~keep).sum())}


def tokenize(raw: RawData, tokenizer, spec: DataSpec,
             progress: Callable[[int, int], None] | None = None) -> PreparedData:
    """Tokenize with batched datasets.map, cached under the tunetui cache: an unchanged rerun loads the result."""
    task = task_for_format(raw.format)
    encoder = Encoder(raw.format, raw.columns, tokenizer, spec, raw.label_names)
    cache = cache_root() / "tokenized"
    cache.mkdir(parents=True, exist_ok=True)
    key = [_CODE_VERSION, _tokenizer_key(tokenizer), raw.format, raw.columns, spec.max_length, spec.system_prompt,
           raw.label_names]
    total = len(raw.train) + (len(raw.val) if raw.val is not None else 0)
    done = [0]
    ran = [False]

    def work(batch, indices, origin):
        ran[0] = True
        out = encoder.encode(batch, indices, origin)
        done[0] += len(indices)
        if progress:
            progress(done[0], total)
        return out

    def run(ds, stage: str, fn, **kwargs):
        fp = hashlib.sha256(json.dumps([key, stage, ds._fingerprint], default=str).encode()).hexdigest()[:40]
        return fp, ds.map(fn, batched=True, new_fingerprint=fp, cache_file_name=str(cache / f"{fp}.arrow"),
                          desc=f"Tokenizing ({stage})", **kwargs)

    prepared = {}
    stats = None
    for name, ds in (("train", raw.train), ("val", raw.val)):
        if ds is None:
            prepared[name] = None
            continue
        origin = raw.origins.get(name) or Origin(raw.source)
        fp, mapped = run(ds, f"encode-{name}", work, with_indices=True, remove_columns=ds.column_names,
                         fn_kwargs={"origin": origin})
        cols = mapped.with_format("arrow")[:]
        lengths, keep = cols.column("_length").to_numpy(), cols.column("_keep").to_numpy(zero_copy_only=False)
        part_stats = lengths_stats(lengths, keep, spec.max_length)
        if name == "train":
            stats = part_stats
            if stats["examples"] == 0:
                _all_dropped(raw, cols, spec.max_length)
        if raw.format == "text":
            _, packed = run(mapped, f"pack-{name}", _pack, batch_size=_PACK_BATCH,
                            remove_columns=mapped.column_names, fn_kwargs={"block": spec.max_length})
            part_stats["truncated"] = 0  # packing splits long documents across blocks; nothing is cut away
            if name == "train":
                stats["blocks"] = len(packed)
                if len(packed) == 0:
                    tokens = int(lengths.sum())
                    raise TuneError(f"The text holds {tokens} tokens, less than one block of "
                                    f"data.max_length={spec.max_length}", raw.source,
                                    "Add more text" + (f", or set data.max_length to at most {tokens}"
                                                       if tokens >= 8 else ""))
            final = packed
        else:
            final = mapped
            if part_stats["dropped"]:
                final = mapped.filter(lambda k: k, input_columns="_keep", batched=True,
                                      new_fingerprint=fp[:32] + "-keep",
                                      cache_file_name=str(cache / f"{fp}-keep.arrow"))
            final = final.remove_columns([c for c in final.column_names if c.startswith("_")])
        if name == "val" and len(final) == 0:
            log.warning("Every validation example was dropped by data.max_length=%d; training without validation",
                        spec.max_length)
            final = None
        prepared[name] = final
    if progress:
        progress(total, total)
    log.info("%s %d training examples (lengths min %d, median %d, p95 %d, max %d; %d truncated, %d dropped)",
             "Tokenized" if ran[0] else "Reused cached tokenization of", stats["examples"], stats["min"],
             stats["median"], stats["p95"], stats["max"], stats["truncated"], stats["dropped"])
    return PreparedData(format=raw.format, task=task, train=prepared["train"], val=prepared["val"],
                        label_names=raw.label_names, stats=stats)


def _all_dropped(raw: RawData, cols, max_length: int) -> None:
    lengths = cols.column("_length").to_numpy()
    if "_prompt" in cols.column_names:
        shortest_prompt = int(cols.column("_prompt").to_numpy().min())
        raise TuneError(
            f"Every example was dropped: data.max_length is {max_length} but the shortest prompt is "
            f"{shortest_prompt} tokens (the shortest whole example is {int(lengths.min())} tokens)", raw.source,
            f"Set data.max_length to at least {int(lengths.min())}")
    raise TuneError(f"Every example was dropped: none has any text (data.max_length is {max_length})", raw.source,
                    "Check data.text_column and that the rows contain text")
