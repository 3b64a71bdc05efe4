"""Checkpoints survive the worst moment: a process killed mid-save (kill -9) or a disk that fills up during a save
leaves the previous checkpoint intact, --resume continues from the newest complete one, and a torn checkpoint
folder is passed over with a log line, never loaded."""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from core import rundir
from core.events import LogLine, RunFailed, RunFinished, RunStarted, StepEnded, read_events
from core.training.runner import run

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "presets" / "demo.yaml")
TUNETUI = str(Path(sys.executable).with_name("tunetui"))
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
FAST = ["--set", "data.max_length=64", "--set", "data.max_samples=24", "--set", "data.val_size=0",
        "--set", "train.eval_steps=0", "--set", "train.save_steps=2", "--set", "train.max_steps=6",
        "--set", "train.save_total_limit=3"]

# `tunetui train`, except that the save of step 4 writes part of its optimizer file and then the process is
# killed with SIGKILL (nothing of Python runs after it: no handler, no cleanup), as the OOM killer would.
KILLED_WHILE_SAVING = textwrap.dedent("""
    import os, signal, sys
    from transformers import Trainer

    original = Trainer._save_optimizer_and_scheduler

    def save(self, output_dir):
        if self.state.global_step == 4:
            with open(os.path.join(output_dir, "optimizer.pt"), "wb") as f:
                f.write(b"PK" + bytes(4096))
                f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, output_dir)

    Trainer._save_optimizer_and_scheduler = save
    from tui.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def _checkpoint_names(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / rundir.CHECKPOINTS).iterdir() if p.name.startswith("checkpoint-"))


def _digest(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_kill_9_while_saving_keeps_the_previous_checkpoint_and_resume_completes(tmp_path, demo_model_dir):
    out = tmp_path / "runs"
    killed = subprocess.run([sys.executable, "-c", KILLED_WHILE_SAVING, "train", DEMO, *FAST, "--output-dir",
                             str(out)], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    [run_dir] = list(out.iterdir())
    steps = [e.step for e in read_events(run_dir / rundir.EVENTS_FILE) if isinstance(e, StepEnded)]
    assert steps[-1] == 4  # it did die while saving step 4

    # Nothing that looks like checkpoint-4 exists (its files are in the staging folder); checkpoint-2 is whole and is
    # the resume point.
    assert _checkpoint_names(run_dir) == ["checkpoint-2"]
    assert (run_dir / rundir.CHECKPOINTS / rundir.PARTIAL_CHECKPOINT / "checkpoint-4" / "optimizer.pt").is_file()
    assert rundir.latest_checkpoint(run_dir).name == "checkpoint-2"
    assert rundir.summarize(run_dir).status == "crashed"
    before = _digest(run_dir / rundir.CHECKPOINTS / "checkpoint-2")

    resumed = subprocess.run([TUNETUI, "train", "--resume", str(run_dir)], cwd=tmp_path, env=ENV,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    log = read_events(run_dir / rundir.EVENTS_FILE)
    started = [e for e in log if isinstance(e, RunStarted)][-1]
    assert started.resumed_from.endswith("checkpoint-2")
    after_start = log[log.index(started):]
    # Why not checkpoint-4: said once, in the run's log (and so on the terminal and in the app).
    assert [e.message for e in after_start if isinstance(e, LogLine) and e.message.startswith("Skipping")] == [
        "Skipping checkpoint-4: it was still being written when its process ended, so it is not a complete "
        "checkpoint. Resuming from checkpoint-2 instead."]
    assert [e.step for e in after_start if isinstance(e, StepEnded)] == [3, 4, 5, 6]
    assert isinstance(log[-1], RunFinished) and not log[-1].stopped and log[-1].step == 6
    assert (run_dir / "final" / "adapter_model.safetensors").is_file()
    assert _checkpoint_names(run_dir) == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    assert not (run_dir / rundir.CHECKPOINTS / rundir.PARTIAL_CHECKPOINT).exists()
    assert _digest(run_dir / rundir.CHECKPOINTS / "checkpoint-2") == before  # resuming only read it


def test_a_full_disk_during_a_save_says_so_keeps_the_previous_checkpoint_and_resume_works(
        output_dir, small_config, demo_model_dir, monkeypatch):
    from transformers import Trainer

    original = Trainer._save_optimizer_and_scheduler
    intact: dict = {}

    def save(self, folder):
        if self.state.global_step == 4:
            # What the previous checkpoint holds at the moment the disk fills.
            intact.update(_digest(Path(self.args.output_dir) / "checkpoint-2"))
            with open(os.path.join(folder, "optimizer.pt"), "wb") as f:
                f.write(b"PK" + bytes(4096))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return original(self, folder)

    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", save)
    config = small_config(output_dir, train={"max_steps": 6, "save_steps": 2},
                          data={"val_size": 0, "max_samples": 16})
    events: list = []
    outcome = run(config, events.append)
    failed = events[-1]
    assert outcome.status == "failed" and isinstance(failed, RunFailed) and failed.kind == "disk_full", failed
    run_dir = outcome.run_dir
    message = failed.message
    assert message.startswith("The disk is full")
    assert str(run_dir / rundir.CHECKPOINTS / "checkpoint-4") in message  # the folder it could not write
    assert " free there" in message and "checkpoint-2, is intact" in message
    assert f"tunetui train --resume {run_dir}" in message
    assert failed.traceback is None and failed.step == 4
    assert [r.status for r in rundir.list_runs(output_dir)] == ["failed"]

    # The half-written checkpoint is gone; the previous one is untouched.
    assert _checkpoint_names(run_dir) == ["checkpoint-2"]
    assert not (run_dir / rundir.CHECKPOINTS / rundir.PARTIAL_CHECKPOINT).exists()
    assert _digest(run_dir / rundir.CHECKPOINTS / "checkpoint-2") == intact

    monkeypatch.undo()  # space was freed
    resumed: list = []
    second = run(config, resumed.append, resume_from=run_dir)
    assert second.status == "finished", second.event
    assert next(e for e in resumed if isinstance(e, RunStarted)).resumed_from.endswith("checkpoint-2")
    assert [e.step for e in resumed if isinstance(e, StepEnded)] == [3, 4, 5, 6]
    assert _checkpoint_names(run_dir) == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]


def test_a_full_disk_while_writing_final_keeps_no_half_final(output_dir, small_config, demo_model_dir,
                                                             monkeypatch):
    from transformers import PreTrainedTokenizerBase

    original = PreTrainedTokenizerBase.save_pretrained

    def save_pretrained(self, folder, *args, **kwargs):
        if "checkpoint-" in str(folder):  # checkpoints save fine; the disk fills while writing the final model
            return original(self, folder, *args, **kwargs)
        Path(folder, "tokenizer.json").write_text("{\"trunc")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(PreTrainedTokenizerBase, "save_pretrained", save_pretrained)
    outcome = run(small_config(output_dir, train={"max_steps": 2, "save_steps": 2}, data={"val_size": 0}),
                  lambda e: None)
    assert outcome.status == "failed" and outcome.event.kind == "disk_full", outcome.event
    assert str(outcome.run_dir / "final") in outcome.event.message
    assert sorted(p.name for p in outcome.run_dir.iterdir() if "final" in p.name) == []
    assert rundir.latest_checkpoint(outcome.run_dir).name == "checkpoint-2"


def test_resume_passes_over_torn_checkpoint_folders_with_a_log_line(lora_run, tmp_path, small_config):
    outcome, _ = lora_run
    run_dir = tmp_path / outcome.run_dir.name
    shutil.copytree(outcome.run_dir, run_dir)
    good = rundir.latest_checkpoint(run_dir)
    assert good.name == "checkpoint-10"
    torn = {  # what an older version, a kill mid-copy or a hand could leave, each newer than the good one
        "checkpoint-15": "adapter_model.safetensors",  # no weights
        "checkpoint-20": "trainer_state.json",  # never finished
    }
    for name, missing in torn.items():
        shutil.copytree(good, run_dir / rundir.CHECKPOINTS / name)
        (run_dir / rundir.CHECKPOINTS / name / missing).unlink()
    cut = run_dir / rundir.CHECKPOINTS / "checkpoint-25"
    shutil.copytree(good, cut)
    state = (cut / "trainer_state.json").read_text()
    (cut / "trainer_state.json").write_text(state[: len(state) // 2])  # cut short

    assert rundir.latest_checkpoint(run_dir) == good
    assert rundir.summarize(run_dir).checkpoint == good
    events: list = []
    config = rundir.load_run_config(run_dir)
    resumed = run(config, events.append, resume_from=run_dir)
    assert resumed.status == "finished", resumed.event
    assert next(e for e in events if isinstance(e, RunStarted)).resumed_from == str(good)
    warnings = [e.message for e in events if isinstance(e, LogLine) and e.message.startswith("Skipping checkpoint-")]
    assert warnings == [
        "Skipping checkpoint-15: it has no model or adapter weights, so it is not a complete checkpoint. "
        "Resuming from checkpoint-10 instead.",
        "Skipping checkpoint-20: it has no trainer_state.json, so it is not a complete checkpoint. "
        "Resuming from checkpoint-10 instead.",
        "Skipping checkpoint-25: its trainer_state.json is unreadable or cut short, so it is not a complete "
        "checkpoint. Resuming from checkpoint-10 instead.",
    ]


def test_checkpoint_problem_reads_sharded_indexes(tmp_path):
    folder = tmp_path / "checkpoint-3"
    folder.mkdir()
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 3}))
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    (folder / "model-00001-of-00002.safetensors").write_bytes(b"x")
    assert rundir.checkpoint_problem(folder) == "weight shards are missing (model-00002-of-00002.safetensors)"
    (folder / "model-00002-of-00002.safetensors").write_bytes(b"x")
    assert rundir.checkpoint_problem(folder) is None


def test_a_full_disk_outside_a_save_names_the_folder_that_was_full(output_dir, small_config, demo_model_dir,
                                                                  tmp_path, monkeypatch):
    from core.training import models

    cache = tmp_path / "cache"
    cache.mkdir()

    def load_model(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(cache / "weights.bin"))

    monkeypatch.setattr(models, "load_model", load_model)
    outcome = run(small_config(output_dir), lambda e: None)
    assert outcome.status == "failed" and outcome.event.kind == "disk_full", outcome.event
    message = outcome.event.message
    assert f"writing files to {cache} failed" in message and "No checkpoint had been written yet" in message
    assert "tunetui train " in message and "config.yaml" in message
