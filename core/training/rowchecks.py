"""Row checks: every row has what its format needs, of the right type; the first that doesn't is named by its row.

Vectorised with Arrow where a column has one type (fast on big data), in Python where datasets stored the values as
JSON (their types vary between rows). Runs on the rows as read, before any split, shuffle or template. pyarrow and
numpy are imported inside functions. Never imports textual or tui.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from core.errors import TuneError
from core.training import templates

if TYPE_CHECKING:
    from core.training.sources import Origin


def is_json(kind) -> bool:
    """datasets stores values whose type varies between rows (mixed keys or types) as Arrow JSON."""
    return getattr(kind, "extension_name", None) == "arrow.json"


def pylist(array) -> list:
    if is_json(array.type):
        return [None if v is None else json.loads(v) for v in array.to_pylist()]
    return array.to_pylist()


def fail_chat_shape(ds, chat: str, role: str, content: str, origin: Origin) -> None:
    """Name the first row (and turn) whose chat value is not a list of objects; no-op if every row is one."""
    for row, value in enumerate(ds[chat]):
        if isinstance(value, str):
            try:  # a conversation saved as a JSON string inside the row
                value = json.loads(value)
            except ValueError:
                pass
            if isinstance(value, list):
                raise TuneError(f"`{chat}` is a JSON string, not a list of turns", origin.row(row),
                                f"Store the conversation itself, not its JSON text: \"{chat}\": [{{...}}, ...]")
        if not isinstance(value, list):
            raise TuneError(f"`{chat}` is {describe(value)}; expected a list of turns [{{{role}, {content}}}, ...]",
                            origin.row(row), f"Write the conversation as a list of {{{role}, {content}}} objects")
        for turn_no, turn in enumerate(value):
            if not isinstance(turn, dict):
                raise TuneError(f"A turn in `{chat}` is {describe(turn)}; expected an object {{{role}, {content}}}",
                                origin.row(row, turn=turn_no),
                                f'Write each turn as {{"{role}": ..., "{content}": ...}}')


def _missing(array) -> "Any":
    """Boolean numpy mask: null, NaN, blank string or empty list."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if is_json(array.type):
        return np.array([_blank(v) for v in pylist(array)], dtype=bool)
    mask = pc.is_null(array, nan_is_null=pa.types.is_floating(array.type))
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        mask = pc.or_kleene(mask, pc.equal(pc.utf8_trim_whitespace(array), ""))
    elif pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        mask = pc.or_kleene(mask, pc.equal(pc.list_value_length(array), 0))
    return np.asarray(mask.fill_null(True).to_numpy(zero_copy_only=False), dtype=bool)


def _blank(value) -> bool:
    """The Python twin of _missing, for values stored as JSON: None, NaN, blank text, empty list or object."""
    if value is None:
        return True
    if isinstance(value, float):
        return value != value  # NaN
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, (list, dict)):
        return not value
    return False


def _first(mask) -> int | None:
    import numpy as np
    hits = np.flatnonzero(mask)
    return int(hits[0]) if len(hits) else None


def describe(value) -> str:
    """A value as a person would name it in their file: `a number (123)`, `a list (["a", "b"])`, `null`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a true/false value)"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return f"text ({_short(value)!r})" if value.strip() else "empty text"
    if isinstance(value, (list, tuple, dict)) and not value:
        return "an empty list" if isinstance(value, (list, tuple)) else "an empty object"
    kind = "a list" if isinstance(value, (list, tuple)) else "an object" if isinstance(value, dict) else \
        f"a {type(value).__name__}"
    return f"{kind} ({_short(json.dumps(value, ensure_ascii=False, default=str))})"


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _text_fix(key: str, value) -> str:
    if isinstance(value, (bool, int, float)):
        return f'Write it as text in quotes ("{key}": "{json.dumps(value)}"), or fix the value'
    if isinstance(value, (list, tuple)):
        return f"Join the parts into one string, or move the row's `{key}` into the format's own structure"
    return f"Make `{key}` a string in every row"


def _not_text(array, column: str, origin: Origin) -> tuple[int, Any] | None:
    """(row, value) of the first value that is neither text nor null, or None. Vectorised unless stored as JSON."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = array.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind):
        return None
    if is_json(kind):
        # datasets stores a column of mixed types as JSON text but keeps a string that is itself valid JSON
        # unquoted, so the text "3" reads back as the number 3. Confirm each suspect against the file itself.
        raw = None
        for i, value in enumerate(pylist(array)):
            if value is None or isinstance(value, str):
                continue
            raw = raw if raw is not None else (origin.raw_rows(len(array)) or [])
            if i < len(raw) and isinstance(raw[i], dict):
                value = raw[i].get(column)
                if value is None or isinstance(value, str):
                    continue
            return i, value
        return None
    row = _first(pc.is_valid(array).to_numpy(zero_copy_only=False))  # every stored value has the wrong type
    return None if row is None else (row, array[row].as_py())


def _fail_not_text(table, column: str, origin: Origin) -> None:
    if column not in table.column_names:
        return
    bad = _not_text(table.column(column).combine_chunks(), column, origin)
    if bad is not None:
        row, value = bad
        raise TuneError(f"`{column}` is {describe(value)}; expected text", origin.row(row), _text_fix(column, value))


def check_rows(ds, fmt: str, columns: dict[str, str], origin: Origin) -> None:
    """Every row has what its format needs, of the right type; the first that doesn't is named by its row in the
    file. Runs on the rows as read, before any split or shuffle, and before any template sees them. Vectorised with
    Arrow where the column has one type: fast on big data."""
    import pyarrow.compute as pc

    wanted = list(columns.values()) + ["instruction", "output", "input", "history", "tools", "system"]
    table = ds.select_columns([c for c in ds.column_names if c in wanted]).with_format("arrow")[:]

    def fail_missing(column: str, mask, fix: str, what: str = "has no"):
        row = _first(mask)
        if row is not None:
            found = describe(table.column(column)[row].as_py()) if column in table.column_names else "absent"
            raise TuneError(f"A row {what} `{column}` (found: {found})", origin.row(row), fix)

    if fmt == "alpaca":
        for column in ("instruction", "input", "output", "system"):
            _fail_not_text(table, column, origin)
        fail_missing("instruction", _missing(table.column("instruction").combine_chunks())
                     & ~_present(table, "input"), "Give every row an instruction (or an input)")
        fail_missing("output", _missing(table.column("output").combine_chunks()),
                     "Give every row the response to learn (`output`), or remove the row")
        if "history" in table.column_names:
            _check_history(table.column("history").combine_chunks(), origin)
        return
    if fmt in ("text", "classification"):
        text = columns["text"]
        _fail_not_text(table, text, origin)
        fail_missing(text, pc.is_null(table.column(text).combine_chunks()).to_numpy(zero_copy_only=False),
                     f"Give every row its `{text}`, or remove the row")
        if fmt == "classification":
            label = columns["label"]
            _check_label_types(table.column(label).combine_chunks(), label, origin)
            fail_missing(label, _missing(table.column(label).combine_chunks()),
                         "Give every row a label, or remove the row", what="has an empty label in")
        return
    chat, role_key, content_key = columns["chat"], columns["role"], columns["content"]
    _fail_not_text(table, "system", origin)
    turns = table.column(chat).combine_chunks()
    known = templates.SHAREGPT_ROLES if fmt == "sharegpt" else templates.MESSAGE_ROLES
    if not _is_list(turns.type) or not _plain_turns(turns.type, role_key, content_key):
        # Turns whose keys or types vary between rows are stored as JSON, which datasets decodes lossily (the
        # text "42" comes back as the number 42), so read them from the file itself where it is JSON.
        raw = origin.raw_rows(len(turns))
        values = [r.get(chat) if isinstance(r, dict) else None for r in raw] if raw is not None else ds[chat]
        for row, value in enumerate(values):
            if _blank(value):
                raise TuneError(f"A row has no `{chat}` (found: {describe(value)})", origin.row(row),
                                f"Give every row a non-empty `{chat}` list, or remove the row")
            if not isinstance(value, list):
                raise TuneError(f"`{chat}` is {describe(value)}; expected a list of turns "
                                f"[{{{role_key}, {content_key}}}, ...]", origin.row(row),
                                f"Write the conversation as a list of {{{role_key}, {content_key}}} objects")
        flat = [turn for value in values for turn in value]
        parents = [row for row, value in enumerate(values) for _ in value]
        _check_turns_slowly(flat, parents, len(values), chat, role_key, content_key, known, origin)
    else:
        fail_missing(chat, _missing(turns), f"Give every row a non-empty `{chat}` list, or remove the row")
        _check_turns(turns, chat, role_key, content_key, known, origin)
    _check_tools(table, origin)


def _plain_turns(kind, role_key: str, content_key: str) -> bool:
    """Turns stored as Arrow structs whose role and content are plain text: checkable without Python loops."""
    import pyarrow as pa

    if not pa.types.is_struct(kind.value_type):
        return False
    fields = {kind.value_type.field(i).name: kind.value_type.field(i).type
              for i in range(kind.value_type.num_fields)}
    content = fields.get(content_key, pa.string())
    return _is_text_type(fields.get(role_key, pa.string())) and (_is_text_type(content)
                                                                  or pa.types.is_null(content))


def _is_list(kind) -> bool:
    import pyarrow as pa
    return pa.types.is_list(kind) or pa.types.is_large_list(kind)


def _is_text_type(kind) -> bool:
    import pyarrow as pa
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _check_label_types(array, column: str, origin: Origin) -> None:
    """A label is a class: a name, a whole number or true/false. A fraction, list or object is not one."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = array.type
    if _is_text_type(kind) or pa.types.is_integer(kind) or pa.types.is_boolean(kind) or pa.types.is_null(kind):
        return
    if pa.types.is_floating(kind):
        values = array.to_numpy(zero_copy_only=False)
        fractional = np.isfinite(values) & (values != np.round(values))
        bad = _first(fractional)
        value = None if bad is None else float(values[bad])
    elif is_json(kind):
        bad, value = next(((i, v) for i, v in enumerate(pylist(array)) if not _is_label(v)), (None, None))
    else:
        bad = _first(pc.is_valid(array).to_numpy(zero_copy_only=False))
        value = None if bad is None else array[bad].as_py()
    if bad is not None:
        raise TuneError(f"`{column}` is {describe(value)}; expected one class label (a name such as \"positive\" "
                        "or a whole number)", origin.row(bad),
                        "Give each row exactly one label; classification cannot learn fractional scores or lists")


def _is_label(value) -> bool:
    if value is None or isinstance(value, (str, bool, int)):
        return True
    return isinstance(value, float) and (value != value or value.is_integer())  # NaN is an empty label, named later


def _check_turns(turns, chat: str, role_key: str, content_key: str, known: dict, origin: Origin) -> None:
    """Turn checks on Arrow structs of text (see _plain_turns), vectorised."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    flat = pc.list_flatten(turns)
    parents = np.asarray(pc.list_parent_indices(turns).to_numpy(zero_copy_only=False))
    fields = {flat.type.field(i).name: flat.type.field(i).type for i in range(flat.type.num_fields)}

    def where(i: int) -> str:
        row = int(parents[i])
        return origin.row(row, turn=i - int(np.searchsorted(parents, row)))

    roles = flat.field(role_key) if role_key in fields else pa.nulls(len(flat), pa.string())
    no_role = _missing(roles)
    if no_role.any():
        raise TuneError(f"A turn in `{chat}` has no `{role_key}`", where(_first(no_role)),
                        f"Give every turn a `{role_key}`")
    unknown = ~np.asarray(pc.is_in(roles, value_set=_pa_strings(known)).to_numpy(zero_copy_only=False), dtype=bool)
    if unknown.any():
        i = _first(unknown)
        raise TuneError(f"Unknown role {roles[i].as_py()!r} in `{chat}`", where(i),
                        f"Use one of: {', '.join(known)}")
    no_content = _missing(flat.field(content_key)) if content_key in fields else np.ones(len(flat), dtype=bool)
    if "tool_calls" in fields:
        no_content &= _missing(flat.field("tool_calls"))  # an OpenAI tool-call turn may have no content
    if no_content.any():
        raise TuneError(f"A turn in `{chat}` has no `{content_key}`", where(_first(no_content)),
                        f"Give every turn its text in `{content_key}`")
    trains = np.asarray(pc.is_in(roles, value_set=_pa_strings(templates.ASSISTANT_TAGS)).to_numpy(
        zero_copy_only=False), dtype=bool)
    has_answer = np.zeros(len(turns), dtype=bool)
    has_answer[parents[trains]] = True
    row = _first(~has_answer)
    if row is not None:
        raise TuneError(f"A row has no assistant turn in `{chat}`", origin.row(row),
                        "Each conversation needs at least one assistant turn to learn from")


def _check_turns_slowly(flat: list, parents, rows: int, chat: str, role_key: str, content_key: str, known: dict,
                        origin: Origin) -> None:
    """The same checks in Python, plus the types, for turns stored as JSON (their keys or types differ)."""
    import numpy as np

    has_answer = np.zeros(rows, dtype=bool)
    previous, turn_no = -1, 0
    for turn, row in zip(flat, parents):
        row = int(row)
        turn_no = turn_no + 1 if row == previous else 0
        previous = row
        where = origin.row(row, turn=turn_no)
        if not isinstance(turn, dict):
            raise TuneError(f"A turn in `{chat}` is {describe(turn)}; expected an object "
                            f"{{{role_key}, {content_key}}}", where,
                            f'Write each turn as {{"{role_key}": ..., "{content_key}": ...}}')
        role = turn.get(role_key)
        if _blank(role):
            raise TuneError(f"A turn in `{chat}` has no `{role_key}` (found: {describe(role)})", where,
                            f"Give every turn a `{role_key}`")
        if not isinstance(role, str) or role not in known:
            raise TuneError(f"Unknown role {role!r} in `{chat}`" if isinstance(role, str) else
                            f"`{role_key}` is {describe(role)}; expected a role name", where,
                            f"Use one of: {', '.join(known)}")
        content = turn.get(content_key)
        if _blank(content) and isinstance(content, (str, type(None))) and not turn.get("tool_calls"):
            raise TuneError(f"A turn in `{chat}` has no `{content_key}`", where,
                            f"Give every turn its text in `{content_key}`")
        if content is not None and not isinstance(content, str):
            raise TuneError(f"`{content_key}` is {describe(content)}; expected text", where,
                            _text_fix(content_key, content))
        has_answer[row] |= role in templates.ASSISTANT_TAGS
    row = _first(~has_answer)
    if row is not None:
        raise TuneError(f"A row has no assistant turn in `{chat}`", origin.row(row),
                        "Each conversation needs at least one assistant turn to learn from")


def _check_tools(table, origin: Origin) -> None:
    if "tools" in table.column_names:
        for i, value in enumerate(pylist(table.column("tools").combine_chunks())):
            try:
                templates.parse_tools(value)
            except ValueError as exc:
                raise TuneError(f"The `tools` field is not a valid JSON list of tools: {exc} (found: "
                                f"{describe(value)})", origin.row(i),
                                "Write tools as a JSON array of function schemas") from None


def _check_history(history, origin: Origin) -> None:
    """alpaca `history`: null or a list of [query, response] pairs of text."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    bad = None
    if pa.types.is_null(history.type):
        return
    if _is_list(history.type) and _is_list(history.type.value_type) and _is_text_type(
            history.type.value_type.value_type):
        pairs = pc.list_flatten(history)
        parents = np.asarray(pc.list_parent_indices(history).to_numpy(zero_copy_only=False))
        lengths = pc.list_value_length(pairs).fill_null(0).to_numpy(zero_copy_only=False)
        short = _first(lengths != 2)
        if short is None:
            blank = _first(_missing(pc.list_flatten(pairs)))
            short = None if blank is None else blank // 2  # every pair has exactly two entries here
        bad = None if short is None else int(parents[short])
    else:  # mixed shapes are stored as JSON: check them in Python
        for row, value in enumerate(pylist(history)):
            if value is None:
                continue
            if not isinstance(value, list) or not all(
                    isinstance(pair, list) and len(pair) == 2
                    and all(isinstance(x, str) and x.strip() for x in pair) for pair in value):
                bad = row
                break
    if bad is not None:
        found = describe(history[bad].as_py() if not is_json(history.type) else pylist(history[bad:bad + 1])[0])
        raise TuneError(f"A `history` entry is not a [query, response] pair of text (found: {found})",
                        origin.row(bad), 'Write history as [["earlier question", "earlier answer"], ...]')


def _present(table, column: str):
    import numpy as np
    if column not in table.column_names:
        return np.zeros(table.num_rows, dtype=bool)
    return ~_missing(table.column(column).combine_chunks())


def _pa_strings(values):
    import pyarrow as pa
    return pa.array(list(values), type=pa.string())
