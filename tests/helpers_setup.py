"""Shared by the set-up screen tests: an isolated app with a scripted GPU sampler, screen text, waiting on it."""
from __future__ import annotations

import asyncio
import io
import shutil
from pathlib import Path
from typing import Callable

from helpers_gpus import ScriptedSampler, fake_snapshot

ASSETS = Path(__file__).resolve().parents[1] / "core" / "assets"

GPUS = {
    "none": lambda: fake_snapshot(()),
    "24": lambda: fake_snapshot((24,), (2,), utilization=35.0),
    "2x80": lambda: fake_snapshot((80, 80), (1, 1), utilization=10.0),
}
"""The scripted machines: no GPU, one 24 GiB GPU with 2 GiB taken, two 80 GiB GPUs."""


def isolate(monkeypatch, tmp_path: Path) -> Path:
    """No real HF cache or user config; the working folder (what the Data screen's file picker shows) holds one
    data file. Returns that folder."""
    (tmp_path / "hf").mkdir(exist_ok=True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TUNETUI_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("TUNETUI_MODELS_DIR", raising=False)
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    shutil.copy(ASSETS / "alpaca_en_demo.json", work / "alpaca_en_demo.json")
    monkeypatch.chdir(work)
    return work


def make_app(gpus: str = "24", **kwargs):
    """The real app from create_app, with a scripted GPU sampler and a relative output folder (so the paths it
    shows are the same in every test run)."""
    from tui.app import create_app

    kwargs.setdefault("output_dir", "runs")
    return create_app(sampler=ScriptedSampler([GPUS[gpus]()]), **kwargs)


async def wait_for(pilot, predicate: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Let the app run until `predicate()` holds (polling, never a fixed sleep that hopes for the best)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await pilot.pause(0.05)


def screen_ready(app) -> bool:
    """The active set-up screen has everything it loads in the background (GPU sample, model list, estimates,
    data preview) and shows it."""
    screen = app.screen
    if app.snapshot is None:
        return False
    # Any worker still going may change the screen; the sampler repeats the same snapshot and DirectoryTree's
    # `_loader` waits for work for ever, so those two don't count.
    busy = [w for w in app.workers if not w.is_finished and w.group != "sampler" and w.name != "_loader"]
    if busy:
        return False
    name = type(screen).__name__
    if name == "ModelScreen":
        return screen.shown is not None and screen.shown in screen.infos and screen.scanned
    if name == "MethodScreen":
        facts = app.draft.facts()
        return facts.recommendation is not None or facts.shape_error is not None
    if name == "DataScreen":
        return screen.shown is not None and screen.shown.key == screen.wanted
    return True


async def settle(pilot, timeout: float = 60.0) -> None:
    await wait_for(pilot, lambda: screen_ready(pilot.app), timeout, f"{type(pilot.app.screen).__name__} to load")
    await pilot.pause()


def screen_text(app) -> str:
    """What the terminal shows, as plain text (for assertions about what a user reads)."""
    from rich.console import Console

    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True, record=True,
                      color_system="truecolor", legacy_windows=False, safe_box=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens,
                                                       simplify=True))
    return console.export_text()


def write_big_model(folder: Path) -> Path:
    """A Llama-3.1-8B-shaped model folder holding only config.json (no weights, no tokenizer): enough for the
    estimator, and a model whose problems the Model screen must show."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
        "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "vocab_size": 128256, "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "tie_word_embeddings": False, "torch_dtype": "bfloat16", "hidden_act": "silu",
    }))
    return folder
