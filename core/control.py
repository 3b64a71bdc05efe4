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
