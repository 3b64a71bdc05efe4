"""Where training rows come from: a data file, a dataset folder, a hub dataset or a built-in demo set.

`load_source` finds and reads one source (strict JSON checks first, so a broken file is named by its line); an
`Origin` names one of its rows the way the user sees the file (line numbers), for every later error message.
datasets and pyarrow are imported inside functions. Never imports textual or tui.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import TuneError
from core.hub import is_hub_id
from core.training.formats import TEXT_FIELDS

log = logging.getLogger(__name__)

SUFFIX_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet",
                   ".txt": "text"}
ASSETS_DIR = Path(__file__).resolve().parents[1] / "assets"
PREVIEW_FULL_LOAD_BYTES = 16 << 20  # smaller files are loaded (and cached) whole; bigger ones are streamed
ROW_COLUMN = "__tunetui_row"  # a row's index in its file, kept through the validation split's shuffle


@dataclass
class Origin:
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


def cache_root() -> Path:
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
    # A data file's suffix means a file, even where the name could also be a hub id.
    looks_local = path.suffix.lower() in SUFFIX_BUILDERS or not is_hub_id(text)
    if looks_local:
        raise TuneError(f"Data file {path} does not exist", key,
                        f"Check the path (relative paths start from {Path.cwd()}), or try demo:alpaca_en")
    return "hub", text


def load_source(path_text: str, key: str, streaming: bool = False, text_columns: tuple[str, ...] = ()):
    """Rows of one source → (train rows, the source's own validation split or None, origin, total rows or None).

    With streaming=True large local files and hub datasets come back as an IterableDataset (for previews).
    """
    import datasets

    kind, where = _resolve(path_text, key)
    cache_dir = str(cache_root() / "datasets")
    if kind == "hub":
        origin = Origin(f"hub dataset {where}")
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
        origin = Origin(str(where))
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


def _pick_splits(loaded, origin: Origin):
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
    origin = Origin(str(path), path, jsonl=jsonl, layout=layout, delimiter="\t" if suffix == ".tsv" else ",")
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
            diagnose_json_lines(path, key)
        raise TuneError(f"Could not read {path}: {first_line(exc)}", key,
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


def first_line(exc: BaseException) -> str:
    """The useful line of a datasets error: its generic wrapper hides the reader's message in __cause__."""
    text = str(exc.__cause__ or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _check_json_array(path: Path, key: str) -> None:
    """Strict parse of a JSON array file, remembered by (path, size, mtime) so unchanged files are parsed once."""
    stat = path.stat()
    stamp = hashlib.sha256(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:32]
    marker = cache_root() / "checked" / stamp
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


def diagnose_json_lines(path: Path, key: str) -> None:
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

