"""The engine end to end on demo:tiny-llama (CPU): every method learns, adapters reload, stop/resume, pause."""
from __future__ import annotations

import threading
from pathlib import Path
import time

import pytest

from core import rundir
from core.control import RunControl
from core.events import (CheckpointSaved, EvalEnded, LogLine, ModelReady, RunFailed, RunFinished, RunPaused,
                         RunResumed, RunStarted, StepEnded, read_events)
from core.training.runner import run


def _losses(events) -> list[float]:
    return [e.loss for e in events if isinstance(e, StepEnded) and e.loss is not None]


def _assert_ends_once(run_dir, stopped: bool = False) -> None:
    events = read_events(run_dir / rundir.EVENTS_FILE)
    terminal = [e for e in events if isinstance(e, (RunFinished, RunFailed))]
    assert len(terminal) == 1 and terminal[0] is events[-1], [type(e).__name__ for e in events[-3:]]
    assert isinstance(events[-1], RunFinished) and events[-1].stopped is stopped


def _eval_loss_of_reloaded(outcome, config) -> float:
    """The validation loss of base + final/ adapter loaded from disk, as a user would load them (a QLoRA base
    quantized as in the run)."""
    import torch
    from peft import PeftModel

    from core.training.encode import tokenize
    from core.training.models import load_model, load_tokenizer
    from core.training.rawdata import load_raw

    tokenizer = load_tokenizer(config.model)
    prepared = tokenize(load_raw(config.data, seed=config.train.seed), tokenizer, config.data)
    base = load_model(config.model, config.method, "sft", device="cpu")
    model = PeftModel.from_pretrained(base, str(outcome.final_dir)).eval()
    if config.method.kind == "qlora":
        from bitsandbytes.nn import Linear4bit, Linear8bitLt

        linear = model.get_base_model().model.layers[0].self_attn.q_proj.base_layer
        assert isinstance(linear, Linear4bit if config.method.quant.bits == 4 else Linear8bitLt), type(linear)
    batch = prepared.collator(tokenizer)([prepared.val[i] for i in range(len(prepared.val))])
    with torch.no_grad():
        return model(**batch).loss.item()


@pytest.mark.parametrize("fixture", ["lora_run", "qlora_run", "qlora8_run"])
def test_adapter_learns_saves_and_reloads_with_the_same_outputs(fixture, request, small_config):
    outcome, events = request.getfixturevalue(fixture)
    assert outcome.status == "finished", outcome.event
    losses = _losses(events)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.05, losses
    assert (outcome.final_dir / "adapter_config.json").is_file()
    assert (outcome.final_dir / "tokenizer.json").is_file()
    _assert_ends_once(outcome.run_dir)

    # The eval at the end ran on the in-memory model; the adapter reloaded from disk must give the same loss.
    final_eval = [e for e in events if isinstance(e, EvalEnded)][-1]
    config = rundir.load_run_config(outcome.run_dir)
    reloaded = _eval_loss_of_reloaded(outcome, config)
    assert reloaded == pytest.approx(final_eval.eval_loss, abs=1e-4)
    ready = next(e for e in events if isinstance(e, ModelReady))
    assert 0 < ready.trainable_params < ready.total_params / 5
    # The log pane shows what concerns the run, not the Trainer's parting advertisement.
    assert not [e for e in events if isinstance(e, LogLine) and "Do not forget to share" in e.message]
    assert any(isinstance(e, LogLine) and e.message == f"Saved the final adapter to {outcome.final_dir}"
               for e in events)


@pytest.mark.parametrize("kind", ["full", "freeze"])
def test_full_and_freeze_learn_and_freeze_keeps_other_weights_bit_identical(kind, output_dir, small_config,
                                                                            demo_model_dir):
    from safetensors.torch import load_file

    config = small_config(output_dir, method={"kind": kind, "freeze": {"trainable_layers": 2}},
                          train={"lr": 2e-3, "max_steps": 8})
    events: list = []
    outcome = run(config, events.append)
    assert outcome.status == "finished", outcome.event
    losses = _losses(events)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.05, losses

    before = load_file(demo_model_dir / "model.safetensors")
    after = load_file(outcome.final_dir / "model.safetensors")
    assert before.keys() == after.keys()
    changed = {name for name in before if not before[name].equal(after[name])}
    if kind == "full":
        assert any(".layers.0." in n for n in changed) and "lm_head.weight" in changed
    else:  # the top two of four blocks train; blocks 0-1, embeddings, final norm and lm_head stay bit-identical
        assert changed and all(n.startswith(("model.layers.2.", "model.layers.3.")) for n in changed), changed
        assert any(n.startswith("model.layers.2.") for n in changed)
        assert any(n.startswith("model.layers.3.") for n in changed)


def test_stop_saves_a_checkpoint_and_resume_continues_from_its_step(output_dir, small_config, demo_model_dir):
    config = small_config(output_dir, train={"max_steps": 8, "save_steps": 100})
    control = RunControl()
    events: list = []

    def emit(event):
        events.append(event)
        if isinstance(event, StepEnded) and event.step == 3:
            control.stop()

    first = run(config, emit, control)
    assert first.status == "stopped" and first.step == 3, first.event
    assert rundir.latest_checkpoint(first.run_dir).name == "checkpoint-3"
    assert [r.status for r in rundir.list_runs(output_dir)] == ["stopped"]
    _assert_ends_once(first.run_dir, stopped=True)

    resumed: list = []
    second = run(config, resumed.append, resume_from=first.run_dir)
    assert second.status == "finished" and second.run_dir == first.run_dir, second.event
    started = next(e for e in resumed if isinstance(e, RunStarted))
    assert started.resumed_from.endswith("checkpoint-3")
    steps = [e.step for e in resumed if isinstance(e, StepEnded)]
    assert steps == [4, 5, 6, 7, 8]

    log = read_events(first.run_dir / rundir.EVENTS_FILE)  # one log, both sessions, in order
    assert sum(isinstance(e, RunStarted) for e in log) == 2
    assert isinstance(log[-1], RunFinished) and not log[-1].stopped
    [summary] = rundir.list_runs(output_dir)
    assert (summary.status, summary.step, summary.max_steps) == ("finished", 8, 8)
    assert summary.final_dir is not None and summary.last_loss is not None


def test_pause_blocks_between_steps_until_resumed(output_dir, small_config, demo_model_dir):
    config = small_config(output_dir, train={"max_steps": 4, "save_steps": 100})
    control = RunControl()
    events: list = []
    stamps: dict = {}

    def emit(event):
        events.append(event)
        if isinstance(event, StepEnded) and event.step == 2:
            control.pause()
            threading.Timer(1.0, control.resume).start()
        if isinstance(event, (RunPaused, RunResumed)):
            stamps[type(event).__name__] = time.monotonic()

    outcome = run(config, emit, control)
    assert outcome.status == "finished"
    names = [(type(e).__name__, getattr(e, "step", None)) for e in events
             if isinstance(e, (StepEnded, RunPaused, RunResumed))]
    assert names == [("StepEnded", 1), ("StepEnded", 2), ("RunPaused", 2), ("RunResumed", 2),
                     ("StepEnded", 3), ("StepEnded", 4)]
    assert stamps["RunResumed"] - stamps["RunPaused"] >= 0.9
    # Paused time is not training time: the step after the pause does not absorb it.
    after = next(e for e in events if isinstance(e, StepEnded) and e.step == 3)
    assert after.step_seconds < 0.9


def test_stop_without_saving_leaves_no_checkpoint(output_dir, small_config, demo_model_dir):
    config = small_config(output_dir, train={"max_steps": 6, "save_steps": 100})
    control = RunControl()

    def emit(event):
        if isinstance(event, StepEnded) and event.step == 2:
            control.stop(save=False)

    outcome = run(config, emit, control)
    assert outcome.status == "stopped" and outcome.step == 2
    assert rundir.latest_checkpoint(outcome.run_dir) is None
    events = read_events(outcome.run_dir / rundir.EVENTS_FILE)
    assert not any(isinstance(e, CheckpointSaved) for e in events)


@pytest.mark.parametrize("model", ["decoder", "bert"])
def test_classification_trains_a_head_that_predicts_labels(model, output_dir, small_config, sentiment_csv,
                                                           tiny_bert_dir, demo_model_dir):
    import json

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    name = str(tiny_bert_dir) if model == "bert" else "demo:tiny-llama"
    method = {"kind": "full"} if model == "bert" else {"kind": "lora", "lora": {"r": 8, "alpha": 16}}
    config = small_config(output_dir, model={"name_or_path": name}, method=method,
                          data={"path": str(sentiment_csv), "max_samples": None, "val_size": 0, "max_length": 32},
                          train={"max_steps": 80 if model == "bert" else 30, "batch_size": 8, "lr": 3e-3})
    events: list = []
    outcome = run(config, events.append)
    assert outcome.status == "finished", outcome.event
    ready = next(e for e in events if isinstance(e, ModelReady))
    assert any("head" in m or m == "all" for m in ready.trainable_modules), ready.trainable_modules
    labels = json.loads((outcome.final_dir / "labels.json").read_text())["labels"]
    assert sorted(labels) == ["negative", "positive"]

    tokenizer = AutoTokenizer.from_pretrained(outcome.final_dir)
    if model == "bert":
        clf = AutoModelForSequenceClassification.from_pretrained(outcome.final_dir)
    else:
        from peft import PeftModel

        base = AutoModelForSequenceClassification.from_pretrained(
            demo_model_dir, num_labels=2, id2label=dict(enumerate(labels)), pad_token_id=tokenizer.pad_token_id)
        clf = PeftModel.from_pretrained(base, str(outcome.final_dir))
    clf.eval()
    texts = ["the movie was very good", "the food was very awful", "it was very lovely", "the day was very sad"]
    want = ["positive", "negative", "positive", "negative"]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        predicted = [labels[i] for i in clf(**batch).logits.argmax(-1).tolist()]
    assert predicted == want
    if model == "bert":
        return

    # A run stopped before final/ keeps only its checkpoints, which hold no labels.json: the newest still merges
    # into a classifier that knows its label names.
    import shutil

    from core.training.export import merge_run

    checkpoint = rundir.latest_checkpoint(outcome.run_dir)
    assert rundir.read_labels(checkpoint) is None
    shutil.rmtree(outcome.final_dir)
    merged = merge_run(outcome.run_dir, output_dir / "merged", checkpoint=checkpoint)
    assert rundir.read_labels(merged) == labels
    clf = AutoModelForSequenceClassification.from_pretrained(merged).eval()
    with torch.no_grad():
        assert [labels[i] for i in clf(**batch).logits.argmax(-1).tolist()] == want


@pytest.mark.parametrize("failure", ["out_of_memory", "error"])
def test_a_failing_run_says_what_kind_of_failure_and_keeps_its_folder(failure, output_dir, small_config,
                                                                     monkeypatch, demo_model_dir):
    import torch
    from transformers import Trainer

    def train(self, *args, **kwargs):
        if failure == "out_of_memory":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(Trainer, "train", train)
    events: list = []
    outcome = run(small_config(output_dir), events.append)
    failed = events[-1]
    assert outcome.status == "failed" and isinstance(failed, RunFailed) and failed.kind == failure
    if failure == "out_of_memory":
        text = failed.message.lower()  # the out-of-memory advice (core.resources.preflight), not a traceback
        assert text.startswith("out of") and ("try" in text or "use a gpu" in text), failed.message
    else:
        assert "ZeroDivisionError: a bug" in failed.message and "ZeroDivisionError" in failed.traceback
    log = read_events(outcome.run_dir / rundir.EVENTS_FILE)
    assert isinstance(log[-1], RunFailed) and sum(isinstance(e, (RunFailed, RunFinished)) for e in log) == 1
    [summary] = rundir.list_runs(output_dir)
    assert summary.status == "failed" and summary.message == failed.message


def test_list_runs_survives_torn_logs_and_tells_running_from_crashed(tmp_path):
    import json
    import os
    import socket
    import subprocess
    import sys

    from core import config as cfg

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    root = tmp_path / "runs"

    def make(name, started_at, pid, *, torn=False):
        folder = root / name
        folder.mkdir(parents=True)
        cfg.save(cfg.RunConfig(), folder / rundir.CONFIG_FILE)
        events = [RunStarted(run_id=name, run_dir=str(folder), config={}, time=started_at),
                  StepEnded(step=3, max_steps=10, epoch=0.1, loss=2.5, time=started_at + 1)]
        text = "".join(e.to_json() + "\n" for e in events) + ('{"event": "StepEnded", "st' if torn else "")
        (folder / rundir.EVENTS_FILE).write_text(text)
        (folder / rundir.PID_FILE).write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))

    make("older-crashed", 1000.0, dead.pid, torn=True)  # its process is gone and no final event was written
    make("newer-running", 2000.0, os.getpid())
    broken = root / "broken"
    broken.mkdir()
    (broken / rundir.CONFIG_FILE).write_text("model: [unclosed\n")

    runs = {r.run_id: r for r in rundir.list_runs(root)}
    # The live run first; then newest first (the broken folder's time is its mtime: now).
    assert [r.run_id for r in rundir.list_runs(root)] == ["newer-running", "broken", "older-crashed"]
    assert (runs["older-crashed"].status, runs["older-crashed"].step, runs["older-crashed"].last_loss) == (
        "crashed", 3, 2.5)
    assert runs["newer-running"].status == "running" and runs["newer-running"].model == "demo:tiny-llama"
    assert runs["broken"].status == "crashed" and runs["broken"].model == "?"


def test_strict_refuses_a_run_the_memory_preflight_says_will_not_fit(output_dir, small_config, monkeypatch):
    from core.resources import preflight as pf

    verdict = pf.Preflight(estimate_gib=30.0, free_gib=8.0, fits=False, message="needs about 30 GiB, 8 GiB free")
    monkeypatch.setattr(pf, "preflight", lambda config, snapshot=None: verdict)
    events: list = []
    outcome = run(small_config(output_dir), events.append, strict=True)
    assert outcome.status == "failed" and events[-1].kind == "user_error"
    assert "needs about 30 GiB, 8 GiB free" in events[-1].message
    assert not output_dir.exists() or not any(output_dir.iterdir())


def test_a_finished_run_leaves_no_model_behind(output_dir, small_config, demo_model_dir, monkeypatch):
    # The app runs one training after another in one process: each run's model (and its GPU memory) must be freed
    # when the run ends, although the runner freezes the garbage collector's view of it during training. Hooks
    # and wrappers can put a model in a reference cycle, which only the collector frees: this one is given one.
    import weakref

    from core.training import models

    loaded = []
    load_model = models.load_model

    def tracked(*args, **kwargs):
        model = load_model(*args, **kwargs)
        model.__dict__["cycle"] = model
        loaded.append(weakref.ref(model))
        return model

    monkeypatch.setattr(models, "load_model", tracked)
    outcome = run(small_config(output_dir, train={"max_steps": 2}), lambda event: None)
    assert outcome.status == "finished", outcome.event
    assert len(loaded) == 1 and loaded[0]() is None


def test_periodic_evaluation_starts_from_the_base_models_loss(output_dir, small_config):
    config = small_config(output_dir, data={"path": "demo:identity"}, train={"max_steps": 10, "eval_steps": 5})
    events: list = []
    outcome = run(config, events.append)
    assert outcome.status == "finished", outcome.event
    evals = [(e.step, e.eval_loss) for e in events if isinstance(e, EvalEnded)]
    assert [step for step, _ in evals] == [0, 5, 10]
    assert evals[-1][1] < evals[0][1]  # the chart's first point is the untrained model, so the drop shows


def test_classification_metrics_by_hand():
    from core.training.metrics import classification_metrics

    # 3 classes; truth 0,0,1,1,2 predicted 0,1,1,1,0 (class 2 never predicted).
    logits = [[9, 0, 0], [0, 9, 0], [0, 9, 0], [0, 9, 0], [9, 0, 0]]
    got = classification_metrics(logits, [0, 0, 1, 1, 2])
    assert got["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert got["accuracy"] == pytest.approx(3 / 5)
    # F1 per class: 0 -> 2*1/(2+2)=0.5, 1 -> 2*2/(2+3)=0.8, 2 -> 0: mean 0.4333.
    assert got["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_classification_evaluations_report_accuracy_macro_f1_and_a_confusion_matrix(output_dir, small_config,
                                                                                   sentiment_csv):
    config = small_config(output_dir, model={"name_or_path": "demo:tiny-llama"},
                          method={"kind": "lora", "lora": {"r": 8, "alpha": 16}},
                          data={"path": str(sentiment_csv), "max_samples": None, "val_size": 8, "max_length": 32},
                          train={"max_steps": 20, "batch_size": 8, "lr": 3e-3, "eval_steps": 10})
    outcome = run(config, lambda e: None)
    assert outcome.status == "finished", outcome.event
    evals = [e for e in read_events(outcome.run_dir / rundir.EVENTS_FILE) if isinstance(e, EvalEnded)]
    assert evals and all({"accuracy", "macro_f1"} <= set(e.metrics) for e in evals)
    last = evals[-1]
    assert 0.0 <= last.metrics["macro_f1"] <= 1.0
    assert len(last.confusion_matrix) == 2 and sum(map(sum, last.confusion_matrix)) == 8
    summary = rundir.summarize(outcome.run_dir)
    assert summary.eval_metrics["accuracy"] == last.metrics["accuracy"]
    assert sorted(summary.labels) == ["negative", "positive"]


@pytest.mark.parametrize("kind", ["freeze", "lora"])
def test_checkpointed_backward_recomputes_only_blocks_that_need_gradients(kind, output_dir, small_config,
                                                                         demo_model_dir, monkeypatch):
    """Freeze top-1 under gradient checkpointing: the three frozen blocks below run once a step (backward stops
    at the trained block), the trained one twice (forward + recomputation). LoRA trains every block: all twice."""
    from core import methods

    calls: dict[int, int] = {}
    method = methods.get(kind)
    prepare = method.prepare

    def counting_prepare(model, spec, task, **kw):
        from core.training.anatomy import find_blocks

        model, described = prepare(model, spec, task, **kw)
        index = {id(block.mlp): i for i, block in enumerate(find_blocks(model)[1])}
        mlp_class = type(find_blocks(model)[1][0].mlp)
        forward = mlp_class.forward

        # Patched on the class: module hooks do not fire when checkpointing recomputes a block.
        def counting_forward(self, *args, **kwargs):
            if self.training and id(self) in index:  # not the evaluation's forwards
                calls[index[id(self)]] = calls.get(index[id(self)], 0) + 1
            return forward(self, *args, **kwargs)

        monkeypatch.setattr(mlp_class, "forward", counting_forward)
        return model, described

    monkeypatch.setattr(method, "prepare", counting_prepare)
    config = small_config(output_dir, method={"kind": kind, "freeze": {"trainable_layers": 1}},
                          train={"max_steps": 3, "gradient_checkpointing": True, "eval_steps": 0})
    outcome = run(config, lambda event: None)
    assert outcome.status == "finished", outcome.event
    per_step = {i: n / 3 for i, n in sorted(calls.items())}
    assert per_step == ({0: 1, 1: 1, 2: 1, 3: 2} if kind == "freeze" else {0: 2, 1: 2, 2: 2, 3: 2}), per_step


def test_a_bad_data_file_fails_before_the_engine_imports(tmp_path, demo_model_dir):
    """A bad row is reported before the engine's imports (peft and the Trainer take seconds on a small machine);
    a good file goes on to train."""
    import json
    import subprocess
    import sys

    rows = [{"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(20)]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(rows[:5] + [{"instruction": "q", "input": "", "output": 7}] + rows[5:]))
    good = tmp_path / "good.json"
    good.write_text(json.dumps(rows))
    script = (
        "import sys\n"
        "from core import config as cfg\n"
        "from core.training.runner import run\n"
        "c = cfg.from_dict({'method': {'kind': sys.argv[2]}, 'data': {'path': sys.argv[1], 'val_size': 0},\n"
        "    'train': {'max_steps': 1, 'batch_size': 2}, 'output': {'dir': sys.argv[3]}})\n"
        "outcome = run(c, lambda e: None)\n"
        "print(outcome.status, 'peft' in sys.modules, 'transformers.trainer' in sys.modules)\n")

    def check(path, kind):
        result = subprocess.run([sys.executable, "-c", script, str(path), kind, str(tmp_path / "runs")],
                                capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[1])
        return result.stdout.split()[-3:]

    assert check(bad, "lora") == ["failed", "False", "False"]
    assert check(good, "lora") == ["finished", "True", "True"]


def test_padding_free_runs_report_no_padding_and_auto_pads_on_the_cpu(output_dir, small_config, demo_model_dir):
    from core.events import DataReady

    shares = {}
    for setting in (True, "auto"):
        events: list = []
        config = small_config(output_dir, data={"padding_free": setting}, train={"max_steps": 2, "eval_steps": 0})
        outcome = run(config, events.append)
        assert outcome.status == "finished", outcome.event
        shares[setting] = next(e for e in events if isinstance(e, DataReady)).token_stats["padding"]
    assert shares[True] == 0.0 and shares["auto"] > 0  # the demo's rows differ in length: padded batches pad


def test_the_flops_a_run_records_are_the_trainers_own_counted_once(tmp_path, demo_model_dir, monkeypatch):
    """trainer_state.json's total_flos (what the Hub's tools read) follows the Trainer's formula, while the model's
    parameters are counted once per run rather than at every step."""
    import torch
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    from core.training.guard import GuardedTrainer

    model = AutoModelForCausalLM.from_pretrained(demo_model_dir)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    ours, theirs = GuardedTrainer(model=model, args=args), Trainer(model=model, args=args)
    batch = {"input_ids": torch.ones(4, 32, dtype=torch.long), "labels": torch.ones(4, 32, dtype=torch.long)}
    counted = []
    real = type(model).num_parameters
    monkeypatch.setattr(type(model), "num_parameters", lambda self, **kw: counted.append(kw) or real(self, **kw))
    assert [ours.floating_point_ops(batch) for _ in range(5)] == [theirs.floating_point_ops(batch)] * 5
    assert len(counted) == 2  # ours once, the Trainer's once
