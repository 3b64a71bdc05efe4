"""Which fine-tuning method to use on this GPU, and why, in a sentence; and what would make a better one fit.

Trade-offs: Full when memory is ample and the data large; Freeze when the data is small and memory limited; LoRA as
the default; QLoRA when memory is tight. A method "fits" when its estimated peak stays under FIT_FRACTION of the
free memory (allocator peaks are spiky), "tight" when it fits only without that margin. Imports nothing heavy.
"""
from __future__ import annotations

from dataclasses import dataclass

from core import methods, units
from core.resources.estimate import FIT_FRACTION, METHODS, Estimate, EstimateSettings, estimate, estimate_all
from core.resources.shape import ModelShape

# FIT_FRACTION (0.9, docs/estimator.md §3.6): recommend a method only if its peak is at most 0.9 × free memory.
SMALL_DATA_ROWS = 2_000
"""Below this many examples, training few weights (freeze) overfits less when memory is short."""
LARGE_DATA_ROWS = 50_000
"""From this many examples on, full fine-tuning has enough data to move every weight usefully."""
CPU_MAX_PARAMS = 1_000_000_000
"""Largest model worth training on a CPU (slowly)."""
CARD_SIZES_GIB = (8, 12, 16, 24, 40, 48, 80, 96, 141, 192)
NAMES = {m.name: m.title for m in methods.ALL}
# The policy below names methods: the recommendation is a choice between these four.
FULL, FREEZE, LORA, QLORA = methods.FULL.name, methods.FREEZE.name, methods.LORA.name, methods.QLORA.name


@dataclass(frozen=True)
class Suggestion:
    method: str
    change: str
    """What to change, in words: "gradient checkpointing + batch 2 × accumulation 2"."""
    settings: EstimateSettings
    peak_gib: float
    overrides: tuple[str, ...] = ()
    """The same change as config overrides (`--set` / dotted keys), e.g. ("train.gradient_checkpointing=true",)."""
    fits: bool = True


@dataclass(frozen=True)
class Recommendation:
    method: str
    reason: str
    fit: dict[str, str]
    """method -> 'fits' | 'tight' | 'no'. Without a GPU: whether the model is small enough to train on the CPU."""
    estimates: dict[str, Estimate]
    suggestions: tuple[Suggestion, ...]
    free_gib: float | None
    no_gpu: bool


def fit_of(peak_gib: float, free_gib: float) -> str:
    if peak_gib <= FIT_FRACTION * free_gib:
        return "fits"
    return "tight" if peak_gib <= free_gib else "no"


def recommend(shape: ModelShape, settings: EstimateSettings, free_gib: float | None,
              dataset_rows: int | None = None) -> Recommendation:
    """Pick a method for `shape` under `settings` with `free_gib` free on the GPU (None: no GPU).

    With `settings.gpus` above 1, `free_gib` is each GPU's free memory (the least free one's), every figure is per
    GPU, and with `distributed: auto` each method runs DDP where a full copy fits one GPU and FSDP where not."""
    if settings.gpus > 1 and free_gib is not None:
        settings = settings.with_(gpu_free_gib=free_gib)
    estimates = estimate_all(shape, settings)
    peak = {m: e.peak_gib for m, e in estimates.items()}
    large = dataset_rows is not None and dataset_rows >= LARGE_DATA_ROWS
    small = dataset_rows is not None and dataset_rows < SMALL_DATA_ROWS
    if free_gib is None:
        return _no_gpu(shape, estimates, large, settings)

    fit = {m: fit_of(peak[m], free_gib) for m in METHODS}
    free = f"{free_gib:.1f} GiB free"
    rows = f"{dataset_rows:,} rows" if dataset_rows is not None else ""
    method: str
    if fit[FULL] == "fits" and large:
        method = FULL
        reason = (f"Full fine-tuning fits ({peak['full']:.1f} of {free}) and {rows} are enough data to update "
                  "every weight usefully.")
    elif small and fit[FULL] != "fits" and fit[FREEZE] == "fits":
        method = FREEZE
        reason = (f"With only {rows} and memory too short for full fine-tuning ({peak['full']:.1f} GiB needed, "
                  f"{free}), training the {'top' if settings.trainable_layers > 0 else 'bottom'} "
                  f"{abs(settings.trainable_layers)} blocks (Freeze, "
                  f"{peak['freeze']:.1f} GiB) changes few weights and is less likely to overfit.")
    elif fit[LORA] == "fits":
        method = LORA
        share = estimates[LORA].trainable_params / max(estimates[LORA].total_params, 1) * 100
        reason = (f"LoRA fits ({peak['lora']:.1f} of {free}) and trains small adapters ({share:.2g}% of the "
                  "weights): the usual default, close to full fine-tuning in quality.")
        if fit[FULL] == "fits" and not large:
            reason += (" Full fine-tuning would fit too; it pays off with large datasets"
                       + (f" (this one has {rows})." if rows else "."))
        reason += _others_than_lora(peak, settings)
    elif fit[QLORA] == "fits":
        method = QLORA
        reason = (f"Memory is tight: LoRA needs {peak['lora']:.1f} GiB and {free}; QLoRA keeps the base model "
                  f"in {settings.quant_bits} bits and needs {peak['qlora']:.1f} GiB, at some cost in quality and "
                  "speed.")
        if fit[FREEZE] == "fits":
            reason += (f" Freeze ({peak['freeze']:.1f} GiB) would fit too but trains only "
                       f"{_blocks(settings)}.")
    elif fit[FREEZE] == "fits":
        method = FREEZE
        reason = (f"Only Freeze fits ({peak['freeze']:.1f} of {free}): LoRA needs {peak['lora']:.1f} GiB and "
                  f"QLoRA {peak['qlora']:.1f} GiB at these settings.")
    else:
        method, reason, fixed = _nothing_fits(shape, settings, peak, fit, free_gib, large, small)
        if fixed is not None:
            return Recommendation(method=method, reason=reason, fit=fit, estimates=estimates,
                                  suggestions=tuple(fixed), free_gib=free_gib, no_gpu=False)

    reason += _strategy_sentence(estimates[method])
    suggestions: list[Suggestion] = []
    if fit[method] != "fits":
        suggestions += suggest_fixes(shape, settings.with_(method=method), FIT_FRACTION * free_gib)[:3]
    for better in _better_methods(method, large, fit):
        fixes = suggest_fixes(shape, settings.with_(method=better), FIT_FRACTION * free_gib)
        suggestions += [f for f in fixes if f.fits][:3]
    return Recommendation(method=method, reason=reason, fit=fit, estimates=estimates,
                          suggestions=tuple(suggestions), free_gib=free_gib, no_gpu=False)


def _strategy_sentence(e: Estimate) -> str:
    """How the GPUs share the method, and why, in a sentence ("" on one GPU)."""
    name = NAMES[e.method]
    if e.strategy == "ddp":
        return (f" {name} with DDP over {e.gpus} GPUs: each GPU holds a full copy and runs its own batches "
                f"({e.peak_gib:.1f} GiB per GPU, DDP's gradient buckets included).")
    if e.strategy == "fsdp":
        return (f" {name} with FSDP over {e.gpus} GPUs: a full copy does not fit one GPU, so weights, gradients "
                f"and optimizer state are split {e.gpus} ways ({e.peak_gib:.1f} GiB per GPU, the largest gathered "
                f"unit's {e.gathered_gib:.1f} GiB included).")
    return ""


def _nothing_fits(shape: ModelShape, settings: EstimateSettings, peak: dict[str, float], fit: dict[str, str],
                  free_gib: float, large: bool, small: bool) -> tuple[str, str, list[Suggestion] | None]:
    """No method fits as set: the preferred method that one change makes fit, else one several changes make fit,
    else a method that fits without the margin, else the cheapest."""
    budget = FIT_FRACTION * free_gib
    free = f"{free_gib:.1f} GiB free"
    order = list(dict.fromkeys(([FULL] if large else []) + ([FREEZE] if small else []) + [LORA, QLORA, FREEZE]))
    fixes = {m: suggest_fixes(shape, settings.with_(method=m), budget) for m in order}
    for single_only in (True, False):
        for m in order:
            ok = [f for f in fixes[m] if f.fits and (not single_only or " + " not in f.change)]
            if ok:
                reason = (f"Nothing fits in {free} at these settings ({NAMES[m]} needs {peak[m]:.1f} GiB); "
                          f"{NAMES[m]} fits with {ok[0].change} ({ok[0].peak_gib:.1f} GiB).")
                others = [f for o in order if o != m for f in fixes[o] if f.fits][:2]
                return m, reason, ok[:3] + others
    tight = [m for m in METHODS if fit[m] == "tight"]
    if tight:
        m = min(tight, key=lambda x: peak[x])
        return m, (f"Nothing fits with a {round((1 - FIT_FRACTION) * 100)}% safety margin: {NAMES[m]} needs "
                   f"{peak[m]:.1f} GiB with {free}, so it may run out of memory."), None
    m = min((LORA, QLORA, FREEZE), key=lambda x: fixes[x][0].peak_gib if fixes[x] else peak[x])
    best = fixes[m][0] if fixes[m] else None
    reason = f"Nothing fits in {free}: even {NAMES[m]} needs {peak[m]:.1f} GiB"
    if best is not None:
        reason += f", and {best.peak_gib:.1f} GiB with {best.change}"
    return m, reason + ". A GPU with more free memory, or a smaller model, is needed.", None


def _better_methods(method: str, large: bool, fit: dict[str, str]) -> list[str]:
    """Methods a user would rather run than `method` here that do not fit yet, best first."""
    if method == FULL:
        return []
    wanted = ([FULL] if large else []) + [LORA]
    return [m for m in wanted if m != method and fit[m] != "fits"]


def _no_gpu(shape: ModelShape, estimates: dict[str, Estimate], large: bool,
            settings: EstimateSettings) -> Recommendation:
    small_model = shape.total_params <= CPU_MAX_PARAMS
    method = FULL if large and small_model else LORA
    peak = {m: e.peak_gib for m, e in estimates.items()}
    params = units.count(shape.total_params)
    if small_model:
        reason = (f"No NVIDIA GPU found, so training runs on the CPU: fine for a model this small ({params} "
                  "parameters). ")
        if max(peak.values()) - min(peak.values()) <= max(0.1, 0.1 * max(peak.values())):
            # The memory is the same for all four: say what does differ.
            reason += f"All four need about {peak[method]:.1f} GiB, so memory decides nothing: "
            reason += ("Full updates every weight and this dataset is large enough for it." if method == FULL else
                       f"LoRA trains {_share(estimates['lora'])} of the weights at close to full quality and saves "
                       "a small adapter; Full pays off only with big datasets.")
        else:
            reason += (f"On a GPU: {_needs(estimates)} GiB; "
                       + (f"{NAMES[method]} would fit a GPU with {_card(peak[method])} GiB." if _card(peak[method])
                          else f"{NAMES[method]} needs more than any single GPU."))
            if method == LORA:
                reason += _others_than_lora(peak, settings)
    else:
        reason = (f"No NVIDIA GPU found, and a {params}-parameter model is too big to train on a CPU (up to about "
                  f"{units.count(CPU_MAX_PARAMS)}), so this plans for a GPU: {_needs(estimates)} GiB. ")
        card = _card(peak[method])
        reason += (f"{NAMES[method]} would fit a GPU with {card} GiB" if card else
                   f"{NAMES[method]} needs more than any single GPU") + " and is close to full fine-tuning in quality."
        reason += _others_than_lora(peak, settings)
    fit = {m: "fits" if small_model else "no" for m in METHODS}
    return Recommendation(method=method, reason=reason, fit=fit, estimates=estimates, suggestions=(), free_gib=None,
                          no_gpu=True)


def _needs(estimates: dict[str, Estimate]) -> str:
    return ", ".join(f"{NAMES[m]} {e.peak_gib:.1f}" for m, e in estimates.items())


def _card(peak_gib: float) -> int | None:
    """The smallest common GPU size that holds `peak_gib` with the safety margin."""
    return next((c for c in CARD_SIZES_GIB if peak_gib <= FIT_FRACTION * c), None)


def _share(e: Estimate) -> str:
    return f"{e.trainable_params / max(e.total_params, 1) * 100:.2g}%"


def _blocks(settings: EstimateSettings) -> str:
    n = abs(settings.trainable_layers)
    return f"the {'top' if settings.trainable_layers > 0 else 'bottom'} {n} block{'s' if n != 1 else ''}"


def _others_than_lora(peak: dict[str, float], settings: EstimateSettings) -> str:
    """Why LoRA over the cheaper methods, in one sentence: what QLoRA and Freeze save and what they cost."""
    parts = []
    if peak[QLORA] < 0.9 * peak[LORA]:
        parts.append(f"QLoRA needs less ({peak['qlora']:.1f} GiB) but its {settings.quant_bits}-bit base costs "
                     "some quality and speed")
    if peak[FREEZE] < 0.9 * peak[LORA]:
        parts.append(f"Freeze ({peak['freeze']:.1f} GiB) trains only {_blocks(settings)} and learns less")
    return (" " + "; ".join(parts) + ".") if parts else ""


# ------------------------------------------------------------------ what would make a method fit

def _changes(shape: ModelShape, s: EstimateSettings) -> list[tuple[str, str, dict, tuple[str, ...]]]:
    """Changes worth trying, least harm to quality and speed first: (kind, words, settings changes, overrides).
    Kinds with several steps (batch, length, rank) list them smallest change first."""
    out: list[tuple[str, str, dict, tuple[str, ...]]] = []
    if not s.gradient_checkpointing:
        out.append(("checkpointing", "gradient checkpointing", {"gradient_checkpointing": True},
                    ("train.gradient_checkpointing=true",)))
    effective, b = s.batch_size * s.grad_accum, s.batch_size
    while b > 1:
        b //= 2
        ga = -(-effective // b)  # keep the effective batch
        out.append(("batch", f"batch {b} × accumulation {ga}", {"batch_size": b, "grad_accum": ga},
                    (f"train.batch_size={b}", f"train.grad_accum={ga}")))
    if s.optim == "adamw":
        out.append(("optim", "8-bit AdamW", {"optim": "adamw8bit"}, ("train.optim=adamw8bit",)))
    if methods.get(s.method).adapter:
        attention = tuple(n for n in ("q_proj", "k_proj", "v_proj", "o_proj") if n in shape.linear_names)
        if s.targets() == "all-linear" and len(attention) == 4:
            out.append(("targets", "LoRA on attention only (q, k, v, o)", {"lora_targets": attention},
                        ("method.lora.target_modules=[" + ",".join(attention) + "]",)))
        r = s.lora_r
        while r > 4:
            r = max(4, r // 2)
            out.append(("rank", f"LoRA rank {r}", {"lora_r": r}, (f"method.lora.r={r}",)))
    if s.method == FREEZE and abs(s.trainable_layers) > 1:
        n = 1 if s.trainable_layers > 0 else -1
        out.append(("layers", f"only the {'top' if n > 0 else 'bottom'} block trains", {"trainable_layers": n},
                    (f"method.freeze.trainable_layers={n}",)))
    seq = s.seq_len
    while seq > 256:
        seq //= 2
        out.append(("length", f"max length {seq}", {"seq_len": seq}, (f"data.max_length={seq}",)))
    return out


def suggest_fixes(shape: ModelShape, settings: EstimateSettings, budget_gib: float) -> list[Suggestion]:
    """Changes that bring `settings.method` under `budget_gib`: each single change that gets there (the mildest
    step of each kind), in order of least harm; if none does, one combination of them; if even that is not
    enough, the full combination with fits=False."""
    method = settings.method
    head = (f"method.kind={method}",)
    singles: list[Suggestion] = []
    done: set[str] = set()
    for kind, words, changes, overrides in _changes(shape, settings):
        if kind in done:
            continue
        trial = settings.with_(**changes)
        peak = estimate(shape, trial).peak_gib
        if peak <= budget_gib:
            done.add(kind)
            singles.append(Suggestion(method, words, trial, peak, head + overrides))
    if singles:
        return singles
    return [_combine(shape, settings, budget_gib, head)]


def _combine(shape: ModelShape, settings: EstimateSettings, budget_gib: float, head: tuple[str, ...]) -> Suggestion:
    """Stack changes greedily: each round takes the mildest step that makes it fit, else the step that saves the
    most memory; steps that save (almost) nothing are never taken."""
    steps: dict[str, list[tuple[str, dict, tuple[str, ...]]]] = {}
    for kind, words, changes, overrides in _changes(shape, settings):
        steps.setdefault(kind, []).append((words, changes, overrides))
    taken: dict[str, int] = {}  # kind -> index of the step in use
    peak = estimate(shape, settings).peak_gib

    def trial_of(chosen: dict[str, int]) -> EstimateSettings:
        merged: dict = {}
        for kind, i in chosen.items():
            merged.update(steps[kind][i][1])
        return settings.with_(**merged)

    while peak > budget_gib:
        options = []
        for order, kind in enumerate(steps):
            nxt = taken.get(kind, -1) + 1
            if nxt < len(steps[kind]):
                chosen = {**taken, kind: nxt}
                options.append((estimate(shape, trial_of(chosen)).peak_gib, order, chosen))
        fitting = [o for o in options if o[0] <= budget_gib]
        if fitting:
            best = min(fitting, key=lambda o: o[1])
        else:
            useful = [o for o in options if o[0] < 0.99 * peak]
            if not useful:
                break
            best = min(useful, key=lambda o: (o[0], o[1]))
        peak, _, taken = best
    trial = trial_of(taken)
    kinds = [k for k in steps if k in taken]  # report in the mild-to-harsh order
    return Suggestion(settings.method, " + ".join(steps[k][taken[k]][0] for k in kinds), trial, peak,
                      head + tuple(o for k in kinds for o in steps[k][taken[k]][2]), peak <= budget_gib)


__all__ = ["Suggestion", "Recommendation", "recommend", "suggest_fixes", "fit_of", "FIT_FRACTION",
           "SMALL_DATA_ROWS", "LARGE_DATA_ROWS", "CPU_MAX_PARAMS", "NAMES"]
