"""Before a run: does its estimated peak fit the GPU it will use? After a CUDA out-of-memory: what to try instead.

The runner emits `Preflight.message` as a warning (and refuses with `--strict` when `fits` is False) and puts
`oom_advice(config)` in the RunFailed message. Imports nothing heavy.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from core import methods
from core.errors import TuneError
from core.hub import hf_cache_dir, is_hub_id
from core.resources.estimate import Estimate, EstimateSettings, estimate
from core.resources.gpus import GpuSample, Snapshot, SystemSampler
from core.resources.recommend import FIT_FRACTION, NAMES, Suggestion, suggest_fixes
from core.resources.shape import ModelShape, find_config, load_shape


@dataclass(frozen=True)
class Preflight:
    estimate_gib: float | None
    """Estimated peak of this run (None when it could not be estimated)."""
    free_gib: float | None
    """Free memory on the GPU the run will use (None: no GPU, or it does not say)."""
    fits: bool | None
    """False: the estimate exceeds the free memory. None: nothing to compare (CPU run, no estimate)."""
    message: str


def _sample() -> Snapshot:
    sampler = SystemSampler()
    try:
        return sampler.sample()
    finally:
        sampler.close()


def _estimate(config, gpu: GpuSample | None = None) -> tuple[ModelShape, EstimateSettings, Estimate]:
    shape = load_shape(config.model.name_or_path, config.model.trust_remote_code, allow_transformers=True)
    settings = EstimateSettings.from_config(config)
    if config.train.precision == "auto" and gpu is not None and gpu.compute_capability is not None:
        from core.training.gpu import NATIVE_BF16_CAPABILITY

        if tuple(gpu.compute_capability) < NATIVE_BF16_CAPABILITY:  # the runner trains these cards in fp16
            settings = settings.with_(precision="fp16")
    return shape, settings, estimate(shape, settings)


def _gpu_name(gpu: GpuSample) -> str:
    return f"GPU {gpu.index} ({gpu.name})"


def _try(suggestions: list[Suggestion], current_method: str, scale: float = 1.0) -> str:
    """`LoRA with gradient checkpointing (--set train.gradient_checkpointing=true): about 12.3 GiB` (the estimate
    times `scale`)."""
    parts = []
    for s in suggestions:
        sets = " ".join(f"--set {o}" for o in s.overrides if o != f"method.kind={current_method}")
        parts.append(f"{NAMES[s.method]} with {s.change} ({sets}): about {s.peak_gib * scale:.1f} GiB")
    return "; or ".join(parts)


def _cheaper(shape: ModelShape, settings: EstimateSettings, budget_gib: float) -> list[Suggestion]:
    """Up to two ways under `budget_gib`: a change to this method first, then a cheaper method."""
    out = [s for s in suggest_fixes(shape, settings, budget_gib) if s.fits][:1]
    # The one cheaper method that changes nothing else: the same adapters on a quantized base.
    for method in () if methods.get(settings.method).quantized else (methods.QLORA.name,):
        other = settings.with_(method=method)
        peak = estimate(shape, other).peak_gib
        if peak <= budget_gib:
            out.append(Suggestion(method, f"the base model in {other.quant_bits} bits", other, peak,
                                  (f"method.kind={method}",)))
        else:
            out += [s for s in suggest_fixes(shape, other, budget_gib) if s.fits][:1]
    return out[:2]


def fetch_hub_config(config) -> str | None:
    """For a hub model not downloaded yet, fetch only its config.json, so the memory check can run before the
    download (minutes, gigabytes). Returns why the check has to wait for the download; None when the config is at
    hand (or the model is not a hub id: the check itself then says what is wrong)."""
    from core import demo

    name = config.model.name_or_path.strip()
    if config.train.device == "cpu" or demo.is_demo(name):
        return None
    try:
        find_config(name)
        return None
    except TuneError:
        pass
    if not is_hub_id(name) or os.path.exists(os.path.expanduser(name)):
        return None
    from huggingface_hub import constants, hf_hub_download

    if constants.HF_HUB_OFFLINE:
        return (f"{name} is not downloaded yet and HF_HUB_OFFLINE is set, so its config.json cannot be fetched; "
                "the check runs once the model is resolved")
    try:
        hf_hub_download(name, "config.json", revision=config.model.revision, cache_dir=hf_cache_dir())
    except Exception as exc:  # noqa: BLE001 - gated, missing, offline: the download itself will say which
        return (f"could not fetch {name}'s config.json from the hub ({type(exc).__name__}); the check runs once "
                "the model is downloaded")
    return None


def preflight(config, snapshot: Snapshot | None = None) -> Preflight:
    """Compare the run's estimated peak with the free memory of the GPU it would use."""
    if config.train.device == "cpu":
        return Preflight(None, None, None, "Training on the CPU: no GPU memory to check.")
    snapshot = snapshot or _sample()
    gpus = snapshot.run_gpus()
    free = gpus[0].memory_free_gib if gpus else None
    try:
        shape, settings, est = _estimate(config, gpus[0] if gpus else None)
    except TuneError as exc:
        return Preflight(None, free, None, f"Could not estimate this run's GPU memory: {exc}")
    peak = est.peak_gib
    if not gpus:
        why = (f"{snapshot.gpu_status[0].upper()}{snapshot.gpu_status[1:]}" if not snapshot.gpus
               else "CUDA_VISIBLE_DEVICES hides every GPU")
        return Preflight(peak, None, None, f"{why}: this run trains on the CPU. On a GPU it would need about "
                         f"{peak:.1f} GiB.")
    gpu = gpus[0]
    if free is None:
        return Preflight(peak, None, None, f"{_gpu_name(gpu)} does not report its free memory; this run needs "
                         f"about {peak:.1f} GiB.")
    if peak <= FIT_FRACTION * free:
        return Preflight(peak, free, True, f"Estimated peak {peak:.1f} GiB of {free:.1f} GiB free on "
                         f"{_gpu_name(gpu)}: it fits.")
    options = _cheaper(shape, settings, FIT_FRACTION * free)
    advice = f" Try: {_try(options, settings.method)}." if options else ""
    if peak <= free:
        return Preflight(peak, free, True, f"Estimated peak {peak:.1f} GiB is close to the {free:.1f} GiB free on "
                         f"{_gpu_name(gpu)}: it may run out of memory.{advice}")
    return Preflight(peak, free, False, f"Estimated peak {peak:.1f} GiB exceeds the {free:.1f} GiB free on "
                     f"{_gpu_name(gpu)}: this run will probably run out of memory.{advice}")


def oom_advice(config, snapshot: Snapshot | None = None, *, measured_gib: float | None = None,
               tried_gib: float | None = None) -> str:
    """The sentence for a RunFailed after a CUDA out-of-memory error: what ran out and a cheaper configuration.

    `measured_gib`: the peak allocated when it failed (torch.cuda.max_memory_allocated), `tried_gib` the allocation
    that failed. The run needed at least their sum: where that exceeds the estimate, the estimate was wrong by that
    factor, and the cheaper configurations are judged by estimates scaled up by it.
    """
    if snapshot is None:
        try:
            snapshot = _sample()
        except Exception:  # noqa: BLE001 - advice must never fail the failure report
            snapshot = None
    gpus = snapshot.run_gpus() if snapshot is not None else ()
    try:
        shape, settings, est = _estimate(config, gpus[0] if gpus else None)
    except TuneError as exc:
        return f"Out of memory on the GPU. (No estimate to suggest a cheaper configuration: {exc})"
    needed = (measured_gib or 0.0) + (tried_gib or 0.0)
    if measured_gib:
        text = f"Out of memory on the GPU: the run had {measured_gib:.1f} GiB allocated when it failed"
        if tried_gib:
            text += f" and asked for {tried_gib:.1f} GiB more"
        text += f" (estimated peak {est.peak_gib:.1f} GiB"
        text += f", so the estimate was {needed / est.peak_gib:.1f}x too low)" if needed > est.peak_gib else ")"
    else:
        text = f"Out of memory on the GPU: this run's estimated peak was {est.peak_gib:.1f} GiB"
    # How far the estimate fell short: cheaper configurations are judged by estimates, so scale them by it.
    short = max(1.0, needed / est.peak_gib) if est.peak_gib > 0 else 1.0
    # What this process could have had: the card minus what other processes hold. Without that, what it had
    # when it failed (measured), or else well below the estimate that just failed.
    # (It had `measured` and could not get `tried` more: the card's limit for it lies between the two.)
    budget = 0.8 * (measured_gib or est.peak_gib) / short
    if gpus and gpus[0].memory_total_gib:
        gpu = gpus[0]
        others = sum(p.memory_gib or 0.0 for p in gpu.processes if p.pid != os.getpid())
        budget = FIT_FRACTION * (gpu.memory_total_gib - others) / short if needed else \
            min(budget, FIT_FRACTION * (gpu.memory_total_gib - others))
        text += f" on {_gpu_name(gpu)} with {gpu.memory_total_gib:.1f} GiB"
        if others:
            text += f", {others:.1f} GiB of it held by other processes"
    options = _cheaper(shape, settings, budget)
    if options and short > 1.0:
        text += f". The figures below are estimates scaled by {short:.1f}x, as this run measured"
    if options:
        return text + f". Try: {_try(options, settings.method, short)}."
    return text + ". Even the cheapest settings would not fit: use a GPU with more free memory or a smaller model."


__all__ = ["Preflight", "preflight", "oom_advice", "fetch_hub_config"]
