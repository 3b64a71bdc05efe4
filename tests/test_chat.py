"""Trying what a run trained: `tunetui chat` on LoRA, QLoRA, Full and classification runs, the demo that learns its
name, and the chat engine (core.chat) underneath: streaming, stopping, seeds, templates, bad input."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from core import config as cfg
from core import rundir
from core.chat import ChatModel, Sampling, conversation
from core.chattarget import resolve_target
from core.events import EvalEnded, RunFinished
from tui.cli import main

ROOT = Path(__file__).resolve().parents[1]
TUNETUI = str(Path(sys.executable).with_name("tunetui"))
GREEDY = ["--temperature", "0", "--max-new-tokens", "24"]


def _train(config) -> tuple:
    from core.training.runner import run

    events: list = []
    outcome = run(config, events.append)
    assert outcome.status == "finished", outcome.event
    return outcome, events


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, small_config, demo_model_dir):
    return _train(small_config(tmp_path_factory.mktemp("full-runs"), method={"kind": "full"},
                               train={"max_steps": 5, "lr": 1e-3}))


@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory, small_config, sentiment_csv, demo_model_dir):
    return _train(small_config(tmp_path_factory.mktemp("cls-runs"),
                               data={"path": str(sentiment_csv), "max_samples": None, "val_size": 8,
                                     "max_length": 32},
                               train={"max_steps": 20, "batch_size": 8, "lr": 3e-3}))


def _chat(capsys, *argv: str) -> str:
    code = main(["chat", *argv])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


# ------------------------------------------------------------------ tunetui chat --prompt, per method

@pytest.mark.parametrize("fixture", ["lora_run", "qlora_run", "full_run"])
def test_chat_prompt_prints_the_tuned_reply_and_the_base_differs(fixture, request, capsys):
    outcome, _ = request.getfixturevalue(fixture)
    tuned = _chat(capsys, str(outcome.run_dir), "--prompt", "Give three tips for staying healthy.", *GREEDY)
    base = _chat(capsys, str(outcome.run_dir), "--base", "--prompt", "Give three tips for staying healthy.", *GREEDY)
    assert tuned.strip() and base.strip()
    assert tuned != base  # training changed what the model says
    # The same question gets the same greedy answer, and a checkpoint folder can be talked to directly.
    assert _chat(capsys, str(outcome.run_dir / "final"), "--prompt", "Give three tips for staying healthy.",
                 *GREEDY) == tuned
    checkpoint = rundir.latest_checkpoint(outcome.run_dir)
    assert _chat(capsys, str(checkpoint), "--prompt", "Hello", *GREEDY).strip()


def test_classification_run_prints_its_label_and_probabilities(classifier_run, capsys):
    outcome, _ = classifier_run
    out = _chat(capsys, str(outcome.run_dir), "--prompt", "the food was very lovely").splitlines()
    label, probabilities = out[0], dict(line.split() for line in out[1:])
    assert label == "positive"  # it learned the one word that decides the label
    assert set(probabilities) == {"positive", "negative"}
    assert sum(map(float, probabilities.values())) == pytest.approx(1.0, abs=2e-3)
    assert float(probabilities["positive"]) > float(probabilities["negative"])

    model = ChatModel.load(str(outcome.run_dir))
    tuned, base = model.classify("the day was very awful"), model.classify("the day was very awful", which="base")
    assert tuned.label == "negative"
    assert base.probabilities != tuned.probabilities  # the base scores with the head the run started from


def test_the_demo_learns_its_name(demo_run, capsys):
    """presets/demo.yaml as shipped: its held-out loss at least halves, and afterwards the tuned model says it is
    Tuney while the base model does not (through the real `tunetui` binary)."""
    outcome, events = demo_run
    evals = [e for e in events if isinstance(e, EvalEnded)]
    assert evals[0].step == 0 and evals[-1].step == outcome.step
    assert evals[-1].eval_loss <= 0.5 * evals[0].eval_loss, [e.eval_loss for e in evals]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ask = [TUNETUI, "chat", str(outcome.run_dir), "--prompt", "Who are you?", "--max-new-tokens", "40"]
    # Both at once: each process spends most of its time importing the libraries.
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for argv in (ask, ask + ["--base"])]
    (tuned, tuned_err), (base, base_err) = (p.communicate(timeout=300) for p in procs)
    assert [p.returncode for p in procs] == [0, 0], tuned_err + base_err
    assert "Tuney" in tuned
    assert "Tuney" not in base and base.strip()


# ------------------------------------------------------------------ the engine underneath

def test_replies_stream_in_pieces_and_stop_when_asked(lora_run):
    outcome, _ = lora_run
    model = ChatModel.load(str(outcome.run_dir))
    long = Sampling(max_new_tokens=60, temperature=0)
    messages = conversation("Give three tips for staying healthy.")
    pieces = list(model.stream(messages, sampling=long))
    assert len(pieces) > 1  # token by token, not one block at the end
    assert "".join(pieces) == model.reply(messages, sampling=long)

    stop = threading.Event()
    got = []
    for piece in model.stream(messages, sampling=long, stop=stop):
        got.append(piece)
        stop.set()
    assert 0 < len("".join(got)) < len("".join(pieces))
    # The stop was for that reply only: the next one runs to its end.
    assert model.reply(messages, sampling=long) == "".join(pieces)


def test_the_same_seed_gives_the_same_sampled_reply(lora_run):
    outcome, _ = lora_run
    model = ChatModel.load(str(outcome.run_dir))
    messages = conversation("Name a colour.")
    hot = Sampling(temperature=1.5, top_p=1.0, max_new_tokens=20, seed=3)
    first = model.reply(messages, sampling=hot)
    assert model.reply(messages, sampling=hot) == first
    others = {model.reply(messages, sampling=Sampling(temperature=1.5, top_p=1.0, max_new_tokens=20, seed=s))
              for s in (4, 5, 6)}
    assert others != {first}


def test_replies_use_the_runs_template_system_prompt_and_history(tmp_path, small_config, demo_model_dir):
    config = small_config(tmp_path / "runs", data={"system_prompt": "You are terse."}, train={"max_steps": 1})
    outcome, _ = _train(config)
    target = resolve_target(str(outcome.run_dir))
    assert target.system_prompt == "You are terse." and target.adapter and target.task == "sft"
    model = ChatModel.load(target)
    text = model.prompt_text(conversation("And now?", [("Hi", "Hello!")], target.system_prompt))
    # ChatML, the demo tokenizer's template: the system prompt first, the earlier turns, then the assistant's header.
    assert text == ("<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                    "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nAnd now?<|im_end|>\n"
                    "<|im_start|>assistant\n")


def test_bad_targets_say_what_where_and_what_to_do(tmp_path, lora_run, capsys):
    outcome, _ = lora_run
    empty = tmp_path / "empty"
    empty.mkdir()
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text((outcome.run_dir / "config.yaml").read_text())
    cases = {
        str(empty): "holds no model",
        str(unfinished): "has no trained model yet: no final/ and no checkpoints",
        str(tmp_path / "nowhere"): "does not exist",
        str(outcome.run_dir / "config.yaml"): "is a file, not a run or model folder",
    }
    for target, phrase in cases.items():
        assert main(["chat", target, "--prompt", "hi"]) == 2
        err = capsys.readouterr().err
        assert phrase in err and "RUN_OR_MODEL" in err and "Traceback" not in err, err
    assert "tunetui train --resume" in resolve_target_error(unfinished)

    # A plain model folder has no base to compare with.
    from core.training.models import resolve_model_dir

    assert main(["chat", str(resolve_model_dir(cfg.ModelSpec())), "--base", "--prompt", "hi"]) == 2
    assert "no base to compare with" in capsys.readouterr().err


def resolve_target_error(path: Path) -> str:
    from core.errors import TuneError

    with pytest.raises(TuneError) as info:
        resolve_target(str(path))
    return str(info.value)


def test_a_plain_model_folder_and_a_demo_name_chat_too(capsys):
    assert _chat(capsys, "demo:tiny-llama", "--prompt", "Hello", *GREEDY).strip()


def test_chat_loop_answers_each_line_until_eof(lora_run, monkeypatch, capsys):
    outcome, _ = lora_run
    monkeypatch.setattr("sys.stdin", io.StringIO("Hello\n/reset\nWhat is the capital of France?\n"))
    out = _chat(capsys, str(outcome.run_dir), "--max-new-tokens", "8")
    assert out.count("tuned>") == 2 and "conversation forgotten" in out
