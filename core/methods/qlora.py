"""QLoRA: the base loaded in 4-bit NF4 (or 8-bit) by bitsandbytes, LoRA adapters on top. For tight memory."""
from __future__ import annotations

from core.methods.base import lora_words
from core.methods.lora import LoRA, add_adapters


class QLoRA(LoRA):
    name = "qlora"
    title = "QLoRA"
    blurb = "LoRA on a 4-bit base; least memory."
    noun = "QLoRA"
    quantized = True
    option_groups = ("lora", "quant")

    def describe(self, spec) -> str:
        q = spec.quant
        return f"QLoRA ({q.bits}-bit {q.type if q.bits == 4 else 'int8'}, {lora_words(spec)})"

    def quantization_config(self, spec, compute_dtype, skip_modules, *, sharded=False):
        from transformers import BitsAndBytesConfig

        q = spec.quant
        if q.bits == 4:
            # Under FSDP the packed 4-bit weights are stored in the compute dtype, so FSDP can shard them with
            # the rest (bitsandbytes' documented QLoRA-FSDP setting).
            storage = {"bnb_4bit_quant_storage": compute_dtype} if sharded else {}
            return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=q.type,
                                      bnb_4bit_use_double_quant=q.double_quant, bnb_4bit_compute_dtype=compute_dtype,
                                      llm_int8_skip_modules=skip_modules, **storage)
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip_modules)

    def prepare(self, model, spec, task, *, gradient_checkpointing=False):
        from peft import prepare_model_for_kbit_training

        # Casts norms to fp32 and makes inputs require grad so gradients reach the adapters.
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False} if gradient_checkpointing else None)
        return add_adapters(model, spec, task)


__all__ = ["QLoRA"]
