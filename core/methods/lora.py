"""LoRA: low-rank adapters beside the frozen linear layers (peft). A few hundred times fewer trainable weights,
often as good as Full; the default choice for most tasks. final/ holds the adapter, not the model."""
from __future__ import annotations

from core.errors import TuneError
from core.methods.base import Method, lora_words


class LoRA(Method):
    name = "lora"
    title = "LoRA"
    blurb = "Adapters on a frozen base; the default."
    noun = "LoRA"
    adapter = True
    option_groups = ("lora",)

    def describe(self, spec) -> str:
        return f"LoRA ({lora_words(spec)})"

    def prepare(self, model, spec, task, *, gradient_checkpointing=False):
        return add_adapters(model, spec, task)

    def trainable_tensors(self, shape, s) -> list[int]:
        from core.resources.estimate import lora_tensors

        return lora_tensors(shape, s)


def add_adapters(model, spec, task: str):
    """Wrap `model` in a PeftModel with LoRA adapters as `spec.lora` says; returns (model, descriptions)."""
    from peft import LoraConfig, TaskType, get_peft_model

    from core.training.anatomy import block_regex, head_names, linear_target_names

    lora = spec.lora
    if lora.target_modules == "all-linear":
        leaves = linear_target_names(model)
        if not leaves:
            raise TuneError("The model's blocks contain no linear layers for LoRA", "method.lora.target_modules",
                            "Name the modules to adapt in method.lora.target_modules")
        target = block_regex(model, leaves)
    else:
        leaves = [lora.target_modules] if isinstance(lora.target_modules, str) else list(lora.target_modules)
        present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
        missing = [n for n in leaves if n not in present]
        if missing:
            raise TuneError(f"`method.lora.target_modules` names {', '.join(missing)}, which the model does not have",
                            "method.lora.target_modules",
                            "Use all-linear, or some of: " + ", ".join(linear_target_names(model)))
        target = leaves
    heads = head_names(model) if task == "classification" else []
    config = LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=target,
        use_rslora=lora.use_rslora, use_dora=lora.use_dora, bias="none",
        task_type=TaskType.SEQ_CLS if task == "classification" else TaskType.CAUSAL_LM,
        # The classification head is new: train it fully and save it with the adapter.
        modules_to_save=list(heads) or None,
    )
    model = get_peft_model(model, config)
    flavour = "dora" if lora.use_dora else "lora"
    described = [f"{flavour} r={lora.r}{' rslora' if lora.use_rslora else ''}: {', '.join(leaves)}"]
    described += [f"head: {h}" for h in heads]
    return model, described


__all__ = ["LoRA", "add_adapters"]
