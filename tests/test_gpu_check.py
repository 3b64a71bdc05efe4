"""bench/gpu_check.py without a GPU: one plain line and exit 0; with --cpu-smoke, the whole path on a tiny model."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.py"


def _run(*args: str, hide_gpu: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if hide_gpu:
        env["CUDA_VISIBLE_DEVICES"] = ""  # the same answer on a machine that has one
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          timeout=600, cwd=ROOT)


def test_without_a_gpu_it_says_so_in_one_line_and_exits_0():
    result = _run("--quick")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    assert lines[0].startswith("No CUDA GPU here: nothing run.")
    assert "qwen2.5-0.5b" in lines[0] and "--cpu-smoke" in lines[0]


def test_unknown_model_is_named_with_the_choices():
    result = _run("--models", "llama-9b")
    assert result.returncode == 2
    assert "--models: unknown 'llama-9b'" in result.stderr and "qwen2.5-0.5b" in result.stderr


def test_cpu_smoke_prints_a_filled_row_per_method(tmp_path):
    out = tmp_path / "rows.json"
    result = _run("--cpu-smoke", "--json", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {line.split()[1]: line.split() for line in result.stdout.splitlines() if line.startswith("tiny-llama")}
    assert sorted(rows) == ["freeze", "full", "lora", "qlora"], result.stdout
    for method, cells in rows.items():
        # model method setting prec est-card NVML est-alloc torch err tok/s MFU: measured memory and MFU are n/a on
        # the CPU, which trains in fp32
        assert len(cells) == 11, cells
        assert cells[3] == "fp32", cells
        assert cells[4] != "n/a" and cells[6] != "n/a", cells
        assert cells[5] == cells[7] == cells[10] == "n/a", cells
        assert float(cells[9].replace(",", "")) > 0, cells
    # The engine's own line saying where it trains, in what and why, once above the rows
    assert result.stdout.count("  CPU") == 1 and "training in fp32" in result.stdout, result.stdout
    saved = json.loads(out.read_text())
    assert [r["method"] for r in saved["rows"]] == ["full", "freeze", "lora", "qlora"]
    assert all(r["tokens_per_s"] > 0 and r["est_card_gib"] > 0 and "error" not in r for r in saved["rows"])
    assert {r["precision"] for r in saved["rows"]} == {"fp32"}
