"""tunetui's headless engine: config, events, training, resources. Never imports textual or tui."""
from core.quiet import silence_harmless_notices as _silence

# Whatever imports the engine (the CLI, the app's training thread, a script) gets the filters before any library
# could log a notice: core.quiet costs one `import logging`.
_silence()
