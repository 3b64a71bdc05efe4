"""Every message the app posts to itself: what a thread worker found, what the App tells its screens.

Each is a small dataclass (Textual builds messages from dataclasses) posted with `post_message`, which is
thread-safe and never blocks the worker. None bubbles: each goes to the one node that handles it. The handler of
`FooBar` is `on_foo_bar`. Imports nothing heavy: the types named here are for reading only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.message import Message

if TYPE_CHECKING:
    from core.catalog import ModelEntry, ModelInfo
    from core.chat import ChatModel, Classification
    from core.chattarget import LoadEstimate, Target
    from core.config import RunConfig
    from core.events import Event
    from core.resources.gpus import Snapshot
    from core.rundir import RunSummary
    from tui.draft import DataReading, ShapeReading
    from tui.screens.compare import ComparedRun
    from tui.session import RunState


# ------------------------------------------------------------------ the App to its screens


@dataclass
class ConfigChanged(Message, bubble=False):
    """The draft config changed (posted to every existing screen by `TuneApp.set_config`)."""

    config: RunConfig


@dataclass
class SnapshotTaken(Message, bubble=False):
    """A fresh GPU/host sample: posted by the sampler's worker to the App, which forwards it to the active screen."""

    snapshot: Snapshot


@dataclass
class FactsChanged(Message, bubble=False):
    """What the draft's facts are made from arrived (the model's shape, the dataset's rows and preview): posted to
    the active screen, which redraws from `app.draft`. Hidden screens redraw when shown again."""


@dataclass
class HungUp(Message, bubble=False):
    """SIGHUP arrived (posted by the signal handler so the App reacts on its own loop)."""


@dataclass
class EngineEvent(Message, bubble=False):
    """One engine event, posted from the training thread to the App (which folds it into the session)."""

    event: Event


# ------------------------------------------------------------------ the draft's workers (to the App)


@dataclass
class ShapeRead(Message, bubble=False):
    """The model's shape was read (or why it could not be)."""

    reading: ShapeReading


@dataclass
class DataRead(Message, bubble=False):
    """The dataset was read and a few examples tokenized (or why it could not be)."""

    reading: DataReading


# ------------------------------------------------------------------ Model screen


@dataclass
class ModelsListed(Message, bubble=False):
    """The models found on this machine (the HF cache, a models folder, recent choices)."""

    entries: list[ModelEntry]
    error: str | None = None


@dataclass
class ModelDescribed(Message, bubble=False):
    """One model's details, or (a str) why it cannot be described."""

    name: str
    info: ModelInfo | str


# ------------------------------------------------------------------ Runs and Compare


@dataclass
class RunsListed(Message, bubble=False):
    runs: list[RunSummary]
    error: str | None


@dataclass
class RunLoaded(Message, bubble=False):
    """One run's events replayed (None: it has none yet) and its config as YAML."""

    run_dir: str
    state: RunState | None
    config_yaml: str | None
    error: str | None


@dataclass
class RunsCompared(Message, bubble=False):
    runs: list[ComparedRun]


# ------------------------------------------------------------------ Chat


@dataclass
class TargetDescribed(Message, bubble=False):
    """What a typed run or model is and what loading it takes; `load`: loading follows."""

    text: str
    target: Target | None
    estimate: LoadEstimate | None
    error: str | None
    load: bool


@dataclass
class LoadProgress(Message, bubble=False):
    text: str


@dataclass
class ModelLoaded(Message, bubble=False):
    model: ChatModel | None
    error: str | None


@dataclass
class ReplyDone(Message, bubble=False):
    """One column's reply ended: `text` (a chat) or `result` (a classification), stopped, or failed."""

    column: str
    text: str
    stopped: bool
    error: str | None = None
    result: Classification | None = None


@dataclass
class GenerationDone(Message, bubble=False):
    """Both columns have replied."""


# ------------------------------------------------------------------ Merge and save


@dataclass
class ExportProgress(Message, bubble=False):
    text: str


@dataclass
class ExportEnded(Message, bubble=False):
    path: str | None
    size_bytes: int | None
    error: str | None


__all__ = ["ConfigChanged", "DataRead", "EngineEvent", "ExportEnded", "ExportProgress", "FactsChanged",
           "GenerationDone", "HungUp", "LoadProgress", "ModelDescribed", "ModelLoaded", "ModelsListed",
           "ReplyDone", "RunLoaded", "RunsCompared", "RunsListed", "ShapeRead", "SnapshotTaken",
           "TargetDescribed"]
