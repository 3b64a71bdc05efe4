"""One lock around the first imports of the engine's libraries (torch, datasets, transformers, peft). Imports nothing.

Python's import system locks each module separately. Two threads that first-import packages which import each other
(the app's background engine import, a data preview, a chat load, a run) can each wait on a module the other holds;
Python then breaks the deadlock by handing one thread a half-initialised module (seen here: `datasets` left
half-loaded when a preview and a run imported it at the same moment, and every later use of it failing). Importing
them under this lock serialises those first imports; later, taking it costs nothing worth measuring.
"""
from __future__ import annotations

import importlib
import threading

LOCK = threading.RLock()


def import_heavy(*names: str) -> None:
    """Import these modules (first time: seconds) while holding the lock."""
    with LOCK:
        for name in names:
            importlib.import_module(name)


__all__ = ["LOCK", "import_heavy"]
