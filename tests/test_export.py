"""`tunetui export RUN --merge OUT`: the merged model loads with AutoModelForCausalLM (a classifier with
AutoModelForSequenceClassification) and matches base + adapter."""
from __future__ import annotations

import pytest

from tui.cli import main


def _logits_pair(run_dir, merged_dir):
    """(base + adapter as PeftModel on an unquantized base, the merged model) logits on the same tokens."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from core import rundir
    from core.training.models import resolve_model_dir

    config = rundir.load_run_config(run_dir)
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    batch = tokenizer(["Give three tips for staying healthy.", "What is the capital of France?"],
                      return_tensors="pt", padding=True)
    base = AutoModelForCausalLM.from_pretrained(resolve_model_dir(config.model))
    peft_model = PeftModel.from_pretrained(base, str(run_dir / "final")).eval()
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    with torch.no_grad():
        return peft_model(**batch).logits, merged(**batch).logits, merged


@pytest.mark.parametrize("fixture", ["lora_run", "qlora_run", "qlora8_run"])
def test_merged_model_reloads_and_matches_the_adapter(fixture, request, tmp_path, capsys):
    import torch
    from bitsandbytes.nn import Linear4bit, Linear8bitLt

    outcome, _ = request.getfixturevalue(fixture)
    out = tmp_path / "merged"
    assert main(["export", str(outcome.run_dir), "--merge", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert not (out / "adapter_config.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["merged"]  # no temp folder left beside it

    adapted, merged_logits, merged = _logits_pair(outcome.run_dir, out)
    # A QLoRA run merges into a full-precision copy of the base: no quantized layers, no quantization config.
    assert not any(isinstance(m, (Linear4bit, Linear8bitLt)) for m in merged.modules())
    assert getattr(merged.config, "quantization_config", None) is None
    assert torch.allclose(adapted, merged_logits, atol=1e-4), (adapted - merged_logits).abs().max()


def test_export_refuses_without_writing_anything(lora_run, tmp_path, capsys):
    outcome, _ = lora_run
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    assert main(["export", str(outcome.run_dir), "--merge", str(busy)]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]

    not_a_run = tmp_path / "nothing"
    not_a_run.mkdir()
    assert main(["export", str(not_a_run), "--merge", str(tmp_path / "out")]) == 2
    assert "is not a run folder" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_merged_model_is_readable_by_others_under_the_usual_umask(lora_run, tmp_path, capsys):
    import os
    import stat

    outcome, _ = lora_run
    out = tmp_path / "merged"
    old = os.umask(0o022)
    try:
        assert main(["export", str(outcome.run_dir), "--merge", str(out)]) == 0
    finally:
        os.umask(old)
    capsys.readouterr()
    for path in [out, *out.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & stat.S_IROTH and mode & stat.S_IRGRP, f"{path} is {oct(mode)}"


def _umask(mask: int):
    import contextlib
    import os

    @contextlib.contextmanager
    def scope():
        old = os.umask(mask)
        try:
            yield
        finally:
            os.umask(old)
    return scope()


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_apply_umask_opens_owner_only_files_as_far_as_the_umask_allows(tmp_path, mask, file_mode, dir_mode):
    import stat

    from core import rundir

    (tmp_path / "m" / "sub").mkdir(parents=True)
    for path in (tmp_path / "m" / "model.safetensors", tmp_path / "m" / "sub" / "x.json"):
        path.write_text("x")
        path.chmod(0o600)  # as safetensors writes it
    with _umask(mask):
        rundir.apply_umask(tmp_path / "m")
    modes = {p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.stat().st_mode)
             for p in [tmp_path / "m", *(tmp_path / "m").rglob("*")]}
    assert modes == {"m": dir_mode, "m/sub": dir_mode, "m/model.safetensors": file_mode, "m/sub/x.json": file_mode}


def test_a_runs_checkpoints_and_final_model_are_readable_by_others_under_the_usual_umask(tmp_path, small_config, demo_model_dir):
    import stat

    from core.training.runner import run

    config = small_config(tmp_path / "runs", train={"max_steps": 1, "save_steps": 1}, data={"val_size": 0})
    with _umask(0o022):
        outcome = run(config, lambda event: None)
    assert outcome.ok
    checkpoint = outcome.run_dir / "checkpoints" / "checkpoint-1"
    files = list(checkpoint.rglob("*")) + list((outcome.run_dir / "final").rglob("*"))
    assert any(p.suffix == ".safetensors" for p in files)
    for path in [checkpoint, outcome.run_dir / "final", *files]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & stat.S_IRGRP and mode & stat.S_IROTH, f"{path.name} is {oct(mode)}"


@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_a_qlora_classifier_trains_reloads_and_merges_into_a_matching_classifier(
        arch, tmp_path, small_config, sentiment_csv, tiny_bert_dir, demo_model_dir, capsys):
    import math

    import torch
    from bitsandbytes.nn import Linear4bit
    from peft import PeftModel
    from safetensors import safe_open
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from core import rundir
    from core.events import RunFinished, StepEnded
    from core.training.runner import run

    folder = tiny_bert_dir if arch == "bert" else demo_model_dir
    head = "classifier" if arch == "bert" else "score"
    config = small_config(tmp_path / "runs", model={"name_or_path": str(folder)}, method={"kind": "qlora"},
                          data={"path": str(sentiment_csv), "max_samples": None, "val_size": 0, "max_length": 32},
                          train={"max_steps": 4, "batch_size": 8, "lr": 3e-3, "save_steps": 100})
    events: list = []
    outcome = run(config, events.append)
    assert outcome.status == "finished", outcome.event
    losses = [e.loss for e in events if isinstance(e, StepEnded) and e.loss is not None]
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)
    assert isinstance(events[-1], RunFinished)
    # The adapter carries the trained head in full precision (not packed 4-bit bytes).
    with safe_open(str(outcome.final_dir / "adapter_model.safetensors"), "pt") as f:
        head_keys = [k for k in f.keys() if f".{head}." in k]
        assert head_keys and all(f.get_tensor(k).dtype == torch.float32 for k in head_keys), head_keys

    out = tmp_path / "merged"
    assert main(["export", str(outcome.run_dir), "--merge", str(out)]) == 0
    capsys.readouterr()
    labels = rundir.read_labels(out)
    assert sorted(labels) == ["negative", "positive"]

    tokenizer = AutoTokenizer.from_pretrained(outcome.final_dir)
    batch = tokenizer(["the movie was very good", "the food was very awful", "it was very lovely"],
                      return_tensors="pt", padding=True)
    base = AutoModelForSequenceClassification.from_pretrained(
        folder, num_labels=len(labels), id2label=dict(enumerate(labels)), pad_token_id=tokenizer.pad_token_id)
    adapted = PeftModel.from_pretrained(base, str(outcome.final_dir)).eval()
    merged = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert not any(isinstance(m, Linear4bit) for m in merged.modules())
    assert getattr(merged.config, "quantization_config", None) is None
    assert merged.config.id2label == dict(enumerate(labels))
    with torch.no_grad():
        want, got = adapted(**batch).logits, merged(**batch).logits
    assert torch.allclose(want, got, atol=1e-4), (want - got).abs().max()
    assert want.argmax(-1).tolist() == got.argmax(-1).tolist()


def test_a_checkpoint_cut_short_is_refused_by_name(lora_run, tmp_path, capsys):
    import shutil

    from core import rundir

    outcome, _ = lora_run
    good = rundir.latest_checkpoint(outcome.run_dir)
    torn = tmp_path / "checkpoint-99"
    shutil.copytree(good, torn)
    (torn / "adapter_model.safetensors").unlink()
    assert main(["export", str(outcome.run_dir), "--merge", str(tmp_path / "out"), "--checkpoint", str(torn)]) == 2
    err = capsys.readouterr().err
    assert "has no adapter weights: it was cut short while saving" in err and str(good) in err
    assert not (tmp_path / "out").exists()
