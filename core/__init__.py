"""tunetui's headless engine: config, events, training, resources. Never imports textual or tui."""
import os

from core.quiet import silence_harmless_notices as _silence

# Whatever imports the engine (the CLI, the app's training thread, a script) gets the filters before any library
# could log a notice: core.quiet costs one `import logging`.
_silence()

# Number CUDA devices as nvidia-smi and NVML do (PCI bus order), not CUDA's default fastest-first order: otherwise
# on a box with different GPUs, CUDA_VISIBLE_DEVICES=1 and "GPU 1" in the app or nvidia-smi can be different cards.
# CUDA reads this when it initialises (torch's first CUDA call, cuInit), not when torch is imported: every entry
# (tunetui's CLI and app, `python -m`, torchrun launching `tunetui train`) imports this package before any CUDA
# call. setdefault: a user's own choice stands.
os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
