"""The built-in demo model `demo:tiny-llama`: its architecture and where its tokenizer lives. Imports nothing heavy.

Its tokenizer (a byte-level BPE trained on the demo datasets, scripts/build_demo_tokenizer.py) and its weights
(briefly pre-trained on plain text and chats, scripts/pretrain_demo_model.py) are shipped in core/assets; on first
use they are laid out as an ordinary model folder (see core.training.models).
"""
from __future__ import annotations

import os
from pathlib import Path

DEMO_PREFIX = "demo:"
DEMO_NAMES = ("tiny-llama",)
TOKENIZER_DIR = Path(__file__).parent / "assets" / "tiny-llama"

# A 4-layer Llama small enough to train on a laptop CPU in seconds. Sizes are multiples of 64 so that
# bitsandbytes' 4-bit blocks (64 values) tile every linear layer exactly.
TINY_LLAMA_CONFIG: dict = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": 4096,
    "hidden_size": 128,
    "intermediate_size": 384,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "hidden_act": "silu",
    "bos_token_id": None,
    "eos_token_id": 2,
    "pad_token_id": 3,
    "torch_dtype": "float32",
}


def is_demo(name_or_path: str) -> bool:
    return name_or_path.startswith(DEMO_PREFIX)


def demo_name(name_or_path: str) -> str:
    return name_or_path[len(DEMO_PREFIX):]


def demo_cache_dir() -> Path:
    """Where the demo model is materialised as an ordinary HF model folder."""
    root = os.environ.get("TUNETUI_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tunetui")
    return Path(root) / "demo-tiny-llama-v2"  # bump when the shipped weights change
