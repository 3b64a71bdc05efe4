"""The set-up screens as a newcomer meets them: advice that explains itself, a GPU to plan for, the settings behind
the "Advanced" folds, no silent carry-over (a val split too big for new data, a config file that failed to load),
and a file tree that can go up. Driven with Pilot; nothing trains."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.config import DataSpec, ModelSpec, RunConfig, TrainSpec, load
from helpers_setup import isolate, make_app, screen_text, settle, wait_for, write_big_model


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    isolate(monkeypatch, tmp_path)


def flat(app) -> str:
    """The screen's text with line breaks and runs of spaces folded (where lines wrap is not the point)."""
    return " ".join(screen_text(app).split())


def alpaca_draft() -> RunConfig:
    """The app's default draft on the 999-row alpaca demo set with a val split of 16 (what these tests start from;
    the default demo trains on the 16-row identity set)."""
    from dataclasses import replace

    from tui.app import default_config

    config = default_config()
    return replace(config, data=replace(config.data, path="demo:alpaca_en", val_size=16))


def write_alpaca(path: Path, rows: int) -> Path:
    path.write_text(json.dumps([{"instruction": f"Say {i}.", "input": "", "output": f"{i}"} for i in range(rows)]))
    return path


def record_launches(app) -> list:
    """Replace the app's launch with a recorder: what would have trained, nothing trains."""
    launched: list = []
    app.launch = lambda config=None, resume_from=None: launched.append(config or app.config)
    return launched


# ------------------------------------------------------------------ 1. advice that reads right


def test_the_reason_compares_the_methods_on_this_model():
    """A 7B-class model without a GPU: the pick says what a GPU would need and why not the cheaper QLoRA / Freeze;
    the demo without a GPU: all four cost the same, so the reason says what else decides."""
    from core.resources.estimate import EstimateSettings
    from core.resources.shape import load_shape, shape_from_config
    from core.resources.recommend import recommend

    big = shape_from_config({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
                             "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
                             "num_key_value_heads": 32, "vocab_size": 32000}, "llama-7b")
    rec = recommend(big, EstimateSettings(batch_size=4, seq_len=1024, gradient_checkpointing=True), None)
    peak = {m: e.peak_gib for m, e in rec.estimates.items()}
    assert rec.method == "lora" and peak["qlora"] < peak["lora"]
    assert f"QLoRA needs less ({peak['qlora']:.1f} GiB)" in rec.reason and "costs some quality and speed" in rec.reason
    assert "plans for a GPU" in rec.reason

    demo = recommend(load_shape("demo:tiny-llama", False), EstimateSettings(batch_size=8, seq_len=128), None)
    assert demo.method == "lora" and "memory decides nothing" in demo.reason and "runs on the CPU" in demo.reason
    assert "choice here" not in demo.reason


async def test_plan_for_moves_the_recommendation_not_the_config(tmp_path):
    """No GPU here; typing 80 in "Plan for" judges the 8B model against an 80 GiB GPU, 8 against an 8 GiB one;
    the run config never changes, and a bad number is shown in place."""
    folder = write_big_model(tmp_path / "llama-8b")
    config = RunConfig(model=ModelSpec(name_or_path=str(folder)), data=DataSpec(path="demo:alpaca_en"),
                       train=TrainSpec(gradient_checkpointing=True))
    app = make_app(gpus="none", config=config, start_screen="method")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        screen = app.screen
        assert app.draft.facts().recommendation.no_gpu and "CPU: too big" in screen_text(app)
        draft = app.config

        plan = screen.query_one("#plan-gib")
        plan.value = "80"
        await wait_for(pilot, lambda: not app.draft.facts().recommendation.no_gpu, what="the plan for 80 GiB")
        big = app.draft.facts().recommendation
        assert big.free_gib == 80 and big.fit["lora"] == "fits"
        assert "Recommended for a 80 GiB GPU" in flat(app) and "CPU:" not in screen_text(app)

        plan.value = "8"
        await wait_for(pilot, lambda: app.draft.facts().recommendation.free_gib == 8, what="the plan for 8 GiB")
        small = app.draft.facts().recommendation
        assert small.fit["lora"] != "fits" and small.method != big.method
        assert "won't fit" in screen_text(app)

        plan.value = "lots"
        await wait_for(pilot, lambda: "is not a memory size" in flat(app), what="the plan error")
        assert app.plan_vram_gib == 8  # the last good plan stays
        plan.value = ""
        await wait_for(pilot, lambda: app.draft.facts().recommendation.no_gpu, what="back to this machine")
        assert "is not a memory size" not in flat(app)
        assert app.config is draft  # planning never touches the run


# ------------------------------------------------------------------ 2. settings behind the Advanced folds


async def test_data_advanced_fields_set_the_draft():
    app = make_app(start_screen="data")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        screen = app.screen
        fold = screen.query_one("#data-advanced")
        assert fold.collapsed  # the first view stays simple
        fold.collapsed = False
        await pilot.pause()
        for wid, value in (("data-text-column", "body"), ("data-label-column", "topic"),
                           ("data-system-prompt", "You are terse."), ("data-val-path", "val.json")):
            screen.query_one(f"#{wid}").value = value
        await wait_for(pilot, lambda: app.config.data.val_path == "val.json", what="the validation file")
        d = app.config.data
        assert (d.text_column, d.label_column, d.system_prompt) == ("body", "topic", "You are terse.")
        assert "from val.json" in screen_text(app)
        screen.query_one("#data-label-column").value = ""
        await wait_for(pilot, lambda: app.config.data.label_column is None, what="the label column unset")


async def test_review_advanced_fields_set_the_draft_and_show_errors():
    app = make_app(start_screen="review")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        screen = app.screen
        assert screen.query_one("#review-advanced").collapsed
        screen.query_one("#review-advanced").collapsed = False
        await pilot.pause()
        screen.query_one("#train-scheduler").value = "linear"
        screen.query_one("#train-precision").value = "fp32"
        screen.query_one("#train-warmup").value = "0.1"
        screen.query_one("#train-eval-steps").value = "5"
        screen.query_one("#train-save-steps").value = "20"
        await wait_for(pilot, lambda: app.config.train.save_steps == 20, what="the save steps")
        t = app.config.train
        assert (t.scheduler, t.precision, t.warmup_ratio, t.eval_steps) == ("linear", "fp32", 0.1, 5)
        screen.query_one("#train-warmup").value = "lots"
        await wait_for(pilot, lambda: "train.warmup_ratio" in flat(app), what="the warm-up error")
        assert app.config.train.warmup_ratio == 0.1


# ------------------------------------------------------------------ 3. no silent carry-over


async def test_a_val_split_too_big_for_the_new_data_is_flagged_with_a_value_that_fits():
    """The demo's "Val split 16" on a 20-row file would leave 4 rows to train: said in place, with a suggestion."""
    write_alpaca(Path("small.json"), 20)
    app = make_app(config=alpaca_draft(), start_screen="data")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        screen = app.screen
        assert not screen.query_one("#data-val-warning").display  # 16 of the demo's 999 rows is fine
        path = screen.query_one("#data-path")
        path.focus()
        path.value = "small.json"
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.shown is not None and screen.shown.preview is not None
                       and screen.shown.preview.rows == 20, what="the small file's preview")
        await pilot.pause()
        text = flat(app)
        assert "takes 16 of 20 rows and leaves only 4 to train" in text and "Try 2 (10%)" in text
        screen.query_one("#data-val-size").value = "2"
        await wait_for(pilot, lambda: not screen.query_one("#data-val-warning").display, what="the warning gone")
        assert app.config.data.val_size == 2


async def test_a_config_file_that_failed_to_load_blocks_launch_until_fixed():
    """`tunetui cfg/typo.yaml`: the demo stands in, Launch is refused; fixing the file and reloading it (ctrl+r)
    loads it, the banner goes and Launch works."""
    Path("cfg").mkdir()
    Path("cfg/typo.yaml").write_text("train:\n  batchsize: 8\n")
    app = make_app(config_path="cfg/typo.yaml")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        launched = record_launches(app)
        screen = app.screen
        assert "Unknown config key `train.batchsize`" in flat(app)
        assert screen.query_one("#launch").disabled
        await pilot.press("l")
        await pilot.press("enter")
        await pilot.pause()
        assert launched == [] and app.current_mode == "review"

        await pilot.press("ctrl+r")  # still broken: still refused
        await pilot.pause()
        assert app.config_error and screen.query_one("#review-config-error").display

        Path("cfg/typo.yaml").write_text("data:\n  path: demo:alpaca_en\ntrain:\n  batch_size: 2\n")
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: app.config.train.batch_size == 2, what="the fixed file")
        assert app.config == load("cfg/typo.yaml") and app.config_error is None
        assert not screen.query_one("#review-config-error").display and not screen.query_one("#launch").disabled
        await pilot.press("l")
        assert len(launched) == 1


async def test_an_edit_makes_the_stand_in_draft_the_users_own():
    """After a config file failed to load, a valid edit on any set-up screen clears the banner and Launch works."""
    Path("typo.yaml").write_text("model: [\n")
    app = make_app(config_path="typo.yaml")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        launched = record_launches(app)
        assert app.screen.query_one("#review-config-error").display
        await pilot.press("2")
        await settle(pilot)
        app.screen.query_one("#lora-r").value = "4"
        await wait_for(pilot, lambda: app.config.method.lora.r == 4, what="the new rank")
        await pilot.press("escape", "4")
        await wait_for(pilot, lambda: app.current_mode == "review", what="Review")
        await pilot.pause()
        assert not app.screen.query_one("#review-config-error").display and "could not be used" not in flat(app)
        await pilot.press("l")
        assert len(launched) == 1 and launched[0].method.lora.r == 4


# ------------------------------------------------------------------ 5. the data preview and the file tree


async def test_the_file_tree_goes_up_a_folder():
    app = make_app(start_screen="data")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        tree = app.screen.query_one("#data-tree")
        start = Path(tree.path).resolve()
        tree.focus()
        await pilot.pause()
        assert "Up a folder" in flat(app)  # the key is offered in the footer
        await pilot.press("backspace")
        await wait_for(pilot, lambda: Path(tree.path).resolve() == start.parent, what="the parent folder")
        await wait_for(pilot, lambda: any(getattr(n.data, "path", None) and Path(n.data.path).name == start.name
                                          for n in tree.root.children), what="the old folder listed")


async def test_the_up_line_above_the_tree_goes_up_too():
    app = make_app(start_screen="data")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        tree = app.screen.query_one("#data-tree")
        start = Path(tree.path).resolve()
        await pilot.click("#data-up")
        await wait_for(pilot, lambda: Path(tree.path).resolve() == start.parent, what="the parent folder")


async def test_the_preview_lights_the_trained_tokens_and_dims_the_masked_prompt():
    """In the picture the user sees (the exported screen), the response the loss trains on is bold on a tinted
    background and the masked prompt is darker than plain text; the legend names both."""
    import re

    app = make_app(config=alpaca_draft(), start_screen="data")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        svg = app.export_screenshot()
    styles = dict(re.findall(r"\.terminal-\d+-(r\d+) \{([^}]*)\}", svg))

    def text_at(start: str) -> tuple[str, float, float]:
        found = re.search(r'<text class="terminal-\d+-(r\d+)" x="([\d.]+)" y="([\d.]+)"[^>]*>' + re.escape(start),
                          svg)
        assert found, start
        return styles[found.group(1)], float(found.group(2)), float(found.group(3))

    def style_of(start: str) -> str:
        return text_at(start)[0]

    def background_of(start: str) -> str:
        """The fill of the cell rectangle under the text's first cell (the row's rect just above the baseline)."""
        _, x, y = text_at(start)
        rects = [(float(ry), fill) for fill, rx, ry in re.findall(
            r'<rect fill="(#[0-9a-f]{6})" x="([\d.]+)" y="([\d.]+)"', svg) if float(rx) == x and float(ry) < y]
        return max(rects)[1]

    def brightness(style: str) -> int:
        rgb = re.search(r"fill: #([0-9a-f]{6})", style).group(1)
        return sum(int(rgb[i:i + 2], 16) for i in (0, 2, 4))

    plain, legend_trained = style_of("999&#160;rows"), style_of("trained&#160;on")
    trained, prompt = style_of("Making&#160;crepes"), style_of("Describe&#160;a&#160;process")
    assert trained == legend_trained and "bold" in trained
    assert style_of("prompt:&#160;masked") == prompt
    assert brightness(prompt) < brightness(plain)
    assert background_of("Making&#160;crepes") != background_of("Describe&#160;a&#160;process")


async def test_review_repeats_the_val_split_warning():
    write_alpaca(Path("small.json"), 20)
    app = make_app(config=alpaca_draft(), start_screen="data")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        screen = app.screen
        screen.query_one("#data-path").value = "small.json"
        await pilot.press("slash", "enter")
        await wait_for(pilot, lambda: app.draft.facts().rows == 20, what="the small file's rows")
        await pilot.press("escape", "4")
        await wait_for(pilot, lambda: app.current_mode == "review", what="Review")
        await pilot.pause()
        assert "leaves only 4 to train" in flat(app) and "Change it on Data (3)" in flat(app)
        assert app.screen.query_one("#review-warning").display
        await pilot.press("3")
        screen.query_one("#data-val-size").value = "0"
        await wait_for(pilot, lambda: app.config.data.val_size == 0, what="no validation")
        await pilot.press("escape", "4")
        await wait_for(pilot, lambda: app.current_mode == "review", what="Review")
        await pilot.pause()
        assert not app.screen.query_one("#review-warning").display
