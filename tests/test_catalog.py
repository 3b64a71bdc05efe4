"""Model catalog: the demo, a fake HF cache, a models folder and recent picks; what a model is and what is wrong."""
import json

import pytest

from core.catalog import describe_model, list_models, recent_models, remember_model
from core.demo import TINY_LLAMA_CONFIG

CFG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
       "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100}


def _model_dir(path, tokenizer=True, weights=1000):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(CFG))
    if tokenizer:
        (path / "tokenizer.json").write_text("{}")
    if weights:
        (path / "model.safetensors").write_bytes(b"\0" * weights)
    return path


def _hf_cache(root):
    """Laid out like huggingface_hub's cache: blobs, a snapshot of symlinks, refs/main."""
    repo = root / "models--acme--tiny-chat"
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / "cfg").write_text(json.dumps(CFG))
    (repo / "blobs" / "w").write_bytes(b"\0" * 4096)
    snap = repo / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    (snap / "config.json").symlink_to(repo / "blobs" / "cfg")
    (snap / "model.safetensors").symlink_to(repo / "blobs" / "w")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    data = root / "datasets--acme--corpus" / "snapshots" / "feed"
    data.mkdir(parents=True)
    (data / "train.json").write_text("[]")
    return root


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(_hf_cache(tmp_path / "hub")))
    monkeypatch.setenv("TUNETUI_CONFIG_DIR", str(tmp_path / "config"))
    return tmp_path


def test_list_models_demo_first_then_recent_folder_and_cache(env):
    models = env / "models"
    _model_dir(models / "my-llama")
    _model_dir(models / "org" / "nested")
    (models / "not-a-model").mkdir()
    entries = list_models(models, recent=[str(env / "gone"), str(models / "my-llama")])
    names = [(e.source, e.name_or_path) for e in entries]
    assert names == [("demo", "demo:tiny-llama"), ("recent", str(env / "gone")),
                     ("folder", str(models / "my-llama")), ("folder", str(models / "org" / "nested")),
                     ("hf-cache", "acme/tiny-chat")]  # the dataset repo is not listed
    by_name = {e.name_or_path: e for e in entries}
    assert by_name["acme/tiny-chat"].size_bytes == 4096 + len(json.dumps(CFG))
    assert by_name["acme/tiny-chat"].note == "LlamaForCausalLM"
    assert by_name[str(models / "my-llama")].size_bytes == 1000
    assert "not found" in by_name[str(env / "gone")].note


def test_a_missing_or_broken_cache_lists_only_the_rest(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "absent"))
    assert [e.source for e in list_models()] == ["demo"]
    broken = tmp_path / "broken"
    (broken / "models--x--y" / "snapshots" / "r1").mkdir(parents=True)
    (broken / "models--x--y" / "snapshots" / "r1" / "config.json").symlink_to(broken / "nowhere")
    (broken / "not-a-repo-dir").mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(broken))
    assert [e.source for e in list_models()] == ["demo"]


def test_describe_model_reads_config_only_and_reports_problems(env):
    demo = describe_model("demo:tiny-llama")
    assert demo.params == 1_836_160 and demo.has_tokenizer and demo.problems == ()
    assert demo.layers == TINY_LLAMA_CONFIG["num_hidden_layers"] and demo.vocab_size == 4096

    good = describe_model(str(_model_dir(env / "good")))
    assert (good.architecture, good.params, good.size_on_disk_bytes, good.problems) == \
        ("LlamaForCausalLM", 2 * (36_864 + 128) + 6_400 + 64 + 6_400, 1000, ())
    cached = describe_model("acme/tiny-chat")
    assert cached.params == good.params and not cached.has_tokenizer
    assert any("no tokenizer files" in p for p in cached.problems)

    no_tok = describe_model(str(_model_dir(env / "no-tokenizer", tokenizer=False)))
    assert not no_tok.has_tokenizer and any(p.startswith("no tokenizer files in") for p in no_tok.problems)
    config_only = describe_model(str(_model_dir(env / "config-only", weights=0)))
    assert any("no weight files" in p and "estimate" in p for p in config_only.problems)

    bad = env / "bad-config"
    _model_dir(bad)
    (bad / "config.json").write_text("{ this is not json")
    broken = describe_model(str(bad))
    assert broken.params is None and any("not valid JSON" in p for p in broken.problems)
    missing = describe_model(str(env / "nowhere"))
    assert missing.params is None and any("does not exist" in p for p in missing.problems)


def test_recent_models_most_recent_first_and_survive_a_corrupt_file(env):
    assert recent_models() == []
    for name in ("a", "b", "a", "demo:tiny-llama"):
        remember_model(name)
    assert recent_models() == ["demo:tiny-llama", "a", "b"]
    (env / "config" / "recent_models.json").write_text("[broken")
    assert recent_models() == []
    remember_model("c")
    assert recent_models() == ["c"]
