"""Snapshots of the set-up screens (Model, Method, Data, Review) at 80x24 and 160x48 on scripted machines.

The machines: no GPU, one 24 GiB GPU, two 80 GiB GPUs. Besides each screen as it opens on the demo, a few states a
newcomer meets: Freeze and QLoRA chosen, a GPU planned for, an 8B model on a machine without a GPU, a small
classification CSV whose carried-over val split is too big, and a config file that failed to load. Regenerate with
`--snapshot-update`, then look at the SVGs before committing.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from helpers_setup import isolate, make_app, settle, write_big_model

SMALL, WIDE = (80, 24), (160, 48)

CASES = [
    # The Method screen is where the machine decides what fits: every size with every machine.
    *[("method", size, gpus, "") for size in (SMALL, WIDE) for gpus in ("none", "24", "2x80")],
    # The others show the machine in the top bar; each size meets each machine once across them.
    ("model", SMALL, "none", ""), ("model", WIDE, "24", ""),
    ("data", SMALL, "24", ""), ("data", WIDE, "2x80", ""),
    ("review", SMALL, "2x80", ""), ("review", WIDE, "none", ""),
    # States worth seeing.
    ("method", SMALL, "none", "freeze"), ("method", SMALL, "none", "plan-24"), ("method", SMALL, "none", "8b"),
    ("data", SMALL, "none", "small-csv"), ("data", WIDE, "none", "small-csv"),
    ("review", SMALL, "24", "qlora"),
    ("review", SMALL, "none", "broken-config"), ("review", WIDE, "24", "broken-config"),
]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    isolate(monkeypatch, tmp_path)


def build(screen: str, gpus: str, variant: str):
    from tui.app import default_config

    config = default_config()
    if variant in ("freeze", "qlora"):
        config = replace(config, method=replace(config.method, kind=variant))
    if variant == "small-csv":
        rows = "\n".join(f"review number {i} was {'good' if i % 2 else 'bad'},{'pos' if i % 2 else 'neg'}"
                         for i in range(20))
        Path("small.csv").write_text("text,label\n" + rows + "\n")
        config = replace(config, data=replace(config.data, path="small.csv"))
    if variant == "8b":
        config = replace(config, model=replace(config.model, name_or_path=str(write_big_model(Path("llama-8b")))))
    if variant == "broken-config":
        Path("typo.yaml").write_text("model:\n  name_or_path: demo:tiny-llama\ntrain:\n  batchsize: 8\n")
        return make_app(gpus=gpus, start_screen=screen, config_path="typo.yaml")
    app = make_app(gpus=gpus, start_screen=screen, config=config)
    if variant == "plan-24":
        app.plan_vram_gib = 24.0
    return app


@pytest.mark.parametrize("screen, size, gpus, variant", CASES,
                         ids=[f"{s}-{w}x{h}-{g}" + (f"-{v}" if v else "") for s, (w, h), g, v in CASES])
def test_setup_screen(snap_compare, screen, size, gpus, variant):
    assert snap_compare(build(screen, gpus, variant), terminal_size=size, run_before=settle)
