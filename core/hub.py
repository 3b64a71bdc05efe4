"""Hugging Face naming and layout: what a hub id is, where the local hub cache lives, which files make a tokenizer.

Used by model loading, data loading, the model catalog, the memory estimate and chat. Imports nothing heavy:
huggingface_hub is imported inside the one function that needs it.
"""
from __future__ import annotations

import os
from pathlib import Path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model",
                   "sentencepiece.bpe.model")
"""Vocabulary files: any one of them makes a folder loadable with AutoTokenizer (fast, sentencepiece, BPE,
WordPiece). tokenizer_config.json alone is not enough: it names a tokenizer class but holds no vocabulary."""


def is_hub_id(text: str) -> bool:
    """True when `text` can name a Hugging Face hub repository: `name` or `owner/name`.

    The rule is huggingface_hub's own (validate_repo_id): letters, digits, `-`, `_` and `.`, no `--` or `..`, not
    starting or ending with `-` or `.`, at most 96 characters a part. Anything else (./x, /x, ~/x, a/b/c) can only
    be meant as a local path."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def hf_cache_dir() -> str:
    """The hub cache the way huggingface_hub resolves it, read now (its constants are frozen at import)."""
    env = os.environ
    if env.get("HF_HUB_CACHE"):
        return env["HF_HUB_CACHE"]
    if env.get("HUGGINGFACE_HUB_CACHE"):
        return env["HUGGINGFACE_HUB_CACHE"]
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                                               "huggingface")
    return os.path.join(home, "hub")


def has_tokenizer(folder: Path) -> bool:
    """The folder holds a tokenizer's vocabulary (one of TOKENIZER_FILES)."""
    return any((Path(folder) / name).is_file() for name in TOKENIZER_FILES)


__all__ = ["TOKENIZER_FILES", "is_hub_id", "hf_cache_dir", "has_tokenizer"]
