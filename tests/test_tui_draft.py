"""The draft's facts have one home (tui.draft): Method, Review and Monitor show the same model shape and the same
estimates, and follow the draft when its model changes; the shape is read once per model, trust_remote_code
included."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from helpers_setup import isolate, make_app, screen_text, settle, wait_for

METHOD_NAMES = ("Full", "Freeze", "LoRA", "QLoRA")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    isolate(monkeypatch, tmp_path)


def write_small_llama(folder: Path) -> Path:
    """A ~100M-parameter Llama-shaped folder holding only config.json: a few KiB, read by the estimator alone,
    and large enough that its estimates differ from the demo's at one decimal."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 1024, "intermediate_size": 2816,
        "num_hidden_layers": 6, "num_attention_heads": 16, "num_key_value_heads": 4, "vocab_size": 32000,
        "max_position_embeddings": 2048, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    }))
    return folder


def flat(app) -> str:
    return " ".join(screen_text(app).split())


async def test_method_review_and_monitor_show_one_shape_and_one_set_of_estimates(tmp_path, monkeypatch):
    import tui.draft

    reads: list[tuple[str, bool]] = []
    real = tui.draft.load_model_shape

    def counted(name: str, trust_remote_code: bool):
        reads.append((name, trust_remote_code))
        return real(name, trust_remote_code)

    monkeypatch.setattr(tui.draft, "load_model_shape", counted)
    small = str(write_small_llama(tmp_path / "small-llama"))
    app = make_app(gpus="24", start_screen="method")
    async with app.run_test(size=(160, 48)) as pilot:

        async def shown_on_each_screen() -> dict[str, str]:
            texts = {}
            for name in ("method", "review", "monitor"):
                app.show(name)
                await settle(pilot)
                if name == "monitor":
                    await wait_for(pilot, lambda: "Recommended:" in screen_text(app), what="the advice")
                await pilot.pause()
                texts[name] = flat(app)
                if name == "monitor":  # the title in full: on screen a long (temp) path is cut to fit
                    texts["monitor title"] = str(app.screen.query_one("#monitor-advice").border_title)
            return texts

        seen = {}
        for model, trust, layers in (("demo:tiny-llama", False, None), (small, True, 6)):
            app.set_config(replace(app.config, model=replace(app.config.model, name_or_path=model,
                                                             trust_remote_code=trust)))
            texts = await shown_on_each_screen()
            facts = app.draft.facts()
            assert facts.shape is not None and facts.shape.name == model
            if layers is not None:
                assert facts.shape.num_layers == layers
            peaks = {m: f"{e.peak_gib:.1f}" for m, e in facts.estimates.items()}
            chosen = peaks[app.config.method.kind]
            # Method: every card's peak, and what trains out of the shape's weights.
            for title, peak in zip(METHOD_NAMES, peaks.values()):
                assert f"{peak} GiB peak" in texts["method"], (title, peak)
            lora = facts.estimates["lora"]  # the draft's method: its breakdown says what trains
            assert f"trains {_count(lora.trainable_params)} of {_count(lora.total_params)} weights" in texts["method"]
            # Review: the chosen method's peak and its verdict; Monitor: every method's peak, the chosen one marked.
            assert f"~{chosen} GiB peak" in texts["review"]
            assert f"in {facts.free_gib:.1f} GiB free" in texts["review"]
            for title, peak in zip(METHOD_NAMES, peaks.values()):
                assert f"{title} {peak}" in texts["monitor"], (title, peak)
            assert f"which method · {model}" in texts["monitor title"]
            seen[model] = peaks

        assert seen["demo:tiny-llama"] != seen[small]  # the two shapes really differ
        # Each model's shape was read once, for all three screens, and with the draft's trust_remote_code.
        assert reads == [("demo:tiny-llama", False), (small, True)]

        # Back to the demo: its shape is remembered, not read again.
        app.set_config(replace(app.config, model=replace(app.config.model, name_or_path="demo:tiny-llama",
                                                         trust_remote_code=False)))
        texts = await shown_on_each_screen()
        assert f"LoRA {seen['demo:tiny-llama']['lora']}" in texts["monitor"]
        assert reads == [("demo:tiny-llama", False), (small, True)]


def _count(n: int) -> str:
    from core import units

    return units.count_short(n)


def test_the_validation_split_counts_one_row_at_least():
    """A share that rounds to no row still holds one out, as the engine does (core.splits)."""
    from core.config import DataSpec
    from core.splits import train_rows, val_rows
    from tui.draft import split_of

    assert val_rows(5, 0.05) == 1 and val_rows(100, 0.1) == 10 and val_rows(100, 7) == 7 and val_rows(100, 0) == 0
    assert train_rows(5, 0.05) == 4 and train_rows(3, 5) == 0
    split = split_of(DataSpec(path="x.json", val_size=0.05), 5)
    assert (split.val, split.train) == (1, 4) and split.warning  # 4 rows left to train: too few
    assert split_of(DataSpec(path="x.json", val_size=0.1, val_path="val.json"), 100).val == 0
    assert split_of(DataSpec(path="x.json", val_size=0.1), None).val is None
