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
    """The screen's form fields a user can focus now (not inside a hidden group or a folded "Advanced")."""
    from textual.widget import Widget

    def shown(widget) -> bool:
        return all(node.display and node.visible for node in widget.ancestors_with_self if isinstance(node, Widget))

    return [w for w in screen.query("Input, Checkbox, Select") if w.focusable and w.id and shown(w)]


@pytest.mark.parametrize("name", ["method", "data", "review"])
async def test_enter_in_any_field_goes_on_and_changes_nothing(name):
    app = make_app(start_screen=name)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        before = app.config
        fields, keeps = [w.id for w in _fields(app.screen)], app.screen.SUBMIT_KEEPS
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


DIGITS = {name: str(n) for n, name in enumerate(SETUP_ORDER, start=1)}


def _tab_stops(screen) -> int:
    """How many Tab presses visit every widget that can take focus on the screen (capped: the Method screen's
    target list has a dozen ticks that behave alike)."""
    return min(12, len(screen.focus_chain))


@pytest.mark.parametrize("name", SETUP_ORDER)
async def test_tab_then_escape_then_a_digit_always_switches_screens(name):
    """Whatever Tab lands on (a field, a list, a fold, a button), Escape and a digit take the user to that
    screen, and nothing on the way changes the draft."""
    app = make_app(start_screen=name)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        before = app.config
        target = next(other for other in SETUP_ORDER if other != name)
        for tabs in range(1, _tab_stops(app.screen) + 1):
            app.show(name)
            await settle(pilot)
            app.screen.set_focus(None)
            await pilot.press(*["tab"] * tabs)
            focused = app.screen.focused
            await pilot.press("escape", DIGITS[target])
            await wait_for(pilot, lambda: app.current_mode == target,
                           what=f"{DIGITS[target]} after Tab x{tabs} (on {focused!r}) and Escape")
            assert app.config == before, f"Tab x{tabs} (on {focused!r}), Escape, {DIGITS[target]} changed the draft"


@pytest.mark.parametrize("name", SETUP_ORDER)
async def test_enter_three_times_then_l_after_focusing_each_field_launches_the_draft_unchanged(name):
    """The newcomer's "Enter, Enter, Enter, l" from any form field of any set-up screen: it launches, and what
    launches is the draft as it was (no checkbox toggled, no list left open, no number typed on the way)."""
    app = make_app(start_screen=name)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        before = app.config
        launched: list = []
        app.launch = lambda config=None, resume_from=None: launched.append(config or app.config) or True
        fields, keeps = [w.id for w in _fields(app.screen)], app.screen.SUBMIT_KEEPS
        assert fields, f"no fields found on {name}"
        for field_id in fields:
            app.show(name)
            await settle(pilot)
            launched.clear()
            app.screen.query_one(f"#{field_id}").focus()
            await pilot.pause()
            for _ in range(3):
                await pilot.press("enter")
                await settle(pilot)
            await pilot.press("l")
            if field_id in keeps:
                # Enter there opens the typed path (Model, Data) or saves the preset (Review): the keys go on from
                # there, and may end elsewhere than a launch; the draft is still untouched.
                await settle(pilot)
            else:
                await wait_for(pilot, lambda: bool(launched), what=f"a launch after Enter x3, l from #{field_id}")
            assert all(config == before for config in launched), f"Enter x3, l from #{field_id} changed the draft"
            assert app.config == before, f"Enter x3, l from #{field_id} changed the draft"
