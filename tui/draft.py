"""The draft's facts, derived once for every screen: the model's shape, the dataset's rows and validation split, what
each method would cost, which one to use, and the words that say whether one fits.

The App owns one `Draft`. Screens ask it for `facts()` and render them; none reads a shape, counts a split or
estimates memory itself, so Method, Review and Monitor cannot disagree. The slow inputs are read in App-owned
thread workers: the model's shape (a config.json; read again only when the model or trust_remote_code changes,
and kept per model, so going back to one is instant) and, when the Data screen asks, the dataset with a few
tokenized examples. Each arrival posts one `FactsChanged` to the active screen; a hidden screen redraws when it is
shown again. The estimates and the recommendation are pure Python (milliseconds): they are worked out on the UI
thread when a screen asks and something they depend on has changed (the draft, the shape, the rows, the free or
planned GPU memory), and kept until then.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from textual.app import ScreenStackError
from textual.content import Content

from core import splits
from core.config import DataSpec, RunConfig
from core.errors import TuneError
from tui.messages import DataRead, FactsChanged, ShapeRead

if TYPE_CHECKING:
    from core.resources.estimate import Estimate
    from core.resources.shape import ModelShape
    from core.resources.recommend import Recommendation
    from core.training.preview import Preview
    from tui.app import TuneApp

log = logging.getLogger(__name__)

ShapeKey = tuple[str, bool]
"""(model name or path, trust_remote_code): what a model's shape is read from."""
DataKey = tuple
"""What a data preview is made from: the model (its tokenizer) and the data settings it depends on."""

PREVIEW_EXAMPLES = 3
"""Examples the Data screen shows, tokenized as the model will see them."""
NO_DATA = "No data yet: pick a file on the left or type a path."
MIN_TRAIN_ROWS = 8
"""Fewer training rows than this left after the validation split: say so."""
MAX_VAL_SHARE = 0.2
"""A validation split above this share of the rows: say so."""


def load_model_shape(name_or_path: str, trust_remote_code: bool) -> ModelShape:
    """The one place the app reads a model's shape (runs in a worker: it may import transformers)."""
    from core.resources.shape import load_shape

    return load_shape(name_or_path, trust_remote_code)


def shape_key(config: RunConfig) -> ShapeKey:
    return config.model.name_or_path, config.model.trust_remote_code


def data_key(config: RunConfig) -> DataKey:
    d = config.data
    return (config.model.name_or_path, d.path, d.format, d.max_length, d.max_samples, d.text_column,
            d.label_column, d.system_prompt)


# ------------------------------------------------------------------ what fits, in words


FIT_WORDS: dict[str, tuple[str, str]] = {
    "fits": ("fits", "$text-success"), "tight": ("tight", "$text-warning"), "no": ("won't fit", "$text-error")}
"""core.resources.recommend's verdicts ('fits' | 'tight' | 'no') as every screen says and colours them."""


def fit_label(fit: str, *, no_gpu: bool = False) -> Content:
    """A method's verdict in its word and colour; `no_gpu`: the verdict is about training on this CPU."""
    word, style = FIT_WORDS.get(fit, (fit, ""))
    if no_gpu:
        word = "CPU: ok" if fit == "fits" else "CPU: too big"
    return Content.styled(word, f"bold {style}".strip())


# ------------------------------------------------------------------ the facts


@dataclass(frozen=True)
class ShapeReading:
    """A model's shape, or why it could not be read."""

    key: ShapeKey
    shape: ModelShape | None
    error: str | None


@dataclass(frozen=True)
class DataReading:
    """A data preview (core.training.preview.Preview: format, rows, examples, token stats), or why there is none."""

    key: DataKey
    preview: Preview | None
    error: str | None


@dataclass(frozen=True)
class Split:
    """The draft's data split into training and validation rows (counts need the dataset read once)."""

    rows: int | None
    """Rows in the dataset (None: not read yet, or a streamed file of unknown length)."""
    val_path: str | None
    """A separate validation file: then no row is held out."""
    val_size: float
    val: int | None
    """Rows held out for validation (None while `rows` is unknown)."""
    train: int | None
    warning: str | None
    """The split leaves too little to train on (or takes too much), with a value that fits; None when fine."""


def split_of(data: DataSpec, rows: int | None) -> Split:
    if rows is None:
        return Split(rows, data.val_path, data.val_size, None, None, None)
    val = 0 if data.val_path else splits.val_rows(rows, data.val_size)
    warning = None if data.val_path else val_split_warning(rows, data.val_size)
    return Split(rows, data.val_path, data.val_size, val, max(0, rows - val), warning)


def val_split_warning(rows: int, val_size: float) -> str | None:
    """What is wrong with taking `val_size` (a share < 1 or a row count) of `rows` for validation, with a value that
    fits (a split carried over from another dataset can leave next to nothing to train on); None when it's fine."""
    if not val_size or rows <= 0:
        return None
    count = splits.val_rows(rows, val_size)
    if not _val_split_bad(rows, count):
        return None
    suggested = round(rows * 0.1)
    fix = (f"Try {suggested} (10%), or 0 for no validation." if suggested >= 1 and not _val_split_bad(rows, suggested)
           else "Use 0 (no validation): there are too few rows to split.")
    left = rows - count
    trains = "nothing" if left <= 0 else f"only {left:,}"
    return f"⚠ Val split {val_size:g} takes {min(count, rows):,} of {rows:,} rows and leaves {trains} to train. {fix}"


def _val_split_bad(rows: int, count: int) -> bool:
    return count / rows > MAX_VAL_SHARE or rows - count < MIN_TRAIN_ROWS


@dataclass(frozen=True)
class Facts:
    """Everything the screens show about the draft `config`, derived from it once."""

    config: RunConfig
    shape_reading: ShapeReading | None
    """None while the shape is being read."""
    split: Split
    sampled: bool
    """The GPU memory to judge against is known: a plan was typed, or this machine has been sampled."""
    free_gib: float | None
    """The memory judged against: the planned GiB, else this machine's first GPU's free memory (None: no GPU)."""
    planned: bool
    estimates: dict[str, Estimate]
    """Each method's estimated peak for the draft's settings (empty until the shape is read): the
    recommendation's own once there is one (the recommender estimates every method first)."""
    recommendation: Recommendation | None
    """None until the shape is read and the GPU memory known."""
    error: str | None = None
    """Why the settings cannot be estimated (a TuneError's message)."""

    @property
    def shape(self) -> ModelShape | None:
        return self.shape_reading.shape if self.shape_reading is not None else None

    @property
    def shape_error(self) -> str | None:
        return self.shape_reading.error if self.shape_reading is not None else None

    @property
    def rows(self) -> int | None:
        return self.split.rows

    def fit(self, method: str) -> str | None:
        """'fits' | 'tight' | 'no' against a GPU's memory; None without a GPU (or before the verdict is in)."""
        rec = self.recommendation
        return None if rec is None or rec.no_gpu else rec.fit.get(method)


def derive(config: RunConfig, reading: ShapeReading | None, rows: int | None, sampled: bool, free_gib: float | None,
           planned: bool, gpus: int = 1) -> Facts:
    """The facts for `config` from what has been read (pure Python: the estimator and the recommender). With
    `gpus` > 1 (the GPUs a launch will use) the figures are per GPU, under train.distributed's strategy."""
    from core.resources.estimate import EstimateSettings, estimate_all
    from core.resources.recommend import recommend

    facts = Facts(config, reading, split_of(config.data, rows), sampled, free_gib, planned, {}, None)
    if reading is None or reading.shape is None:
        return facts
    try:
        settings = EstimateSettings.from_config(config).with_(gpus=gpus)
        if sampled:
            rec = recommend(reading.shape, settings, free_gib, rows)
            return replace(facts, estimates=rec.estimates, recommendation=rec)
        return replace(facts, estimates=estimate_all(reading.shape, settings))
    except TuneError as exc:
        return replace(facts, error=str(exc))


class Draft:
    """The App's one source of facts about its draft config (see the module's docstring)."""

    def __init__(self, app: TuneApp) -> None:
        self.app = app
        self._shapes: dict[ShapeKey, ShapeReading] = {}
        self._reading: set[ShapeKey] = set()
        self._rows: dict[str, int | None] = {}
        """Data path -> its rows, from the last preview of it that could be read."""
        self.data_wanted: DataKey | None = None
        """What the latest data preview was asked for."""
        self.data: DataReading | None = None
        """The latest data preview to arrive for what was asked."""
        self._data_asked: DataKey | None = None
        self._tokenizers: dict[str, object] = {}
        self._facts: Facts | None = None
        self._facts_from: tuple = ()

    # ------------------------------------------------------------ the facts

    def facts(self) -> Facts:
        """The facts for the app's draft as things stand; starts reading the model's shape when it is not known."""
        app = self.app
        config = app.config
        reading = self._shape(shape_key(config))
        plan, snapshot = app.plan_vram_gib, app.snapshot
        free: float | None
        if plan is not None:
            sampled, free = True, plan
        elif snapshot is not None:
            sampled, free = True, snapshot.free_gib()
        else:
            sampled, free = False, None
        rows = self._rows.get(config.data.path)
        try:
            gpus = app.gpu_plan().nproc
        except TuneError:  # Review says what is wrong with the choice; the figures stay those of one GPU
            gpus = 1
        inputs = (config, reading, rows, sampled, free, plan is not None, gpus)
        if self._facts is None or not _same(inputs, self._facts_from):
            self._facts, self._facts_from = derive(*inputs), inputs
        return self._facts

    def split(self) -> Split:
        """The draft's training / validation split alone (what the Data screen shows: no estimates needed)."""
        data = self.app.config.data
        return split_of(data, self._rows.get(data.path))

    @property
    def data_current(self) -> bool:
        """The data preview shown is the one last asked for."""
        return self.data is not None and self.data.key == self.data_wanted

    def _changed(self) -> None:
        try:
            screen = self.app.screen
        except ScreenStackError:  # shutting down: the screens are gone
            return
        screen.post_message(FactsChanged())

    # ------------------------------------------------------------ the model's shape

    def _shape(self, key: ShapeKey) -> ShapeReading | None:
        reading = self._shapes.get(key)
        if reading is None and key not in self._reading:
            self._read_shape(key)
        return reading

    def _read_shape(self, key: ShapeKey) -> None:
        self._reading.add(key)
        app = self.app

        def work() -> None:
            name, trust_remote_code = key
            try:
                reading = ShapeReading(key, load_model_shape(name, trust_remote_code), None)
            except TuneError as exc:
                reading = ShapeReading(key, None, str(exc))
            except Exception as exc:  # noqa: BLE001 - shown where the estimates go; the traceback is in the log
                log.exception("reading the shape of %s failed", name)
                reading = ShapeReading(key, None, f"Reading the model's shape failed: {exc!r}")
            app.post_message(ShapeRead(reading))

        app.run_worker(work, name="shape", thread=True, group="draft-shape", exit_on_error=False)

    def shape_read(self, reading: ShapeReading) -> None:
        """A shape arrived (the App hands it over on the UI thread)."""
        self._reading.discard(reading.key)
        self._shapes[reading.key] = reading
        if reading.key == shape_key(self.app.config):
            self._changed()

    def read_shape_again(self) -> None:
        """Forget the draft model's shape and read it again (its config.json may have been edited)."""
        key = shape_key(self.app.config)
        self._shapes.pop(key, None)
        self._facts = None
        if key not in self._reading:
            self._read_shape(key)

    # ------------------------------------------------------------ the data

    def read_data(self) -> None:
        """Read the draft's dataset and tokenize a few examples (in a worker; the Data screen asks, debounced).
        With no data path the answer is there at once."""
        config = self.app.config
        key = data_key(config)
        self.data_wanted = key
        if self.data_current or self._data_asked == key:
            return
        if not config.data.path.strip():
            self._data_asked, self.data = None, DataReading(key, None, NO_DATA)
            return
        self._data_asked = key
        app, tokenizers = self.app, self._tokenizers

        def work() -> None:
            try:
                reading = _read_data(config, key, tokenizers)
            except Exception as exc:  # noqa: BLE001 - shown where the preview goes; the traceback is in the log
                log.exception("the data preview failed")
                reading = DataReading(key, None, f"The preview failed: {exc!r}")
            app.post_message(DataRead(reading))

        app.run_worker(work, name="preview", thread=True, group="data-preview", exclusive=True,
                       exit_on_error=False)

    def data_read(self, reading: DataReading) -> None:
        """A data preview arrived (UI thread). One for settings changed since is dropped: a newer one is coming."""
        if self._data_asked == reading.key:
            self._data_asked = None
        if reading.preview is not None:
            self._rows[reading.key[1]] = reading.preview.rows
        if reading.key == self.data_wanted:
            self.data = reading
            self._changed()


def _read_data(config: RunConfig, key: DataKey, tokenizers: dict[str, object]) -> DataReading:
    from core import demo
    from core.imports import import_heavy

    import_heavy("datasets", "transformers")  # never at the same moment as a run's or a chat's first imports
    from core.training.preview import preview
    from core.training.models import load_tokenizer

    try:
        name = config.model.name_or_path
        if name not in tokenizers:
            # The demo's tokenizer ships in core/assets: no need to build the demo weights for a preview.
            where = demo.TOKENIZER_DIR if demo.is_demo(name) and demo.demo_name(name) in demo.DEMO_NAMES else None
            tokenizers[name] = load_tokenizer(config.model, where)
        return DataReading(key, preview(config.data, tokenizers[name], PREVIEW_EXAMPLES), None)
    except TuneError as exc:
        return DataReading(key, None, str(exc))


def _same(a: tuple, b: tuple) -> bool:
    """Inputs unchanged: the same objects (the draft, the shape reading) and equal numbers."""
    return len(a) == len(b) and all(x is y or (not isinstance(x, (RunConfig, ShapeReading)) and x == y)
                                    for x, y in zip(a, b))


__all__ = ["Draft", "Facts", "Split", "ShapeReading", "DataReading", "FIT_WORDS", "fit_label", "load_model_shape",
           "shape_key", "data_key", "split_of", "val_split_warning", "derive", "PREVIEW_EXAMPLES"]
