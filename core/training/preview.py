"""The data screen's preview: the first rows as the model will see them, with trained tokens marked, and length
stats from a small sample. Large files are streamed. datasets is imported inside the function. Never imports
textual or tui.
"""
from __future__ import annotations

from dataclasses import dataclass

from core.config import DataSpec
from core.errors import TuneError
from core.training.encode import Encoder, lengths_stats
from core.training.formats import resolve_format
from core.training.rawdata import find_label_names
from core.training.rowchecks import check_rows
from core.training.sources import diagnose_json_lines, first_line, load_source
from core.training.templates import IGNORE_INDEX

PREVIEW_SAMPLE = 64          # rows tokenized for the preview's length stats


@dataclass
class Preview:
    format: str
    rows: int | None
    """Total rows when known cheaply; None for large streamed files and hub datasets."""
    examples: list[list[tuple[str, bool]]]
    """Each example as text segments; True where the tokens train. Classification: the text (False), then
    " → label" (True: the label is what trains)."""
    stats: dict


def preview(spec: DataSpec, tokenizer, n: int = 3) -> Preview:
    """First rows as the model will see them, with trained tokens marked; length stats from a small sample.

    Large files are streamed, so only their first rows are read.
    """
    from datasets import Dataset

    train, _, origin, rows = load_source(spec.path, "data.path", streaming=True,
                                          text_columns=(spec.text_column,) if spec.text_column else ())
    limit = max(n, PREVIEW_SAMPLE)
    if isinstance(train, Dataset):
        head = train.select(range(min(limit, len(train))))
    else:
        try:
            # Rows whose types differ are kept as JSON values, so the row checks can name the odd one out.
            head = Dataset.from_list(list(train.take(limit)), on_mixed_types="use_json")
        except Exception as exc:
            if origin.path is not None and origin.jsonl:
                diagnose_json_lines(origin.path, "data.path")
            raise TuneError(f"Could not read {origin.description}: {first_line(exc)}", "data.path") from exc
    fmt, columns = resolve_format(head, spec, origin)
    # A file loaded whole is checked whole, as the run checks it: a bad row past the first ones is named here, and a
    # column of mixed types (stored as JSON, where the text "3" reads back as the number 3) never reaches a template.
    check_rows(train if isinstance(train, Dataset) else head, fmt, columns, origin)
    label_names = find_label_names([head], columns["label"]) if fmt == "classification" else None
    encoder = Encoder(fmt, columns, tokenizer, spec, label_names)
    out = encoder.encode(head[:], list(range(len(head))), origin)
    stats = lengths_stats(out["_length"], out["_keep"], spec.max_length)
    if fmt == "text":
        stats["truncated"] = 0
    examples = []
    for i in range(len(head)):
        if len(examples) == n:
            break
        if not out["_keep"][i]:
            continue
        ids = out["input_ids"][i][:spec.max_length]
        if fmt == "classification":
            text = tokenizer.decode(ids, skip_special_tokens=True)
            examples.append([(text, False), (f" → {label_names[out['labels'][i]]}", True)])
        elif fmt == "text":
            examples.append([(tokenizer.decode(ids), True)])
        else:
            examples.append(_segments(tokenizer, ids, out["labels"][i]))
    return Preview(format=fmt, rows=rows, examples=examples, stats=stats)


def _segments(tokenizer, ids: list[int], labels: list[int]) -> list[tuple[str, bool]]:
    """Runs of consecutive tokens that share trained-ness, decoded."""
    segments: list[tuple[str, bool]] = []
    start = 0
    for i in range(1, len(ids) + 1):
        if i == len(ids) or (labels[i] != IGNORE_INDEX) != (labels[start] != IGNORE_INDEX):
            segments.append((tokenizer.decode(ids[start:i]), labels[start] != IGNORE_INDEX))
            start = i
    return segments
