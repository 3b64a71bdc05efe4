"""Models a user can pick: the demo, the Hugging Face cache, a models folder, recent choices; and what each one is
(from its config alone). Imports nothing heavy: the model screen calls it from a worker thread.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from core import demo
from core.errors import TuneError
from core.hub import TOKENIZER_FILES, has_tokenizer, hf_cache_dir
from core.resources.shape import find_config, shape_from_config

log = logging.getLogger(__name__)

RECENT_FILE = "recent_models.json"
RECENT_LIMIT = 12
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


@dataclass(frozen=True)
class ModelEntry:
    name_or_path: str
    source: str
    """demo | hf-cache | folder | recent."""
    size_bytes: int | None
    note: str


@dataclass(frozen=True)
class ModelInfo:
    name_or_path: str
    architecture: str | None
    params: int | None
    layers: int | None
    hidden_size: int | None
    vocab_size: int | None
    dtype: str | None
    size_on_disk_bytes: int | None
    has_tokenizer: bool
    problems: tuple[str, ...]
    """Things that would stop a run, in words, e.g. "no tokenizer files in /models/x"."""


# ------------------------------------------------------------------ listing

def list_models(models_dir: str | Path | None = None, recent: Sequence[str] = ()) -> list[ModelEntry]:
    """The demo first, then recent choices, models under `models_dir`, and model repos in the HF cache."""
    entries: list[ModelEntry] = [ModelEntry(demo.DEMO_PREFIX + "tiny-llama", "demo", None,
                                            "built-in 4-layer Llama: trains on a CPU in seconds")]
    folder = _folder_models(Path(models_dir).expanduser()) if models_dir else []
    cached = _cached_models()
    known = {e.name_or_path for e in entries + folder + cached}
    for name in recent:
        if name not in known:
            entries.append(ModelEntry(name, "recent", _dir_size(Path(name)) if Path(name).is_dir() else None,
                                      "used before" if _exists(name) else "used before; not found now"))
            known.add(name)
    return entries + folder + cached


def _exists(name: str) -> bool:
    if demo.is_demo(name) or Path(name).expanduser().exists():
        return True
    try:
        find_config(name)
        return True
    except TuneError:
        return False


def _folder_models(root: Path) -> list[ModelEntry]:
    """Model folders (holding config.json) at `root`, one level below it, or two (org/name)."""
    if not root.is_dir():
        return []
    found: list[Path] = []
    if (root / "config.json").is_file():
        found.append(root)
    try:
        for child in sorted(root.iterdir()):
            if not child.is_dir() or child.name.startswith("."):
                continue
            if (child / "config.json").is_file():
                found.append(child)
            else:
                found += [g for g in sorted(child.iterdir()) if g.is_dir() and (g / "config.json").is_file()]
    except OSError as exc:
        log.warning("cannot list %s: %s", root, exc)
    return [ModelEntry(str(p), "folder", _dir_size(p), _arch_note(p / "config.json")) for p in found]


def _cached_models() -> list[ModelEntry]:
    """Model repos in the HF cache; a missing or damaged cache is simply empty."""
    from huggingface_hub import scan_cache_dir

    try:
        info = scan_cache_dir(hf_cache_dir())
    except Exception as exc:  # noqa: BLE001 - CacheNotFound, CorruptedCacheException, permissions: list nothing
        log.info("no usable Hugging Face cache at %s: %s", hf_cache_dir(), exc)
        return []
    out = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id.lower()):
        if repo.repo_type != "model":
            continue
        config = next((f.file_path for rev in repo.revisions for f in rev.files if f.file_name == "config.json"), None)
        note = _arch_note(config) if config else "no config.json cached"
        out.append(ModelEntry(repo.repo_id, "hf-cache", int(repo.size_on_disk), note))
    return out


def _arch_note(config_path: Path | None) -> str:
    try:
        cfg = json.loads(Path(config_path).read_text(encoding="utf-8"))
        archs = cfg.get("architectures") or [cfg.get("model_type") or "?"]
        return str(archs[0])
    except (OSError, ValueError, AttributeError, TypeError):
        return "unreadable config.json"


def _dir_size(path: Path) -> int | None:
    """Bytes of the weight files in a model folder (symlinks followed: the HF cache links into blobs/)."""
    try:
        return sum(f.stat().st_size for f in path.iterdir() if f.is_file() and f.suffix in WEIGHT_SUFFIXES) or None
    except OSError:
        return None


# ------------------------------------------------------------------ describing one model

def _model_dir(name_or_path: str) -> Path | None:
    """The local folder holding the model's files (a snapshot folder for hub ids), or None."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.is_file():
        return path.parent
    return None


def describe_model(name_or_path: str) -> ModelInfo:
    """What a model is, read from its config (no weights, no torch). Never raises for a bad path or config: what
    is wrong goes into `problems`."""
    problems: list[str] = []
    if demo.is_demo(name_or_path):
        folder, cfg = demo.TOKENIZER_DIR, None
        try:
            cfg, _ = find_config(name_or_path)
        except TuneError as exc:
            problems.append(exc.what)
        has_tok = has_tokenizer(folder)
        size = _dir_size(folder)  # the shipped weights
    else:
        cfg, config_path = None, None
        try:
            cfg, config_path = find_config(name_or_path)
        except TuneError as exc:
            problems.append(exc.what)
        folder = _model_dir(name_or_path) or (config_path.parent if config_path else None)
        has_tok = folder is not None and has_tokenizer(folder)
        if folder is not None and not has_tok:
            problems.append(f"no tokenizer files in {folder} (looked for {', '.join(TOKENIZER_FILES[:4])}, …)")
        size = _dir_size(folder) if folder is not None else None
        if folder is not None and cfg is not None and size is None:
            problems.append(f"no weight files (*.safetensors, *.bin) in {folder}: enough to estimate memory, "
                            "not to train")
    shape = None
    if cfg is not None:
        try:
            shape = shape_from_config(cfg, name_or_path, allow_transformers=False)
        except (TuneError, KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
            problems.append(f"config.json does not describe a model tunetui can size: {exc}")
    arch = None
    if cfg is not None:
        archs = cfg.get("architectures") or []
        arch = str(archs[0]) if archs else cfg.get("model_type")
    return ModelInfo(
        name_or_path=name_or_path, architecture=arch,
        params=shape.total_params if shape is not None and shape.exact else None,
        layers=shape.num_layers if shape else None, hidden_size=shape.hidden_size if shape else None,
        vocab_size=shape.vocab_size if shape else None, dtype=shape.dtype if shape else None,
        size_on_disk_bytes=size, has_tokenizer=has_tok, problems=tuple(problems))


# ------------------------------------------------------------------ recent choices

def _config_dir() -> Path:
    env = os.environ
    if env.get("TUNETUI_CONFIG_DIR"):
        return Path(env["TUNETUI_CONFIG_DIR"])
    return Path(env.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")) / "tunetui"


def recent_models() -> list[str]:
    """Models picked before, most recent first (a missing or damaged file is an empty list)."""
    try:
        data = json.loads((_config_dir() / RECENT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [x for x in data if isinstance(x, str)][:RECENT_LIMIT] if isinstance(data, list) else []


def remember_model(name_or_path: str) -> None:
    """Put a model at the top of the recent list (written atomically; failures only logged)."""
    names = [name_or_path] + [n for n in recent_models() if n != name_or_path]
    folder = _config_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / (RECENT_FILE + ".tmp")
        tmp.write_text(json.dumps(names[:RECENT_LIMIT], indent=1), encoding="utf-8")
        tmp.replace(folder / RECENT_FILE)
    except OSError as exc:
        log.warning("cannot remember the model in %s: %s", folder, exc)


__all__ = ["ModelEntry", "ModelInfo", "list_models", "describe_model", "recent_models", "remember_model"]
