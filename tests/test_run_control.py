"""A headless run driven from another shell: `tunetui pause|resume|stop RUN_DIR`, the owner-only control file, no
network port, and a hang-up (tmux kill-session, as a dropped SSH connection) that no longer stops training."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from core import rundir
from core.events import CheckpointSaved, RunFinished, RunPaused, StepEnded, read_events

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "presets" / "demo.yaml")
TUNETUI = str(Path(sys.executable).with_name("tunetui"))
FAST = ["--set", "data.max_length=64", "--set", "data.max_samples=40", "--set", "data.val_size=0",
        "--set", "train.eval_steps=0"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _start(out: Path, max_steps: int, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([TUNETUI, "train", DEMO, "--set", f"train.max_steps={max_steps}",
                             "--set", "train.save_steps=100000", *FAST, "--output-dir", str(out)],
                            cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"tunetui train ended early ({proc.returncode}) while waiting for {what}: "
                        f"{proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def _run_dir(out: Path) -> Path | None:
    for log in out.glob(f"*/{rundir.EVENTS_FILE}"):
        if any(isinstance(e, StepEnded) for e in read_events(log)):
            return log.parent
    return None


def _steps(run_dir: Path) -> list[int]:
    return [e.step for e in read_events(run_dir / rundir.EVENTS_FILE) if isinstance(e, StepEnded)]


def _ctl(command: str, run_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([TUNETUI, command, str(run_dir), "--timeout", "120"], env=ENV, capture_output=True,
                          text=True, timeout=180)


def test_pause_resume_and_stop_from_a_shell_then_resume_completes(tmp_path):
    out = tmp_path / "runs"
    proc = _start(out, max_steps=100000, cwd=tmp_path)
    try:
        run_dir = _wait(lambda: _run_dir(out), 180, "the first step", proc)
        import psutil  # the channel is a file: the training process listens on nothing

        assert not [c for c in psutil.Process(proc.pid).net_connections(kind="inet") if c.status == "LISTEN"]

        paused = _ctl("pause", run_dir)
        assert paused.returncode == 0 and "paused at step" in paused.stdout, paused
        pause_step = [e for e in read_events(run_dir / rundir.EVENTS_FILE) if isinstance(e, RunPaused)][-1].step
        time.sleep(1.5)  # long enough for several steps of this model: none may come while paused
        assert max(_steps(run_dir)) == pause_step

        resumed = _ctl("resume", run_dir)
        assert resumed.returncode == 0 and f"resumed at step {pause_step}" in resumed.stdout, resumed
        _wait(lambda: max(_steps(run_dir)) > pause_step, 120, "a step after resuming", proc)

        stopped = _ctl("stop", run_dir)
        assert stopped.returncode == 0 and "stopped at step" in stopped.stdout, stopped
        assert "checkpoint saved" in stopped.stdout and "tunetui train --resume" in stopped.stdout
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    last = read_events(run_dir / rundir.EVENTS_FILE)[-1]
    assert isinstance(last, RunFinished) and last.stopped
    assert rundir.latest_checkpoint(run_dir).name == f"checkpoint-{last.step}"
    assert rundir.summarize(run_dir).status == "stopped"

    # The stopped run continues in place from its checkpoint to the (now nearer) end.
    target = last.step + 3
    done = subprocess.run([TUNETUI, "train", "--resume", str(run_dir), "--set", f"train.max_steps={target}"],
                          env=ENV, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    final = read_events(run_dir / rundir.EVENTS_FILE)[-1]
    assert isinstance(final, RunFinished) and not final.stopped and final.step == target


def test_control_commands_refuse_a_run_that_is_not_running(tmp_path):
    missing = subprocess.run([TUNETUI, "stop", str(tmp_path / "nope")], env=ENV, capture_output=True, text=True)
    assert missing.returncode == 2 and "is not a run folder" in missing.stderr and "Traceback" not in missing.stderr


def test_a_request_file_others_could_write_is_ignored(tmp_path):
    from core.control import ControlChannel, RunControl, request

    control = RunControl()
    channel = ControlChannel(tmp_path, control)
    path = tmp_path / rundir.CONTROL_FILE
    path.write_text('{"command": "stop"}', encoding="utf-8")
    path.chmod(0o644)  # readable/writable beyond the owner: not obeyed, and removed
    assert channel.poll() is None and not control.stop_requested and not path.exists()

    request(tmp_path, "pause")
    assert (path.stat().st_mode & 0o777) == 0o600
    assert channel.poll() == "pause" and control.paused and not path.exists()


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_headless_train_survives_its_terminal_going_away(tmp_path):
    out = tmp_path / "runs"
    socket = f"tunetui-hup-{uuid.uuid4().hex[:8]}"
    steps = 60
    command = (f"OMP_NUM_THREADS=1 {TUNETUI} train {DEMO} --set train.max_steps={steps} --set train.save_steps=20 "
               f"{' '.join(FAST)} --output-dir {out}")
    subprocess.run(["tmux", "-L", socket, "new-session", "-d", "-x", "100", "-y", "30", "-c", str(tmp_path),
                    command], check=True, env=ENV)
    try:
        run_dir = _wait(lambda: _run_dir(out), 180, "the first step")
        pid = rundir.read_pid(run_dir)
        assert pid
        subprocess.run(["tmux", "-L", socket, "kill-server"], check=False)  # the SSH drop: SIGHUP to the process
        done = _wait(lambda: [e for e in read_events(run_dir / rundir.EVENTS_FILE)
                              if isinstance(e, RunFinished)], 300, "the run to finish after the hang-up")
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], check=False, capture_output=True)
    assert not done[-1].stopped and done[-1].step == steps
    assert (run_dir / rundir.FINAL).is_dir()
    assert any(isinstance(e, CheckpointSaved) for e in read_events(run_dir / rundir.EVENTS_FILE))
    assert "hung up" in (run_dir / rundir.LOG_FILE).read_text(encoding="utf-8")


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_attach_from_a_new_terminal_shows_the_live_run_and_pauses_it(tmp_path):
    from test_tmux import Tmux

    out = tmp_path / "runs"
    proc = _start(out, max_steps=100000, cwd=tmp_path)
    term = None
    try:
        run_dir = _wait(lambda: _run_dir(out), 180, "the first step", proc)
        env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", str(tmp_path)),
               "TERM": "xterm-256color", "TUNETUI_CONFIG_DIR": str(tmp_path / "config"),
               "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
        term = Tmux([TUNETUI, "attach", "--output-dir", str(out)], tmp_path, env, size=(120, 36))
        term.wait_for("▶ running", timeout=60)
        term.wait_for("tokens/s", timeout=60)
        term.keys("p")
        term.wait_for("⏸ paused", timeout=60)  # the run's own RunPaused, read back from its events.jsonl
        assert any(isinstance(e, RunPaused) for e in read_events(run_dir / rundir.EVENTS_FILE))
        term.keys("C-q")  # leaving the viewer leaves the run paused, not stopped
        _wait(term.dead, 30, "the viewer to close")
        assert proc.poll() is None and rundir.summarize(run_dir).status == "running"
        stopped = _ctl("stop", run_dir)
        assert stopped.returncode == 0 and "stopped at step" in stopped.stdout, stopped
        proc.wait(timeout=120)
    finally:
        if term is not None:
            term.close()
        if proc.poll() is None:
            proc.kill()
