"""What each method makes trainable: LoRA targets found from the model, freeze picks blocks, QLoRA is 4-bit (a new
classification head excepted)."""
from __future__ import annotations

import pytest

from core.config import FreezeSpec, LoraSpec, MethodSpec, ModelSpec
from core.errors import TuneError
from core.methods import apply as apply_method
from core.training.anatomy import linear_target_names
from core.training.models import load_model


def _trainable(model) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def test_lora_all_linear_adapts_every_block_linear_and_nothing_else(demo_model_dir):
    model = load_model(ModelSpec(), MethodSpec(kind="lora"), "sft", device="cpu")
    assert linear_target_names(model) == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj",
                                          "v_proj"]
    model, report = apply_method(model, MethodSpec(kind="lora", lora=LoraSpec(r=4)), "sft")
    adapted = {name.rsplit(".lora_A", 1)[0] for name in _trainable(model) if ".lora_A." in name}
    assert len(adapted) == 4 * 7 and not any("lm_head" in n for n in adapted)
    assert _trainable(model) == {n for n in _trainable(model) if ".lora_" in n}
    assert report.trainable_params == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert "q_proj" in report.trainable_modules[0]


def test_lora_on_bert_classification_skips_the_pooler_and_trains_the_head(tiny_bert_dir):
    spec = ModelSpec(str(tiny_bert_dir))
    model = load_model(spec, MethodSpec(kind="lora"), "classification", 3, "cpu", label_names=["a", "b", "c"])
    model, report = apply_method(model, MethodSpec(kind="lora"), "classification")
    names = {name for name, _ in model.named_modules()}
    assert any(n.endswith("attention.self.query.lora_A") for n in names)
    assert not any("pooler.dense.lora_A" in n for n in names)  # outside the blocks
    assert any("classifier" in n for n in _trainable(model))
    assert "head: classifier" in report.trainable_modules


def test_freeze_trains_the_chosen_blocks_and_extra_modules_only(demo_model_dir):
    method = MethodSpec(kind="freeze", freeze=FreezeSpec(trainable_layers=-1, extra_modules=("norm", "embed_tokens")))
    model = load_model(ModelSpec(), method, "sft", device="cpu")
    model, report = apply_method(model, method, "sft")
    trainable = _trainable(model)
    assert trainable == {n for n in trainable if n.startswith(("model.layers.0.", "model.norm.",
                                                               "model.embed_tokens."))}
    assert "model.layers.0.mlp.up_proj.weight" in trainable and "model.norm.weight" in trainable
    assert report.trainable_modules == ["layers.0", "norm", "embed_tokens"]

    too_many = MethodSpec(kind="freeze", freeze=FreezeSpec(trainable_layers=6))
    with pytest.raises(TuneError, match="only 4 blocks"):
        apply_method(load_model(ModelSpec(), too_many, "sft", device="cpu"), too_many, "sft")


def test_qlora_base_linears_are_4bit_and_only_adapters_train(demo_model_dir):
    from bitsandbytes.nn import Linear4bit

    method = MethodSpec(kind="qlora")
    model = load_model(ModelSpec(), method, "sft", device="cpu")
    model, report = apply_method(model, method, "sft")
    layer = model.get_base_model().model.layers[0]
    for linear in (layer.self_attn.q_proj, layer.mlp.down_proj):
        assert isinstance(linear.base_layer, Linear4bit)
        assert linear.base_layer.weight.quant_state.quant_type == "nf4"
    assert all(".lora_" in n for n in _trainable(model))
    assert report.total_params == 1_836_160 + report.trainable_params  # 4-bit weights counted as parameters


def test_lora_target_modules_that_do_not_exist_are_named(demo_model_dir):
    method = MethodSpec(kind="lora", lora=LoraSpec(target_modules=("q_proj", "query_key_value")))
    model = load_model(ModelSpec(), method, "sft", device="cpu")
    with pytest.raises(TuneError, match="query_key_value") as info:
        apply_method(model, method, "sft")
    assert "v_proj" in info.value.fix


@pytest.mark.parametrize("arch,bits", [("bert", 4), ("bert", 8), ("llama", 4)])
def test_qlora_classification_keeps_the_new_head_in_full_precision_and_trains(arch, bits, tiny_bert_dir,
                                                                             demo_model_dir):
    import torch
    from bitsandbytes.nn import Linear4bit, Linear8bitLt
    from transformers import AutoTokenizer

    from core.config import QuantSpec

    quantized = Linear4bit if bits == 4 else Linear8bitLt
    folder = tiny_bert_dir if arch == "bert" else demo_model_dir
    head = "classifier" if arch == "bert" else "score"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    method = MethodSpec(kind="qlora", quant=QuantSpec(bits=bits))
    model = load_model(ModelSpec(str(folder)), method, "classification", 2, "cpu", label_names=["neg", "pos"],
                       pad_token_id=tokenizer.pad_token_id)
    assert type(getattr(model, head)) is torch.nn.Linear  # not quantized ...
    assert sum(isinstance(m, quantized) for m in model.modules()) >= 8  # ... while the blocks are
    model, report = apply_method(model, method, "classification")
    assert f"head: {head}" in report.trainable_modules

    # Training steps (the first one used to fail inside bitsandbytes) move the head and lower the loss.
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    batch = tokenizer(["the movie was very good", "the food was very awful"] * 2, return_tensors="pt", padding=True)
    labels = torch.tensor([1, 0, 1, 0])
    saved_head = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad and head in n}
    model.train()
    losses = []
    for _ in range(8):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses
    assert saved_head and all(not torch.equal(p, saved_head[n]) for n, p in model.named_parameters() if n in saved_head)


def test_every_method_is_defined_once_and_the_config_accepts_exactly_those():
    import typing

    from core import config as cfg
    from core import methods
    from core.resources.estimate import EstimateSettings, estimate
    from core.resources.shape import load_shape

    kinds = typing.get_args(typing.get_type_hints(cfg.MethodSpec)["kind"])
    assert kinds == methods.NAMES == cfg.METHODS
    shape = load_shape("demo:tiny-llama")
    for method in methods.ALL:
        assert methods.get(method.name) is method and method.title and method.blurb
        assert method.describe(cfg.MethodSpec(kind=method.name)).startswith(method.title)
        # The estimator asks the method what trains; the count matches the real model's (see test_estimate).
        assert estimate(shape, EstimateSettings(method=method.name)).trainable_params > 0
    with pytest.raises(TuneError, match="Unknown method 'dora'"):
        methods.get("dora")
    assert [m.name for m in methods.ALL if m.adapter] == ["lora", "qlora"]
    assert [m.name for m in methods.ALL if m.quantized] == ["qlora"]


def test_a_padding_free_batch_gives_each_example_exactly_its_padded_logits(demo_model_dir):
    """Flattened examples never attend to each other: every real token's logits equal the padded batch's."""
    import torch

    from core.training.encode import PreparedData, can_flatten
    from core.training.models import load_tokenizer, resolve_model_dir

    assert can_flatten(resolve_model_dir(ModelSpec()))
    model = load_model(ModelSpec(), MethodSpec(kind="full"), "sft", device="cpu").train()  # as the Trainer calls it
    tokenizer = load_tokenizer(ModelSpec())
    examples = [{"input_ids": ids, "attention_mask": [1] * len(ids), "labels": ids}
                for ids in ([5, 17, 30, 41, 8, 9, 60], [7, 7, 12], [99, 3, 4, 5, 6])]
    prepared = PreparedData(format="alpaca", task="sft", train=None, val=None, label_names=None, stats={})
    padded = prepared.collator(tokenizer)(examples)
    flat = prepared.collator(tokenizer, padding_free=True)(examples)
    assert flat["input_ids"].shape == (1, 15) and "attention_mask" not in flat
    with torch.no_grad():
        padded_logits = model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"]).logits
        flat_logits = model(**{k: v for k, v in flat.items() if k != "labels"}).logits[0]  # as the Trainer calls it
    start = 0
    for row, example in enumerate(examples):
        n = len(example["input_ids"])
        torch.testing.assert_close(flat_logits[start:start + n], padded_logits[row, :n], atol=1e-5, rtol=1e-4)
        start += n
