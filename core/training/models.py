"""Find a model (local dir, hub id, `demo:`), load its tokenizer and weights for a task and method.

Heavy libraries are imported inside functions; this module never imports the UI.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from core import demo
from core.config import MethodSpec, ModelSpec
from core.errors import TuneError
from core.hub import has_tokenizer, is_hub_id

log = logging.getLogger(__name__)

DEMO_SEED = 1234
"""Seed of the demo weights: every machine materialises the same demo model."""

# Files a hub snapshot never needs for fine-tuning: other frameworks' weights and original checkpoints.
HUB_IGNORE = ["*.pth", "*.pt", "original/*", "*.gguf", "*.onnx", "*.onnx_data", "*.msgpack", "*.h5", "*.ot",
              "*.tflite", "coreml/*", "onnx/*"]


# ---------------------------------------------------------------- where the model lives

def resolve_model_dir(spec: ModelSpec) -> Path:
    """A local folder holding config.json for `spec` (materialising the demo or using the HF cache)."""
    name = spec.name_or_path.strip()
    if demo.is_demo(name):
        return _demo_dir(name)
    path = Path(name).expanduser()
    if path.exists() or not is_hub_id(name):  # ./x, /x, ~/x, a/b/c: meant as a folder
        return _local_dir(path, name)
    return _hub_dir(name, spec.revision)


def _local_dir(path: Path, name: str) -> Path:
    where = "model.name_or_path"
    if not path.exists():
        raise TuneError(f"Model folder {name} does not exist", where,
                        "Check the path, use a hub id such as Qwen/Qwen2.5-0.5B-Instruct, or demo:tiny-llama")
    if not path.is_dir():
        raise TuneError(f"{name} is a file, not a model folder", where,
                        "Point model.name_or_path at the folder that holds config.json")
    if not os.access(path, os.R_OK | os.X_OK):
        raise TuneError(f"Model folder {name} cannot be read (permission denied)", where,
                        "Fix its permissions or copy it somewhere readable")
    if not (path / "config.json").is_file():
        raise TuneError(f"Model folder {name} has no config.json, so it is not a Hugging Face model folder", where,
                        "Point model.name_or_path at the folder written by save_pretrained (it holds config.json)")
    return path.resolve()


def _hub_dir(repo_id: str, revision: str | None) -> Path:
    """The HF cache first (works offline once downloaded), then the hub."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (GatedRepoError, HFValidationError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    where = "model.name_or_path"
    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True,
                                      ignore_patterns=HUB_IGNORE))
    except HFValidationError:
        raise TuneError(f"{repo_id!r} is neither an existing folder nor a valid hub id", where,
                        "Use a model folder, a hub id such as Qwen/Qwen2.5-0.5B-Instruct, or demo:tiny-llama") from None
    except (LocalEntryNotFoundError, FileNotFoundError, OSError):
        pass  # not cached yet: try the hub
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise TuneError(f"Model {repo_id} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set", where,
                        f"Download it once with network access (hf download {repo_id}), or use a local model folder")
    log.info("Downloading %s from the Hugging Face hub", repo_id)
    try:
        return Path(snapshot_download(repo_id, revision=revision, ignore_patterns=HUB_IGNORE))
    except GatedRepoError:
        raise TuneError(f"{repo_id} is gated on the Hugging Face hub", where,
                        "Accept its licence on huggingface.co and log in with `hf auth login`") from None
    except RepositoryNotFoundError:
        raise TuneError(f"Model {repo_id} is not a local folder and not on the Hugging Face hub", where,
                        "Check the spelling, or give the path of a local model folder") from None
    except RevisionNotFoundError:
        raise TuneError(f"Revision {revision!r} of {repo_id} does not exist", "model.revision",
                        "Use a branch, tag or commit of that repository, or remove model.revision") from None
    except Exception as exc:  # offline, proxy, DNS ... all mean the same thing to the user
        raise TuneError(f"Model {repo_id} is not in the local Hugging Face cache and the hub cannot be reached "
                        f"({type(exc).__name__})", where,
                        "Download it once on a connected machine (hf download " + repo_id + "), "
                        "set HF_HOME to a cache that has it, or use a local model folder") from None


def _demo_dir(name: str) -> Path:
    which = demo.demo_name(name)
    if which not in demo.DEMO_NAMES:
        raise TuneError(f"There is no built-in model {name!r}", "model.name_or_path",
                        "Built-in models: " + ", ".join(demo.DEMO_PREFIX + n for n in demo.DEMO_NAMES))
    target = demo.demo_cache_dir()
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build in a sibling temp dir and rename, so a crash (or a second process) never sees half a model.
    tmp = Path(tempfile.mkdtemp(prefix=".demo-", dir=target.parent))
    try:
        _build_demo(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "model.safetensors").is_file():
                raise  # not a lost race: a real error
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _build_demo(out: Path) -> None:
    """Config + the shipped pre-trained weights (scripts/pretrain_demo_model.py) + tokenizer.

    Without the shipped weights (a trimmed install) the model is initialised from DEMO_SEED instead.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = {k: v for k, v in demo.TINY_LLAMA_CONFIG.items() if k != "torch_dtype"}
    config = LlamaConfig(**cfg)
    shipped = demo.TOKENIZER_DIR / "model.safetensors"
    if shipped.is_file():
        config.save_pretrained(out)
    else:
        devnull_state = torch.random.get_rng_state()
        torch.manual_seed(DEMO_SEED)
        try:
            LlamaForCausalLM(config).save_pretrained(out)
        finally:
            torch.random.set_rng_state(devnull_state)  # don't disturb the caller's seeding
    for item in demo.TOKENIZER_DIR.iterdir():
        if item.is_file():
            shutil.copy2(item, out / item.name)


# ---------------------------------------------------------------- tokenizer

def load_tokenizer(spec: ModelSpec, model_dir: Path | None = None):
    """The model's tokenizer with a pad token (pad = eos when the model has none)."""
    from transformers import AutoTokenizer

    model_dir = model_dir or resolve_model_dir(spec)
    if not has_tokenizer(model_dir):
        raise TuneError(f"Model folder {model_dir} has no tokenizer (no tokenizer.json, tokenizer.model or "
                        "vocab file)", "model.name_or_path",
                        "Copy the tokenizer files of the base model into that folder "
                        "(tokenizer.save_pretrained(folder))")
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=spec.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise TuneError(f"The tokenizer in {model_dir} cannot be loaded: {_first_line(exc)}", "model.name_or_path",
                        "Check that the tokenizer files are complete; set model.trust_remote_code: true only "
                        "if the model needs its own code and you trust it") from None
    if tokenizer.pad_token is None:
        # Padding positions are masked out of the loss, so reusing EOS (or UNK) as pad is safe.
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
            log.warning("The tokenizer has no pad, eos or unk token; added <|pad|>")
        else:
            tokenizer.pad_token = fallback
            log.info("The tokenizer has no pad token; padding with %s", fallback)
    return tokenizer


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# ---------------------------------------------------------------- weights

def resolve_device(device: str) -> str:
    """`auto` → cuda when available, else cpu; `cuda` without a GPU is a user error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise TuneError("train.device is cuda but no CUDA GPU is visible", "train.device",
                        "Use train.device: auto or cpu, or check nvidia-smi and CUDA_VISIBLE_DEVICES")
    return device


def resolve_dtype(name: str, device: str):
    """The weight/compute dtype: `auto` is bf16 on GPUs that have it natively (sm80+), fp16 on older GPUs, fp32 on
    CPU. A run decides from its precision instead (core.training.gpu.weight_dtype_name)."""
    from core.training import gpu

    if name == "auto":
        precision = gpu.decide_precision("auto", device, gpu.current_card(device)).precision
        return gpu.torch_dtype(gpu.compute_dtype_name("auto", precision))
    return gpu.torch_dtype(name)


def check_bitsandbytes(device: str, bits: int = 4) -> None:
    """QLoRA needs bitsandbytes working on this device; say so rather than quietly train something else."""
    try:
        import bitsandbytes.functional as bnbf
        import torch
    except Exception as exc:  # ImportError, or a broken native library raising at import
        raise TuneError(f"QLoRA needs bitsandbytes, which cannot be imported here ({_first_line(exc)})",
                        "method.kind", "pip install bitsandbytes, or use method.kind: lora") from None
    # A real round trip on a small block: the only reliable test that its kernels run on this device.
    try:
        sample = torch.randn(64, 64, device=device, dtype=torch.float32)
        if bits == 4:
            packed, state = bnbf.quantize_4bit(sample, quant_type="nf4")
            bnbf.dequantize_4bit(packed, state)
        else:
            bnbf.int8_vectorwise_quant(sample.to(torch.float16))
    except Exception as exc:
        from core.training.gpu import is_cuda_oom

        if is_cuda_oom(exc):  # a full GPU is not a broken bitsandbytes: the runner reports it as out of memory
            raise
        raise TuneError(f"bitsandbytes is installed but its {bits}-bit kernels cannot run on {device} "
                        f"({_first_line(exc)})", "method.kind",
                        "Install a bitsandbytes build for this platform, or use method.kind: lora") from None


def load_model(spec: ModelSpec, method: MethodSpec, task: str, num_labels: int | None = None, device: str = "cpu",
               *, label_names: list[str] | None = None, pad_token_id: int | None = None,
               model_dir: Path | None = None, quantize: bool | None = None, dtype=None, sharded: bool = False):
    """Load the base for `task` ('sft' | 'pretrain' | 'classification'), quantized for qlora.

    `sharded`: FSDP will shard it, so a quantized base stores its packed weights in the compute dtype (FSDP
    shards tensors of one dtype; bitsandbytes' `bnb_4bit_quant_storage`).
    `quantize=False` loads a qlora run's base unquantized (for merging an adapter into it); `dtype` overrides
    model.dtype (a torch dtype, or "auto" for the checkpoint's own).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    model_dir = model_dir or resolve_model_dir(spec)
    from core import methods

    quantize = methods.get(method.kind).quantized if quantize is None else quantize
    kwargs: dict = {"trust_remote_code": spec.trust_remote_code}
    try:
        config = AutoConfig.from_pretrained(model_dir, trust_remote_code=spec.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise TuneError(f"The model config in {model_dir} cannot be read: {_first_line(exc)}", "model.name_or_path",
                        "Check config.json; set model.trust_remote_code: true only for models that ship their own "
                        "code and whose author you trust") from None

    if task == "classification":
        if not num_labels:
            raise ValueError("classification needs num_labels")
        names = list(label_names or [str(i) for i in range(num_labels)])
        # Saved with the model's config, so a reloaded classifier names its predictions.
        config.num_labels = num_labels
        config.id2label = dict(enumerate(names))
        config.label2id = {n: i for i, n in enumerate(names)}
        auto = AutoModelForSequenceClassification
    else:
        auto = AutoModelForCausalLM

    if quantize:
        check_bitsandbytes(device, method.quant.bits)
        q = method.quant
        # A run passes its compute dtype, decided from its precision (core.training.gpu.compute_dtype_name).
        compute = dtype if dtype is not None and dtype != "auto" else resolve_dtype(q.compute_dtype, device)
        # None: transformers' own choice (it keeps lm_head out); a classifier's new head must stay out too.
        skip = _new_head_skips(auto, config, spec.trust_remote_code) if task == "classification" else None
        kwargs["quantization_config"] = methods.get(method.kind).quantization_config(method, compute, skip,
                                                                                     sharded=sharded)
        kwargs["dtype"] = compute
        kwargs["device_map"] = {"": _placement(device)}  # bnb quantizes while loading onto this device
    else:
        kwargs["dtype"] = dtype if dtype is not None else resolve_dtype(spec.dtype, device)
        if device.startswith("cuda"):
            kwargs["device_map"] = {"": _placement(device)}  # straight to the GPU, not via a CPU copy

    try:
        model = auto.from_pretrained(model_dir, config=config, **kwargs)
    except TuneError:
        raise
    except ValueError as exc:
        text = str(exc)
        if "Unrecognized configuration class" in text or "does not recognize this architecture" in text:
            kind = "sequence classification" if task == "classification" else "causal language modelling"
            raise TuneError(f"The model in {model_dir} ({config.model_type}) does not support {kind}",
                            "model.name_or_path", "Choose a model of a supported architecture for this task") from None
        raise
    except OSError as exc:
        raise TuneError(f"The weights in {model_dir} cannot be loaded: {_first_line(exc)}", "model.name_or_path",
                        "Check that the *.safetensors files are complete (re-download them)") from None

    if pad_token_id is not None:
        # Sequence classification finds each row's last real token through pad_token_id.
        if task == "classification" or getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = pad_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = pad_token_id
    if "device_map" not in kwargs:
        model.to(device)
    if quantize and not str(device).startswith("cuda"):
        disable_cpu_4bit_fast_path(model)
    return model


def _new_head_skips(auto, config, trust_remote_code: bool) -> list[str] | None:
    """Modules a quantized classifier must keep in full precision: transformers' defaults plus the task head.

    transformers keeps out of quantization the output embeddings, tied weights and the module of the *last*
    parameter; that catches Llama's `score` (no bias) but not BERT's `classifier`, whose last parameter is its bias.
    Quantized, the freshly initialised head cannot train: PEFT's modules_to_save copy of a Linear4bit fails in
    bitsandbytes (`fix_4bit_weight_quant_state_from_module`) at the first step. The head is found the way the LoRA
    method finds what to save (core.training.anatomy.head_names), on a weightless (meta device) copy of the model.
    Setting llm_int8_skip_modules replaces the defaults (it applies to 4-bit as well), so they are added back.
    """
    import torch

    from core.training.anatomy import head_names

    try:
        with torch.device("meta"):
            skeleton = auto.from_config(config, trust_remote_code=trust_remote_code)
    except Exception as exc:  # some remote-code models cannot be built weightless: say so, keep the defaults
        log.warning("Cannot tell which modules of %s form its classification head (%s); transformers picks what "
                    "stays unquantized", config.model_type, _first_line(exc))
        return None
    skips = set(head_names(skeleton))
    try:
        from transformers.quantizers.base import get_keys_to_not_convert
    except ImportError:  # an internal helper: without it, the output embeddings are the default that matters
        out = skeleton.get_output_embeddings()
        skips.update(name for name, module in skeleton.named_modules() if out is not None and module is out)
    else:
        skips.update(get_keys_to_not_convert(skeleton))
    return sorted(skips)


def _placement(device: str):
    """This process's GPU: LOCAL_RANK under torchrun/accelerate, else the current one; or the CPU."""
    import torch

    if device == "cuda":
        return int(os.environ.get("LOCAL_RANK", torch.cuda.current_device()))
    return device


def disable_cpu_4bit_fast_path(model) -> None:
    """Turn off bitsandbytes' CPU inference fast path for 4-bit layers.

    On a CPU with AVX512-BF16, Linear4bit's first forward in eval mode without gradients (an evaluation during
    training) repacks its weight in place into a layout for CPU inference, which breaks the training steps after
    it. With the fast path off, the weight keeps the layout training uses."""
    try:
        from bitsandbytes.nn import Linear4bit
    except Exception:
        return
    for module in model.modules():
        if isinstance(module, Linear4bit):
            module.support_avx512bf16_for_cpu = False


__all__ = ["resolve_model_dir", "load_tokenizer", "load_model", "resolve_device", "resolve_dtype",
           "check_bitsandbytes", "disable_cpu_4bit_fast_path", "DEMO_SEED"]
