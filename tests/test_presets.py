"""Every preset in presets/ loads and validates; together they cover every method on real models."""
from __future__ import annotations

from pathlib import Path

import pytest

from core import config as cfg

PRESETS = sorted((Path(__file__).resolve().parents[1] / "presets").glob("*.yaml"))


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_loads_and_validates(path):
    config = cfg.load(path)
    stem = path.stem
    if stem != "demo":
        assert config.method.kind in stem, f"{stem} trains with {config.method.kind}"
        assert "/" in config.model.name_or_path  # a hub id
        assert config.data.max_length >= 1024 and config.train.lr <= 3e-4
        if config.method.kind == "full":
            assert config.train.lr <= 5e-5  # full fine-tuning wants a much smaller step than LoRA


def test_demo_preset_is_the_offline_lora_demo():
    config = cfg.load(Path(__file__).resolve().parents[1] / "presets" / "demo.yaml")
    assert (config.model.name_or_path, config.method.kind, config.data.path) == ("demo:tiny-llama", "lora",
                                                                                 "demo:identity")
    # Evaluated before the first step and again along the way, so the run shows its held-out loss falling.
    assert 0 < config.train.max_steps <= 200 and 0 < config.train.eval_steps < config.train.max_steps
    assert config.data.val_size >= 1


def test_presets_cover_every_method_and_the_named_models():
    configs = [cfg.load(p) for p in PRESETS]
    assert {c.method.kind for c in configs} == set(cfg.METHODS)
    models = {c.model.name_or_path for c in configs}
    for name in ("Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct", "Qwen/Qwen2.5-7B-Instruct",
                 "meta-llama/Llama-3.1-8B-Instruct", "mistralai/Mistral-7B-Instruct-v0.3"):
        assert name in models
