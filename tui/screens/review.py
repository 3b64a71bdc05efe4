"""Review & launch screen: check the whole run, adjust the training settings, save it, launch it.

The resolved config as YAML, the equivalent `tunetui train` command line, batch / steps / learning-rate / output
settings, the GPUs (app.launch_gpus), what the run will cost, save as a preset, and Launch (Enter launches).
"""
from __future__ import annotations

import math
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.syntax import Syntax
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.content import Content
from textual.widgets import Button, Collapsible, Input, Select, Static

from core import methods
from core.config import RunConfig, dump_yaml, load, save, to_dict
from core.errors import TuneError
from core.spawn import GpuPlan
from tui.draft import Facts, fit_label
from tui.messages import FactsChanged
from tui.screens.setup_base import SetupScreen, get_value, parse_number, update_if_changed
from tui.widgets.fields import Choice

if TYPE_CHECKING:
    from core.resources.gpus import Snapshot

# widget id -> dotted key; numbers are read like YAML values, text fields are kept as typed
NUMBER_FIELDS = {
    "train-batch-size": "train.batch_size",
    "train-grad-accum": "train.grad_accum",
    "train-max-steps": "train.max_steps",
    "train-epochs": "train.epochs",
    "train-lr": "train.lr",
    "train-warmup": "train.warmup_ratio",
    "train-eval-steps": "train.eval_steps",
    "train-save-steps": "train.save_steps",
}
FORM_ROWS = (("train-batch-size", "Batch size", ""), ("train-grad-accum", "Grad accum", ""),
             ("train-max-steps", "Max steps", "-1: epochs"), ("train-epochs", "Epochs", ""),
             ("train-lr", "Learning rate", ""))
ADVANCED_ROWS = (("train-warmup", "Warm-up", "of the steps"), ("train-eval-steps", "Eval every", "steps, 0: end"),
                 ("train-save-steps", "Save every", "steps"))
SELECT_FIELDS = {"train-scheduler": "train.scheduler", "train-precision": "train.precision"}
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt", "cosine_with_min_lr", "warmup_stable_decay")
"""transformers' SchedulerType names that need no extra arguments (a config file may name another; it is kept)."""
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
SELECT_CHOICES = {"train-scheduler": SCHEDULERS, "train-precision": PRECISIONS}
TEXT_FIELDS = {"output-dir": "output.dir", "output-run-name": "output.run_name"}
DEFAULT_PRESET = "tunetui-run.yaml"
DEMO_PRESET = "presets/demo.yaml"


def flatten(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def set_value(value: Any) -> str:
    """A value as YAML, the way `--set key=value` reads it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(set_value(v) for v in value) + "]"
    return str(value)


def train_command(config: RunConfig, base_path: str, base: RunConfig, plan: GpuPlan | None = None) -> str:
    """`tunetui train BASE [--nproc N | --gpus LIST] --set ...`: the settings of `config` that differ from the file
    `base_path` (holding `base`), and the GPUs of `plan`, so the line reproduces this run headless."""
    old, new = flatten(to_dict(base)), flatten(to_dict(config))
    sets = [f"--set {shlex.quote(f'{key}={set_value(value)}')}" for key, value in new.items()
            if old.get(key) != value]
    gpus = [shlex.quote(arg) for arg in plan.arguments()] if plan is not None else []
    return " ".join(["tunetui", "train", shlex.quote(base_path), *gpus, *sets])


class ReviewScreen(SetupScreen):
    AUTO_FOCUS = "#launch"
    NAME = "review"
    SUBMIT_KEEPS = ("preset-path",)
    # Review is the last set-up step, so Enter (outside a text field) launches: Enter-Enter-Enter-Enter from the
    # Model screen trains the demo even when typed ahead of the screens appearing.
    BINDINGS = [
        Binding("l", "launch", "Launch"),
        Binding("enter", "launch", "Launch", show=False),  # the focused Launch button takes Enter itself
        Binding("ctrl+s", "save", "Save preset"),
        Binding("ctrl+r", "reload", "Reload file"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._bases: dict[str, tuple[int, RunConfig]] = {}

    def compose_body(self) -> ComposeResult:
        yield Static(id="review-config-error", classes="error", markup=False)
        yield Static(id="review-summary")
        yield Static(id="review-warning", markup=False)
        with Horizontal(id="review-body"):
            with VerticalScroll(id="review-form", can_focus=False):
                for wid, label, hint in FORM_ROWS:
                    with Horizontal(classes="form-row"):
                        yield Static(label, classes="label")
                        yield Input(id=wid, compact=True, classes="number")
                        if hint:
                            yield Static(hint, classes="hint")
                with Horizontal(classes="form-row"):
                    yield Static("Output dir", classes="label")
                    yield Input(id="output-dir", compact=True)
                with Horizontal(classes="form-row"):
                    yield Static("Run name", classes="label")
                    yield Input(id="output-run-name", placeholder="(auto: model-method)", compact=True)
                with Horizontal(classes="form-row"):
                    yield Static("GPUs", classes="label")
                    yield Input(self.app.launch_gpus, id="launch-gpus", compact=True, classes="number")
                    yield Static("all, or e.g. 0,2", classes="hint")
                with Collapsible(title="Advanced: schedule, eval, precision", collapsed=True,
                                 id="review-advanced"):
                    with Horizontal(classes="form-row"):
                        yield Static("Schedule", classes="label")
                        yield self._select("train-scheduler")
                    for wid, label, hint in ADVANCED_ROWS:
                        with Horizontal(classes="form-row"):
                            yield Static(label, classes="label")
                            yield Input(id=wid, compact=True, classes="number")
                            yield Static(hint, classes="hint")
                    with Horizontal(classes="form-row"):
                        yield Static("Precision", classes="label")
                        yield self._select("train-precision")
                yield Static(id="review-error", classes="error", markup=False)
                with Horizontal(classes="form-row"):
                    yield Static("Save as", classes="label")
                    yield Input(id="preset-path", compact=True)
                with Horizontal(id="review-buttons"):
                    yield Button("Save (ctrl+s)", id="save")
                    yield Button("Launch (l)", id="launch", variant="success")
            with VerticalScroll(id="review-yaml"):
                yield Static(id="review-yaml-text")
        yield Static(id="review-command", markup=False)

    def _select(self, wid: str) -> Select:
        """A choice field built holding the draft's value (a Select built on its first option would report that
        option as a change, an edit the user never made)."""
        value = get_value(self.app.config, SELECT_FIELDS[wid])
        known = SELECT_CHOICES[wid]
        options = known if value in known else (*known, value)  # a value from a config file this list lacks
        return Choice([(v, v) for v in options], value=value, id=wid, allow_blank=False, compact=True)

    def on_mount(self) -> None:
        self.query_one("#review-error").display = False
        # Saving the draft over a config file that failed to load would lose what the user wrote in it.
        usable = self.app.config_path and not self.app.config_error
        self.query_one("#preset-path", Input).value = self.app.config_path if usable else DEFAULT_PRESET
        super().on_mount()
        self._show_config_error()

    def on_screen_resume(self) -> None:
        # (SetupScreen's _on_screen_resume has redrawn the draft already.) Launch has focus on arrival, so
        # Enter-Enter-Enter-Enter from the Model screen trains the demo.
        self._focus_launch()

    def _focus_launch(self) -> None:
        launch = self.query_one("#launch", Button)
        if launch.disabled:
            # Nothing focused, so Enter reaches the screen's launch (which says why not) rather than, say, Save.
            self.set_focus(None)
        else:
            launch.focus()

    @property
    def error_box(self) -> Static:
        return self.query_one("#review-error", Static)

    def _show_config_error(self) -> None:
        box = self.query_one("#review-config-error", Static)
        error = self.app.config_error
        box.update(f"{self.app.config_path or 'The config file'} could not be used, so this is the demo draft; "
                   f"Launch waits until you fix the file and reload it (ctrl+r), or edit or save this draft. {error}"
                   if error else "")
        box.display = bool(error)
        launch = self.query_one("#launch", Button)
        if launch.disabled != bool(error):
            launch.disabled = bool(error)
            if self.is_current:
                self.call_after_refresh(self._focus_launch)
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "reload":  # offered only while the file named on the command line is broken
            return bool(self.app.config_error and self.app.config_path)
        return super().check_action(action, parameters)

    def action_reload(self) -> None:
        """Read the config file again (the user fixed it in an editor): on success it becomes the draft."""
        path = self.app.config_path
        try:
            config = load(path)
        except TuneError as exc:
            self.app.config_error = str(exc)
            self._show_config_error()
            self.notify(str(exc), title=f"{path} still cannot be used", severity="error", markup=False)
            return
        self.app.config_error = None
        self.app.set_config(config)
        self.query_one("#preset-path", Input).value = path
        self._show_config_error()
        self.notify(f"Loaded {path}", title="Config loaded")

    # ------------------------------------------------------------ editing

    @on(Input.Changed)
    def _changed(self, event: Input.Changed) -> None:
        wid = event.input.id or ""
        if wid in NUMBER_FIELDS:
            self.apply({NUMBER_FIELDS[wid]: parse_number(event.value)}, self.error_box, event.input)
        elif wid in TEXT_FIELDS:
            value: str | None = event.value.strip()
            if wid == "output-run-name" and not value:
                value = None
            self.apply({TEXT_FIELDS[wid]: value}, self.error_box, event.input)
        elif wid == "launch-gpus":
            self.app.launch_gpus = event.value.strip() or "all"
            self.snapshot_changed(self.app.snapshot)  # the same redraw as a new GPU sample
        elif wid == "preset-path":
            self._show_command()

    @on(Select.Changed)
    def _select_changed(self, event: Select.Changed) -> None:
        key = SELECT_FIELDS.get(event.select.id or "")
        if key and event.value is not Select.NULL:
            self.apply({key: event.value}, self.error_box, event.select)

    @on(Input.Submitted, "#preset-path")
    def _save_submitted(self) -> None:
        self.action_save()

    def show_config(self, config: RunConfig, from_self: bool) -> None:
        if not from_self:
            self.forget_errors(self.error_box)
            self._check_gpus()  # not a config key: its problem outlives a redraw of the config's fields
            for wid, key in {**NUMBER_FIELDS, **TEXT_FIELDS}.items():
                field = self.query_one(f"#{wid}", Input)
                field.remove_class("-invalid")
                value = get_value(config, key)
                text = "" if value is None else str(value)
                if field.value != text:
                    field.value = text
            for wid, key in SELECT_FIELDS.items():
                select = self.query_one(f"#{wid}", Select)
                value = get_value(config, key)
                known = SELECT_CHOICES[wid]
                if value not in known:  # a scheduler this list lacks, from a config file: offer it, don't drop it
                    select.set_options([(v, v) for v in (*known, value)])
                if select.value != value:
                    select.value = value
        self._show_config_error()
        self._show_summary()
        # Highlighted once into Text: a Syntax renderable would run the lexer again on every repaint.
        yaml_text = Syntax(dump_yaml(config), "yaml", theme="ansi_dark", background_color="default").highlight(
            dump_yaml(config))
        yaml_text.rstrip()
        self.query_one("#review-yaml-text", Static).update(yaml_text)
        self._show_command()

    # ------------------------------------------------------------ the summary: what this run will cost

    def _show_summary(self) -> None:
        config, box = self.config, self.query_one("#review-summary", Static)
        facts = self.app.draft.facts()
        t, d, split = config.train, config.data, facts.split
        if t.max_steps > 0:
            steps = f"{t.max_steps} steps"
        elif split.rows and split.train is not None:
            per_epoch = math.ceil(split.train / (t.batch_size * t.grad_accum))
            steps = f"{math.ceil(per_epoch * t.epochs)} steps ({per_epoch}/epoch over {split.train:,} rows)"
        else:
            steps = f"{t.epochs:g} epoch(s)"
        lines = [
            Content.assemble(("Model  ", "dim"), config.model.name_or_path),
            Content.assemble(("Method ", "dim"), methods.get(config.method.kind).describe(config.method)),
            Content.assemble(("Data   ", "dim"), d.path or "(none)"),
            Content.assemble(("Train  ", "dim"), f"{steps}, {t.batch_size * t.grad_accum} per step"),
        ]
        lines.append(self._memory_line(facts))
        lines.append(self._gpu_line())
        # The split may have come with another dataset: say so where the run is launched too.
        advice = split.warning
        warning = self.query_one("#review-warning", Static)
        update_if_changed(warning, f"{advice} Change it on Data (3)." if advice else "")
        warning.display = bool(advice)
        update_if_changed(box, Content("\n").join(lines))

    @staticmethod
    def _memory_line(facts: Facts) -> Content:
        if facts.shape is None:
            return Content.assemble(("Memory ", "dim"), (facts.shape_error or "estimating…", "dim"))
        if facts.error:
            return Content.assemble(("Memory ", "dim"), (facts.error, "$text-error"))
        peak = facts.estimates[facts.config.method.kind].peak_gib
        fit = facts.fit(facts.config.method.kind)
        if not facts.sampled:
            verdict = Content.styled("checking the GPU…", "dim")
        elif fit is None or facts.free_gib is None:
            verdict = Content.styled("no GPU here", "dim")
        else:
            where = "planned" if facts.planned else "free"
            verdict = Content.assemble(fit_label(fit), f" in {facts.free_gib:.1f} GiB {where}")
        return Content.assemble(("Memory ", "dim"), f"~{peak:.1f} GiB peak, ", verdict)

    def _gpu_plan(self) -> GpuPlan | None:
        """The GPUs Launch would use now (app.gpu_plan); None while they are unknown or the field is wrong."""
        try:
            return self.app.gpu_plan() if self.app.snapshot is not None else None
        except TuneError:
            return None

    def _gpu_line(self) -> Content:
        plan, sampled = self._gpu_plan(), self.app.snapshot is not None
        return Content.assemble(("GPUs   ", "dim"), plan.describe(named=False) if plan else (
            "see the GPUs field" if sampled else "checking the GPUs…", "dim"))

    def _check_gpus(self) -> None:
        """Mark the GPUs field and say why when it is not a list of this machine's GPUs (a GPU that goes away
        while the screen is open shows up here too)."""
        field, errors = self.query_one("#launch-gpus", Input), self._field_errors.setdefault(id(self.error_box), {})
        problem = self.app.gpu_problem()
        if errors.get(id(field)) != problem:
            field.set_class(problem is not None, "-invalid")
            errors.pop(id(field), None)
            if problem is not None:
                errors[id(field)] = problem
            self._show_errors(self.error_box, errors, problem)

    def on_facts_changed(self, message: FactsChanged) -> None:
        self._show_summary()

    def snapshot_changed(self, snapshot: Snapshot | None) -> None:
        self._check_gpus()
        self._show_summary()
        self._show_command()

    def _show_command(self) -> None:
        base_path, base = self._command_base()
        if base is None:
            path = self.query_one("#preset-path", Input).value.strip() or DEFAULT_PRESET
            line = f"ctrl+s saves {path}; then headless: " + train_command(self.config, path, self.config,
                                                                          self._gpu_plan())
        else:
            line = "Headless: " + train_command(self.config, base_path, base, self._gpu_plan())
        update_if_changed(self.query_one("#review-command", Static), line)

    def _command_base(self) -> tuple[str, RunConfig | None]:
        """The config file the command line starts from: the one opened or saved, else the demo preset when it
        is here (a checkout); None when there is no file yet."""
        candidates = [] if self.app.config_error else [self.app.config_path]
        candidates.append(DEMO_PRESET)
        for path in candidates:
            if path and Path(path).is_file():
                try:
                    return path, self._load_base(path)
                except TuneError:
                    continue  # changed on disk since and now broken: try the next, or offer to save
        return "", None

    def _load_base(self, path: str) -> RunConfig:
        """load(path), read again only when the file changed (this runs on every edit of the draft)."""
        stamp = Path(path).stat().st_mtime_ns
        cached = self._bases.get(path)
        if cached is None or cached[0] != stamp:
            cached = self._bases[path] = (stamp, load(path))
        return cached[1]

    # ------------------------------------------------------------ actions

    @on(Button.Pressed, "#save")
    def action_save(self) -> None:
        path = self.query_one("#preset-path", Input).value.strip() or DEFAULT_PRESET
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            save(self.config, path)
        except OSError as exc:
            self.error_box.update(f"Cannot save {path}: {exc.strerror or exc}. Choose another path.")
            self.error_box.display = True
            return
        self.app.config_path = path
        self.app.config_error = None
        self._show_config_error()
        self._show_command()
        self.notify(f"Saved {path}", title="Preset saved")

    @on(Button.Pressed, "#launch")
    def action_launch(self) -> None:
        if self.app.config_error:
            self.notify(f"{self.app.config_path or 'The config file'} could not be used. Fix it and reload it "
                        "(ctrl+r), or edit or save this draft, before launching.", title="Cannot launch",
                        severity="error", markup=False)
            return
        if self.error_box.display:
            self.notify("Fix the highlighted setting first.", title="Cannot launch", severity="error")
            return
        if not self.config.data.path.strip():
            self.notify("No data is set: choose a file on the Data screen (3).", title="Cannot launch",
                        severity="error")
            return
        self.app.launch()

