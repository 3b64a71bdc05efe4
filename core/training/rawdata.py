"""The rows a run trains on: `load_raw` reads them (no tokenizer), resolves the format, checks every row, splits
off validation and collects a classifier's labels. numpy and datasets are imported inside functions. Never imports
textual or tui.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from core.config import DataSpec
from core.errors import TuneError
from core.splits import val_rows
from core.training.formats import EXPECTED_COLUMNS, resolve_format, turn_keys
from core.training.rowchecks import check_rows, is_json, pylist
from core.training.sources import ROW_COLUMN, Origin, load_source

if TYPE_CHECKING:
    from datasets import Dataset

log = logging.getLogger(__name__)


@dataclass
class RawData:
    format: str
    """Resolved format (auto-detection logged)."""
    train: "Dataset"
    val: "Dataset | None"
    label_names: list[str] | None
    """Classification: sorted unique labels; a label's id is its index here."""
    source: str
    """Where the rows came from, in words."""
    columns: dict[str, str] = field(default_factory=dict)
    """Which columns/keys hold what: text, label, chat, role, content."""
    origins: dict[str, "Origin"] = field(default_factory=dict)
    """train / val → where those rows came from, to name a row in an error. Split rows carry ROW_COLUMN."""


def load_raw(spec: DataSpec, seed: int = 42) -> RawData:
    """Read the rows (no tokenizer), resolve the format, check every row, split off validation.

    Raises TuneError on bad input. `seed` makes the val_size split reproducible (the runner passes train.seed).
    """
    import numpy as np

    text_columns = (spec.text_column,) if spec.text_column else ()
    train, own_val, origin, _ = load_source(spec.path, "data.path", text_columns=text_columns)
    val_origin = None
    if spec.max_samples:
        train = train.select(range(min(spec.max_samples, len(train))))
    fmt, columns = resolve_format(train, spec, origin)
    check_rows(train, fmt, columns, origin)
    source = origin.description
    val = None
    if spec.val_path:
        val, _, val_origin, _ = load_source(spec.val_path, "data.val_path", text_columns=text_columns)
        needed = [columns[k] for k in ("chat", "text", "label") if k in columns]
        needed += ["instruction", "output"] if fmt == "alpaca" else []
        missing = [c for c in needed if c not in val.column_names]
        if missing:
            raise TuneError(f"The validation data lacks the {fmt} field `{missing[0]}`", val_origin.description,
                            f"Give it the same columns as the training data ({EXPECTED_COLUMNS[fmt]})")
        chat_keys = (columns.get("role"), columns.get("content"))
        if fmt in ("sharegpt", "messages") and turn_keys(val, columns["chat"]) != chat_keys:
            raise TuneError(f"The validation data's `{columns['chat']}` turns use different keys than the training "
                            "data", val_origin.description, f"Use {columns['role']}/{columns['content']} in both")
        check_rows(val, fmt, columns, val_origin)
        source += f"; validation: {val_origin.description}"
    elif spec.val_size > 0:
        count = val_rows(len(train), spec.val_size)
        if count >= len(train):
            raise TuneError(f"`data.val_size` asks for {count} validation rows but there are only {len(train)} rows",
                            "data.val_size", "Use a smaller fraction (e.g. 0.1) or count")
        # The split shuffles rows, so each carries its row number in the file: a later error (a chat template
        # refusing a conversation) can still name the row the user sees.
        rows = np.arange(len(train), dtype=np.int64)
        train = train.add_column(ROW_COLUMN, rows, new_fingerprint=hashlib.sha256(
            f"{train._fingerprint}|{ROW_COLUMN}".encode()).hexdigest()[:32])
        split = train.train_test_split(test_size=count, seed=seed, shuffle=True)
        train, val = split["train"], split["test"]
        source += f"; {len(val)} rows held out for validation (seed {seed})"
    elif own_val is not None:
        val_origin = Origin(f"{origin.description} (validation split)")
        check_rows(own_val, fmt, columns, val_origin)
        val = own_val
        source += "; validation: its validation split"
    label_names = None
    if fmt == "classification":
        label_names = find_label_names([train], columns["label"])
        if len(label_names) < 2:
            raise TuneError(f"Classification needs at least two labels; `{columns['label']}` only has "
                            f"{label_names}", origin.description, "Check data.label_column")
        if val is not None and spec.val_path:
            _check_val_labels(val, columns["label"], label_names, val_origin)
        elif val is not None:  # a random split can put a rare label's only rows in validation
            label_names = find_label_names([train, val], columns["label"])
    log.info("Data: %d training rows%s from %s (%s)", len(train),
             f", {len(val)} validation rows" if val is not None else "", origin.description, fmt)
    return RawData(format=fmt, train=train, val=val, label_names=label_names, source=source, columns=columns,
                   origins={"train": origin, "val": val_origin or origin})


def _check_val_labels(val, column: str, label_names: list[str], origin: Origin) -> None:
    """Every label in a separate validation file must be one the training rows teach."""
    known = set(label_names)
    for row, value in enumerate(pylist(val.select_columns([column]).with_format("arrow")[:].column(column)
                                        .combine_chunks())):
        if value is not None and label_text(value) not in known:
            raise TuneError(f"`{column}` is {label_text(value)!r}, a label no training row has (training labels: "
                            f"{', '.join(label_names)})", origin.row(row),
                            "Fix the label's spelling, or add training rows with it")


def find_label_names(datasets_: list, column: str) -> list[str]:
    import pyarrow.compute as pc

    values = set()
    for ds in datasets_:
        table = ds.select_columns([column]).with_format("arrow")[:]
        array = table.column(column).combine_chunks()
        values.update(pylist(array) if is_json(array.type) else pc.unique(array).to_pylist())
    values.discard(None)
    if all(isinstance(v, (int, float)) for v in values):
        return [label_text(v) for v in sorted(values)]
    return sorted({label_text(v) for v in values})


def label_text(value) -> str:
    # CSV readers turn an integer column with any gap into floats; 1.0 is still label "1".
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()
