"""Peak GPU memory of a fine-tuning run, per method, from the model's shape alone (core.resources.shape).

Peak ≈ W + T + A + Lg + C (weights, trainable state, activations, logits/loss, fixed overhead), term by term as in
docs/estimator.md. Imports nothing heavy at module level: the UI imports this before its first paint.

Over 400 lines because the terms are one sum and only make sense read together.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from core import methods, units
from core.errors import TuneError
from core.resources.shape import LinearShape, ModelShape
from core.tasks import estimate_task

GIB = 1024 ** 3
METHODS = methods.NAMES
OPTIMS = ("adamw", "adamw8bit", "paged_adamw8bit")
PRECISIONS = ("bf16", "fp16", "fp32")

# CUDA context, kernels and cuBLAS workspace, which nvidia-smi counts and torch's counters do not. docs/estimator.md
# §3.5 gives 0.3–2 GB (1.3 GB on a V100 before CUDA's lazy loading, 650 MB in gpu_poor, 1000 MiB in asmirnov).
CUDA_CONTEXT_GIB = 0.75
# The caching allocator rounds and fragments: reserved runs 5–15 % above allocated on activation-heavy work
# (docs/estimator.md §3.5). Applied to the memory that comes and goes every step (activations, logits).
ALLOCATOR_FRACTION = 0.10
# bitsandbytes keeps optimizer state of tensors below this many elements in 32 bits (optim min_8bit_size).
BNB_MIN_8BIT_SIZE = 4096
# NF4/FP4 storage per weight with the default blocksize 64: 4 bits + an fp32 absmax per block (4.5 bits); double
# quantization stores the absmax in 8 bits per 64 plus an fp32 per 256 blocks (4.127 bits). QLoRA paper §3.
NF4_BITS = 4 + 32 / 64
NF4_DQ_BITS = 4 + 8 / 64 + 32 / (64 * 256)
# HF's causal-LM loss (transformers loss_utils.ForCausalLMLoss) casts the logits to fp32 and runs
# cross_entropy = log_softmax + nll_loss. At the start of backward three fp32 vocab-wide tensors per token are live:
# log_softmax's output (saved for its backward), nll_loss's dense gradient and log_softmax's input gradient. The
# half logits and their fp32 copy are gone by then (the Trainer drops the model outputs before backward; neither is
# saved by autograd), and in the forward the most held at once is half + fp32 + log_softmax = 10 bytes.
LOSS_BYTES_PER_VOCAB = 12.0
# Where "auto" chooses between DDP and FSDP, and where the recommender calls a method a fit: the peak must stay
# under this share of the free memory (docs/estimator.md §3.6: allocator peaks are spiky).
FIT_FRACTION = 0.9
STRATEGIES = ("auto", "ddp", "fsdp")


# ------------------------------------------------------------------ settings and the estimate

@dataclass(frozen=True)
class EstimateSettings:
    method: str = methods.DEFAULT.name
    """full | freeze | lora | qlora."""
    trainable_layers: int = 2
    """Freeze: top N blocks train (+N); -N: the bottom N."""
    lora_r: int = 8
    lora_targets: str | tuple[str, ...] = "all-linear"
    """`all-linear` or module names (q_proj, v_proj, …)."""
    quant_bits: int = 4
    """QLoRA base weights: 4 (NF4) or 8 (LLM.int8)."""
    double_quant: bool = True
    batch_size: int = 4
    """Per device, per forward pass."""
    seq_len: int = 1024
    """Tokens per example (the longest batch sets the peak)."""
    gradient_checkpointing: bool = False
    precision: str = "bf16"
    """bf16 | fp16 | fp32: the compute dtype; bf16 also holds the weights in bf16 (what the Trainer does with a
    bf16 model: no fp32 master copy)."""
    optim: str = "adamw"
    """adamw (torch, states in the parameter dtype) | adamw8bit | paged_adamw8bit (bitsandbytes)."""
    grad_accum: int = 1
    """Forward passes per optimizer step: above 1, gradients live on through the next forward."""
    lora_dropout: float = 0.05
    """Above 0, each targeted layer keeps a dropped copy of its input (and the mask) for backward."""
    use_dora: bool = False
    freeze_extra: tuple[str, ...] = ()
    """Freeze: also train any of `norm`, `embed_tokens`, `lm_head`."""
    weights_dtype: str = "auto"
    """auto | float32 | bfloat16 | float16 (model.dtype). float32 with bf16/fp16 is mixed precision (AMP)."""
    task: str = "causal_lm"
    """causal_lm (SFT, continued pre-training) or classification (a small head replaces the LM head)."""
    num_labels: int = 2
    attention: str = "sdpa"
    """sdpa/flash keep O(s) per head; eager keeps the s×s attention probabilities."""
    chunked_loss: bool = False
    """Loss computed chunk by chunk (torchtune, LitGPT, Cut Cross-Entropy, Liger). tunetui's Trainer
    materialises the full logits, so False for its own runs."""
    upcast_non_quantized: bool = True
    """QLoRA: peft's prepare_model_for_kbit_training casts every non-quantized weight to fp32."""
    grads_freed_after_step: bool = True
    """The Trainer drops gradients after each optimizer step (zero_grad(set_to_none=True), torch >= 2.0), so
    with no accumulation they never meet the next forward's activations."""
    quant_saves_input: bool = False
    """QLoRA: bitsandbytes releases of 2023 (MatMul4Bit: ctx.tensors = (A, B)) kept each quantized matmul's input
    for backward although the frozen weight needs no gradient; current releases keep only the weight."""
    gpus: int = 1
    """GPUs the run is spread over (data parallel: each GPU runs `batch_size` examples per forward)."""
    distributed: str = "auto"
    """auto | ddp | fsdp, for gpus > 1. DDP keeps a full replica per GPU; FSDP (full shard) splits weights,
    gradients and optimizer state over the GPUs. auto: DDP when it fits `gpu_free_gib`, else FSDP (DDP when the
    free memory is not known)."""
    gpu_free_gib: float | None = None
    """Free memory per GPU, for `distributed: auto` only."""

    @classmethod
    def from_config(cls, config: Any) -> "EstimateSettings":
        """The settings a RunConfig implies (what the engine would do on a GPU)."""
        m, t, d = config.method, config.train, config.data
        precision = t.precision
        if precision == "auto":
            precision = "fp32" if t.device == "cpu" else "bf16"
        return cls(
            method=m.kind, trainable_layers=m.freeze.trainable_layers, lora_r=m.lora.r,
            lora_targets=m.lora.target_modules, quant_bits=m.quant.bits, double_quant=m.quant.double_quant,
            batch_size=t.batch_size, seq_len=d.max_length, gradient_checkpointing=t.gradient_checkpointing,
            precision=precision, optim=t.optim, grad_accum=t.grad_accum, lora_dropout=m.lora.dropout,
            use_dora=m.lora.use_dora, freeze_extra=tuple(m.freeze.extra_modules), weights_dtype=config.model.dtype,
            task=estimate_task(d.format), distributed=t.distributed)

    def with_(self, **changes: Any) -> "EstimateSettings":
        return replace(self, **changes)

    def targets(self) -> str | tuple[str, ...]:
        t = self.lora_targets
        if isinstance(t, str) and t != "all-linear":
            return tuple(x.strip() for x in t.split(",") if x.strip())
        return t


@dataclass(frozen=True)
class Estimate:
    """Peak GPU memory of one method (GiB) and its parts. weights: every parameter held on the GPU (base model,
    adapters); trainable_state: gradients and optimizer state; overhead: CUDA context and allocator slack."""
    method: str
    peak_gib: float
    weights_gib: float
    trainable_state_gib: float
    activations_gib: float
    logits_gib: float
    overhead_gib: float
    total_params: int
    """Parameters of the model as trained: for LoRA/QLoRA the base model plus the adapters (as peft counts)."""
    trainable_params: int
    notes: tuple[str, ...]
    context_gib: float = CUDA_CONTEXT_GIB
    """The part of overhead that nvidia-smi sees but torch.cuda.max_memory_* does not."""
    allocator_gib: float = 0.0
    """The part of overhead for allocator fragmentation: in torch's reserved memory, not in max_memory_allocated."""
    gradients_gib: float = 0.0
    optimizer_gib: float = 0.0
    strategy: str = "single"
    """single (one GPU) | ddp | fsdp: how the figures above are split; every figure is per GPU."""
    gpus: int = 1
    gathered_gib: float = 0.0
    """FSDP: the largest unit all-gathered at once (its full weights, and its gradients in backward)."""
    buckets_gib: float = 0.0
    """DDP: the gradient buckets all-reduce works in (a second copy of the trainable gradients)."""

    @property
    def strategy_text(self) -> str:
        """"" on one GPU, else e.g. "FSDP over 4 GPUs"."""
        return "" if self.strategy == "single" else f"{self.strategy.upper()} over {self.gpus} GPUs"


def _validate(s: EstimateSettings) -> None:
    def check(ok: bool, what: str, fix: str) -> None:
        if not ok:
            raise TuneError(what, None, fix)

    check(s.method in METHODS, f"Unknown method {s.method!r}", "Use one of: " + ", ".join(METHODS))
    check(s.optim in OPTIMS, f"Unknown optimizer {s.optim!r}", "Use one of: " + ", ".join(OPTIMS))
    check(s.precision in PRECISIONS, f"Unknown precision {s.precision!r}", "Use one of: " + ", ".join(PRECISIONS))
    check(s.quant_bits in (4, 8), f"QLoRA bits is {s.quant_bits}", "Use 4 or 8")
    check(s.batch_size >= 1 and s.grad_accum >= 1, f"Batch size {s.batch_size} × accumulation {s.grad_accum}",
          "Use 1 or more for both")
    check(s.seq_len >= 1, f"Sequence length is {s.seq_len}", "Use 1 or more tokens")
    check(s.lora_r >= 1, f"LoRA rank is {s.lora_r}", "Use a rank of 1 or more, e.g. 8")
    check(s.trainable_layers != 0, "Freeze with 0 trainable layers trains nothing", "Use N > 0 (top) or -N (bottom)")
    check(s.task in ("causal_lm", "classification"), f"Unknown task {s.task!r}", "Use causal_lm or classification")
    check(s.gpus >= 1, f"GPU count is {s.gpus}", "Use 1 or more GPUs")
    check(s.distributed in STRATEGIES, f"Unknown distributed strategy {s.distributed!r}",
          "Use one of: " + ", ".join(STRATEGIES))


def _lora_layers(shape: ModelShape, s: EstimateSettings) -> tuple[LinearShape, ...]:
    targets = s.targets()
    if targets == "all-linear":
        return shape.linears
    chosen = tuple(lin for lin in shape.linears if any(lin.matches(t) for t in targets))
    if not chosen:
        raise TuneError(f"LoRA targets {', '.join(targets)} match no linear layer of {shape.name}", None,
                        "Use all-linear or some of: " + ", ".join(shape.linear_names))
    return chosen


def trainable_tensors(shape: ModelShape, s: EstimateSettings) -> list[int]:
    """Sizes of the tensors that train under `s` (what `requires_grad` would be True for): the method counts them."""
    return methods.get(s.method).trainable_tensors(shape, s)


def lora_tensors(shape: ModelShape, s: EstimateSettings) -> list[int]:
    """LoRA's A and B matrices (and DoRA's magnitude vectors) in every block, plus a new head (trained whole:
    peft's modules_to_save)."""
    out = []
    for lin in _lora_layers(shape, s):
        out += [s.lora_r * lin.in_features, lin.out_features * s.lora_r]
        if s.use_dora:
            out.append(lin.out_features)
    return out * shape.num_layers + shape.new_head(s.task, s.num_labels)


def _weights_bytes(s: EstimateSettings) -> tuple[float, float]:
    """(bytes per frozen weight, bytes per trainable weight) for full/freeze/lora."""
    half = 2.0
    if s.precision == "fp32" or s.weights_dtype == "float32":
        return 4.0, 4.0
    if s.precision == "fp16":
        # fp16 weights cannot be trained with a grad scaler: trainable ones stay fp32 (AMP), frozen ones fp16.
        return half, 4.0
    return half, half


def _optimizer_bytes(numel: int, param_bytes: float, optim: str) -> float:
    if optim == "adamw":
        return 2 * param_bytes * numel  # exp_avg and exp_avg_sq in the parameter dtype
    if numel < BNB_MIN_8BIT_SIZE:
        return 8.0 * numel
    return 2.0 * numel + 2 * 4 * numel / 256  # two 8-bit states + an fp32 absmax per 256-element block


def _dtype_bytes(s: EstimateSettings) -> tuple[float, float]:
    """(bytes of a matmul output / saved linear input, bytes of the residual stream).

    bf16/fp16 weights: both half. An fp32 model under autocast (AMP): matmuls run in half precision, but the
    embeddings, residual adds and norms stay fp32. QLoRA after peft's k-bit preparation: the embeddings are fp32,
    so the residual stream is too. fp32: both 4."""
    if s.precision == "fp32":
        return 4.0, 4.0
    method = methods.get(s.method)
    amp = s.weights_dtype == "float32" or (s.precision == "fp16" and not method.adapter)
    upcast = method.quantized and s.upcast_non_quantized
    return 2.0, 4.0 if amp or upcast else 2.0


def activation_bytes_per_token(shape: ModelShape, s: EstimateSettings) -> dict[str, float]:
    """Saved activations per token: one block (`layer`), the block input kept by checkpointing (`checkpoint`), LoRA
    extras per block (`lora`) and the part outside the blocks (`outside`).

    A block whose weights train keeps every linear's input (its weight gradient needs it). A frozen block under
    LoRA/QLoRA keeps only what the gradient of its input needs: autograd saves a matmul's input only for the
    weight's gradient, and a norm's normalised copy only for the norm weight's gradient. These counts were checked
    tensor by tensor with torch.autograd.graph.saved_tensors_hooks on transformers' Llama with peft (see
    docs/estimator.md)."""
    ab, sb = _dtype_bytes(s)
    h, inter, heads = shape.hidden_size, shape.intermediate_size, shape.num_heads
    q, kv = shape.q_dim or h, shape.kv_dim or h
    method = methods.get(s.method)
    frozen_base = method.adapter
    # Autocast runs softmax in fp32: eager attention keeps the fp32 probabilities, plus the half copy the next
    # matmul saves (with fp32 compute that copy is the same tensor).
    probs = 4.0 + (ab if ab < 4 else 0.0)
    if shape.is_encoder:
        # Korthikanti et al. 2022 eq. 1 (BERT: post-norm, dropout with 1-byte masks): q/k/v input, q, k, v, the
        # out-projection input, fc1 input, GELU input and output, two masks, and two LayerNorm inputs (fp32
        # under autocast) — 34h + 5as in 16 bits when I = 4h.
        layer = ab * (6 * h + 2 * inter) + 2 * h + 2 * 4.0 * h
        # Attention dropout: fp32 probabilities, the 1-byte mask and the dropped probabilities the matmul saves.
        eager = (4.0 + 1 + ab) * heads * s.seq_len
    elif frozen_base:
        # Each norm keeps its fp32 input (4h) and nothing else: its weight is frozen. SDPA keeps q, k, v, its output
        # and the fp32 log-sum-exp per head. The gated MLP keeps gate and up outputs and the activation (the
        # product feeds a frozen down projection); a plain MLP its fc1 output and the activation. A quantized
        # linear returns its input's dtype, which is fp32 after the k-bit preparation's fp32 norms.
        mb = 4.0 if method.quantized and s.upcast_non_quantized else ab
        norms = shape.norms_per_layer * 4.0 * h
        attn = ab * (2 * q + 2 * kv) + 4.0 * heads
        mlp = (3 if shape.gated_mlp else 2) * mb * inter
        layer = norms + attn + mlp
        if method.quantized and s.quant_saves_input:
            # The half-precision input of each quantized matmul: q/k/v and gate/up share one when it is already
            # half; after the fp32 upcast each layer casts (and keeps) its own.
            upcast = s.upcast_non_quantized
            layer += ab * (sum(lin.in_features for lin in shape.linears) if upcast else
                           shape.norms_per_layer * h + q + inter)
        eager = probs * heads * s.seq_len
    else:
        # docs/estimator.md §3.3: each RMSNorm keeps its fp32 input and its output; q/k/v input; SDPA keeps q, k, v,
        # out; MLP input; gate, up, act and product (4I) or fc1 out and act (2I) — 20h + 4h_kv + 8I for Llama in bf16.
        norms = shape.norms_per_layer * (4 + sb) * h
        mlp = (4 if shape.gated_mlp else 2) * ab * inter
        layer = norms + ab * (h + 2 * q + 2 * kv + h) + mlp
        eager = probs * heads * s.seq_len
    if s.attention == "eager":
        layer += eager
    lora = 0.0
    if frozen_base:
        for lin in _lora_layers(shape, s):
            # peft casts the input to the adapter's fp32 and autocast casts it back to half for lora_A, which saves
            # that copy (one per adapted layer: q, k and v each keep their own); lora_B saves lora_A's output;
            # dropout adds a 1-byte mask.
            lora += ab * lin.in_features + ab * s.lora_r
            if s.lora_dropout > 0:
                lora += 1.0 * lin.in_features
    return {"layer": layer, "checkpoint": sb * h, "adapters": lora, "outside": (4 + ab + sb) * h}


def _resolve_strategy(s: EstimateSettings, ddp_peak: float) -> str:
    """single on one GPU; else the asked strategy, or for auto DDP when its peak fits `gpu_free_gib` (or that is
    unknown), FSDP when it does not."""
    if s.gpus == 1:
        return "single"
    if s.distributed != "auto":
        return s.distributed
    if s.gpu_free_gib is None:
        return "ddp"
    return "ddp" if ddp_peak <= FIT_FRACTION * s.gpu_free_gib * GIB else "fsdp"


def estimate(shape: ModelShape, settings: EstimateSettings) -> Estimate:
    s = settings
    _validate(s)
    L = shape.num_layers
    notes: list[str] = []
    tokens = s.batch_size * s.seq_len
    frozen_b, train_b = _weights_bytes(s)
    method = methods.get(s.method)
    root_params = sum(shape.embed_tensors) + sum(shape.final_tensors) + sum(shape.task_head(s.task, s.num_labels))
    base = root_params + L * shape.layer_params
    trainable = trainable_tensors(shape, s)
    n_train = sum(trainable)
    # What peft reports as "all params": the base model plus the adapters (and the trained copy of a new head).
    total = base + n_train if method.adapter else base

    # W: every weight on the GPU. `block_w` / `root_w`: one block's and the rest's share (FSDP's units).
    if not method.adapter:
        weights = n_train * train_b + (total - n_train) * frozen_b
        per_param = weights / max(total, 1)
        block_w, root_w = shape.layer_params * per_param, root_params * per_param
    elif not method.quantized:
        weights = base * frozen_b + n_train * 4.0  # peft keeps adapters in fp32 (autocast_adapter_dtype)
        block_w, root_w = shape.layer_params * frozen_b + n_train * 4.0 / L, root_params * frozen_b
    else:
        block_lin = sum(lin.in_features * lin.out_features for lin in shape.linears)
        if s.quant_bits == 4:
            bits = NF4_DQ_BITS if s.double_quant else NF4_BITS
            low_block = block_lin * bits / 8
        else:  # LLM.int8: one byte a weight plus an fp32 scale per output row
            low_block = block_lin + 4.0 * sum(lin.out_features for lin in shape.linears)
        other_b = 4.0 if s.upcast_non_quantized else 2.0
        quantized = L * block_lin
        weights = L * low_block + (base - quantized) * other_b + n_train * 4.0
        block_w = low_block + (shape.layer_params - block_lin) * other_b + n_train * 4.0 / L
        root_w = root_params * other_b
        if s.upcast_non_quantized:
            notes.append(f"The {units.count(base - quantized)} weights that stay unquantized (embeddings, "
                         "LM head, norms) are held in fp32 by peft's k-bit preparation.")

    # T: gradients (the trainable params' dtype) and optimizer state.
    param_b = 4.0 if method.adapter else train_b
    grads = n_train * param_b
    optimizer = sum(_optimizer_bytes(n, param_b, s.optim) for n in trainable)
    if s.optim == "paged_adamw8bit":
        notes.append("Paged optimizer state is counted in full: it only spills to CPU RAM under pressure.")

    # A: activations. Backward flows through every block above the lowest one that trains.
    per = activation_bytes_per_token(shape, s)
    active = method.backward_blocks(L, s)
    _, sb = _dtype_bytes(s)
    one_block = tokens * (per["layer"] + per["adapters"])
    # Lg: logits and cross-entropy buffers (LOSS_BYTES_PER_VOCAB); chunked losses keep about one half-precision
    # logits row per token.
    if s.task == "classification":
        logits = 0.0
    else:
        ab, _ = _dtype_bytes(s)
        logits = tokens * shape.vocab_size * (ab if s.chunked_loss else LOSS_BYTES_PER_VOCAB)
    # A block's backward works with gradients as wide as the MLP: the product's gradient, then the two the
    # product hands back (gated MLP; one for a plain MLP), while the residual stream's gradient flows in and out.
    ab, _ = _dtype_bytes(s)
    grad_work = tokens * (ab * (3 if shape.gated_mlp else 2) * shape.intermediate_size + 2 * sb * shape.hidden_size)
    # The loss buffers peak at the start of backward and are freed before the first block's backward starts, so
    # the peak holds the larger of the two, not both.
    if s.gradient_checkpointing:
        # Non-reentrant checkpointing (what tunetui asks for) keeps each block's input; in backward it recomputes
        # one block at a time, holding that block's saved tensors while it runs that block's backward.
        kept = tokens * (active * per["checkpoint"] + per["outside"])
        activations = kept + one_block
        transient_peak = kept + max(logits, one_block + grad_work)
    else:
        # Every block's saved tensors are live when backward starts.
        activations = tokens * (active * (per["layer"] + per["adapters"]) + per["outside"])
        transient_peak = activations + max(logits, grad_work)
    if logits > max(activations, 1):
        notes.append(f"The logits for a {shape.vocab_size:,}-token vocabulary ({logits / GIB:.1f} GiB) are "
                     "the largest per-token cost: a shorter max length or smaller batch cuts them.")

    # QLoRA dequantizes one weight at a time for each matmul (bitsandbytes frees it after the matmul): a transient
    # the size of the largest linear in the compute dtype.
    transient = 0.0
    if method.quantized and shape.linears:
        transient = max(lin.in_features * lin.out_features for lin in shape.linears) * 2.0
    # Autocast caches a half copy of each fp32 trainable weight for the forward and backward of a step.
    matmul_b = _dtype_bytes(s)[0]
    if matmul_b < 4 and param_b == 4.0:
        transient += n_train * matmul_b
    allocator = ALLOCATOR_FRACTION * transient_peak
    context = CUDA_CONTEXT_GIB * GIB

    def peak_of(w: float, g: float, opt: float, extra: float) -> float:
        # With one forward per step the Trainer frees gradients after the optimizer step (set_to_none), so they
        # grow while backward frees activations: the peak holds the larger of the two. With accumulation they
        # coexist.
        if s.grad_accum > 1 or not s.grads_freed_after_step:
            dynamic = transient_peak + g
        else:
            dynamic = max(transient_peak, g)
        return w + opt + dynamic + extra + context + allocator + transient

    # DDP's per-GPU peak (a replica plus its gradient buckets) decides `auto`.
    strategy = _resolve_strategy(s, peak_of(weights, grads, optimizer, grads))
    gathered = buckets = 0.0
    if strategy == "ddp":
        # DDP (gradient_as_bucket_view off, its default and the Trainer's) all-reduces through flat buckets of
        # 25 MB that together hold every trainable gradient once more, allocated at the first backward and kept.
        buckets = grads
    elif strategy == "fsdp":
        # Full shard: weights, gradients and optimizer state split N ways. The largest unit is all-gathered for its
        # forward and backward (a transformer block, or the root unit: embeddings, final norm and head), with its
        # full gradients in backward before the reduce-scatter. Prefetching the next unit is not counted.
        N = s.gpus
        # A unit's gradients: a whole block's where blocks train (Full, Freeze), its adapters' otherwise.
        unit_grads = (n_train / L if method.adapter else shape.layer_params) * param_b
        root_grads = root_params * param_b if method.trains_every_weight else 0.0
        gathered = max(block_w + unit_grads, root_w + root_grads)
        weights, grads, optimizer = weights / N, grads / N, optimizer / N
        if method.quantized:
            notes.append("FSDP shards the 4-bit base too (bnb_4bit_quant_storage set to the compute dtype).")
    peak = peak_of(weights, grads, optimizer, gathered + buckets)
    if strategy != "single":
        notes.append(f"Per GPU, {strategy.upper()} over {s.gpus} GPUs"
                     + (": each GPU holds a full replica plus DDP's gradient buckets." if strategy == "ddp" else
                        ": weights, gradients and optimizer state are split, one unit is gathered at a time."))
    overhead = context + allocator + transient + gathered + buckets
    if s.grad_accum == 1 and s.grads_freed_after_step and grads > transient_peak and transient_peak > 0:
        notes.append("Gradients and activations are not held at once (no gradient accumulation): the peak "
                     "counts the larger, so the parts add up to more than the peak.")
    if not s.gradient_checkpointing and activations > 0.3 * peak:
        ckpt = tokens * (active * per["checkpoint"] + per["outside"]) + one_block
        notes.append(f"Gradient checkpointing would cut the activations to about {_gib(ckpt):.1f} GiB "
                     "(about 30% slower).")
    if not shape.exact:
        notes.append(f"Unknown architecture {shape.model_type!r}: parameters counted with a Llama-style formula.")
    return Estimate(method=s.method, peak_gib=_gib(peak), weights_gib=_gib(weights),
                    trainable_state_gib=_gib(grads + optimizer), activations_gib=_gib(activations),
                    logits_gib=_gib(logits), overhead_gib=_gib(overhead), total_params=total,
                    trainable_params=n_train, notes=tuple(notes), context_gib=CUDA_CONTEXT_GIB,
                    allocator_gib=_gib(allocator), gradients_gib=_gib(grads), optimizer_gib=_gib(optimizer),
                    strategy=strategy, gpus=s.gpus, gathered_gib=_gib(gathered), buckets_gib=_gib(buckets))


def estimate_all(shape: ModelShape, settings: EstimateSettings) -> dict[str, Estimate]:
    """The same run under each method: keys full, freeze, lora, qlora."""
    return {method: estimate(shape, settings.with_(method=method)) for method in METHODS}


def _gib(value: float) -> float:
    return value / GIB


__all__ = ["EstimateSettings", "Estimate", "estimate", "estimate_all", "trainable_tensors",
           "activation_bytes_per_token", "METHODS", "OPTIMS", "PRECISIONS", "STRATEGIES",
           "CUDA_CONTEXT_GIB", "GIB", "FIT_FRACTION"]
