"""Library logs during a run: transformers, datasets, peft, accelerate, huggingface_hub and bitsandbytes logging
and Python warnings become LogLine events (not stderr, which would print over the TUI), and their progress bars
are off. Libraries are imported inside functions. Never imports textual or tui.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import traceback

from core.events import Emit, LogLine

# Loggers forwarded as LogLine events while a run goes, and the level each is opened to.
# transformers logs every config it reads at INFO: only its Trainer is worth hearing at that level.
FORWARDED_LOGGERS = {"core": logging.INFO, "transformers": logging.WARNING, "transformers.trainer": logging.INFO,
                     "peft": logging.INFO, "datasets": logging.WARNING, "accelerate": logging.WARNING,
                     "huggingface_hub": logging.WARNING, "bitsandbytes": logging.WARNING,
                     "py.warnings": logging.WARNING}

# Library lines that say nothing about this run (the Trainer's "Training completed. Do not forget to share your
# model on huggingface.co" after every run).
_NOISE = ("Training completed. Do not forget to share",)


class _EventLogHandler(logging.Handler):
    def __init__(self, emit: Emit):
        super().__init__(logging.INFO)
        self._emit = emit
        self._local = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self._local, "busy", False):
            return  # a listener that logs must not recurse back here
        self._local.busy = True
        try:
            message = record.getMessage().strip("\n")
            if not message.strip() or message.startswith(_NOISE):
                return
            if record.exc_info:
                message += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
            self._emit(LogLine(level=record.levelname, message=message, logger=record.name))
        except Exception:
            self.handleError(record)
        finally:
            self._local.busy = False


@contextlib.contextmanager
def forward_logs(emit: Emit):
    """While a run goes: library logs become LogLine events (not stderr), progress bars are off."""
    import warnings

    handler = _EventLogHandler(emit)
    _configure_library_loggers()
    saved = []
    for name, level in FORWARDED_LOGGERS.items():
        logger = logging.getLogger(name)
        # The libraries' own stderr handlers would print over the TUI: detach them for the run.
        own = [h for h in logger.handlers if isinstance(h, logging.StreamHandler)
               and not isinstance(h, logging.FileHandler)]
        saved.append((logger, logger.level, own))
        for h in own:
            logger.removeHandler(h)
        logger.setLevel(level)
        if "." not in name:  # children (transformers.trainer) reach the handler by propagation
            logger.addHandler(handler)
    capturing = warnings.showwarning is getattr(logging, "_showwarning", None)
    if not capturing:
        logging.captureWarnings(True)
    bars = _progress_bars_off()
    try:
        yield
    finally:
        bars()
        if not capturing:
            logging.captureWarnings(False)
        for logger, level, own in saved:
            logger.removeHandler(handler)
            logger.setLevel(level)
            for h in own:
                logger.addHandler(h)


def _configure_library_loggers() -> None:
    """transformers and datasets attach their stderr handlers on first use: make that happen now, to detach them."""
    for module in ("transformers.utils.logging", "datasets.utils.logging"):
        try:
            __import__(module, fromlist=["get_logger"]).get_logger()
        except ImportError:
            pass


def _progress_bars_off():
    """Turn off transformers/datasets/hub progress bars (they print to the terminal); returns the undo."""
    undo = []
    try:
        import transformers.utils.logging as tlog

        if tlog.is_progress_bar_enabled():
            tlog.disable_progress_bar()
            undo.append(tlog.enable_progress_bar)
    except ImportError:
        pass
    try:
        import datasets

        if datasets.is_progress_bar_enabled():
            datasets.disable_progress_bars()
            undo.append(datasets.enable_progress_bars)
    except ImportError:
        pass
    try:
        import huggingface_hub.utils as hub

        if not hub.are_progress_bars_disabled():
            hub.disable_progress_bars()
            undo.append(hub.enable_progress_bars)
    except ImportError:
        pass

    def restore():
        for fn in undo:
            fn()
    return restore


__all__ = ["forward_logs", "FORWARDED_LOGGERS"]
