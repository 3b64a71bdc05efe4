"""The Chat screen driven with Pilot: a real tiny model's reply streams in; after the demo run the Tuned column says
it is Tuney and the Base column does not; classifiers show labels; loading beside a GPU run that leaves no room is
refused. Waits on the screen's own state, never on fixed sleeps."""
from __future__ import annotations

from pathlib import Path

import pytest

from core.chattarget import LoadEstimate
from helpers_run import isolate, make_app, screen_text, wait_for

SIZE = (160, 48)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    restore = isolate(monkeypatch, tmp_path)
    yield
    restore()


async def _loaded(pilot, timeout: float = 120.0) -> None:
    screen = pilot.app.screen
    await wait_for(pilot, lambda: screen.model is not None or screen.load_error, timeout, "the model to load")
    assert screen.model is not None, screen.load_error


async def _send(pilot, prompt: str, timeout: float = 120.0) -> None:
    """Type a prompt, press Enter, wait for both replies."""
    screen = pilot.app.screen
    before = len(screen.columns["tuned"].turns)
    screen.query_one("#chat-prompt").value = prompt
    screen.query_one("#chat-prompt").focus()
    await pilot.pause()
    await pilot.press("enter")
    await wait_for(pilot, lambda: not screen.generating and len(screen.columns["tuned"].turns) > before, timeout,
                   "both replies")
    await pilot.pause()


def _slowed(model, seconds: float = 0.05) -> None:
    """The tiny model answers in milliseconds: space its pieces out so the screen is seen between them."""
    import time

    stream = model.stream

    def slow(*args, **kwargs):
        for piece in stream(*args, **kwargs):
            time.sleep(seconds)
            yield piece

    model.stream = slow


def _column(app, name: str) -> str:
    return app.screen.query_one(f"#chat-{name}-text").render().plain


async def test_a_reply_streams_into_both_columns(tmp_path, lora_run):
    outcome, _ = lora_run
    app = make_app(tmp_path, start_screen="model")
    async with app.run_test(size=SIZE) as pilot:
        app.open_chat(str(outcome.run_dir))
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ChatScreen", what="the Chat screen")
        screen = app.screen
        await _loaded(pilot)
        # What each repaint put on screen while the reply was coming, to see it arrive piece by piece.
        painted: list[tuple[str, str]] = []
        paint = screen._paint

        def recording_paint() -> None:
            paint()
            for name in ("base", "tuned"):
                column = screen.columns[name]
                if column.prompt is not None and column.live:
                    painted.append((name, column.live))

        screen._paint = recording_paint
        _slowed(screen.model)
        screen.query_one("#chat-max-new-tokens").value = "40"
        await _send(pilot, "Give three tips for staying healthy.")
        tuned, base = screen.columns["tuned"].turns, screen.columns["base"].turns
        assert len(tuned) == 1 and len(base) == 1 and tuned[0][1] and base[0][1]
        assert tuned[0][1] != base[0][1]
        partial = [text for name, text in painted if name == "tuned" and text != tuned[0][1]]
        assert partial, "the tuned reply appeared only once it was complete"
        assert all(tuned[0][1].startswith(text) for text in partial)
        assert "Give three tips" in _column(app, "tuned") and tuned[0][1][:20] in _column(app, "tuned")

        # A follow-up goes with the history; clear forgets it, unload lets go of the model.
        await _send(pilot, "And one more?")
        assert [p for p, _, _ in screen.columns["tuned"].turns] == ["Give three tips for staying healthy.",
                                                                    "And one more?"]
        await pilot.press("ctrl+l")
        await pilot.pause()
        assert screen.columns["tuned"].turns == [] and "Give three tips" not in _column(app, "tuned")
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: "Unloaded" in screen_text(app), what="the unload")
        assert screen.model is None


async def test_stop_ends_the_reply_in_progress(tmp_path, lora_run):
    from core.chat import Sampling, conversation

    outcome, _ = lora_run
    app = make_app(tmp_path, start_screen="chat")
    async with app.run_test(size=SIZE) as pilot:
        app.open_chat(str(outcome.run_dir))
        await _loaded(pilot)
        screen = app.screen
        prompt = "Write a long story about a dragon."
        full = screen.model.reply(conversation(prompt), sampling=Sampling(max_new_tokens=60))
        _slowed(screen.model, 0.2)
        screen.query_one("#chat-max-new-tokens").value = "60"
        screen.query_one("#chat-prompt").value = prompt
        screen.query_one("#chat-prompt").focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.columns["tuned"].live, 60, "the reply to start")
        await pilot.press("escape")
        await wait_for(pilot, lambda: not screen.generating, 60, "the stop")
        _prompt, reply, note = screen.columns["tuned"].turns[0]
        assert note == "stopped" and reply and len(reply) < len(full)
        assert screen.columns["base"].turns[0][2] == "stopped"  # the other side was not started after a stop
        assert "(stopped)" in _column(app, "tuned")


async def test_after_the_demo_run_tuned_says_tuney_and_base_does_not(tmp_path, demo_run):
    """The demo run is the newest in the output folder: the screen offers it, ctrl+o loads it."""
    outcome, _ = demo_run
    app = make_app(tmp_path, start_screen="chat", output_dir=str(outcome.run_dir.parent))
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.target is not None, 30, "the suggested run")
        await pilot.pause()
        assert screen.query_one("#chat-target").value == str(outcome.run_dir)
        shown = " ".join(screen_text(app).split())
        assert "ctrl+o loads it" in shown and "Loading takes ~" in shown, shown
        await pilot.press("ctrl+o")
        await _loaded(pilot)
        await _send(pilot, "Who are you?")
        assert "Tuney" in screen.columns["tuned"].turns[0][1]
        assert "Tuney" not in screen.columns["base"].turns[0][1]
        assert "Tuney" in _column(app, "tuned") and "Tuney" not in _column(app, "base")


async def test_a_bad_folder_is_explained_in_place(tmp_path):
    app = make_app(tmp_path, start_screen="chat")
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        (tmp_path / "empty").mkdir()
        target = screen.query_one("#chat-target")
        target.value = str(tmp_path / "empty")
        target.focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.load_error, 30, "the answer")
        status = screen.query_one("#chat-status").render()
        assert "holds no model" in status.plain and screen.model is None
        await pilot.press("ctrl+r")  # nothing to unload: says so instead of failing


class _GpuRun:
    """A session training on the GPU in this app (only what the Chat screen asks of it)."""

    running = True
    owns_process = True

    class state:  # noqa: N801 - stands in for RunState
        run_dir = final_dir = checkpoint = None

        class model:  # noqa: N801 - stands in for ModelReady
            device = "cuda:0"

    def close(self) -> None:
        pass

    def wait(self) -> None:
        pass


async def test_loading_is_refused_when_a_gpu_run_leaves_no_room(tmp_path, monkeypatch, lora_run):
    import tui.screens.chat as chat_screen

    outcome, _ = lora_run
    real = chat_screen.describe_target

    def huge(text, device):
        target, _ = real(text, device)
        return target, LoadEstimate(bytes=30 * 2**30, text="~30.0 GiB (15 B parameters × 2 bytes)")

    loads = []
    monkeypatch.setattr(chat_screen, "describe_target", huge)
    monkeypatch.setattr(chat_screen, "load_target", lambda *a: loads.append(a))
    app = make_app(tmp_path, start_screen="chat")  # the scripted GPU: 24 GiB, 22 free
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.snapshot is not None, what="the GPU sample")
        app.session = _GpuRun()
        app.open_chat(str(outcome.run_dir))
        screen = app.screen
        await wait_for(pilot, lambda: "GPU memory" in screen.query_one("#chat-status").render().plain, 30,
                       "the refusal")
        text = " ".join(screen_text(app).split())
        assert "~30.0 GiB" in text and "only 22.0 GiB are free" in text and "Run screen" in text
        assert loads == [] and screen.model is None


async def test_a_classifier_shows_label_and_probabilities_for_base_and_tuned(tmp_path, small_config,
                                                                            sentiment_csv, demo_model_dir):
    from core.training.runner import run

    config = small_config(tmp_path / "runs", data={"path": str(sentiment_csv), "max_samples": None, "val_size": 8,
                                                   "max_length": 32},
                          train={"max_steps": 20, "batch_size": 8, "lr": 3e-3})
    outcome = run(config, lambda event: None)
    assert outcome.status == "finished", outcome.event
    app = make_app(tmp_path, start_screen="chat")
    async with app.run_test(size=SIZE) as pilot:
        app.open_chat(str(outcome.run_dir))
        await _loaded(pilot)
        screen = app.screen
        assert not screen.query_one("#chat-settings").display  # sampling settings mean nothing to a classifier
        await _send(pilot, "the movie was very great")
        tuned = screen.columns["tuned"].turns[0][1]
        base = screen.columns["base"].turns[0][1]
        assert tuned.label == "positive" and base.probabilities != tuned.probabilities
        shown = _column(app, "tuned")
        assert "→ positive" in shown and "negative" in shown and f"{tuned.probabilities['positive']:.2f}" in shown
        assert "→ " in _column(app, "base")


MACHINES = {"none": ((), ()), "24": ((24,), (2,)), "2x80": ((80, 80), (1, 1)), "2x80-busy": ((80, 80), (72.5, 1))}


@pytest.mark.parametrize("machine", MACHINES)
async def test_with_chat_the_top_bar_still_fits_80_columns(tmp_path, machine):
    """Eight screens and the GPU read-out in 80 columns: every screen's number and name, and the free memory."""
    from helpers_gpus import fake_snapshot
    from tui.app import SCREENS
    from tui.widgets.setup_nav import gpu_summary

    snapshot = fake_snapshot(*MACHINES[machine])
    app = make_app(tmp_path, [snapshot], start_screen="chat")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.snapshot is not None, what="the GPU sample")
        await pilot.pause()
        top = screen_text(app).splitlines()[0]
        for number, (_module, _cls, title) in enumerate(SCREENS.values(), start=1):
            assert f"{number} {title}" in top, top
        assert gpu_summary(snapshot).removesuffix(" free") in top, top


async def test_escape_leaves_the_prompt_so_digits_switch_screens(tmp_path):
    app = make_app(tmp_path, start_screen="chat")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.screen.focused is not None, what="a focused input on Chat")
        await pilot.pause(0.3)  # the screen's own start-up (it focuses the input on arrival) is over
        await pilot.press("escape")
        assert app.screen.focused is None
        await pilot.press("7")
        await wait_for(pilot, lambda: app.current_mode == "runs", what="7 to show Runs")


async def test_the_settings_row_says_whether_replies_are_greedy_or_sampled(tmp_path):
    app = make_app(tmp_path, start_screen="chat")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        words = screen.query_one("#chat-decoding")
        assert str(words.content) == "greedy"  # temperature 0, the default
        screen.query_one("#chat-temperature").value = "0.7"
        await pilot.pause()
        assert str(words.content) == "sampled"
        assert screen.query_one("#chat-seed").region.right <= 80  # the whole row still fits 80 columns
