"""Harmless library notices stay out of what a user sees; the library's other warnings still show."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import core  # noqa: F401 - importing the engine installs the filters

ROOT = Path(__file__).resolve().parents[1]
BNB_LOGGER = "bitsandbytes.backends.cpu.ops"
# bitsandbytes' own call, word for word (backends/cpu/ops.py).
NOTICE = ("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure you already `pip install "
          "kernels` and the kernels >= 0.11.1")


def test_the_kernels_notice_is_dropped_and_other_warnings_pass(caplog):
    logger = logging.getLogger(BNB_LOGGER)
    with caplog.at_level(logging.WARNING):
        logger.warning(NOTICE, ModuleNotFoundError("No module named 'kernels'"))
        logger.warning("Something else about %s", "4-bit")
    assert [r.getMessage() for r in caplog.records] == ["Something else about 4-bit"]


# The notice appears only on CPUs with AVX512-BF16 (bitsandbytes asks its native library). To see it on any machine,
# the subprocess tells bitsandbytes it has them, as it is imported; the LoRA run itself never uses that code.
PRETEND_AVX512_BF16 = textwrap.dedent("""
    import importlib.abc, importlib.machinery, sys

    class Pretend(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != "bitsandbytes.functional":
                return None
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            run = spec.loader.exec_module
            def exec_module(module):
                run(module)
                module.has_avx512bf16 = lambda: True
            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, Pretend())
    from tui.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_a_lora_train_shows_no_kernels_notice(tmp_path):
    argv = ["train", str(ROOT / "presets" / "demo.yaml"), "--set", "train.max_steps=1", "--set", "train.eval_steps=0",
            "--set", "data.max_samples=8", "--set", "data.val_size=0", "--set", "data.max_length=32",
            "--set", "train.batch_size=2", "--output-dir", str(tmp_path / "runs")]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", PRETEND_AVX512_BF16, *argv], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "finished" in proc.stderr
    assert "gemm_4bit_forward" not in proc.stderr and "kernels" not in proc.stderr, proc.stderr
    events = next((tmp_path / "runs").glob("*/events.jsonl")).read_text(encoding="utf-8")
    assert "gemm_4bit_forward" not in events
