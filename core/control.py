"""Cooperative control of a running training loop from another thread (pause, resume, stop)."""
from __future__ import annotations

import threading


class RunControl:
    """Held by the UI (or a signal handler); checked by the trainer callback between steps.

    Stopping is cooperative: the callback sees the flag at the end of a step, saves a checkpoint
    (unless `save` was False) and ends the run with RunFinished(stopped=True).
    """

    def __init__(self) -> None:
        self._resume = threading.Event()
        self._resume.set()
        self._stop = threading.Event()
        self.save_on_stop = True

    def pause(self) -> None:
        self._resume.clear()

    def resume(self) -> None:
        self._resume.set()

    def stop(self, save: bool = True) -> None:
        self.save_on_stop = save
        self._stop.set()
        self._resume.set()  # a paused run must wake up to stop

    @property
    def paused(self) -> bool:
        return not self._resume.is_set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def wait_while_paused(self, timeout: float | None = None) -> bool:
        """Block until resumed or stopped; returns True when no longer paused."""
        return self._resume.wait(timeout)


# ---------------------------------------------------------------------------------------------------------------
# The run folder's control channel: how a shell (`tunetui pause|resume|stop RUN_DIR`) or an attached app drives the
# RunControl of a run trained by another process.
#
# A command file rather than a Unix socket: a socket's path is limited to ~107 bytes and run folders can be deeper
# than that; a file needs no listening thread in the client's way, opens no port, and its owner and mode bits are
# checked with one os.stat. The runner polls it from a small thread, so a request also reaches a run that is
# paused, loading its model or tokenizing.

COMMANDS = ("pause", "resume", "stop")
CHANNEL_POLL_SECONDS = 0.25


def request(run_dir, command: str) -> None:
    """Ask the run in `run_dir` to pause, resume or stop (with a checkpoint); returns once the request is written.

    The file is written whole under a temporary name (mode 0600) and renamed into place, so the runner never reads
    half a request.
    """
    import json
    import os
    import time
    import uuid
    from pathlib import Path

    from core.rundir import CONTROL_FILE

    if command not in COMMANDS:
        raise ValueError(f"unknown control command {command!r}; use one of {', '.join(COMMANDS)}")
    run_dir = Path(run_dir)
    tmp = run_dir / f".{CONTROL_FILE}.{uuid.uuid4().hex}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"command": command, "pid": os.getpid(), "time": time.time()}, fh)
        os.replace(tmp, run_dir / CONTROL_FILE)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class ControlChannel:
    """Runner side: a daemon thread that applies requests found in RUN_DIR/control.json to a RunControl.

    A request counts only when the file is a regular file owned by the runner's own user and readable or writable
    by nobody else (mode 0600): other users, who might be able to write into a shared folder, are refused.
    """

    def __init__(self, run_dir, control: RunControl, poll_seconds: float = CHANNEL_POLL_SECONDS) -> None:
        from pathlib import Path

        from core.rundir import CONTROL_FILE

        self.path = Path(run_dir) / CONTROL_FILE
        self.control = control
        self.poll_seconds = poll_seconds
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._refused: tuple | None = None

    def start(self) -> "ControlChannel":
        import os

        try:  # a request left for an earlier process of this run (say, a crashed one) is not for this one
            os.unlink(self.path)
        except OSError:
            pass
        self._thread = threading.Thread(target=self._loop, name="run-control", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._closed.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._thread = None

    def _loop(self) -> None:
        while not self._closed.wait(self.poll_seconds):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - a bad request must never end the run; the log says what
                import logging

                logging.getLogger(__name__).exception("Could not read the control request %s", self.path)

    def poll(self) -> str | None:
        """Apply the waiting request, if any; returns the command applied (None when none or refused)."""
        import json
        import logging
        import os
        import stat

        log = logging.getLogger(__name__)
        try:
            st = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return None
        key = (st.st_ino, st.st_mtime_ns, st.st_uid, st.st_mode)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
            if key != self._refused:  # say it once per file, not four times a second
                self._refused = key
                log.warning("Ignored %s: only a file owned by the run's own user with mode 0600 is obeyed "
                            "(owner uid %s, mode %s)", self.path, st.st_uid, oct(stat.S_IMODE(st.st_mode)))
            self._remove()
            return None
        try:
            with open(self.path, encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, ValueError):
            data = {}
        self._remove()
        command = data.get("command") if isinstance(data, dict) else None
        if command not in COMMANDS:
            log.warning("Ignored %s: unknown command %r (use %s)", self.path, command, ", ".join(COMMANDS))
            return None
        log.info("%s requested from outside the app (pid %s)", command.capitalize(), data.get("pid", "?"))
        if command == "pause":
            self.control.pause()
        elif command == "resume":
            self.control.resume()
        else:
            self.control.stop(save=True)
        return command

    def _remove(self) -> None:
        import os

        try:
            os.unlink(self.path)
        except OSError:
            pass
