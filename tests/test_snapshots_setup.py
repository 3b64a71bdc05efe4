"""Snapshots of the set-up screens (Model, Method, Data, Review) at 80x24 and 160x48 on scripted machines.

The machines: no GPU, one 24 GiB GPU, two 80 GiB GPUs. Regenerate with `--snapshot-update`, then look at the SVGs
before committing.
"""
from __future__ import annotations

import pytest

from helpers_setup import isolate, make_app, settle

SMALL, WIDE = (80, 24), (160, 48)

CASES = [
    # The Method screen is where the machine decides what fits: every size with every machine.
    *[("method", size, gpus) for size in (SMALL, WIDE) for gpus in ("none", "24", "2x80")],
    # The others show the machine in the top bar; each size meets each machine once across them.
    ("model", SMALL, "none"), ("model", WIDE, "24"),
    ("data", SMALL, "24"), ("data", WIDE, "2x80"),
    ("review", SMALL, "2x80"), ("review", WIDE, "none"),
]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    isolate(monkeypatch, tmp_path)


@pytest.mark.parametrize("screen, size, gpus", CASES,
                         ids=[f"{s}-{w}x{h}-{g}" for s, (w, h), g in CASES])
def test_setup_screen(snap_compare, screen, size, gpus):
    app = make_app(gpus=gpus, start_screen=screen)
    assert snap_compare(app, terminal_size=size, run_before=settle)
