"""Data pipeline: every format loads, masks train exactly the responses, caching works, bad input gets its message."""
from __future__ import annotations

import copy
import json
import logging
import os
import shutil
from pathlib import Path

import pytest

from core import demo
from core.config import DataSpec
from core.errors import TuneError
from core.training import sources
from core.training.encode import tokenize
from core.training.preview import PREVIEW_SAMPLE, preview
from core.training.rawdata import load_raw
from core.training.templates import IGNORE_INDEX, ChatEncoder

DATA = Path(__file__).parent / "data"
EOS = "<|im_end|>"


@pytest.fixture(scope="module", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Keep this module's datasets and tokenization caches out of the user's ~/.cache."""
    import datasets

    datasets.disable_progress_bars()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUNETUI_CACHE", str(tmp_path_factory.mktemp("tunetui-cache")))
        yield


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(demo.TOKENIZER_DIR)


@pytest.fixture(scope="module")
def bare_tok(tok):
    """The same vocabulary without a chat template, as a base model ships it."""
    bare = copy.deepcopy(tok)
    bare.chat_template = None
    return bare


def trained_runs(tok, ids, labels) -> list[str]:
    """Decoded runs of consecutive trained tokens; also checks trained labels equal their input ids."""
    runs, run = [], []
    for token, label in zip(ids, labels):
        if label != IGNORE_INDEX:
            assert label == token
            run.append(token)
        elif run:
            runs.append(tok.decode(run))
            run = []
    if run:
        runs.append(tok.decode(run))
    return runs


def prepare(tok, **spec_fields):
    spec = DataSpec(**{"max_length": 4096, **spec_fields})
    raw = load_raw(spec)
    return raw, tokenize(raw, tok, spec)


# ------------------------------------------------------------------ formats and masks

def test_alpaca_trains_only_the_response_ending_in_eos(tok):
    raw, prep = prepare(tok, path="demo:alpaca_en", max_samples=24)
    assert (raw.format, prep.task, prep.stats["dropped"], len(prep.train)) == ("alpaca", "sft", 0, 24)
    for row, ex in zip(raw.train, prep.train):
        assert trained_runs(tok, ex["input_ids"], ex["labels"]) == [row["output"] + EOS]
        prompt = tok.decode([t for t, label in zip(ex["input_ids"], ex["labels"]) if label == IGNORE_INDEX])
        assert row["instruction"] in prompt and row["output"] not in prompt
        assert ex["attention_mask"] == [1] * len(ex["input_ids"])


def test_alpaca_system_and_history_every_answer_trains(tok):
    raw, prep = prepare(tok, path=str(DATA / "alpaca_history.json"), format="alpaca")
    runs = [trained_runs(tok, ex["input_ids"], ex["labels"]) for ex in prep.train]
    assert runs[0] == ["An omelette, scrambled eggs or a frittata." + EOS, "About six minutes in boiling water." + EOS]
    assert runs[1] == ["Joyful." + EOS]
    assert runs[2] == ["Hello, what would you like to cook?" + EOS, "Great choice." + EOS,
                       "Try a simple tomato and basil sauce." + EOS]
    first = tok.decode(prep.train[0]["input_ids"])
    assert "You are a helpful cooking assistant." in first
    assert "How long should I boil an egg?\nI like the yolk soft." in first


def test_sharegpt_tool_rows_load_and_train_calls_not_observations(tok):
    raw = load_raw(DataSpec(path=str(DATA / "glaive_toolcall_en_demo.json")))
    assert raw.format == "sharegpt" and len(raw.train) == 300
    spec = DataSpec(path=str(DATA / "glaive_toolcall_en_demo.json"), max_samples=12, max_length=4096)
    raw = load_raw(spec)
    prep = tokenize(raw, tok, spec)
    tool_rows = 0
    for row, ex in zip(raw.train, prep.train):
        turns = row["conversations"]
        expected = [t["value"] + EOS for t in turns if t["from"] in ("gpt", "function_call")]
        assert trained_runs(tok, ex["input_ids"], ex["labels"]) == expected
        text = tok.decode(ex["input_ids"])
        for turn in turns:
            assert turn["value"] in text
        if any(t["from"] == "observation" for t in turns):
            tool_rows += 1
            assert "<|im_start|>tool\n" in text  # observation → a tool turn, kept as context
        for tool in json.loads(row["tools"] or "[]"):
            assert tool["name"] in text  # tool schemas reach the prompt
    assert tool_rows >= 3


def test_messages_multi_turn_with_and_without_chat_template(tok, bare_tok):
    rows = [json.loads(line) for line in (DATA / "messages.jsonl").read_text().splitlines()]
    expected = [[m["content"] + EOS for m in r["messages"] if m["role"] == "assistant"] for r in rows]
    for tokenizer, header in ((tok, "<|im_start|>assistant\n"), (bare_tok, "### Assistant:\n")):
        raw, prep = prepare(tokenizer, path=str(DATA / "messages.jsonl"))
        assert raw.format == "messages"
        assert [trained_runs(tokenizer, ex["input_ids"], ex["labels"]) for ex in prep.train] == expected
        assert header in tokenizer.decode(prep.train[1]["input_ids"])


def test_eos_appended_when_the_template_does_not_close_turns(tok):
    plain = copy.deepcopy(tok)
    plain.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                           "{% if add_generation_prompt %}assistant: {% endif %}")
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there."},
                {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Goodbye."}]
    ids, labels = ChatEncoder(plain).encode(messages)
    assert [r.strip() for r in trained_runs(plain, ids, labels)] == ["Hello there." + EOS, "Goodbye." + EOS]


def test_tokenizers_without_offsets_get_the_same_masks(tok):
    messages = [json.loads(line)["messages"] for line in (DATA / "messages.jsonl").read_text().splitlines()]
    for conversation in messages:
        assert ChatEncoder(tok, force_segments=True).encode(conversation) == ChatEncoder(tok).encode(conversation)


def test_rows_whose_keys_or_types_differ_still_load(tok, tmp_path):
    """datasets stores such columns as JSON values; the checks and the masks must not care."""
    chats = [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]},
             {"messages": [{"role": "user", "content": "Who are you?", "name": "ann"},
                           {"role": "assistant", "content": "A bot."}]}]
    (tmp_path / "mixed.jsonl").write_text("\n".join(json.dumps(r) for r in chats))
    raw, prep = prepare(tok, path=str(tmp_path / "mixed.jsonl"))
    assert raw.format == "messages"
    assert [trained_runs(tok, ex["input_ids"], ex["labels"]) for ex in prep.train] == [["Hello." + EOS],
                                                                                        ["A bot." + EOS]]
    labels = [{"text": "a", "label": 1}, {"text": "b", "label": "spam"}, {"text": "c", "label": 1}]
    (tmp_path / "labels.jsonl").write_text("\n".join(json.dumps(r) for r in labels))
    raw, prep = prepare(tok, path=str(tmp_path / "labels.jsonl"))
    assert [prep.label_names[ex["labels"]] for ex in prep.train] == ["1", "spam", "1"]


def test_text_packs_into_max_length_blocks_with_eos_between_documents(tok):
    raw, prep = prepare(tok, path=str(DATA / "c4_demo.jsonl"), max_samples=40, max_length=128)
    assert (raw.format, prep.task) == ("text", "pretrain")
    docs = [tok(r["text"])["input_ids"] + [tok.eos_token_id] for r in raw.train]
    total = sum(len(d) for d in docs)
    assert len(prep.train) == prep.stats["blocks"] == total // 128
    stream = [t for ex in prep.train for t in ex["input_ids"]]
    assert all(len(ex["input_ids"]) == 128 and ex["labels"] == ex["input_ids"] for ex in prep.train)
    assert stream == [t for d in docs for t in d][:len(stream)]
    assert prep.stats["examples"] == 40 and prep.stats["max"] == max(len(d) for d in docs)


def test_txt_blocks_become_text_rows(tok):
    raw = load_raw(DataSpec(path=str(DATA / "notes.txt")))
    assert raw.format == "text"
    assert [t.strip() for t in raw.train["text"]] == [
        "The kettle boils water in about three minutes.\nIt switches itself off when the water is ready.",
        "Descale it once a month if your water is hard.\nVinegar or citric acid both work.",
        "Never fill it above the maximum line."]


def test_classification_maps_labels_and_names_round_trip(tok):
    raw, prep = prepare(tok, path=str(DATA / "reviews.csv"))
    assert (raw.format, prep.task) == ("classification", "classification")
    assert prep.label_names == ["negative", "neutral", "positive"]
    for row, ex in zip(raw.train, prep.train):
        assert prep.label_names[ex["labels"]] == row["category"]
        assert tok.decode(ex["input_ids"]) == row["sentence"]
    pv = preview(DataSpec(path=str(DATA / "reviews.csv")), tok, n=1)
    assert pv.examples == [[("The battery lasts all day and the screen is bright.", False), (" → positive", True)]]
    raw, prep = prepare(tok, path=str(DATA / "films.tsv"))
    assert prep.label_names == ["0", "1"] and [ex["labels"] for ex in prep.train] == [1, 0, 1, 0]


@pytest.mark.parametrize("path, fmt", [
    ("demo:alpaca_en", "alpaca"), (str(DATA / "glaive_toolcall_en_demo.json"), "sharegpt"),
    (str(DATA / "messages.jsonl"), "messages"), (str(DATA / "c4_demo.jsonl"), "text"),
    (str(DATA / "reviews.csv"), "classification"),
])
def test_auto_detects_each_format_and_logs_it(path, fmt, caplog):
    with caplog.at_level(logging.INFO, logger="core.training.formats"):
        assert load_raw(DataSpec(path=path)).format == fmt
    assert f"detected {fmt}" in caplog.text


def test_validation_split_sizes_are_seeded(tmp_path):
    spec = DataSpec(path="demo:alpaca_en", max_samples=100, val_size=0.1)
    a, b = load_raw(spec), load_raw(spec)
    assert (len(a.train), len(a.val)) == (90, 10) and a.val["instruction"] == b.val["instruction"]
    raw = load_raw(DataSpec(path="demo:alpaca_en", max_samples=100, val_size=7))
    assert (len(raw.train), len(raw.val)) == (93, 7)
    raw = load_raw(DataSpec(path=str(DATA / "alpaca_history.json"), val_path="demo:alpaca_en"))
    assert (len(raw.train), len(raw.val)) == (3, 999)


def test_second_tokenize_is_a_cache_hit(tok, tmp_path):
    shutil.copy(DATA / "messages.jsonl", tmp_path / "chat.jsonl")  # a new file: nothing cached yet
    spec = DataSpec(path=str(tmp_path / "chat.jsonl"), val_size=1)
    calls = []
    first = tokenize(load_raw(spec), tok, spec, progress=lambda done, total: calls.append((done, total)))
    files = [f["filename"] for f in first.train.cache_files]
    mtimes = [os.stat(f).st_mtime_ns for f in files]
    assert calls[-1] == (4, 4) and len(calls) >= 2

    calls.clear()
    second = tokenize(load_raw(spec), tok, spec, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(4, 4)]  # the tokenizing function never ran
    assert [f["filename"] for f in second.train.cache_files] == files
    assert [os.stat(f).st_mtime_ns for f in files] == mtimes
    assert second.train[:] == first.train[:] and second.stats == first.stats


def test_collator_pads_inputs_and_masks_padded_labels(tok):
    import torch

    torch.set_num_threads(1)
    _, prep = prepare(tok, path=str(DATA / "messages.jsonl"))
    batch = prep.collator(tok)([prep.train[0], prep.train[1]])
    short = len(prep.train[0]["input_ids"])
    assert batch["input_ids"].shape[1] == len(prep.train[1]["input_ids"]) > short
    assert (batch["input_ids"][0, short:] == tok.pad_token_id).all()
    assert (batch["labels"][0, short:] == IGNORE_INDEX).all() and (batch["attention_mask"][0, short:] == 0).all()


def test_preview_marks_trained_segments_and_counts_rows(tok):
    pv = preview(DataSpec(path="demo:alpaca_en", max_length=4096), tok, n=2)
    assert (pv.format, pv.rows, len(pv.examples)) == ("alpaca", 999, 2)
    (prompt, trained_p), (answer, trained_a), *rest = pv.examples[0]
    assert not trained_p and trained_a and all(not trained and not text.strip() for text, trained in rest)
    assert "Describe a process of making crepes." in prompt and answer.startswith("Making crepes") and \
        answer.endswith(EOS)
    assert set(pv.stats) == {"examples", "min", "median", "p95", "max", "truncated", "dropped"}
    assert pv.stats["examples"] == PREVIEW_SAMPLE


def test_parquet_and_save_to_disk_folders_load_with_their_validation_split(tmp_path):
    from datasets import Dataset, DatasetDict

    rows = [{"text": f"review {i}", "label": ["bad", "good"][i % 2]} for i in range(10)]
    Dataset.from_list(rows).to_parquet(str(tmp_path / "reviews.parquet"))
    raw = load_raw(DataSpec(path=str(tmp_path / "reviews.parquet")))
    assert (raw.format, len(raw.train), raw.label_names) == ("classification", 10, ["bad", "good"])
    DatasetDict(train=Dataset.from_list(rows[:8]), validation=Dataset.from_list(rows[8:])).save_to_disk(
        str(tmp_path / "saved"))
    raw = load_raw(DataSpec(path=str(tmp_path / "saved")))
    assert (raw.format, len(raw.train), len(raw.val)) == ("classification", 8, 2)


def test_preview_streams_large_files_reading_only_the_head(tok, monkeypatch):
    monkeypatch.setattr(sources, "PREVIEW_FULL_LOAD_BYTES", 0)  # treat every file as too big to load whole
    pv = preview(DataSpec(path=str(DATA / "glaive_toolcall_en_demo.json"), max_length=4096), tok, n=1)
    assert (pv.format, pv.rows, len(pv.examples)) == ("sharegpt", None, 1)
    assert [text for text, trained in pv.examples[0] if trained][0] == (
        "Of course! I can help you with that. Please tell me what ingredients you have." + EOS)


# ------------------------------------------------------------------ bad input

def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


ALPACA_ROW = {"instruction": "Say hi", "input": "", "output": "Hi"}


@pytest.mark.parametrize("name, text, fields, expected", [
    ("nope.json", None, {}, ["does not exist", "data.path"]),
    ("empty.jsonl", "", {}, ["is empty"]),
    ("broken.json", '[\n  {"instruction": "a", "output": "b"},\n  {"instruction": "c", "output": "d",}\n]\n', {},
     ["Malformed JSON", "line 3"]),
    ("broken.jsonl", json.dumps(ALPACA_ROW) + "\n\n" + '{"instruction": "c", "output": }\n', {},
     ["Malformed JSON", "line 3"]),
    ("nooutput.jsonl", json.dumps(ALPACA_ROW) + "\n" + json.dumps({"instruction": "x", "input": ""}) + "\n", {},
     ["`output`", "line 2"]),
    ("wrongcols.json", json.dumps([{"question": "q", "answer": "a"}]), {"format": "alpaca"},
     ["`instruction`", "question, answer"]),
    ("nolabel.jsonl",
     '{"text": "good", "label": "pos"}\n{"text": "bad", "label": "neg"}\n{"text": "meh", "label": ""}\n',
     {}, ["empty label", "line 3"]),
    ("nullabel.csv", "text,label\ngood,pos\nbad,\n", {}, ["empty label", "row 2"]),
    ("mixednull.jsonl", '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
     '{"messages": [{"role": "user", "content": "hi", "name": "x"}, {"role": "assistant"}]}\n', {},
     ["has no `content`", "line 2"]),
    ("noanswer.json", json.dumps([{"conversations": [{"from": "human", "value": "hi"}]}]), {},
     ["no assistant turn", "row 1"]),
    ("role.json", json.dumps([{"conversations": [{"from": "robot", "value": "hi"}, {"from": "gpt", "value": "x"}]}]),
     {}, ["Unknown role 'robot'", "row 1", "human"]),
    ("history.json", json.dumps([ALPACA_ROW, {**ALPACA_ROW, "history": [["only a question"]]}]), {},
     ["`history`", "row 2"]),
    ("unknown.json", json.dumps([{"question": "q", "answer": "a"}]), {},
     ["Cannot tell the data format", "question, answer", "instruction, output"]),
    ("short.json", json.dumps([ALPACA_ROW, {"instruction": "Say something long " * 5, "output": "ok"}]),
     {"max_length": 8}, ["Every example was dropped", "max_length is 8", "Set data.max_length to at least"]),
])
def test_bad_input_gets_a_message(tok, tmp_path, name, text, fields, expected):
    path = str(tmp_path / name) if text is None else _write(tmp_path, name, text)
    spec = DataSpec(path=path, **fields)
    with pytest.raises(TuneError) as err:
        tokenize(load_raw(spec), tok, spec)
    for part in expected:
        assert part in str(err.value)


def test_unknown_demo_and_unreachable_hub_dataset(monkeypatch):
    with pytest.raises(TuneError, match="demo:alpaca_en"):
        load_raw(DataSpec(path="demo:nope"))
    import datasets
    import huggingface_hub.constants

    # Offline mode makes the hub call fail at once instead of retrying a network that isn't there.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(TuneError, match="Could not load hub dataset 'someone/some-dataset'"):
        load_raw(DataSpec(path="someone/some-dataset"))


def test_data_formats_and_tasks_are_one_vocabulary():
    import typing

    from core import config
    from core.resources.estimate import EstimateSettings
    from core.tasks import TASKS, estimate_task, task_for_format

    assert config.FORMATS == ("auto", *TASKS) == typing.get_args(typing.get_type_hints(DataSpec)["format"])
    assert [task_for_format(f) for f in TASKS] == ["sft", "sft", "sft", "pretrain", "classification"]
    assert {f: estimate_task(f) for f in config.FORMATS} == {
        "auto": "causal_lm", "alpaca": "causal_lm", "sharegpt": "causal_lm", "messages": "causal_lm",
        "text": "causal_lm", "classification": "classification"}
    run = config.RunConfig(data=DataSpec(format="classification"))
    assert EstimateSettings.from_config(run).task == "classification"
    with pytest.raises(TuneError, match="Unknown data format 'csv'") as err:
        task_for_format("csv")
    assert err.value.fix == "Use one of: " + ", ".join(config.FORMATS)
