"""Bad data is named by its row in the user's file, with what was found and what was expected, in every format —
before any chat template sees it, and through the validation split's shuffle."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from core import demo
from core.config import DataSpec
from core.errors import TuneError
from core.training import sources
from core.training.encode import tokenize
from core.training.preview import preview
from core.training.rawdata import load_raw
from core.training.sources import ROW_COLUMN

ROOT = Path(__file__).resolve().parents[1]
# Words that only come from inside Python or a template engine: a message containing them is not for people.
INTERNALS = ("can only concatenate", "not \"int\"", "NoneType", "jinja", "Traceback", "TypeError", "KeyError")


@pytest.fixture(scope="module", autouse=True)
def _isolated_cache(tmp_path_factory):
    import datasets

    datasets.disable_progress_bars()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUNETUI_CACHE", str(tmp_path_factory.mktemp("tunetui-cache")))
        yield


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(demo.TOKENIZER_DIR)


def _error(tok, **spec_fields) -> str:
    spec = DataSpec(**{"max_length": 256, **spec_fields})
    with pytest.raises(TuneError) as err:
        tokenize(load_raw(spec), tok, spec)
    message = str(err.value)
    for word in INTERNALS:
        assert word not in message, message
    return message


def _jsonl(path: Path, rows: list) -> str:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return str(path)


def _json(path: Path, rows: list) -> str:
    path.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return str(path)


def _six_hundred_rows_with_a_number_in_row_458(shared_data_dir: Path) -> list[dict]:
    rows = json.loads((shared_data_dir / "alpaca_en_demo.json").read_text(encoding="utf-8"))[:600]
    assert len(rows) == 600
    rows[457] = {**rows[457], "output": 123}  # row 458 counting from 1
    return rows


def test_a_number_in_row_458_of_600_is_named_by_its_row_and_key(tok, tmp_path, shared_data_dir):
    rows = _six_hundred_rows_with_a_number_in_row_458(shared_data_dir)
    message = _error(tok, path=_json(tmp_path / "alpaca.json", rows), val_size=0.1)
    assert "alpaca.json, row 458 (index 457" in message
    assert "`output` is a number (123); expected text" in message
    line = (tmp_path / "alpaca.json").read_text().splitlines()[0:]
    start = int(message.split("starts on line ")[1].split(")")[0])
    assert line[start - 1].strip() == "{" and '"output": 123' in "\n".join(line[start - 1:start + 5])

    message = _error(tok, path=_jsonl(tmp_path / "alpaca.jsonl", rows), val_size=0.1)
    assert "alpaca.jsonl, line 458)" in message and "`output` is a number (123)" in message


def test_the_preview_names_row_458_too(tok, tmp_path, shared_data_dir):
    """The Data screen's preview shows the first rows; a file it loads whole is checked whole, as the run checks it
    (it used to fail inside the template on row 36, whose output is the text "3")."""
    path = _json(tmp_path / "alpaca.json", _six_hundred_rows_with_a_number_in_row_458(shared_data_dir))
    with pytest.raises(TuneError) as err:
        preview(DataSpec(path=path), tok)
    message = str(err.value)
    assert "`output` is a number (123); expected text" in message and "alpaca.json, row 458 (index 457" in message
    for word in INTERNALS:
        assert word not in message, message


def test_text_that_looks_like_json_is_still_text(tok, tmp_path, shared_data_dir):
    """datasets reads a column of mixed types as JSON, where the text "3" becomes the number 3: only the real
    number is reported."""
    rows = _six_hundred_rows_with_a_number_in_row_458(shared_data_dir)[:500]
    rows[10] = {**rows[10], "output": "3"}
    rows[20] = {**rows[20], "output": "null"}
    message = _error(tok, path=_jsonl(tmp_path / "alpaca.jsonl", rows))
    assert "line 458)" in message and "number (123)" in message


ROW = {"instruction": "Say hi", "input": "", "output": "Hi"}
HI = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
GPT = [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]


@pytest.mark.parametrize("name, rows, fields, expected", [
    ("alpaca list", [ROW, {"instruction": ["Say", "hi"], "output": "Hi"}], {},
     ["`instruction` is a list ([\"Say\", \"hi\"]); expected text", "line 2)", "Join the parts"]),
    ("alpaca null output", [ROW, ROW, {"instruction": "x", "output": None}], {},
     ["has no `output` (found: null)", "line 3)"]),
    ("alpaca every output a number", [{**ROW, "output": 1}, {**ROW, "output": 2}], {},
     ["`output` is a number (1); expected text", "line 1)", '"output": "1"']),
    ("alpaca boolean input", [ROW, {**ROW, "input": True}], {},
     ["`input` is true (a true/false value); expected text", "line 2)"]),
    ("alpaca system object", [ROW, ROW, {**ROW, "system": {"persona": "chef"}}], {},
     ["`system` is an object", "line 3)"]),
    ("alpaca history numbers", [ROW, {**ROW, "history": [[1, 2]]}], {},
     ["`history`", "found: a list ([[1, 2]])", "line 2)"]),
    ("sharegpt value number", [{"conversations": GPT},
                               {"conversations": [GPT[0], {"from": "gpt", "value": 42}]}], {},
     ["`value` is a number (42); expected text", "line 2, turn 2)"]),
    ("sharegpt role number", [{"conversations": GPT}, {"conversations": [{"from": 1, "value": "x"}, GPT[1]]}], {},
     ["`from` is a number (1); expected a role name", "line 2, turn 1)", "human"]),
    ("messages content parts", [{"messages": HI}, {"messages": [
        {"role": "user", "content": [{"type": "text", "text": "hi"}]}, HI[1]]}], {},
     ["`content` is a list", "expected text", "line 2, turn 1)"]),
    ("messages turn without role", [{"messages": HI}, {"messages": [{"content": "hi"}, HI[1]]}], {},
     ["has no `role` (found: null)", "line 2, turn 1)"]),
    ("messages turn is text", [{"messages": HI}, {"messages": [HI[0], "hello"]}], {},
     ["A turn in `messages` is text ('hello'); expected an object", "line 2, turn 2)"]),
    ("messages conversation is text", [{"messages": HI}, {"messages": "hi there"}], {"format": "messages"},
     ["`messages` is text ('hi there'); expected a list of turns", "line 2)"]),
    ("messages empty conversation", [{"messages": HI}, {"messages": []}], {},
     ["A row has no `messages` (found: an empty list)", "line 2)"]),
    ("messages role missing in every row", [{"messages": [{"role": "user", "content": "hi"},
                                                          {"role": None, "content": "x"}]}], {},
     ["has no `role`", "line 1, turn 2)"]),
    ("text number", [{"text": "A document."}, {"text": 7}], {"format": "text"},
     ["`text` is a number (7); expected text", "line 2)"]),
    ("classification list label", [{"text": "good", "label": "pos"}, {"text": "bad", "label": ["neg"]}], {},
     ["`label` is a list ([\"neg\"]); expected one class label", "line 2)"]),
    ("classification fraction label", [{"text": "good", "label": 1}, {"text": "bad", "label": 0},
                                       {"text": "meh", "label": 0.5}], {},
     ["`label` is a number (0.5); expected one class label", "line 3)"]),
    ("classification text number", [{"text": "good", "label": 1}, {"text": 5, "label": 0}], {},
     ["`text` is a number (5); expected text", "line 2)"]),
])
def test_a_wrong_type_in_each_format_names_row_key_found_and_expected(tok, tmp_path, name, rows, fields,
                                                                      expected):
    message = _error(tok, path=_jsonl(tmp_path / "rows.jsonl", rows), **fields)
    for part in expected:
        assert part in message, message


def test_json_arrays_count_rows_from_one_and_give_the_line(tok, tmp_path):
    path = _json(tmp_path / "chat.json", [{"conversations": GPT}, {"conversations": GPT},
                                          {"conversations": [GPT[0], {"from": "gpt", "value": None}]}])
    message = _error(tok, path=path)
    assert "chat.json, row 3 (index 2; starts on line " in message and "turn 2" in message
    assert "has no `value`" in message


def test_csv_rows_are_named_by_line_and_text_cells_keep_their_text(tok, tmp_path):
    path = tmp_path / "sums.csv"
    path.write_text('instruction,output\n"Add 3 and 4",007\n\n"Halve 7",3.50\n"Say ""hi""\nplease",\n',
                    encoding="utf-8")
    message = _error(tok, path=str(path))
    assert "sums.csv, line 5 (data row 3; the header is line 1)" in message and "has no `output`" in message
    path.write_text('instruction,output\n"Add 3 and 4",007\n"Halve 7",3.50\n', encoding="utf-8")
    raw = load_raw(DataSpec(path=str(path)))
    assert raw.train["output"] == ["007", "3.50"]  # the file's text, not the numbers 7 and 3.5


def test_parquet_and_saved_folders_name_the_row_and_split(tok, tmp_path):
    from datasets import Dataset, DatasetDict

    rows = [{"instruction": f"Count to {i}", "output": i} for i in range(1, 4)]  # a whole column of numbers
    Dataset.from_list(rows).to_parquet(str(tmp_path / "counts.parquet"))
    message = _error(tok, path=str(tmp_path / "counts.parquet"))
    assert "counts.parquet, row 1 (index 0)" in message and "`output` is a number (1); expected text" in message

    good = [{"text": "fine", "label": "pos"}, {"text": "bad", "label": "neg"}]
    DatasetDict(train=Dataset.from_list(good),
                validation=Dataset.from_list(good + [{"text": None, "label": "pos"}])).save_to_disk(
        str(tmp_path / "saved"))
    message = _error(tok, path=str(tmp_path / "saved"))
    assert "saved (validation split), row 3 (index 2)" in message and "has no `text` (found: null)" in message


def test_the_preview_of_a_large_streamed_file_names_the_row_too(tok, tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "PREVIEW_FULL_LOAD_BYTES", 0)  # stream every file, as for big ones
    path = _jsonl(tmp_path / "big.jsonl", [ROW] * 10 + [{**ROW, "output": 5}])
    with pytest.raises(TuneError) as err:
        preview(DataSpec(path=path), tok)
    assert "`output` is a number (5); expected text" in str(err.value) and "big.jsonl, line 11)" in str(err.value)


def test_a_validation_label_no_training_row_has_is_named(tok, tmp_path):
    train = _jsonl(tmp_path / "train.jsonl", [{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}])
    val = _jsonl(tmp_path / "val.jsonl", [{"text": "fine", "label": "pos"}, {"text": "so-so", "label": "neutral"}])
    message = _error(tok, path=train, val_path=val)
    assert "`label` is 'neutral', a label no training row has (training labels: neg, pos)" in message
    assert "val.jsonl, line 2)" in message


def test_a_template_refusal_names_the_file_row_after_the_shuffled_split(tok, tmp_path):
    strict = copy.deepcopy(tok)
    strict.chat_template = (
        "{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant') }}{% endif %}"
        "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    rows = [{"messages": [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": "ok"}]}
            for i in range(40)]
    rows[29] = {"messages": [HI[0], HI[0], HI[1]]}  # two user turns: fine for the data checks, not the template
    path = _jsonl(tmp_path / "chat.jsonl", rows)
    spec = DataSpec(path=path, val_size=0.25, max_length=256)
    raw = load_raw(spec)
    where = raw.train[ROW_COLUMN].index(29) if 29 in raw.train[ROW_COLUMN] else None
    assert where != 29  # the shuffle moved it (or into validation): its position is not its row
    with pytest.raises(TuneError) as err:
        tokenize(raw, strict, spec)
    message = str(err.value)
    assert "chat.jsonl, line 30)" in message and "roles must alternate" in message
    assert "template refuses this conversation" in message and "example" not in message


def test_tunetui_train_on_a_bad_file_exits_non_zero_naming_the_row(tmp_path, shared_data_dir, capsys):
    """`tunetui train` as test_cli drives it (its main, in this process, so the engine is imported once)."""
    from tui.cli import main

    path = _json(tmp_path / "alpaca.json", _six_hundred_rows_with_a_number_in_row_458(shared_data_dir))
    out = tmp_path / "runs"
    code = main(["train", str(ROOT / "presets" / "demo.yaml"), "--set", f"data.path={path}",
                 "--set", "data.val_size=0.1", "--output-dir", str(out)])
    captured = capsys.readouterr()
    err = " ".join(captured.err.split())  # unwrapped: terminals may fold long lines
    assert code == 2, err
    assert "tunetui train: `output` is a number (123); expected text" in err and "row 458 (index 457" in err
    if "run folder:" in captured.out:  # a folder it announced is not left for the user to look for
        assert "nothing was trained; the run folder" in err and "was removed" in err
    assert "Traceback" not in err and "concatenate" not in err
    assert not out.exists() or not any(out.iterdir())  # a run that never started leaves no folder behind
