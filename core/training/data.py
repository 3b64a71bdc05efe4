"""Training data: read rows, detect the format, check them, tokenize with loss masks and cache the result.

The runner calls load_raw → tokenize; the TUI's data screen calls preview. datasets/transformers/pyarrow are imported
inside functions so the UI can import this module before torch. Never imports textual or tui.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from core.config import DataSpec
from core.errors import TuneError
from core.training import templates
from core.training.templates import IGNORE_INDEX

if TYPE_CHECKING:
    from datasets import Dataset

log = logging.getLogger(__name__)

FORMATS = ("alpaca", "sharegpt", "messages", "text", "classification")
TASKS = {"alpaca": "sft", "sharegpt": "sft", "messages": "sft", "text": "pretrain", "classification": "classification"}
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
SUFFIX_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet",
                   ".txt": "text"}
ASSETS_DIR = Path(__file__).resolve().parents[1] / "assets"
PREVIEW_SAMPLE = 64          # rows tokenized for the preview's length stats
PREVIEW_FULL_LOAD_BYTES = 16 << 20  # smaller files are loaded (and cached) whole; bigger ones are streamed
_PACK_BATCH = 10_000         # documents per packing batch: bigger batches waste less of each batch's tail
ROW_COLUMN = "__tunetui_row"  # a row's index in its file, kept through the validation split's shuffle
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# Part of every cache key, so editing this pipeline never serves tokenization made by older code.
_CODE_VERSION = hashlib.sha256(
    Path(__file__).read_bytes() + Path(templates.__file__).read_bytes()).hexdigest()[:16]


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
    origins: dict[str, "_Origin"] = field(default_factory=dict)
    """train / val → where those rows came from, to name a row in an error. Split rows carry ROW_COLUMN."""


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

    def collator(self, tokenizer) -> Callable:
        """Pads a batch: input_ids with the pad token, attention_mask with 0, causal labels with -100."""
        from transformers import DataCollatorForSeq2Seq, DataCollatorWithPadding

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


@dataclass
class Preview:
    format: str
    rows: int | None
    """Total rows when known cheaply; None for large streamed files and hub datasets."""
    examples: list[list[tuple[str, bool]]]
    """Each example as text segments; True where the tokens train. Classification: the text (False), then
    " → label" (True: the label is what trains)."""
    stats: dict


def task_for_format(fmt: str) -> str:
    """sft | pretrain | classification."""
    if fmt not in TASKS:
        raise TuneError(f"Unknown data format {fmt!r}", "data.format", f"Use one of: auto, {', '.join(FORMATS)}")
    return TASKS[fmt]


# ================================================================== where rows come from

@dataclass
class _Origin:
    """A data source and how to point a user at one of its rows, counted the way the user sees the file.

    Rows count from 1 (the index from 0 is given beside them). JSON Lines name the file line; JSON arrays and CSV
    also give the line where the row starts, so an editor can jump to it.
    """
    description: str
    path: Path | None = None
    jsonl: bool = False
    layout: str = "rows"
    """jsonl | json (an array) | csv | rows (anything else: parquet, folders, hub datasets)."""
    delimiter: str = ","

    def raw_rows(self, limit: int) -> list | None:
        """The file's first `limit` rows exactly as JSON has them; None for other sources.

        Parsed afresh on each call (only the checks of columns whose types vary need it) and never kept, so a run
        does not hold a second copy of its data.
        """
        if self.path is None or self.layout not in ("json", "jsonl"):
            return None
        if self.layout == "jsonl":
            with open(self.path, encoding="utf-8") as fh:
                return [json.loads(line) for line, _ in zip((line for line in fh if line.strip()), range(limit))]
        text = self.path.read_text(encoding="utf-8")
        decoder, rows = json.JSONDecoder(), []
        pos = text.index("[") + 1
        while len(rows) < limit:
            pos = _ARRAY_GAP.match(text, pos).end()
            if pos >= len(text) or text[pos] == "]":
                break
            row, pos = decoder.raw_decode(text, pos)
            rows.append(row)
        return rows

    def row(self, index: int, turn: int | None = None) -> str:
        line = None
        try:
            if self.path is not None and self.layout == "jsonl":
                line = _jsonl_line(self.path, index)
            elif self.path is not None and self.layout == "json":
                line = _json_array_line(self.path, index)
            elif self.path is not None and self.layout == "csv":
                line = _csv_line(self.path, index, self.delimiter)
        except (OSError, ValueError):  # the file changed or cannot be re-read: the row number alone still helps
            line = None
        if self.layout == "jsonl" and line is not None:
            where = f"{self.description}, line {line}"
        elif self.layout == "csv" and line is not None:
            where = f"{self.description}, line {line} (data row {index + 1}; the header is line 1)"
        elif line is not None:
            where = f"{self.description}, row {index + 1} (index {index}; starts on line {line})"
        else:
            where = f"{self.description}, row {index + 1} (index {index})"
        return where if turn is None else f"{where}, turn {turn + 1}"


def _jsonl_line(path: Path, index: int) -> int:
    """1-based file line of the index-th record: JSON Lines readers skip blank lines, people count them."""
    seen = -1
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, 1):
            if line.strip():
                seen += 1
                if seen == index:
                    return number
    return index + 1


_ARRAY_GAP = re.compile(r"[\s,]*")  # arrays passed a strict parse: only whitespace and commas sit between rows


def _json_array_line(path: Path, index: int) -> int | None:
    """1-based line on which the index-th element of a JSON array file starts (only computed for a message).

    json has no position API for elements; raw_decode walks the array one element at a time.
    """
    text = path.read_text(encoding="utf-8")
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    for k in range(index + 1):
        pos = _ARRAY_GAP.match(text, pos).end()
        if k == index:
            return text.count("\n", 0, pos) + 1
        _, pos = decoder.raw_decode(text, pos)
    return None


def _csv_line(path: Path, index: int, delimiter: str) -> int | None:
    """1-based file line where the index-th data row starts (quoted cells may span lines; blank lines are skipped
    by the reader, as pandas does)."""
    import csv

    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        seen, end = -2, 0  # the first record is the header
        for record in reader:
            start, end = end + 1, reader.line_num
            if not any(cell.strip() for cell in record):
                continue
            seen += 1
            if seen == index:
                return start
    return None


def _cache_root() -> Path:
    from core.demo import demo_cache_dir
    return demo_cache_dir().parent


def _demo_datasets() -> dict[str, Path]:
    return {p.name.rsplit("_demo", 1)[0]: p for p in sorted(ASSETS_DIR.glob("*_demo.json*"))}


def _resolve(path_text: str, key: str) -> tuple[str, Path | str]:
    """('file'|'dir'|'hub', location). demo: names and relative paths resolved; missing files are a TuneError."""
    text = path_text.strip()
    if not text:
        raise TuneError("No data is set", key,
                        "Set data.path to a data file, a dataset folder, a hub id or demo:alpaca_en")
    if text.startswith("demo:"):
        demos = _demo_datasets()
        name = text[len("demo:"):]
        if name not in demos:
            raise TuneError(f"Unknown built-in dataset {text!r}", key,
                            "Known ones: " + ", ".join(f"demo:{n}" for n in demos))
        return "file", demos[name]
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = Path.cwd() / path
    if path.is_file():
        return "file", path
    if path.is_dir():
        return "dir", path
    looks_local = (path.suffix.lower() in SUFFIX_BUILDERS or text.startswith((".", "/", "~"))
                   or not _HUB_ID.match(text))
    if looks_local:
        raise TuneError(f"Data file {path} does not exist", key,
                        f"Check the path (relative paths start from {Path.cwd()}), or try demo:alpaca_en")
    return "hub", text


def _load_source(path_text: str, key: str, streaming: bool = False, text_columns: tuple[str, ...] = ()):
    """Rows of one source → (train rows, the source's own validation split or None, origin, total rows or None).

    With streaming=True large local files and hub datasets come back as an IterableDataset (for previews).
    """
    import datasets

    kind, where = _resolve(path_text, key)
    cache_dir = str(_cache_root() / "datasets")
    if kind == "hub":
        origin = _Origin(f"hub dataset {where}")
        try:
            loaded = datasets.load_dataset(where, cache_dir=cache_dir, streaming=streaming)
        except (ConnectionError, FileNotFoundError, OSError) as exc:
            raise TuneError(f"Could not load hub dataset {where!r}: {exc}", key,
                            "Check the id and your network; offline, it must already be in the cache. A local file "
                            "path must exist") from exc
        except Exception as exc:  # datasets raises many types (DatasetNotFoundError, ValueError, ...)
            raise TuneError(f"Could not load hub dataset {where!r}: {exc}", key) from exc
        train, val = _pick_splits(loaded, origin)
        return train, val, origin, None if streaming else len(train)
    if kind == "dir":
        origin = _Origin(str(where))
        try:
            if any((where / marker).exists() for marker in ("state.json", "dataset_dict.json", "dataset_info.json")):
                loaded = datasets.load_from_disk(str(where))
            else:  # a folder of data files: datasets picks the builder from the extensions
                loaded = datasets.load_dataset(str(where), cache_dir=cache_dir, streaming=streaming)
        except Exception as exc:
            raise TuneError(f"Could not read the dataset folder {where}: {exc}", key,
                            "Point data.path at a folder written by save_to_disk, or at a single data file") from exc
        train, val = _pick_splits(loaded, origin)
        return train, val, origin, len(train) if hasattr(train, "__len__") else None
    return _load_file(where, key, cache_dir, streaming, text_columns)


def _pick_splits(loaded, origin: _Origin):
    if not hasattr(loaded, "keys"):
        return loaded, None
    splits = list(loaded.keys())
    if "train" not in loaded and len(splits) != 1:
        raise TuneError(f"{origin.description} has no `train` split (it has: {', '.join(splits)})", "data.path",
                        "Save the training rows as the `train` split")
    train = loaded["train"] if "train" in loaded else loaded[splits[0]]
    val = loaded["validation"] if "validation" in loaded else None
    return train, val


def _load_file(path: Path, key: str, cache_dir: str, streaming: bool, text_columns: tuple[str, ...] = ()):
    import datasets

    suffix = path.suffix.lower()
    builder = SUFFIX_BUILDERS.get(suffix)
    if builder is None:
        raise TuneError(f"Cannot tell how to read {path.name}", key,
                        "Use a .json, .jsonl, .csv, .tsv, .parquet or .txt file, or a save_to_disk folder")
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    if not head.strip():
        raise TuneError(f"Data file {path} is empty", key, "Put some rows in it, or point data.path at another file")
    first = head.lstrip()[:1]
    jsonl = builder == "json" and (suffix == ".jsonl" or first == b"{")
    layout = "jsonl" if jsonl else {"json": "json", "csv": "csv"}.get(builder, "rows")
    origin = _Origin(str(path), path, jsonl=jsonl, layout=layout, delimiter="\t" if suffix == ".tsv" else ",")
    kwargs: dict[str, Any] = {}
    if suffix == ".tsv":
        kwargs["delimiter"] = "\t"
    if builder == "csv":
        # A CSV cell has no type, but pandas guesses one: an `output` column of answers such as 007 or 3.50 would
        # come back as the numbers 7 and 3.5. Columns that hold text are read as the text the file has.
        kwargs["converters"] = {name: str for name in TEXT_FIELDS + tuple(text_columns)}
    if builder == "text":
        # A blank line means the file is made of text blocks (paragraphs), else one example per line.
        kwargs["sample_by"] = "paragraph" if b"\n\n" in head.replace(b"\r\n", b"\n") else "line"
        log.info("Reading %s as %s", path.name, "paragraphs" if kwargs["sample_by"] == "paragraph" else "lines")
    if builder == "json" and not origin.jsonl:
        # datasets quietly accepts some broken JSON arrays (a trailing comma raises no error), so check it strictly.
        _check_json_array(path, key)
    big = path.stat().st_size > PREVIEW_FULL_LOAD_BYTES
    try:
        ds = datasets.load_dataset(builder, data_files=str(path), split="train", cache_dir=cache_dir,
                                   streaming=streaming and big, **kwargs)
    except Exception as exc:
        if builder == "json":
            _diagnose_json_lines(path, key)
        raise TuneError(f"Could not read {path}: {_first_line(exc)}", key,
                        "Check that the file is valid for its extension") from exc
    rows = None
    if not (streaming and big):
        rows = len(ds)
        if rows == 0:
            raise TuneError(f"Data file {path} has no rows", key, "Put some rows in it")
    elif suffix == ".parquet":
        import pyarrow.parquet as pq
        rows = pq.ParquetFile(path).metadata.num_rows
    return ds, None, origin, rows


def _first_line(exc: BaseException) -> str:
    """The useful line of a datasets error: its generic wrapper hides the reader's message in __cause__."""
    text = str(exc.__cause__ or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _check_json_array(path: Path, key: str) -> None:
    """Strict parse of a JSON array file, remembered by (path, size, mtime) so unchanged files are parsed once."""
    stat = path.stat()
    stamp = hashlib.sha256(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:32]
    marker = _cache_root() / "checked" / stamp
    if marker.exists():
        return
    try:
        with open(path, encoding="utf-8") as fh:
            value = json.load(fh)
    except UnicodeDecodeError as exc:
        raise TuneError(f"Data file {path} is not UTF-8 text ({exc.reason} at byte {exc.start})", key,
                        "Save the file as UTF-8") from None
    except json.JSONDecodeError as exc:
        raise TuneError(f"Malformed JSON in {path.name}: {exc.msg}", f"{path}, line {exc.lineno}, column {exc.colno}",
                        "Fix the JSON on that line (a missing comma or quote, or a trailing comma)") from None
    if not isinstance(value, list):
        raise TuneError(f"{path.name} holds a JSON {type(value).__name__}, not a list of rows", str(path),
                        "Write the rows as a JSON array [{...}, {...}] or as JSON Lines (one object per line)")
    if not value:
        raise TuneError(f"Data file {path} has no rows (an empty JSON array)", key, "Put some rows in it")
    bad = next((i for i, row in enumerate(value) if not isinstance(row, dict)), None)
    if bad is not None:
        raise TuneError(f"Row {bad + 1} of {path.name} is a JSON {type(value[bad]).__name__}, not an object",
                        str(path), "Every row must be an object such as {\"instruction\": ..., \"output\": ...}")
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()


def _diagnose_json_lines(path: Path, key: str) -> None:
    """Find the first malformed line of a JSON Lines file and raise a TuneError naming it (no-op if all parse)."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TuneError(f"Malformed JSON in {path.name}: {exc.msg}",
                                f"{path}, line {number}, column {exc.colno}",
                                "Fix that line: each line must be one complete JSON object") from None
            if not isinstance(value, dict):
                raise TuneError(f"Line {number} of {path.name} is a JSON {type(value).__name__}, not an object",
                                f"{path}, line {number}", "Each line must be one JSON object")


# ================================================================== formats and row checks

def _turn_keys(ds, column: str) -> tuple[str, str] | None:
    """(role key, content key) of a chat column's turns, or None when it isn't a list of turn objects."""
    import pyarrow as pa

    kind = ds.data.schema.field(column).type
    if _is_json(kind) or ((pa.types.is_list(kind) or pa.types.is_large_list(kind)) and _is_json(kind.value_type)):
        # Rows whose turns (or whole values) differ in shape come back as JSON values: look at the first rows'
        # turns. A stray non-list row is reported by _check_rows with its row number.
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


def _is_json(kind) -> bool:
    """datasets stores values whose type varies between rows (mixed keys or types) as Arrow JSON."""
    return getattr(kind, "extension_name", None) == "arrow.json"


def _pylist(array) -> list:
    if _is_json(array.type):
        return [None if v is None else json.loads(v) for v in array.to_pylist()]
    return array.to_pylist()


def _detect(ds, spec: DataSpec) -> tuple[str | None, dict[str, str]]:
    cols = list(ds.column_names)
    for chat in ("conversations", "messages"):
        if chat in cols:
            keys = _turn_keys(ds, chat)
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


def _columns_for(fmt: str, ds, spec: DataSpec, origin: _Origin) -> dict[str, str]:
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


def _resolve_format(ds, spec: DataSpec, origin: _Origin) -> tuple[str, dict[str, str]]:
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
        keys = _turn_keys(ds, columns["chat"])
        role, content = ("from", "value") if fmt == "sharegpt" else ("role", "content")
        if keys is None:
            _fail_chat_shape(ds, columns["chat"], role, content, origin)
            raise TuneError(f"`{columns['chat']}` must be a list of {{{role}, {content}}} objects",
                            origin.description, f"Expected: {EXPECTED_COLUMNS[fmt]}")
        columns["role"], columns["content"] = keys
    return fmt, columns


def _fail_chat_shape(ds, chat: str, role: str, content: str, origin: _Origin) -> None:
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
            raise TuneError(f"`{chat}` is {_describe(value)}; expected a list of turns [{{{role}, {content}}}, ...]",
                            origin.row(row), f"Write the conversation as a list of {{{role}, {content}}} objects")
        for turn_no, turn in enumerate(value):
            if not isinstance(turn, dict):
                raise TuneError(f"A turn in `{chat}` is {_describe(turn)}; expected an object {{{role}, {content}}}",
                                origin.row(row, turn=turn_no),
                                f'Write each turn as {{"{role}": ..., "{content}": ...}}')


def _missing(array) -> "Any":
    """Boolean numpy mask: null, NaN, blank string or empty list."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if _is_json(array.type):
        return np.array([_blank(v) for v in _pylist(array)], dtype=bool)
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


def _describe(value) -> str:
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


def _not_text(array, column: str, origin: _Origin) -> tuple[int, Any] | None:
    """(row, value) of the first value that is neither text nor null, or None. Vectorised unless stored as JSON."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = array.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind):
        return None
    if _is_json(kind):
        # datasets stores a column of mixed types as JSON text but keeps a string that is itself valid JSON
        # unquoted, so the text "3" reads back as the number 3. Confirm each suspect against the file itself.
        raw = None
        for i, value in enumerate(_pylist(array)):
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


def _fail_not_text(table, column: str, origin: _Origin) -> None:
    if column not in table.column_names:
        return
    bad = _not_text(table.column(column).combine_chunks(), column, origin)
    if bad is not None:
        row, value = bad
        raise TuneError(f"`{column}` is {_describe(value)}; expected text", origin.row(row), _text_fix(column, value))


def _check_rows(ds, fmt: str, columns: dict[str, str], origin: _Origin) -> None:
    """Every row has what its format needs, of the right type; the first that doesn't is named by its row in the
    file. Runs on the rows as read, before any split or shuffle, and before any template sees them. Vectorised with
    Arrow where the column has one type: fast on big data."""
    import pyarrow.compute as pc

    wanted = list(columns.values()) + ["instruction", "output", "input", "history", "tools", "system"]
    table = ds.select_columns([c for c in ds.column_names if c in wanted]).with_format("arrow")[:]

    def fail_missing(column: str, mask, fix: str, what: str = "has no"):
        row = _first(mask)
        if row is not None:
            found = _describe(table.column(column)[row].as_py()) if column in table.column_names else "absent"
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
                raise TuneError(f"A row has no `{chat}` (found: {_describe(value)})", origin.row(row),
                                f"Give every row a non-empty `{chat}` list, or remove the row")
            if not isinstance(value, list):
                raise TuneError(f"`{chat}` is {_describe(value)}; expected a list of turns "
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


def _check_label_types(array, column: str, origin: _Origin) -> None:
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
    elif _is_json(kind):
        bad, value = next(((i, v) for i, v in enumerate(_pylist(array)) if not _is_label(v)), (None, None))
    else:
        bad = _first(pc.is_valid(array).to_numpy(zero_copy_only=False))
        value = None if bad is None else array[bad].as_py()
    if bad is not None:
        raise TuneError(f"`{column}` is {_describe(value)}; expected one class label (a name such as \"positive\" "
                        "or a whole number)", origin.row(bad),
                        "Give each row exactly one label; classification cannot learn fractional scores or lists")


def _is_label(value) -> bool:
    if value is None or isinstance(value, (str, bool, int)):
        return True
    return isinstance(value, float) and (value != value or value.is_integer())  # NaN is an empty label, named later


def _check_turns(turns, chat: str, role_key: str, content_key: str, known: dict, origin: _Origin) -> None:
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
                        origin: _Origin) -> None:
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
            raise TuneError(f"A turn in `{chat}` is {_describe(turn)}; expected an object "
                            f"{{{role_key}, {content_key}}}", where,
                            f'Write each turn as {{"{role_key}": ..., "{content_key}": ...}}')
        role = turn.get(role_key)
        if _blank(role):
            raise TuneError(f"A turn in `{chat}` has no `{role_key}` (found: {_describe(role)})", where,
                            f"Give every turn a `{role_key}`")
        if not isinstance(role, str) or role not in known:
            raise TuneError(f"Unknown role {role!r} in `{chat}`" if isinstance(role, str) else
                            f"`{role_key}` is {_describe(role)}; expected a role name", where,
                            f"Use one of: {', '.join(known)}")
        content = turn.get(content_key)
        if _blank(content) and isinstance(content, (str, type(None))) and not turn.get("tool_calls"):
            raise TuneError(f"A turn in `{chat}` has no `{content_key}`", where,
                            f"Give every turn its text in `{content_key}`")
        if content is not None and not isinstance(content, str):
            raise TuneError(f"`{content_key}` is {_describe(content)}; expected text", where,
                            _text_fix(content_key, content))
        has_answer[row] |= role in templates.ASSISTANT_TAGS
    row = _first(~has_answer)
    if row is not None:
        raise TuneError(f"A row has no assistant turn in `{chat}`", origin.row(row),
                        "Each conversation needs at least one assistant turn to learn from")


def _check_tools(table, origin: _Origin) -> None:
    if "tools" in table.column_names:
        for i, value in enumerate(_pylist(table.column("tools").combine_chunks())):
            try:
                templates.parse_tools(value)
            except ValueError as exc:
                raise TuneError(f"The `tools` field is not a valid JSON list of tools: {exc} (found: "
                                f"{_describe(value)})", origin.row(i),
                                "Write tools as a JSON array of function schemas") from None


def _check_history(history, origin: _Origin) -> None:
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
        for row, value in enumerate(_pylist(history)):
            if value is None:
                continue
            if not isinstance(value, list) or not all(
                    isinstance(pair, list) and len(pair) == 2
                    and all(isinstance(x, str) and x.strip() for x in pair) for pair in value):
                bad = row
                break
    if bad is not None:
        found = _describe(history[bad].as_py() if not _is_json(history.type) else _pylist(history[bad:bad + 1])[0])
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


def _label_names(datasets_: list, column: str) -> list[str]:
    import pyarrow.compute as pc

    values = set()
    for ds in datasets_:
        table = ds.select_columns([column]).with_format("arrow")[:]
        array = table.column(column).combine_chunks()
        values.update(_pylist(array) if _is_json(array.type) else pc.unique(array).to_pylist())
    values.discard(None)
    if all(isinstance(v, (int, float)) for v in values):
        return [_label_text(v) for v in sorted(values)]
    return sorted({_label_text(v) for v in values})


def _label_text(value) -> str:
    # CSV readers turn an integer column with any gap into floats; 1.0 is still label "1".
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


# ================================================================== load_raw

def load_raw(spec: DataSpec, seed: int = 42) -> RawData:
    """Read the rows (no tokenizer), resolve the format, check every row, split off validation.

    Raises TuneError on bad input. `seed` makes the val_size split reproducible (the runner passes train.seed).
    """
    import numpy as np

    text_columns = (spec.text_column,) if spec.text_column else ()
    train, own_val, origin, _ = _load_source(spec.path, "data.path", text_columns=text_columns)
    val_origin = None
    if spec.max_samples:
        train = train.select(range(min(spec.max_samples, len(train))))
    fmt, columns = _resolve_format(train, spec, origin)
    _check_rows(train, fmt, columns, origin)
    source = origin.description
    val = None
    if spec.val_path:
        val, _, val_origin, _ = _load_source(spec.val_path, "data.val_path", text_columns=text_columns)
        needed = [columns[k] for k in ("chat", "text", "label") if k in columns]
        needed += ["instruction", "output"] if fmt == "alpaca" else []
        missing = [c for c in needed if c not in val.column_names]
        if missing:
            raise TuneError(f"The validation data lacks the {fmt} field `{missing[0]}`", val_origin.description,
                            f"Give it the same columns as the training data ({EXPECTED_COLUMNS[fmt]})")
        chat_keys = (columns.get("role"), columns.get("content"))
        if fmt in ("sharegpt", "messages") and _turn_keys(val, columns["chat"]) != chat_keys:
            raise TuneError(f"The validation data's `{columns['chat']}` turns use different keys than the training "
                            "data", val_origin.description, f"Use {columns['role']}/{columns['content']} in both")
        _check_rows(val, fmt, columns, val_origin)
        source += f"; validation: {val_origin.description}"
    elif spec.val_size > 0:
        count = int(spec.val_size) if spec.val_size >= 1 else max(1, round(spec.val_size * len(train)))
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
        val_origin = _Origin(f"{origin.description} (validation split)")
        _check_rows(own_val, fmt, columns, val_origin)
        val = own_val
        source += "; validation: its validation split"
    label_names = None
    if fmt == "classification":
        label_names = _label_names([train], columns["label"])
        if len(label_names) < 2:
            raise TuneError(f"Classification needs at least two labels; `{columns['label']}` only has "
                            f"{label_names}", origin.description, "Check data.label_column")
        if val is not None and spec.val_path:
            _check_val_labels(val, columns["label"], label_names, val_origin)
        elif val is not None:  # a random split can put a rare label's only rows in validation
            label_names = _label_names([train, val], columns["label"])
    log.info("Data: %d training rows%s from %s (%s)", len(train),
             f", {len(val)} validation rows" if val is not None else "", origin.description, fmt)
    return RawData(format=fmt, train=train, val=val, label_names=label_names, source=source, columns=columns,
                   origins={"train": origin, "val": val_origin or origin})


def _check_val_labels(val, column: str, label_names: list[str], origin: _Origin) -> None:
    """Every label in a separate validation file must be one the training rows teach."""
    known = set(label_names)
    for row, value in enumerate(_pylist(val.select_columns([column]).with_format("arrow")[:].column(column)
                                        .combine_chunks())):
        if value is not None and _label_text(value) not in known:
            raise TuneError(f"`{column}` is {_label_text(value)!r}, a label no training row has (training labels: "
                            f"{', '.join(label_names)})", origin.row(row),
                            "Fix the label's spelling, or add training rows with it")


# ================================================================== tokenize

class _Encoder:
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

    def sft(self, batch: dict, indices: list[int], origin: _Origin) -> dict:
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
                "labels": [self.label_ids[_label_text(v)] for v in batch[self.columns["label"]]],
                "_length": lengths, "_keep": [True] * len(ids)}

    def documents(self, batch: dict, indices: list[int]) -> dict:
        texts = [t if isinstance(t, str) else "" for t in batch[self.columns["text"]]]
        enc = self.tokenizer(texts)["input_ids"]
        eos = self.tokenizer.eos_token_id
        ids = [row + [eos] if text.strip() else [] for row, text in zip(enc, texts)]
        return {"input_ids": ids, "_length": [len(x) for x in ids], "_keep": [bool(x) for x in ids]}

    def encode(self, batch: dict, indices: list[int], origin: _Origin) -> dict:
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


def _lengths_stats(lengths, keep, max_length: int) -> dict:
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
    encoder = _Encoder(raw.format, raw.columns, tokenizer, spec, raw.label_names)
    cache = _cache_root() / "tokenized"
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
        origin = raw.origins.get(name) or _Origin(raw.source)
        fp, mapped = run(ds, f"encode-{name}", work, with_indices=True, remove_columns=ds.column_names,
                         fn_kwargs={"origin": origin})
        cols = mapped.with_format("arrow")[:]
        lengths, keep = cols.column("_length").to_numpy(), cols.column("_keep").to_numpy(zero_copy_only=False)
        part_stats = _lengths_stats(lengths, keep, spec.max_length)
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


# ================================================================== preview

def preview(spec: DataSpec, tokenizer, n: int = 3) -> Preview:
    """First rows as the model will see them, with trained tokens marked; length stats from a small sample.

    Large files are streamed, so only their first rows are read.
    """
    from datasets import Dataset

    train, _, origin, rows = _load_source(spec.path, "data.path", streaming=True,
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
                _diagnose_json_lines(origin.path, "data.path")
            raise TuneError(f"Could not read {origin.description}: {_first_line(exc)}", "data.path") from exc
    fmt, columns = _resolve_format(head, spec, origin)
    _check_rows(head, fmt, columns, origin)
    label_names = _label_names([head], columns["label"]) if fmt == "classification" else None
    encoder = _Encoder(fmt, columns, tokenizer, spec, label_names)
    out = encoder.encode(head[:], list(range(len(head))), origin)
    stats = _lengths_stats(out["_length"], out["_keep"], spec.max_length)
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
