"""The App shell and the set-up screens (Model, Method, Data, Review), driven with Pilot; no training happens here."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from core.config import DataSpec, ModelSpec, RunConfig, TrainSpec, load, replace
from tui.app import default_config
from helpers_setup import isolate, make_app, screen_text, settle, wait_for, write_big_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    isolate(monkeypatch, tmp_path)


class RecordingSession:
    """Stands in for the TrainingSession where a test must not train: records what the App asks of it."""

    owns_process = True  # a run trained by this app, not one followed from another process

    def __init__(self, running: bool = False) -> None:
        self.running = running
        self.started: list = []
        self.stops: list[bool] = []

    def start(self, config, resume_from=None):
        self.started.append((config, resume_from))

    def stop(self, save=True):
        self.stops.append(save)
        self.running = False  # the training thread saw the flag, wrote its checkpoint and ended

    def wait(self, timeout=None):
        return True

    def handle(self, event):
        pass

    def close(self):
        pass


# ------------------------------------------------------------------ start-up


def test_the_app_opens_on_the_demo_preset():
    """The draft the app starts with is presets/demo.yaml, so Enter-Enter-Enter-Launch trains it."""
    assert default_config() == load(ROOT / "presets" / "demo.yaml")


def test_first_frame_loads_no_training_libraries(tmp_path):
    """`tunetui` paints before torch & co are imported: the Model screen comes up, lists models and describes the
    demo without any of them (they load only when needed, in workers)."""
    script = textwrap.dedent(f"""
        import asyncio, sys
        sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'tests')!r}]
        from helpers_setup import make_app, settle
        HEAVY = ("torch", "transformers", "peft", "bitsandbytes", "datasets")

        async def main():
            app = make_app()
            async with app.run_test(size=(80, 24)) as pilot:
                first = sorted(m for m in HEAVY if m in sys.modules)
                await settle(pilot)
                print(type(app.screen).__name__, first)

        asyncio.run(main())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[0] == "ModelScreen"
    assert out.stdout.strip().endswith("[]"), out.stdout


async def test_enter_enter_enter_launch_trains_the_demo():
    """Enter on Model, Method and Data, then Enter on Review's focused Launch button starts the demo run."""
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        started = []
        app.session.start = lambda config, resume_from=None: started.append((config, resume_from))
        await settle(pilot)
        for expected in ("MethodScreen", "DataScreen", "ReviewScreen"):
            await pilot.press("enter")
            await wait_for(pilot, lambda: type(app.screen).__name__ == expected, what=expected)
        assert app.focused.id == "launch"
        await pilot.press("enter")
        await wait_for(pilot, lambda: started, what="the launch")
        config, resume_from = started[0]
        assert (config.model.name_or_path, config.method.kind, config.data.path) == \
            ("demo:tiny-llama", "lora", "demo:identity")
        assert config.output.dir == "runs" and resume_from is None
        assert app.current_mode == "run"


async def test_number_keys_and_palette_reach_every_screen():
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("4")
        assert type(app.screen).__name__ == "ReviewScreen"
        await wait_for(pilot, lambda: "l Launch" in screen_text(app), what="the Review screen's keys")
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for title in ("Go to Model", "Go to Method", "Go to Data", "Go to Review", "Go to Run", "Go to Monitor",
                      "Go to Runs", "Launch", "Save preset"):
            assert title in titles
        await pilot.press("1")
        assert type(app.screen).__name__ == "ModelScreen"


# ------------------------------------------------------------------ Model and Method


async def test_a_typed_model_folder_shows_its_problems_and_what_fits_on_24_gib(tmp_path):
    """An 8B config with no weights and no tokenizer: the Model screen says so in place. On one 24 GiB GPU nothing
    fits at batch 4 x 1024 tokens, and the Method screen says what would; ticking gradient checkpointing makes
    QLoRA fit at once (Full still won't), and the recommendation follows."""
    folder = write_big_model(tmp_path / "llama-8b")
    config = RunConfig(data=DataSpec(path="demo:alpaca_en", max_length=1024), train=TrainSpec(batch_size=4))
    app = make_app(config=config)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("slash")
        app.screen.query_one("#model-path").value = str(folder)
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.config.model.name_or_path == str(folder), what="the typed model")
        await settle(pilot)
        text = " ".join(screen_text(app).split())
        assert "LlamaForCausalLM" in text and "Layers 32" in text and "Vocab 128,256" in text
        assert "Problems" in text and "no tokenizer files" in text and "no weight files" in text

        await pilot.press("2")
        await settle(pilot)
        rec = app.draft.facts().recommendation
        assert set(rec.fit.values()) == {"no"}
        text = " ".join(screen_text(app).split())
        assert text.count("won't fit") == 4 and "Nothing fits in 22.0 GiB free" in text
        assert "QLoRA with gradient checkpointing" in text  # what would make it fit, with its estimate

        app.screen.query_one("#mem-gc").value = True
        await wait_for(pilot, lambda: app.config.train.gradient_checkpointing, what="gradient checkpointing")
        rec = app.draft.facts().recommendation
        assert rec.fit["full"] == "no" and rec.fit["qlora"] == "fits" and rec.fit[rec.method] == "fits"
        card = lambda method: app.screen.query_one(f"#card-{method}").render().plain  # noqa: E731
        assert "won't fit" in card("full") and "fits" in card("qlora") and "won't" not in card("qlora")
        text = screen_text(app)
        assert f"{['Full', 'Freeze', 'LoRA', 'QLoRA'][['full', 'freeze', 'lora', 'qlora'].index(rec.method)]} ★" \
            in text
        assert "Recommended:" in text


async def test_method_settings_validate_and_move_the_estimate_at_once(tmp_path):
    folder = write_big_model(tmp_path / "llama-8b")
    config = RunConfig(model=ModelSpec(name_or_path=str(folder)), data=DataSpec(path="demo:alpaca_en"),
                       train=TrainSpec(gradient_checkpointing=True))
    app = make_app(config=config, start_screen="method")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        screen = app.screen
        before = app.draft.facts().estimates["lora"].peak_gib
        assert f"{before:.1f} GiB peak" in screen_text(app)

        screen.query_one("#lora-r").value = "256"
        await wait_for(pilot, lambda: app.config.method.lora.r == 256, what="rank 256")
        after = app.draft.facts().estimates["lora"].peak_gib
        assert after > before and f"{after:.1f} GiB peak" in screen_text(app)

        screen.query_one("#lora-r").value = "0"
        await wait_for(pilot, lambda: "`method.lora.r` is 0" in screen_text(app), what="the rank error")
        assert app.config.method.lora.r == 256

        # Untick every target but q_proj and v_proj: the draft names them and the estimate drops.
        targets = screen.query_one("#lora-targets")
        for name in ("k_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
            targets.deselect(name)
        await wait_for(pilot, lambda: app.config.method.lora.target_modules == ("q_proj", "v_proj"),
                       what="two targets")

        screen.query_one("#method-cards").focus()
        await pilot.press("right")  # LoRA -> QLoRA
        await wait_for(pilot, lambda: app.config.method.kind == "qlora", what="QLoRA")
        four_bit = app.draft.facts().estimates["qlora"].peak_gib
        screen.query_one("#quant-bits").value = 8
        await wait_for(pilot, lambda: app.config.method.quant.bits == 8, what="8-bit")
        assert app.draft.facts().estimates["qlora"].peak_gib > four_bit
        assert screen.query_one("#group-quant").display and not screen.query_one("#group-freeze").display


async def test_without_a_gpu_the_method_screen_says_so():
    app = make_app(gpus="none", start_screen="method")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        text = screen_text(app)
        assert "no GPU" in text and "CPU: ok" in text and "No NVIDIA GPU found" in " ".join(text.split())
        assert app.draft.facts().recommendation.no_gpu


# ------------------------------------------------------------------ Review


async def test_review_saves_a_preset_that_reopens_with_its_command_line(tmp_path):
    app = make_app(start_screen="review")
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        lr = app.screen.query_one("#train-lr")
        lr.value = "5e-5"
        await wait_for(pilot, lambda: app.config.train.lr == 5e-5, what="the new learning rate")
        app.screen.query_one("#review-yaml").scroll_end(animate=False)
        await pilot.pause()
        assert "lr: 5.0e-05" in screen_text(app)  # the YAML follows the form
        app.screen.query_one("#preset-path").value = "presets/mine.yaml"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: Path("presets/mine.yaml").is_file(), what="the saved preset")
        assert load("presets/mine.yaml") == app.config
        assert "tunetui train presets/mine.yaml" in screen_text(app)

        app.screen.query_one("#train-batch-size").value = "16"
        await wait_for(pilot, lambda: app.config.train.batch_size == 16, what="the new batch size")
        assert "tunetui train presets/mine.yaml --set train.batch_size=16" in screen_text(app)

    reopened = make_app(config_path="presets/mine.yaml")
    async with reopened.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        assert type(reopened.screen).__name__ == "ReviewScreen"
        assert reopened.config.train.lr == 5e-5 and reopened.config.train.batch_size == 8


async def test_review_shows_a_bad_value_and_a_bad_config_file_in_place(tmp_path):
    Path("bad.yaml").write_text("model:\n  name_or_path: demo:tiny-llama\ntrain:\n  batchsize: 8\n")
    app = make_app(config_path="bad.yaml")
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        text = screen_text(app)
        assert "Unknown config key `train.batchsize`" in text and "line 4" in text
        assert "train.batch_size" in text  # the suggestion
        app.screen.query_one("#train-lr").value = "-1"
        await wait_for(pilot, lambda: "`train.lr` is -1.0" in screen_text(app), what="the lr error")
        assert app.config.train.lr == 1e-2  # the draft keeps the last good value
        app.session = RecordingSession()
        await pilot.press("l")
        assert app.session.started == []  # no launch with a setting shown as wrong
        assert "ctrl+s saves tunetui-run.yaml" in screen_text(app)  # never over the user's broken file


# ------------------------------------------------------------------ Data


async def test_data_preview_detects_the_format_and_counts_what_max_length_cuts():
    # The alpaca demo (999 rows, some long answers), not the default identity demo (16 short rows): it has rows
    # for max_length to cut.
    draft = default_config()
    app = make_app(start_screen="data", config=replace(draft, data=replace(draft.data, path="demo:alpaca_en")))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        screen = app.screen
        preview = screen.shown.preview
        assert preview.format == "alpaca"
        text = screen_text(app)
        assert "detected: alpaca" in text and "999 rows" in text
        assert "<|im_start|>assistant" in text  # the examples as the model sees them (ChatML template)
        # trained-on tokens are the responses, ending with EOS (unless max_length cut them)
        assert [seg[1] for seg in preview.examples[1]] == [False, True, False]
        assert preview.examples[1][1][0].endswith("<|im_end|>")

        async def preview_at(max_length: int) -> dict:
            screen.query_one("#data-max-length").value = str(max_length)
            await wait_for(pilot, lambda: screen_ready_preview(screen, max_length),
                           what=f"the preview at max_length {max_length}")
            await pilot.pause()  # let it paint
            stats = screen.shown.preview.stats
            shown = str(screen.query_one("#data-stats").render())
            assert f"max_length {max_length} truncates {stats['truncated']}, drops {stats['dropped']}" in shown
            return stats

        assert (await preview_at(2048))["truncated"] == 0
        stats = await preview_at(256)  # the demo preset's limit: long answers are cut
        assert stats["truncated"] > 0 and stats["dropped"] == 0
        assert (await preview_at(16))["dropped"] > 0  # prompts longer than the limit can't train at all

        screen.query_one("#data-val-size").value = "0.1"
        await wait_for(pilot, lambda: "100 rows" in screen_text(app), what="the validation rows")
        assert app.config.data.val_size == 0.1


def screen_ready_preview(screen, max_length: int) -> bool:
    return screen.shown is not None and screen.shown.key == screen.wanted and screen.wanted[3] == max_length


async def test_data_file_picker_and_a_missing_file():
    app = make_app(start_screen="data")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        screen = app.screen
        path = screen.query_one("#data-path")
        path.focus()
        path.value = "nope.json"
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.shown is not None and screen.shown.error is not None
                       and screen.shown.key[1] == "nope.json", what="the missing-file error")
        assert "nope.json does not exist" in screen.shown.error
        # Shown where the preview goes. Asked of the widget, not of the screen: where the sentence wraps depends on
        # the length of the absolute path in it (pytest's temp folder), and a wrapped line carries border glyphs.
        examples = screen.query_one("#data-examples")
        assert examples.region.area > 0
        assert "does not exist (data.path)" in str(examples.content)

        tree = screen.query_one("#data-tree")
        tree.focus()
        await pilot.press("down", "enter")  # the tree's first entry: the data file in the working folder
        await wait_for(pilot, lambda: app.config.data.path == "alpaca_en_demo.json", what="the picked file")
        await wait_for(pilot, lambda: screen.shown is not None and screen.shown.preview is not None
                       and screen.shown.key[1] == "alpaca_en_demo.json", what="the picked file's preview")
        assert "detected: alpaca" in screen_text(app)


# ------------------------------------------------------------------ leaving


async def test_quit_during_a_run_asks_then_stops_with_a_checkpoint():
    app = make_app(start_screen="review")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        session = app.session = RecordingSession(running=True)
        await pilot.press("ctrl+q")
        await wait_for(pilot, lambda: "A run is going. Stop it (saving a checkpoint)" in screen_text(app),
                       what="the question")
        await pilot.press("n")
        assert session.stops == [] and app.is_running
        await pilot.press("ctrl+q")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ConfirmScreen", what="the question")
        await pilot.press("y")
        await wait_for(pilot, lambda: not app.is_running, what="the app to exit")
    assert session.stops == [True]


async def test_quit_during_a_run_offers_detach():
    """The quit question's third answer: d saves a checkpoint, closes the app and leaves the run to a background
    process (main starts it once the app is gone; tests/test_tmux.py follows one to its last step)."""
    from tui.session import RunState

    app = make_app(start_screen="review")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        session = app.session = RecordingSession(running=True)
        session.state = RunState(status="running", run_dir="runs/r-live")
        await pilot.press("ctrl+q")
        await wait_for(pilot, lambda: "Detach" in screen_text(app), what="the question with its detach answer")
        await pilot.press("d")
        await wait_for(pilot, lambda: not app.is_running, what="the app to exit")
    assert session.stops == [True] and app.detach_run == "runs/r-live"


async def test_hang_up_leaves_the_ui_and_the_run_training():
    """A dropped SSH connection closes the UI but does not stop the run (it trains on headless; tests/test_tmux.py
    follows it to its last step)."""
    app = make_app(start_screen="review")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        session = app.session = RecordingSession(running=True)
        app.hang_up()
        await wait_for(pilot, lambda: not app.is_running, what="the app to exit")
    assert session.stops == [] and session.running


async def test_the_palettes_launch_refuses_a_config_file_that_failed_to_load(tmp_path):
    Path("bad.yaml").write_text("train:\n  batchsize: 8\n")
    app = make_app(config_path="bad.yaml", start_screen="model")
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        app.session = RecordingSession()
        app._launch_via_review()
        await wait_for(pilot, lambda: "could not be used" in screen_text(app), what="the refusal")
        assert app.session.started == []
