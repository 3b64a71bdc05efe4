"""Method screen: the four methods side by side, what each would cost on this machine, and their settings.

Full / Freeze / LoRA / QLoRA with their estimated peak memory against the free GPU memory (fits / tight / won't
fit) and the recommended one with its reason; per-method settings, validated, that move the estimate as they change.

The shape, the estimates and the recommendation come from the App's draft facts (tui.draft), which Review and
Monitor show too: this screen only draws them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.events import Click
from textual.widgets import Checkbox, Input, Select, SelectionList, Static

from core import methods, units
from core.config import METHODS, RunConfig
from tui.draft import Facts, fit_label
from tui.messages import FactsChanged
from tui.screens.setup_base import SetupScreen, get_value, parse_number, update_if_changed
from tui.widgets.fields import Choice, Tick

if TYPE_CHECKING:
    from core.resources.estimate import Estimate
    from core.resources.shape import ModelShape
    from core.resources.gpus import Snapshot
    from core.resources.recommend import Recommendation

DTYPES = ("auto", "float32", "bfloat16", "float16")
OPTIMS = (("AdamW (32-bit)", "adamw"), ("AdamW 8-bit", "adamw8bit"), ("Paged AdamW 8-bit", "paged_adamw8bit"))

# widget id -> dotted config key, for the fields typed as text
TEXT_FIELDS = {
    "freeze-layers": "method.freeze.trainable_layers",
    "lora-r": "method.lora.r",
    "lora-alpha": "method.lora.alpha",
    "lora-dropout": "method.lora.dropout",
}
# widget id -> dotted config key, for checkboxes and selects
CHOICE_FIELDS = {
    "lora-rslora": "method.lora.use_rslora",
    "lora-dora": "method.lora.use_dora",
    "quant-bits": "method.quant.bits",
    "quant-type": "method.quant.type",
    "quant-double": "method.quant.double_quant",
    "quant-compute": "method.quant.compute_dtype",
    "mem-gc": "train.gradient_checkpointing",
    "mem-optim": "train.optim",
}
FREEZE_EXTRAS = ("norm", "embed_tokens", "lm_head")
BREAKDOWN_MIN_WIDTH = 120


class MethodCard(Static):
    """One method: its trade-off, estimated peak and whether it fits. Click to choose it."""

    def __init__(self, method: str) -> None:
        super().__init__(id=f"card-{method}", classes="method-card")
        self.method = method
        self.border_title = methods.get(method).title

    def on_click(self, event: Click) -> None:
        screen = self.screen
        assert isinstance(screen, MethodScreen)
        screen.choose(self.method)


class MethodCards(Horizontal, can_focus=True):
    """The four cards; ←/→ choose the method while this has focus (Enter then goes on to Data)."""

    BINDINGS = [Binding("left", "step(-1)", "Method", key_display="←→"),
                Binding("right", "step(1)", "Next method", show=False)]

    def action_step(self, delta: int) -> None:
        screen = self.screen
        assert isinstance(screen, MethodScreen)
        index = METHODS.index(screen.config.method.kind)
        screen.choose(METHODS[(index + delta) % len(METHODS)])


class MethodScreen(SetupScreen):
    AUTO_FOCUS = "#method-cards"
    NAME = "method"
    BINDINGS = [Binding("enter", "next", "Next")]

    def __init__(self) -> None:
        super().__init__()
        self._targets_from: ModelShape | None = None
        """The shape whose linear layers the targets list shows."""

    def compose_body(self) -> ComposeResult:
        with MethodCards(id="method-cards"):
            for method in METHODS:
                yield MethodCard(method)
        yield Static(id="method-reason", markup=False)
        yield Static(id="method-error", classes="error", markup=False)
        # One scroll for the settings and the breakdown: side by side when wide, the breakdown below at 80 columns.
        with VerticalScroll(id="method-lower"):
            with Vertical(id="method-settings"):
                with Horizontal(classes="form-row"):
                    yield Static("Plan for", classes="label")
                    yield Input(id="plan-gib", compact=True, classes="number", placeholder="this GPU")
                    yield Static("GiB per GPU (blank: this machine's)", id="plan-hint", classes="hint",
                                 markup=False)
                yield from self._compose_settings()
            yield Static(id="method-breakdown")

    def _draft(self, wid: str) -> Any:  # a config value: int, str or bool
        """The draft's value for a choice field, to build it with: a Select built on its first option reports that
        option as a change, which would overwrite the draft (and count as the user's edit)."""
        return get_value(self.app.config, CHOICE_FIELDS[wid])

    def _compose_settings(self) -> ComposeResult:
        with Vertical(id="group-full", classes="method-group method-options"):
            yield Static("All weights train. If it does not fit, turn on the memory savers below.", classes="hint")
        with Vertical(id="group-freeze", classes="method-group method-options"):
            with Horizontal(classes="form-row"):
                yield Static("Trainable layers", classes="label")
                yield Input(id="freeze-layers", compact=True, classes="number")
                yield Static(id="freeze-which", classes="hint", markup=False)
            with Horizontal(classes="form-row"):
                yield Static("Also train", classes="label")
                for name in FREEZE_EXTRAS:
                    yield Tick(name, id=f"freeze-extra-{name}", compact=True)
        with Vertical(id="group-quant", classes="method-group method-options"):
            with Horizontal(classes="form-row"):
                yield Static("Base weights", classes="label")
                yield Choice([("4-bit", 4), ("8-bit", 8)], id="quant-bits",
                             value=self._draft("quant-bits"), allow_blank=False, compact=True)
                yield Choice([("nf4", "nf4"), ("fp4", "fp4")], id="quant-type",
                             value=self._draft("quant-type"), allow_blank=False, compact=True)
                yield Tick("double quant", id="quant-double", compact=True)
            with Horizontal(classes="form-row"):
                yield Static("Compute dtype", classes="label")
                yield Choice([(d, d) for d in DTYPES], id="quant-compute",
                             value=self._draft("quant-compute"), allow_blank=False, compact=True)
        with Vertical(id="group-lora", classes="method-group method-options"):
            with Horizontal(classes="form-row"):
                yield Static("Rank", classes="label")
                yield Input(id="lora-r", compact=True, classes="number")
                yield Static("Alpha", classes="label-short")
                yield Input(id="lora-alpha", compact=True, classes="number")
                yield Static("Dropout", classes="label-short")
                yield Input(id="lora-dropout", compact=True, classes="number")
            with Horizontal(classes="form-row"):
                yield Static("Variants", classes="label")
                yield Tick("rsLoRA", id="lora-rslora", compact=True)
                yield Tick("DoRA", id="lora-dora", compact=True)
            yield Static("Targets (the model's linear layers; all ticked = all-linear)", classes="hint")
            yield SelectionList(id="lora-targets", compact=True)
        with Vertical(id="group-memory", classes="method-group"):
            with Horizontal(classes="form-row"):
                yield Static("Memory savers", classes="label")
                yield Tick("gradient checkpointing", id="mem-gc", compact=True)
                yield Choice(list(OPTIMS), id="mem-optim",
                             value=self._draft("mem-optim"), allow_blank=False, compact=True)
        yield Static(id="method-suggestions", markup=False)

    def on_resize(self) -> None:
        # The breakdown has room beside the form on a wide terminal; at 80 columns it goes below the form.
        self.query_one("#method-lower").set_class(self.size.width >= BREAKDOWN_MIN_WIDTH, "-wide")

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#method-error").display = False
        plan = self.app.plan_vram_gib
        self.query_one("#plan-gib", Input).value = "" if plan is None else f"{plan:g}"

    # ------------------------------------------------------------ choosing a method

    def choose(self, method: str) -> None:
        self.apply({"method.kind": method}, self.error_box)

    @property
    def error_box(self) -> Static:
        return self.query_one("#method-error", Static)

    # ------------------------------------------------------------ the form

    @on(Input.Changed, "#plan-gib")
    def _plan_changed(self, event: Input.Changed) -> None:
        """GiB per GPU to plan for instead of this machine's GPU: moves the fit words and the recommendation only
        (the run config does not change; `tunetui estimate --vram` is the same on the command line)."""
        event.stop()
        self._apply_plan(event.input)

    def _apply_plan(self, field: Input) -> None:
        text = field.value.strip()
        value = parse_number(text)
        errors = self._field_errors.setdefault(id(self.error_box), {})
        if text and (not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0):
            field.add_class("-invalid")
            errors[id(field)] = (f"Plan for: {text!r} is not a memory size. Type the GPU's free memory in GiB "
                                 "(e.g. 24), or leave it blank to plan for this machine.")
            self._show_errors(self.error_box, errors, errors[id(field)])
            return
        field.remove_class("-invalid")
        errors.pop(id(field), None)
        self._show_errors(self.error_box, errors, None)
        self.app.plan_vram_gib = float(value) if text and isinstance(value, (int, float)) else None
        self.refresh_estimates()

    @on(Input.Changed)
    def _text_changed(self, event: Input.Changed) -> None:
        key = TEXT_FIELDS.get(event.input.id or "")
        if key:
            self.apply({key: parse_number(event.value)}, self.error_box, event.input)
            self._show_freeze_which()

    @on(Checkbox.Changed)
    def _checkbox_changed(self, event: Checkbox.Changed) -> None:
        wid = event.checkbox.id or ""
        if wid.startswith("freeze-extra-"):
            extras = [n for n in FREEZE_EXTRAS if self.query_one(f"#freeze-extra-{n}", Checkbox).value]
            self.apply({"method.freeze.extra_modules": extras}, self.error_box)
        elif wid in CHOICE_FIELDS:
            self.apply({CHOICE_FIELDS[wid]: event.value}, self.error_box)

    @on(Select.Changed)
    def _select_changed(self, event: Select.Changed) -> None:
        wid = event.select.id or ""
        if wid in CHOICE_FIELDS and event.value is not Select.NULL:
            self.apply({CHOICE_FIELDS[wid]: event.value}, self.error_box)

    @on(SelectionList.SelectedChanged, "#lora-targets")
    def _targets_changed(self, event: SelectionList.SelectedChanged) -> None:
        targets = event.selection_list
        ticked = list(targets.selected)
        names = [targets.get_option_at_index(i).value for i in range(targets.option_count)]
        value: str | list[str] = "all-linear" if names and len(ticked) == len(names) else ticked
        self.apply({"method.lora.target_modules": value}, self.error_box, targets)

    def show_config(self, config: RunConfig, from_self: bool) -> None:
        kind = config.method.kind
        for method in METHODS:
            self.query_one(f"#card-{method}").set_class(method == kind, "-selected")
        groups = {f"group-{name}" for name in methods.get(kind).option_groups}
        for group in self.query(".method-options"):
            group.display = group.id in groups
        if not from_self:
            self._fill_form(config)
        self._show_freeze_which()
        self.refresh_estimates()

    def _fill_form(self, config: RunConfig) -> None:
        """Set every field from `config` (the draft changed elsewhere or the screen was just built)."""
        m = config.method
        self.forget_errors(self.error_box)
        plan = self.query_one("#plan-gib", Input)
        if plan.has_class("-invalid"):  # not a config field: its problem outlives a redraw from the draft
            self._apply_plan(plan)
        for wid, key in TEXT_FIELDS.items():
            field = self.query_one(f"#{wid}", Input)
            field.remove_class("-invalid")
            value = str(get_value(config, key))
            if field.value != value:
                field.value = value
        for wid, key in CHOICE_FIELDS.items():
            widget: Any = self.query_one(f"#{wid}")  # a Checkbox or a Select
            value = get_value(config, key)
            if widget.value != value:
                widget.value = value
        for name in FREEZE_EXTRAS:
            box = self.query_one(f"#freeze-extra-{name}", Checkbox)
            if box.value != (name in m.freeze.extra_modules):
                box.value = name in m.freeze.extra_modules
        self._fill_targets(config)

    def _fill_targets(self, config: RunConfig) -> None:
        shape = self.app.draft.facts().shape
        self._targets_from = shape
        targets = self.query_one("#lora-targets", SelectionList)
        names = list(shape.linear_names) if shape is not None else []
        chosen = config.method.lora.target_modules
        ticked = set(names) if chosen == "all-linear" else set(chosen)
        # Names in the config that this model lacks are shown too, so a wrong target is visible, not dropped.
        extra = [] if chosen == "all-linear" else [n for n in chosen if n not in names]
        with self.prevent(SelectionList.SelectedChanged):
            targets.clear_options()
            targets.add_options([(n, n, n in ticked) for n in names + extra])

    # ------------------------------------------------------------ the estimates (the draft's facts)

    def on_facts_changed(self, message: FactsChanged) -> None:
        self.refresh_estimates()

    def snapshot_changed(self, snapshot: Snapshot | None) -> None:
        self.refresh_estimates()

    def refresh_estimates(self) -> None:
        """Draw the draft's facts: every method's estimate, the recommendation, what trains."""
        facts = self.app.draft.facts()
        if facts.shape is not self._targets_from:  # the model's shape arrived (or another model's)
            self._fill_targets(self.config)
            self._show_freeze_which(facts)
        reason = self.query_one("#method-reason", Static)
        if facts.shape is None:
            for method in METHODS:
                self._show_card(method, None, None)
            reason.update(facts.shape_error or "Reading the model's shape…")
            reason.set_class(bool(facts.shape_error), "error")
            return
        if facts.error:
            reason.update(facts.error)
            reason.add_class("error")
            return
        reason.remove_class("error")
        rec = facts.recommendation
        for method in METHODS:
            self._show_card(method, facts.estimates.get(method), rec)
        if rec is None:
            update_if_changed(reason, "Checking this machine's GPUs…")
        else:
            where = f" for a {facts.free_gib:g} GiB GPU" if facts.planned else ""
            update_if_changed(reason, f"★ Recommended{where}: {methods.get(rec.method).title}. {rec.reason}")
        self._show_suggestions(rec)
        self._show_breakdown(facts.estimates.get(self.config.method.kind))

    def _show_card(self, method: str, estimate: Estimate | None, rec: Recommendation | None) -> None:
        card = self.query_one(f"#card-{method}", MethodCard)
        star = rec is not None and rec.method == method
        card.border_title = methods.get(method).title + (" ★" if star else "")
        card.set_class(star, "-recommended")
        # Numbers first, so they line up across the cards whatever the width does to the trade-off line.
        lines: list[Content] = []
        if estimate is None:
            lines += [Content.styled("estimating…", "dim"), Content("")]
        else:
            lines.append(Content.assemble((f"{estimate.peak_gib:.1f} GiB", "bold"), " peak"))
            if rec is None:
                lines.append(Content.styled("checking GPU…", "dim"))
            else:  # without a GPU the verdict is about training on this CPU
                lines.append(fit_label(rec.fit.get(method, "?"), no_gpu=rec.no_gpu))
        lines.append(Content.styled(methods.get(method).blurb, "dim"))
        update_if_changed(card, Content("\n").join(lines), layout=False)  # cards have a fixed size

    def _show_breakdown(self, e: Estimate | None) -> None:
        """Where the selected method's memory goes, and what trains."""
        box = self.query_one("#method-breakdown", Static)
        if e is None:
            box.update("")
            return
        t, d = self.config.train, self.config.data
        rows = [("weights", e.weights_gib), ("grads + optimizer", e.trainable_state_gib),
                ("activations", e.activations_gib), ("logits + loss", e.logits_gib), ("overhead", e.overhead_gib)]
        lines = [Content.styled(f"{methods.get(e.method).title}, batch {t.batch_size} × {d.max_length} tokens", "bold"), Content("")]
        lines += [Content.assemble((f"{label:<18}", "dim"), f"{gib:6.2f} GiB") for label, gib in rows]
        lines.append(Content.assemble((f"{'peak':<18}", "bold"), (f"{e.peak_gib:6.2f} GiB", "bold")))
        share = e.trainable_params / e.total_params if e.total_params else 0.0
        trains, total = units.count_short(e.trainable_params), units.count_short(e.total_params)
        lines += [Content(""), Content(f"trains {trains} of {total} weights ({share:.1%})")]
        lines += [Content.styled(f"• {note}", "dim") for note in e.notes]
        update_if_changed(box, Content("\n").join(lines))

    def _show_suggestions(self, rec: Recommendation | None) -> None:
        box = self.query_one("#method-suggestions", Static)
        lines = []
        for s in (rec.suggestions if rec is not None else ())[:4]:
            verdict = "fits" if s.fits else "still too big"
            lines.append(f"{methods.get(s.method).title} with {s.change}: {s.peak_gib:.1f} GiB ({verdict})")
        update_if_changed(box, "\n".join(lines))
        box.display = bool(lines)

    def _show_freeze_which(self, facts: Facts | None = None) -> None:
        """Say which blocks a freeze run trains, e.g. 'blocks 2-3 of 0-3 (the top 2)'."""
        which = self.query_one("#freeze-which", Static)
        n = self.config.method.freeze.trainable_layers
        shape = (facts or self.app.draft.facts()).shape
        layers = shape.num_layers if shape is not None else None
        if not layers:
            which.update("")
            return
        count = min(abs(n), layers)
        first, last = (layers - count, layers - 1) if n > 0 else (0, count - 1)
        side = "top" if n > 0 else "bottom"
        span = f"block {first}" if first == last else f"blocks {first}-{last}"
        which.update(f"trains {span} of {layers} (the {side} {count})")
