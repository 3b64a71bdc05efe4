"""Library notices that tell a user nothing they can act on, dropped at their logger. Imports only `logging`.

Each is matched by its logger and the start of its message, so any other warning from the same library still shows.
"""
from __future__ import annotations

import logging

HARMLESS_NOTICES = {
    # `import bitsandbytes` (which peft and transformers do for every method, not only QLoRA) logs this on CPUs with
    # AVX512-BF16 when the optional `kernels` package is absent. That kernel would come from the hub; bitsandbytes
    # falls back to its own CPU code, and a LoRA or Full run never calls it anyway.
    "bitsandbytes.backends.cpu.ops": ("Failed to load CPU gemm_4bit_forward from kernels-community",),
}
"""logger name -> beginnings of the messages (format strings, before %-arguments) to drop."""


class _DropNotices(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def silence_harmless_notices() -> None:
    """Install the filters (once). A logger filter sees the records logged on that very logger, whichever handler
    would print them (stderr, the run's LogLine events), so this works when called before the library is imported."""
    for name, prefixes in HARMLESS_NOTICES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNotices) for f in logger.filters):
            logger.addFilter(_DropNotices(prefixes))
