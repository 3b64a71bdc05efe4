"""Keys on the set-up screens: a form field never traps the user. Enter in any field goes on to the next screen,
Escape leaves a field so digits switch screens again, and none of it changes the draft; checkboxes show their state
in the glyph."""
from __future__ import annotations

import pytest
from textual.widgets import Checkbox, Input

from helpers_setup import isolate, make_app, screen_text, settle, wait_for
from tui.app import SETUP_ORDER


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    isolate(monkeypatch, tmp_path)


def _fields(screen) -> list:
    """The screen's visible form fields that Enter could act on (Selects open their list on Enter by design)."""
    return [w for w in screen.query("Input, Checkbox") if w.display and w.visible and w.focusable and w.id]


@pytest.mark.parametrize("name", ["method", "data", "review"])
async def test_enter_in_any_field_goes_on_and_changes_nothing(name):
    app = make_app(start_screen=name)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        before = app.config
        fields = [w.id for w in _fields(app.screen)]
        assert fields, f"no fields found on {name}"
        for field_id in fields:
            if field_id in getattr(app.screen, "SUBMIT_KEEPS", ()):
                continue
            app.show(name)
            await settle(pilot)
            app.screen.query_one(f"#{field_id}").focus()
            await pilot.pause()
            await pilot.press("enter")
            following = SETUP_ORDER[min(SETUP_ORDER.index(name) + 1, len(SETUP_ORDER) - 1)]
            await wait_for(pilot, lambda: app.current_mode == following, what=f"Enter in #{field_id} to go on")
            assert app.config == before, f"Enter in #{field_id} changed the draft"


async def test_escape_leaves_a_field_and_digits_switch_screens_again():
    app = make_app(start_screen="method")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        before = app.config
        rank = app.screen.query_one("#lora-r", Input)
        rank.focus()
        await pilot.pause()
        assert "Leave field" in screen_text(app)  # the footer says how out of a field
        await pilot.press("escape")
        assert app.screen.focused is None
        await pilot.press("4")
        await wait_for(pilot, lambda: app.current_mode == "review", what="4 to show Review")
        assert app.config == before and app.config.method.lora.r == before.method.lora.r


async def test_enter_three_times_then_launch_keeps_the_demo_config():
    """Focus a checkbox on Method, then Enter, Enter, Enter: the box is not toggled on the way."""
    app = make_app(start_screen="method")
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        before = app.config
        app.screen.query_one("#lora-rslora", Checkbox).focus()
        await pilot.pause()
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.current_mode == "data", what="Data")
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.current_mode == "review", what="Review")
        assert app.config == before and not app.config.method.lora.use_rslora


async def test_a_checkbox_shows_its_state_without_colour():
    app = make_app(start_screen="method")
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        box = app.screen.query_one("#lora-rslora", Checkbox)
        box.focus()
        await pilot.pause()
        assert "▐ ▌ rsLoRA" in screen_text(app).replace("\xa0", " ")
        await pilot.press("space")
        await wait_for(pilot, lambda: app.config.method.lora.use_rslora, what="space to tick rsLoRA")
        await pilot.pause()
        assert "▐X▌ rsLoRA" in screen_text(app).replace("\xa0", " ")


async def test_method_estimates_follow_a_model_changed_while_it_was_hidden(tmp_path):
    """Model → a big model → Method → Model → demo → Model → big again → Method: the cards show the big model's
    figures each time (the screen redraws on coming back, not only when it is current)."""
    from helpers_setup import write_big_model

    big = str(write_big_model(tmp_path / "big"))
    app = make_app(start_screen="model")
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)

        async def pick(name: str) -> None:
            app.show("model")
            await settle(pilot)
            assert app.screen.use_model(name)
            await settle(pilot)

        async def lora_on_method() -> float:
            app.show("method")
            await wait_for(pilot, lambda: app.draft.facts().estimates.get("lora") is not None, what="the estimates")
            peak = app.draft.facts().estimates["lora"].peak_gib
            # The facts are the draft's, ready at once: the cards must show them (a redraw on coming back).
            await wait_for(pilot, lambda: f"{peak:.1f} GiB peak" in screen_text(app), what="the cards redrawn")
            return peak

        await pick(big)
        big_peak = await lora_on_method()
        await pick("demo:tiny-llama")
        demo_peak = await lora_on_method()
        await pick("demo:tiny-llama")
        await pick(big)
        assert await lora_on_method() == big_peak > 10 * demo_peak
        assert f"{big_peak:.1f}" in screen_text(app)
