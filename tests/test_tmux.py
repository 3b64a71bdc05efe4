"""The real `tunetui` in a real terminal (tmux, 100x30): open a config, launch the demo, watch it train, pause,
resume, answer the stop question, then lose the terminal mid-run (SIGHUP, as when SSH drops): the run must go on
training to its last step in the same process, which then exits. The screen is read the way a user sees it (tmux
capture-pane)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from core import config as cfg

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")]

TUNETUI = Path(sys.executable).with_name("tunetui")


class Tmux:
    """One private tmux server (its own socket) running one window."""

    def __init__(self, command: list[str], cwd: Path, env: dict[str, str], size=(100, 30)) -> None:
        self.socket = f"tunetui-test-{uuid.uuid4().hex[:8]}"
        exports = " ".join(f"{k}={_quote(v)}" for k, v in env.items())
        # exec: the pane's process is the app itself, so its pid is the app's and a hang-up reaches it directly.
        line = f"cd {_quote(str(cwd))} && exec env {exports} {' '.join(_quote(c) for c in command)}"
        self.tmux("new-session", "-d", "-x", str(size[0]), "-y", str(size[1]), "-s", "t", line)
        self.tmux("set-option", "-t", "t", "remain-on-exit", "on")
        self.pid = int(self.tmux("display-message", "-p", "-t", "t", "#{pane_pid}").strip())

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True, capture_output=True,
                              text=True, timeout=20).stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "t")

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "t", *keys)

    def dead(self) -> bool:
        return self.tmux("display-message", "-p", "-t", "t", "#{pane_dead}").strip() == "1"

    def wait_for(self, text: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{text!r} did not appear within {timeout:.0f} s; the screen shows:\n{self.screen()}")

    def close(self) -> None:
        """Kill the terminal: the app gets SIGHUP, as when an SSH connection drops."""
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=20)


def _alive(pid: int) -> bool:
    """Running (a zombie left for a non-reaping init, as in some containers, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True


def _last_event(run_dir: Path) -> dict:
    lines = (run_dir / "events.jsonl").read_text(encoding="utf-8").strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def _last_step(tmp_path: Path) -> int:
    steps = [json.loads(line).get("step", 0) for log in (tmp_path / "runs").glob("*/events.jsonl")
             for line in log.read_text(encoding="utf-8").splitlines() if '"StepEnded"' in line]
    return max(steps, default=0)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def test_tunetui_trains_the_demo_in_a_real_terminal(tmp_path):
    if not TUNETUI.exists():
        pytest.skip(f"{TUNETUI} is not installed (pip install -e .)")
    config = cfg.RunConfig(
        data=cfg.DataSpec(path="demo:alpaca_en", max_length=64, val_size=0),
        train=cfg.TrainSpec(max_steps=400, batch_size=2, save_steps=1000, eval_steps=0, warmup_ratio=0.0),
        output=cfg.OutputSpec(dir=str(tmp_path / "runs")))
    cfg.save(config, tmp_path / "demo.yaml")
    env = {"HF_HUB_CACHE": str(tmp_path / "hf"), "TUNETUI_CONFIG_DIR": str(tmp_path / "config"),
           # The session's temp cache (conftest) when there is one: the demo weights are built once.
           "TUNETUI_CACHE": os.environ.get("TUNETUI_CACHE", str(tmp_path / "cache")),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", str(tmp_path)),
           "TERM": "xterm-256color", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.environ.get("PYTHONPATH", "")}  # the code under test, not whatever is installed
    term = Tmux([str(TUNETUI), "demo.yaml"], tmp_path, env)
    try:
        _drive_then_hang_up(term, tmp_path)
    finally:
        if _alive(term.pid):  # never leave a stray app behind, whatever the outcome
            os.kill(term.pid, 9)


def _drive_then_hang_up(term: Tmux, tmp_path: Path) -> None:
    try:
        # `tunetui CONFIG.yaml` opens on Review with that config; l launches.
        term.wait_for("Launch", timeout=30)
        term.keys("l")
        screen = term.wait_for("/400", timeout=180)
        assert "demo:tiny-llama · lora" in screen
        screen = term.wait_for("tokens/s", timeout=60)
        assert "loss" in screen and ("No NVIDIA GPU" in screen or "GPU0" in screen)

        term.keys("p")
        term.wait_for("⏸ paused", timeout=60)
        term.keys("p")
        term.wait_for("▶ running", timeout=60)

        # Stop asks first; n keeps training.
        term.keys("s")
        term.wait_for("Stop the run?", timeout=20)
        term.keys("n")
        term.wait_for("▶ running", timeout=20)
        steps_at_hang_up = _last_step(tmp_path)
    finally:
        term.close()  # the terminal goes away mid-run (SIGHUP), as when an SSH connection drops

    # The hang-up does not stop the run: the same process trains on, headless, to the last step, then exits.
    runs = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    assert len(runs) == 1
    deadline = time.monotonic() + 300
    while _last_event(runs[0]).get("event") not in ("RunFinished", "RunFailed") and time.monotonic() < deadline:
        time.sleep(0.5)
    last = _last_event(runs[0])
    assert last.get("event") == "RunFinished" and not last.get("stopped") and last.get("step") == 400, last
    assert (runs[0] / "final" / "adapter_config.json").is_file()
    assert steps_at_hang_up < 400, "the run ended before the hang-up: nothing was tested"
    log = (runs[0] / "output.log").read_text(encoding="utf-8", errors="replace")
    first = log.partition("\n")[0]  # "2026-12-02 18:21:00 terminal hung up ..."
    assert first[20:].startswith(f"terminal hung up (SIGHUP): the app closed; training goes on in process "
                                 f"{term.pid}"), log[:300]
    assert "\x1b[" not in log, "the UI's escape codes (its last frame, its goodbye) went into the run's log"
    deadline = time.monotonic() + 30
    while _alive(term.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _alive(term.pid), "tunetui did not exit within 30 s of its run finishing after the hang-up"


def test_detach_closes_the_app_and_the_run_goes_on_in_the_background(tmp_path):
    """d on the Run view: a checkpoint, the app closes (the shell gets its prompt back), and a background process
    resumes the run from that checkpoint to its last step; `tunetui attach` could follow it."""
    if not TUNETUI.exists():
        pytest.skip(f"{TUNETUI} is not installed (pip install -e .)")
    steps = 150
    config = cfg.RunConfig(
        data=cfg.DataSpec(path="demo:alpaca_en", max_length=64, val_size=0, max_samples=40),
        train=cfg.TrainSpec(max_steps=steps, batch_size=2, save_steps=1000, eval_steps=0, warmup_ratio=0.0),
        output=cfg.OutputSpec(dir=str(tmp_path / "runs")))
    cfg.save(config, tmp_path / "demo.yaml")
    env = {"HF_HUB_CACHE": str(tmp_path / "hf"), "TUNETUI_CONFIG_DIR": str(tmp_path / "config"),
           "TUNETUI_CACHE": os.environ.get("TUNETUI_CACHE", str(tmp_path / "cache")),
           "OMP_NUM_THREADS": "1", "PATH": os.environ.get("PATH", ""),
           "HOME": os.environ.get("HOME", str(tmp_path)), "TERM": "xterm-256color", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    term = Tmux([str(TUNETUI), "demo.yaml"], tmp_path, env)
    background = None
    try:
        term.wait_for("Launch", timeout=30)
        term.keys("l")
        deadline = time.monotonic() + 180
        while _last_step(tmp_path) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        term.keys("d")
        deadline = time.monotonic() + 120
        while not term.dead() and time.monotonic() < deadline:
            time.sleep(0.2)
        screen = term.screen()
        assert term.dead(), f"the app did not close after d:\n{screen}"
        assert "tunetui attach" in screen and "tunetui stop" in screen, screen
        run_dir = next(p for p in (tmp_path / "runs").iterdir() if p.is_dir())
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the background process takes the run over (its run.pid)
            from core import rundir

            background = rundir.read_pid(run_dir)
            if background not in (None, term.pid):
                break
            time.sleep(0.2)
        assert background not in (None, term.pid) and _alive(background)
        deadline = time.monotonic() + 300

        def ended() -> bool:  # the detach's own stop is a RunFinished too: wait for the one after it
            last = _last_event(run_dir)
            return last.get("event") == "RunFailed" or (last.get("event") == "RunFinished" and not last["stopped"])

        while not ended() and time.monotonic() < deadline:
            time.sleep(0.5)
        last = _last_event(run_dir)
        assert last.get("event") == "RunFinished" and not last.get("stopped") and last.get("step") == steps, last
        assert (run_dir / "final" / "adapter_config.json").is_file()
        events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
        starts = [e for e in events if e["event"] == "RunStarted"]
        assert len(starts) == 2 and starts[1]["resumed_from"], "the background process resumed the same run"
    finally:
        term.close()
        for pid in (term.pid, background):
            if pid and _alive(pid):
                os.kill(pid, 9)
