"""Finding and loading models: the built-in demo, local folders, the offline HF cache, tokenizers."""
from __future__ import annotations

import shutil

import pytest

from core.config import MethodSpec, ModelSpec
from core.errors import TuneError
from core.training.models import load_model, load_tokenizer, resolve_model_dir


def test_demo_model_is_built_once_from_a_fixed_seed(demo_model_dir, tmp_path, monkeypatch):
    weights = demo_model_dir / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert resolve_model_dir(ModelSpec("demo:tiny-llama")) == demo_model_dir
    assert weights.stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert not [p for p in demo_model_dir.parent.iterdir() if p.name.startswith(".demo-")]  # no temp dirs left

    # Another machine (another cache) gets byte-identical weights.
    monkeypatch.setenv("TUNETUI_CACHE", str(tmp_path / "elsewhere"))
    other = resolve_model_dir(ModelSpec("demo:tiny-llama"))
    assert other != demo_model_dir and other.joinpath("model.safetensors").read_bytes() == weights.read_bytes()

    model = load_model(ModelSpec(), MethodSpec(kind="lora"), "sft", device="cpu")
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.num_hidden_layers == 4
    tokenizer = load_tokenizer(ModelSpec())
    assert (tokenizer.eos_token, tokenizer.pad_token) == ("<|im_end|>", "<|pad|>")


def test_unknown_demo_name_lists_the_built_in_ones():
    with pytest.raises(TuneError, match="demo:tiny-llama"):
        resolve_model_dir(ModelSpec("demo:huge-llama"))


def test_a_hub_id_resolves_from_the_local_cache_offline(demo_model_dir, tmp_path, monkeypatch):
    import huggingface_hub.constants as hub

    # The layout huggingface_hub writes: refs/main names the snapshot that holds the files.
    repo = tmp_path / "hub" / "models--acme--tiny-chat"
    snapshot = repo / "snapshots" / "0123456789abcdef"
    shutil.copytree(demo_model_dir, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123456789abcdef")
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))

    assert resolve_model_dir(ModelSpec("acme/tiny-chat")) == snapshot
    with pytest.raises(TuneError, match="not in the local Hugging Face cache"):
        resolve_model_dir(ModelSpec("acme/other-model"))


def test_a_tokenizer_without_pad_token_pads_with_eos(demo_model_dir, tmp_path):
    import json

    folder = tmp_path / "no-pad"
    shutil.copytree(demo_model_dir, folder)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.pop("pad_token")
    config_path.write_text(json.dumps(config))
    tokenizer = load_tokenizer(ModelSpec(str(folder)))
    assert tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>"


def test_a_folder_that_is_not_a_model_is_named(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(TuneError, match="has no config.json") as info:
        resolve_model_dir(ModelSpec(str(tmp_path)))
    assert info.value.where == "model.name_or_path"


@pytest.mark.parametrize("text, hub", [
    ("gpt2", True), ("Qwen/Qwen2.5-0.5B-Instruct", True), ("a_b/c-d.e", True),
    ("./model", False), ("/models/x", False), ("~/x", False), ("a/b/c", False), ("foo--bar", False),
    ("org/.hidden", False), ("demo:tiny-llama", False), ("", False),
])
def test_a_hub_id_is_what_the_hub_accepts_and_anything_else_is_a_path(text, hub, tmp_path):
    from core.hub import is_hub_id

    assert is_hub_id(text) is hub
    if not hub and text.startswith(("./", "/", "~", "a/")):  # meant as a folder: named as one, no hub lookup
        with pytest.raises(TuneError, match="does not exist"):
            resolve_model_dir(ModelSpec(str(tmp_path / "missing") if text.startswith("/") else text))
