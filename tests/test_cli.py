"""`tunetui train / runs` as a user types them: bad input gets its message and leaves no run behind; Ctrl-C
saves a checkpoint that --resume continues; the QLoRA demo completes on CPU."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core import rundir
from core.events import RunFinished, read_events
from tui.cli import main

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "presets" / "demo.yaml")
TUNETUI = str(Path(sys.executable).with_name("tunetui"))
FAST = ["--set", "data.max_length=64", "--set", "data.max_samples=40", "--set", "data.val_size=0"]


def _write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return str(path)


def _bad_inputs(tmp: Path, demo_model_dir: Path) -> dict:
    """name -> (argv after `train`, a phrase the message must contain)."""
    no_tokenizer = tmp / "no-tokenizer"
    no_tokenizer.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(demo_model_dir / name, no_tokenizer / name)
    return {
        "missing model dir": (["--set", "model.name_or_path=/nonexistent/model"], "/nonexistent/model does not exist"),
        "model dir without tokenizer": (["--set", f"model.name_or_path={no_tokenizer}"], "has no tokenizer"),
        "hub model not cached, offline": (["--set", "model.name_or_path=someone/not-cached"],
                                          "not in the local Hugging Face cache"),
        "unknown method (blamed on the --set, not the preset's line)": (
            ["--set", "method.kind=prefix"], "`method.kind` is 'prefix', which is not a valid choice "
                                             "(--set method.kind=prefix)"),
        "missing data file": (["--set", f"data.path={tmp / 'missing.json'}"], "missing.json does not exist"),
        "empty data file": (["--set", "data.path=" + _write(tmp / "empty.json", "")], "is empty"),
        "malformed JSON": (["--set", "data.path=" + _write(
            tmp / "broken.jsonl", '{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": \n')],
            "line 2"),
        "fields of the format missing": (["--set", "data.format=alpaca", "--set", "data.path=" + _write(
            tmp / "qa.json", '[{"question": "a", "answer": "b"}]')], "`instruction`"),
        "empty classification label": (["--set", "data.path=" + _write(
            tmp / "labels.csv", "text,label\ngood film,pos\nbad film,\nfine film,neg\n")], "empty label"),
        "max_length drops every example": (["--set", "data.max_length=8"], "Every example was dropped"),
        "mistyped key": (["--set", "train.learnig_rat=1e-3"], "Unknown config key `train.learnig_rat`"),
        "mistyped section in YAML": ([], "Unknown config key `trian`"),
        "wrong type": (["--set", "train.batch_size=abc"], "`train.batch_size` must be a whole number"),
        "negative lr": (["--set", "train.lr=-1"], "the learning rate must be positive"),
        "rank 0": (["--set", "method.lora.r=0"], "the rank must be at least 1"),
    }


def test_each_bad_input_gets_its_message_and_leaves_no_run(tmp_path, demo_model_dir, capsys):
    out = tmp_path / "runs"
    typo = _write(tmp_path / "typo.yaml", "model:\n  name_or_path: demo:tiny-llama\ntrian:\n  lr: 1.0e-3\n")
    failures = []
    for name, (argv, phrase) in _bad_inputs(tmp_path, demo_model_dir).items():
        config = typo if name == "mistyped section in YAML" else DEMO
        code = main(["train", config, *argv, "--output-dir", str(out)])
        err = capsys.readouterr().err
        last = err.strip().splitlines()[-1] if err.strip() else ""
        if code != 2 or phrase not in err or not last.startswith("tunetui train: ") or "Traceback" in err:
            failures.append(f"{name}: exit {code}, stderr ends {last!r}")
        leftovers = [p.name for p in out.iterdir()] if out.exists() else []
        if leftovers:
            failures.append(f"{name}: left {leftovers}")
            shutil.rmtree(out)
    assert not failures, "\n".join(failures)


def test_qlora_without_working_bitsandbytes_is_refused(tmp_path, monkeypatch, capsys, demo_model_dir):
    # No silent fallback: with bitsandbytes unimportable a qlora run must fail, saying why.
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    monkeypatch.setitem(sys.modules, "bitsandbytes.functional", None)
    out = tmp_path / "runs"
    code = main(["train", DEMO, "--set", "method.kind=qlora", "--output-dir", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "QLoRA needs bitsandbytes" in err, err
    assert not out.exists() or not any(out.iterdir())


def test_ctrl_c_saves_a_checkpoint_then_resume_completes_the_qlora_demo(tmp_path, demo_model_dir, capsys):
    out = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([TUNETUI, "train", DEMO, "--set", "method.kind=qlora", "--set", "train.max_steps=12",
                             "--set", "train.eval_steps=0", *FAST, "--output-dir", str(out)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        log = _wait_for_step(out, proc, timeout=180)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGINT, stderr
    assert "Resume with: tunetui train --resume" in stderr and "Traceback" not in stderr
    run_dir = log.parent
    last = read_events(log)[-1]
    assert isinstance(last, RunFinished) and last.stopped and 1 <= last.step < 12
    assert rundir.latest_checkpoint(run_dir).name == f"checkpoint-{last.step}"

    # --resume alone reuses the run's config and continues to the end.
    assert main(["train", "--resume", str(run_dir)]) == 0
    capsys.readouterr()
    final = read_events(log)[-1]
    assert isinstance(final, RunFinished) and not final.stopped and final.step == 12
    config = json.loads((run_dir / "final" / "adapter_config.json").read_text())
    assert config["r"] == 16 and (run_dir / "final" / "adapter_model.safetensors").is_file()

    assert main(["runs", "--output-dir", str(out)]) == 0
    table = capsys.readouterr().out
    assert run_dir.name[:15] in table and "qlora" in table and "finished" in table and "12/12" in table


def _wait_for_step(out: Path, proc, timeout: float) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for log in out.glob("*/events.jsonl"):
            if '"event": "StepEnded"' in log.read_text(encoding="utf-8"):
                return log
        if proc.poll() is not None:
            pytest.fail(f"tunetui train ended early ({proc.returncode}): {proc.stderr.read()}")
        time.sleep(0.2)
    pytest.fail("no training step within the timeout")
