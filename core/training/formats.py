"""Data formats: which one a table of rows is in (detected from its columns, or as data.format says) and which
columns hold what. The format decides the task (core.tasks). pyarrow is imported inside functions. Never imports
textual or tui.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from core.config import DataSpec
from core.errors import TuneError
from core.training.rowchecks import fail_chat_shape, is_json

if TYPE_CHECKING:
    from core.training.sources import Origin

log = logging.getLogger(__name__)

EXPECTED_COLUMNS = {
    "alpaca": "instruction, output (input, system, history optional)",
    "sharegpt": "conversations: [{from, value}, ...] (system, tools optional)",
    "messages": "messages: [{role, content}, ...]",
    "text": "text (or data.text_column)",
    "classification": "a text column (text/sentence/content) and a label column (label/labels/category/class)",
}
TEXT_COLUMNS = ("text", "sentence", "content")
TEXT_FIELDS = ("instruction", "input", "output", "system") + TEXT_COLUMNS
"""Fields that hold text in some format: read as text from CSV, and checked to be text in typed files."""
LABEL_COLUMNS = ("label", "labels", "category", "class")


def turn_keys(ds, column: str) -> tuple[str, str] | None:
    """(role key, content key) of a chat column's turns, or None when it isn't a list of turn objects."""
    import pyarrow as pa

    kind = ds.data.schema.field(column).type
    if is_json(kind) or ((pa.types.is_list(kind) or pa.types.is_large_list(kind)) and is_json(kind.value_type)):
        # Rows whose turns (or whole values) differ in shape come back as JSON values: look at the first rows'
        # turns. A stray non-list row is reported by check_rows with its row number.
        names = {key for turns in ds.select(range(min(len(ds), 100)))[column] if isinstance(turns, list)
                 for turn in turns if isinstance(turn, dict) for key in turn}
    elif (pa.types.is_list(kind) or pa.types.is_large_list(kind)) and pa.types.is_struct(kind.value_type):
        names = {kind.value_type.field(i).name for i in range(kind.value_type.num_fields)}
    else:
        return None
    for role, content in (("from", "value"), ("role", "content")):
        if role in names:
            return role, content
    return None


def _detect(ds, spec: DataSpec) -> tuple[str | None, dict[str, str]]:
    cols = list(ds.column_names)
    for chat in ("conversations", "messages"):
        if chat in cols:
            keys = turn_keys(ds, chat)
            if keys:
                return ("sharegpt" if keys[0] == "from" else "messages"), {"chat": chat}
    if "instruction" in cols and "output" in cols:
        return "alpaca", {}
    text = spec.text_column if spec.text_column in cols else next((c for c in TEXT_COLUMNS if c in cols), None)
    label = spec.label_column if spec.label_column in cols else next((c for c in LABEL_COLUMNS if c in cols), None)
    if text and label:
        return "classification", {"text": text, "label": label}
    if (spec.text_column or "text") in cols:
        return "text", {"text": spec.text_column or "text"}
    return None, {}


def _columns_for(fmt: str, ds, spec: DataSpec, origin: Origin) -> dict[str, str]:
    """Which columns an explicitly chosen format reads; a missing one is a TuneError naming it."""
    cols = list(ds.column_names)

    def need(name: str, what: str):
        if name not in cols:
            raise TuneError(f"The {fmt} format needs a `{name}` {what}, but no row has one", origin.description,
                            f"Columns found: {', '.join(cols) or 'none'}. Expected: {EXPECTED_COLUMNS[fmt]}")
        return name

    if fmt == "alpaca":
        need("instruction", "field")
        need("output", "field")
        return {}
    if fmt in ("sharegpt", "messages"):
        preferred = ("conversations", "messages") if fmt == "sharegpt" else ("messages", "conversations")
        chat = next((c for c in preferred if c in cols), None)
        return {"chat": need(chat or preferred[0], "field")}
    if fmt == "text":
        return {"text": need(spec.text_column or "text", "column")}
    text = spec.text_column or next((c for c in TEXT_COLUMNS if c in cols), None)
    label = spec.label_column or next((c for c in LABEL_COLUMNS if c in cols), None)
    return {"text": need(text or "text", "column (set data.text_column)"),
            "label": need(label or "label", "column (set data.label_column)")}


def resolve_format(ds, spec: DataSpec, origin: Origin) -> tuple[str, dict[str, str]]:
    if spec.format == "auto":
        fmt, columns = _detect(ds, spec)
        if fmt is None:
            expected = "; ".join(f"{name}: {cols}" for name, cols in EXPECTED_COLUMNS.items())
            raise TuneError(f"Cannot tell the data format from the columns {', '.join(ds.column_names) or '(none)'}",
                            origin.description, f"Set data.format, or use the columns of one format ({expected})")
        log.info("Data format: detected %s from the columns %s", fmt, ", ".join(ds.column_names))
    else:
        fmt, columns = spec.format, _columns_for(spec.format, ds, spec, origin)
    if fmt in ("sharegpt", "messages"):
        keys = turn_keys(ds, columns["chat"])
        role, content = ("from", "value") if fmt == "sharegpt" else ("role", "content")
        if keys is None:
            fail_chat_shape(ds, columns["chat"], role, content, origin)
            raise TuneError(f"`{columns['chat']}` must be a list of {{{role}, {content}}} objects",
                            origin.description, f"Expected: {EXPECTED_COLUMNS[fmt]}")
        columns["role"], columns["content"] = keys
    return fmt, columns
