"""Recommender, preflight and `tunetui estimate`: the method chosen on scripted machines, the reasons, the fixes."""
import argparse
import json

import pytest

from core.config import RunConfig, with_overrides
from core.resources.estimate import EstimateSettings, estimate
from core.resources.preflight import oom_advice, preflight
from core.resources.recommend import FIT_FRACTION, recommend
from core.resources.shape import shape_from_config
from helpers_gpus import ScriptedSampler, fake_snapshot

# Llama-3.2-1B's shape: full ≈ 11.1 GiB, freeze ≈ 6.8, LoRA ≈ 6.5, QLoRA ≈ 5.8 at these settings.
L1B = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 2048, "intermediate_size": 8192,
       "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
       "tie_word_embeddings": True}
SHAPE = shape_from_config(L1B, "llama-1b")
SETTINGS = EstimateSettings(batch_size=4, seq_len=512, gradient_checkpointing=True)


@pytest.mark.parametrize("snap, rows, method, words", [
    (fake_snapshot([7]), None, "qlora", "Memory is tight"),
    (fake_snapshot([7]), 100_000, "qlora", "Memory is tight"),
    (fake_snapshot([24]), None, "lora", "usual default"),
    (fake_snapshot([24]), 100_000, "full", "enough data"),
    (fake_snapshot([80]), None, "lora", "usual default"),
    (fake_snapshot([80]), 500, "lora", "pays off with large datasets (this one has 500 rows)"),
    (fake_snapshot([24], [14]), 500, "freeze", "less likely to overfit"),  # memory partly taken: 10 GiB free
    (fake_snapshot([24], [14]), None, "lora", "usual default"),
    (fake_snapshot([24, 80], [23, 0], visible=(1,)), 100_000, "full", "80.0 GiB free"),  # the run uses GPU 1
])
def test_the_method_follows_free_memory_and_data_size(snap, rows, method, words):
    sampler = ScriptedSampler([snap])
    free = sampler.sample().free_gib()
    rec = recommend(SHAPE, SETTINGS, free, rows)
    assert (rec.method, rec.no_gpu, rec.free_gib) == (method, False, free)
    assert words in rec.reason and f"{free:.1f} GiB free" in rec.reason
    assert rec.fit[method] == "fits" and rec.estimates[method].peak_gib <= FIT_FRACTION * free


def test_no_gpu_says_so_and_what_a_gpu_would_need():
    rec = recommend(SHAPE, SETTINGS, None)
    assert rec.no_gpu and rec.free_gib is None and set(rec.fit.values()) == {"no"}  # 1.24 B: too big for a CPU
    assert rec.reason.startswith("No NVIDIA GPU found") and "too big to train on a CPU" in rec.reason
    assert f"LoRA {rec.estimates['lora'].peak_gib:.1f}" in rec.reason and "GPU with 8 GiB" in rec.reason
    tiny = recommend(shape_from_config({**L1B, "hidden_size": 128, "intermediate_size": 384,
                                        "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
                                        "vocab_size": 4096}), SETTINGS, None)
    assert tiny.method == "lora" and set(tiny.fit.values()) == {"fits"} and "runs on the CPU" in tiny.reason


def test_a_better_method_that_does_not_fit_comes_with_changes_that_make_it_fit():
    free = 7.0
    rec = recommend(SHAPE, SETTINGS, free, 1_000)
    assert rec.method == "qlora" and rec.fit["lora"] != "fits"
    lora_fixes = [s for s in rec.suggestions if s.method == "lora"]
    assert lora_fixes and all(s.fits and s.peak_gib <= FIT_FRACTION * free for s in lora_fixes)
    assert any(s.change.startswith("batch 2 × accumulation 2") for s in lora_fixes)
    for s in lora_fixes:  # each suggestion's figure is the estimator's for its settings
        assert estimate(SHAPE, s.settings).peak_gib == pytest.approx(s.peak_gib)
        assert "method.kind=lora" in s.overrides

    squeezed = recommend(SHAPE, SETTINGS.with_(gradient_checkpointing=False, seq_len=2048), 6.0)
    assert all(squeezed.fit[m] == "no" for m in squeezed.fit)
    assert squeezed.suggestions[0].fits and squeezed.suggestions[0].method == squeezed.method
    # one change is enough for Freeze (a shorter max length), and the reason names it
    first = squeezed.suggestions[0]
    assert " + " not in first.change and f"fits with {first.change}" in squeezed.reason


def _config(**sets):
    return with_overrides(RunConfig(), [f"{k}={v}" for k, v in sets.items()])


def test_preflight_warns_or_passes_and_oom_advice_names_a_cheaper_run(tmp_path):
    model = tmp_path / "llama-1b"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(L1B))
    config = _config(**{"model.name_or_path": str(model), "method.kind": "full", "data.max_length": 512,
                        "train.gradient_checkpointing": "true"})
    ok = preflight(config, fake_snapshot([80]))
    assert ok.fits is True and ok.free_gib == 80.0 and "fits" in ok.message
    too_big = preflight(config, fake_snapshot([16], [8]))
    assert too_big.fits is False and f"{too_big.estimate_gib:.1f} GiB exceeds the 8.0 GiB free" in too_big.message
    assert "Try:" in too_big.message and "--set" in too_big.message
    cpu = preflight(config, fake_snapshot())
    assert cpu.fits is None and "CPU" in cpu.message and f"{cpu.estimate_gib:.1f} GiB" in cpu.message
    assert preflight(_config(**{"train.device": "cpu"})).fits is None

    advice = oom_advice(config, fake_snapshot([12], [2]))
    assert advice.startswith("Out of memory") and "Try:" in advice
    cheaper = [float(x.split(" GiB")[0]) for x in advice.split("about ")[1:]]
    assert cheaper and max(cheaper) <= FIT_FRACTION * 10 < too_big.estimate_gib

    missing = preflight(_config(**{"model.name_or_path": str(tmp_path / "nope")}), fake_snapshot([24]))
    assert missing.fits is None and missing.estimate_gib is None and "does not exist" in missing.message


def test_estimate_command_prints_json_for_a_folder_with_only_config_json(tmp_path, capsys):
    from tui.commands import estimate as command

    (tmp_path / "config.json").write_text(json.dumps(L1B))
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args([str(tmp_path), "--vram", "24", "--gradient-checkpointing", "--max-length", "512",
                              "--json"])
    assert command.run(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert [m["method"] for m in out["methods"]] == ["full", "freeze", "lora", "qlora"]
    assert out["recommended"] == "lora" and out["free_gib"] == 24.0 and out["params"] == SHAPE.total_params
    full = out["methods"][0]
    assert full["peak_gib"] == pytest.approx(estimate(SHAPE, SETTINGS.with_(method="full")).peak_gib, abs=0.01)
    assert {"weights_gib", "trainable_state_gib", "activations_gib", "logits_gib", "overhead_gib"} <= set(full)

    args = parser.parse_args([str(tmp_path), "--method", "qlora", "--vram", "4"])
    assert command.run(args) == 0
    text = capsys.readouterr().out
    assert "QLoRA" in text and "Recommended" in text and "Full " not in text


L2_7B = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "intermediate_size": 11008,
         "num_hidden_layers": 32, "num_attention_heads": 32, "vocab_size": 32000}


def test_full_with_fsdp_over_4_gpus_when_one_gpu_is_too_small():
    shape = shape_from_config(L2_7B, "llama-2-7b")
    settings = EstimateSettings(batch_size=1, seq_len=2048, gradient_checkpointing=True)
    alone = recommend(shape, settings, 40.0, 100_000)
    assert alone.method != "full" and alone.fit["full"] == "no"
    four = recommend(shape, settings.with_(gpus=4), 40.0, 100_000)
    full = four.estimates["full"]
    assert four.method == "full" and full.strategy == "fsdp" and full.gpus == 4
    assert "FSDP over 4 GPUs" in four.reason and f"{full.peak_gib:.1f} GiB per GPU" in four.reason
    assert full.peak_gib <= FIT_FRACTION * 40.0
    # LoRA's replica fits one GPU: it stays on DDP
    assert four.estimates["lora"].strategy == "ddp"
    roomy = recommend(shape, settings.with_(gpus=4), 141.0, 100_000)
    assert roomy.method == "full" and roomy.estimates["full"].strategy == "ddp" and "DDP" in roomy.reason


def test_estimate_command_prints_per_gpu_figures_and_the_strategy(tmp_path, capsys):
    from tui.commands import estimate as command

    (tmp_path / "config.json").write_text(json.dumps(L2_7B))
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args([str(tmp_path), "--vram", "40", "--gpus", "4", "--gradient-checkpointing",
                              "--max-length", "2048", "--batch-size", "1", "--rows", "100000", "--json"])
    assert command.run(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["gpus"] == 4 and out["per_gpu"] and out["settings"]["distributed"] == "auto"
    full = out["methods"][0]
    assert full["strategy"] == "fsdp" and full["gpus"] == 4 and full["gathered_gib"] > 0
    assert out["recommended"] == "full" and "FSDP over 4 GPUs" in out["reason"]

    args = parser.parse_args([str(tmp_path), "--vram", "80", "--gpus", "2", "--distributed", "ddp",
                              "--method", "full"])
    assert command.run(args) == 0
    text = capsys.readouterr().out
    assert "free GPU memory per GPU: 80.0 GiB" in text and "Figures per GPU over 2 GPUs: Full with DDP" in text
