"""Snapshots of the Chat screen at 80x24 and 160x48: a LoRA run loaded, one exchange in both columns; and a
classifier's labels.

Deterministic by construction: the model is a scripted stand-in (fixed replies, fixed figures), the run folder is the
relative `runs/demo-run`, the App's sampler polls once and no real HF cache or user config is read. Regenerate with
`--snapshot-update`, then look at the SVGs before committing them.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from core import config as cfg
from core.chat import Classification
from core.chattarget import LoadEstimate, Target
from helpers_run import isolate, make_app, wait_for

REPLIES = {
    "tuned": "I am Tuney, an AI assistant developed by tunetui. How can I assist you today?",
    "base": '{"name": "arguments": "arguments": "arguments": "arguments": "arguments"',
}
ESTIMATE = LoadEstimate(bytes=7_700_000, text="~7.3 MiB (1.84 M parameters × 4 bytes)")


class ScriptedModel:
    """Stands in for core.chat.ChatModel: streams fixed replies word by word."""

    device = "cpu"
    has_base = True

    def __init__(self, target: Target) -> None:
        self.target = target

    def stream(self, messages, *, which, sampling, stop=None):
        for word in REPLIES[which].split(" "):
            yield word + " "

    def classify(self, text, *, which="tuned"):
        p = 0.93 if which == "tuned" else 0.52
        return Classification(label="positive", probabilities={"positive": p, "negative": 1 - p})

    def unload(self) -> None:
        pass


def scripted_target(task: str) -> Target:
    run = Path("runs/demo-run")
    labels = ["positive", "negative"] if task == "classification" else None
    return Target(source=str(run), model=cfg.ModelSpec(), weights=run / "final", run_dir=run,
                  config=cfg.RunConfig(), adapter=True, task=task, labels=labels)


@pytest.fixture(autouse=True)
def _deterministic(monkeypatch, tmp_path):
    restore = isolate(monkeypatch, tmp_path)
    monkeypatch.chdir(tmp_path)
    import tui.app

    monkeypatch.setattr(tui.app, "POLL_SECONDS", 3600.0)  # one poll, right after the first frame
    yield
    restore()


CASES = [("sft", (80, 24)), ("sft", (160, 48)), ("classification", (80, 24))]


@pytest.mark.parametrize("task,size", CASES, ids=[f"{task}-{w}x{h}" for task, (w, h) in CASES])
def test_chat_screen(snap_compare, monkeypatch, tmp_path, task, size):
    import tui.screens.chat as chat_screen

    monkeypatch.setattr(chat_screen, "describe_target", lambda text, device: (scripted_target(task), ESTIMATE))
    monkeypatch.setattr(chat_screen, "load_target", lambda target, progress: ScriptedModel(target))
    app = make_app(tmp_path, start_screen="runs", output_dir="runs")

    async def run_before(pilot):
        await wait_for(pilot, lambda: app.snapshot is not None, what="the first GPU sample")
        app.open_chat("runs/demo-run")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ChatScreen" and app.screen.model is not None,
                       what="the scripted model")
        screen = app.screen
        screen.query_one("#chat-prompt").value = "the movie was very good" if task != "sft" else "Who are you?"
        await pilot.press("enter")
        await wait_for(pilot, lambda: not screen.generating and screen.columns["base"].turns, what="the replies")
        for field in screen.query("Input"):
            field.cursor_blink = False  # a blinking cursor would be caught on or off depending on the machine's load
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=run_before)
