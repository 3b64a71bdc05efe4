"""Shared test set-up: one torch thread, an isolated offline cache, tiny model folders, finished demo runs."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

# Before torch is imported anywhere (here or in subprocesses): one thread keeps timings steady on shared CPUs.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
# No network in tests: hub lookups fail at once instead of waiting on timeouts.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The demo model and tokenized data are cached per test session, never in the user's ~/.cache.
_CACHE = tempfile.mkdtemp(prefix="tunetui-test-cache-")
os.environ["TUNETUI_CACHE"] = _CACHE

ROOT = Path(__file__).resolve().parents[1]
TUNETUI = str(Path(sys.executable).with_name("tunetui"))


def pytest_sessionfinish(session, exitstatus):
    import shutil

    shutil.rmtree(_CACHE, ignore_errors=True)


def pytest_runtest_setup(item):
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The shared demo datasets (alpaca/sharegpt/text); tests needing them skip where they are absent."""
    path = Path(os.environ.get("TUNETUI_SHARED_DATA", ROOT.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path}")
    return path


@pytest.fixture
def output_dir(tmp_path) -> Path:
    return tmp_path / "runs"


@pytest.fixture(scope="session")
def demo_model_dir() -> Path:
    """demo:tiny-llama materialised as an ordinary HF folder (config, safetensors, tokenizer)."""
    import torch

    torch.set_num_threads(1)
    from core.config import ModelSpec
    from core.training.models import resolve_model_dir

    return resolve_model_dir(ModelSpec())


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A 2-layer BERT encoder with a WordPiece tokenizer trained here: a local encoder checkpoint."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertModel, BertTokenizer

    out = tmp_path_factory.mktemp("tiny-bert")
    words = ("good great fine happy lovely bad awful poor sad terrible the movie food day was very a it is "
             "and but not so").split()
    corpus = [" ".join(words[i:] + words[:i]) for i in range(len(words))]
    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(corpus, vocab_size=200, min_frequency=1)
    wordpiece.save_model(str(out))
    tokenizer = BertTokenizer(vocab=str(out / "vocab.txt"), do_lower_case=True)
    assert tokenizer.vocab_size > 50  # the vocab really loaded (v5 ignores vocab_file=)
    tokenizer.save_pretrained(out)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=128,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # learns in few steps
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def sentiment_csv(tmp_path_factory) -> Path:
    """A two-label classification file whose labels follow from one word: learnable in a few steps."""
    out = tmp_path_factory.mktemp("sentiment") / "sentiment.csv"
    good = ["good", "great", "lovely", "happy"]
    bad = ["bad", "awful", "terrible", "sad"]
    subjects = ["the movie", "the food", "the day", "it"]
    rows = ["text,label"]
    for i, subject in enumerate(subjects):
        for g, b in zip(good, bad):
            rows.append(f"{subject} was very {g},positive")
            rows.append(f"{subject} was very {b},negative")
    out.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return out


def _run_config(output_dir: Path, **sections):
    """A small, fast RunConfig on the demo model and demo data; override sections with dicts."""
    from core import config as cfg

    raw = {
        "model": {"name_or_path": "demo:tiny-llama"},
        "method": {"kind": "lora", "lora": {"r": 8, "alpha": 16, "dropout": 0.0}},
        # 8 training rows and batch 8: every step sees the same batch, so the loss must fall.
        "data": {"path": "demo:alpaca_en", "max_length": 64, "max_samples": 12, "val_size": 4},
        "train": {"max_steps": 10, "batch_size": 8, "lr": 1e-2, "warmup_ratio": 0.0, "scheduler": "constant",
                  "save_steps": 5, "save_total_limit": 3},
        "output": {"dir": str(output_dir)},
    }
    for section, values in sections.items():
        merged = dict(raw.get(section, {}))
        for key, value in values.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
        raw[section] = merged
    return cfg.from_dict(raw)


@pytest.fixture(scope="session")
def small_config():
    """`small_config(output_dir, train={"max_steps": 4}, ...)`: a fast demo RunConfig with section overrides."""
    return _run_config


@pytest.fixture(scope="session")
def lora_run(tmp_path_factory, demo_model_dir):
    """A finished LoRA run on the demo (shared by runner and export tests): (RunOutcome, events)."""
    from core.training.runner import run

    events: list = []
    outcome = run(_run_config(tmp_path_factory.mktemp("lora-runs")), events.append)
    return outcome, events


@pytest.fixture(scope="session")
def qlora_run(tmp_path_factory, demo_model_dir):
    """A finished QLoRA (4-bit NF4) run on the demo: (RunOutcome, events)."""
    from core.training.runner import run

    events: list = []
    config = _run_config(tmp_path_factory.mktemp("qlora-runs"), method={"kind": "qlora"})
    outcome = run(config, events.append)
    return outcome, events


@pytest.fixture(scope="session")
def qlora8_run(tmp_path_factory, demo_model_dir):
    """A finished 8-bit QLoRA run (LLM.int8 base) on the demo: (RunOutcome, events)."""
    from core.training.runner import run

    events: list = []
    config = _run_config(tmp_path_factory.mktemp("qlora8-runs"), method={"kind": "qlora", "quant": {"bits": 8}})
    outcome = run(config, events.append)
    return outcome, events


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory, demo_model_dir):
    """presets/demo.yaml, unchanged but for the output folder (the run a new user starts with): (RunOutcome,
    events). It teaches the demo model that it is Tuney."""
    from core import config as cfg
    from core.training.runner import run

    events: list = []
    config = cfg.load(ROOT / "presets" / "demo.yaml", [f"output.dir={tmp_path_factory.mktemp('demo-runs')}"])
    outcome = run(config, events.append)
    assert outcome.status == "finished", outcome.event
    return outcome, events
