"""Memory estimator: parameter counts equal what transformers/peft build, and each term matches hand arithmetic."""
import json

import pytest

from core.demo import TINY_LLAMA_CONFIG
from core.errors import TuneError
from core.resources.estimate import CUDA_CONTEXT_GIB, GIB, EstimateSettings, estimate, estimate_all
from core.resources.shape import load_shape, shape_from_config

# A 2-block Llama small enough to count by hand: h 64, 4 heads of 16 (2 KV heads -> kv 32), I 128, V 100.
SMALL = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
         "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100,
         "tie_word_embeddings": False}
# q 64·64 + k 64·32 + v 64·32 + o 64·64 + gate/up/down 3·64·128 = 36,864 linear weights + 2 norms of 64 per block;
# embeddings 6,400 + final norm 64 + lm_head 6,400.
SMALL_TOTAL = 2 * (36_864 + 128) + 6_400 + 64 + 6_400  # 86,848
SMALL_LINEAR = 2 * 36_864
CTX = CUDA_CONTEXT_GIB * GIB


def _bytes(value_gib: float) -> float:
    return value_gib * GIB


def test_full_bf16_terms_by_hand():
    e = estimate(shape_from_config(SMALL), EstimateSettings(method="full", batch_size=2, seq_len=8))
    tokens = 16
    assert e.total_params == e.trainable_params == SMALL_TOTAL
    assert _bytes(e.weights_gib) == pytest.approx(2 * SMALL_TOTAL)  # bf16
    assert _bytes(e.gradients_gib) == pytest.approx(2 * SMALL_TOTAL)
    assert _bytes(e.optimizer_gib) == pytest.approx(4 * SMALL_TOTAL)  # AdamW states in bf16
    # per block and token: 20h + 4h_kv + 8I = 1280 + 128 + 1024 = 2432; outside the blocks (4+2+2)h = 512
    assert _bytes(e.activations_gib) == pytest.approx(tokens * (2 * 2432 + 512))
    # loss buffers at the start of backward: fp32 log-softmax, its gradient and nll_loss's gradient, 12 B a logit
    assert _bytes(e.logits_gib) == pytest.approx(tokens * 100 * 12)
    dynamic = tokens * (2 * 2432 + 512) + tokens * 1200
    # no accumulation: gradients (173,696 B) and activations never coexist, the larger one counts
    expected = 2 * SMALL_TOTAL + 4 * SMALL_TOTAL + max(dynamic, 2 * SMALL_TOTAL) + CTX + 0.1 * dynamic
    assert _bytes(e.peak_gib) == pytest.approx(expected)
    accumulating = estimate(shape_from_config(SMALL), EstimateSettings(method="full", batch_size=2, seq_len=8,
                                                                       grad_accum=4))
    assert _bytes(accumulating.peak_gib) == pytest.approx(expected - max(dynamic, 2 * SMALL_TOTAL)
                                                          + dynamic + 2 * SMALL_TOTAL)


def test_lora_qlora_and_freeze_terms_by_hand():
    shape = shape_from_config(SMALL)
    base = EstimateSettings(batch_size=2, seq_len=8, lora_r=8)
    lora = estimate(shape, base.with_(method="lora"))
    # r·(in+out) per linear: q 1024, k 768, v 768, o 1024, gate/up/down 1536 each = 8,192 per block
    assert lora.trainable_params == 2 * 8_192
    assert _bytes(lora.weights_gib) == pytest.approx(2 * SMALL_TOTAL + 4 * 16_384)  # fp32 adapters
    assert _bytes(lora.optimizer_gib) == pytest.approx(8 * 16_384)
    # A frozen block keeps per token: the two norms' fp32 inputs 2·4h = 512, SDPA's q, k, v, out 2·(2q + 2kv) and
    # its fp32 log-sum-exp per head (16) = 400, gate/up/act 3·2I = 768 — 1680; the adapters add the half copies of
    # their inputs and the 1-byte dropout masks 3·(6·64 + 128) = 1536 and rank outputs 7·2·8 = 112 — 1648.
    assert _bytes(lora.activations_gib) == pytest.approx(16 * (2 * (1680 + 1648) + 512))

    qlora = estimate(shape, base.with_(method="qlora", gradient_checkpointing=True))
    nf4_dq = SMALL_LINEAR * (4 + 8 / 64 + 32 / (64 * 256)) / 8  # 4.127 bits per quantized weight
    assert _bytes(qlora.weights_gib) == pytest.approx(nf4_dq + 4 * (SMALL_TOTAL - SMALL_LINEAR) + 4 * 16_384)
    plain = estimate(shape, base.with_(method="qlora", double_quant=False))
    assert _bytes(plain.weights_gib - qlora.weights_gib) == pytest.approx(SMALL_LINEAR * (4.5 - 4.126953125) / 8)
    # peft's k-bit preparation leaves the embeddings in fp32, so checkpointing keeps each block's fp32 input (4h)
    # plus one block being recomputed, whose quantized MLP returns fp32 (3·4I = 1536): 512 + 400 + 1536 + 1648;
    # outside the blocks (4 + 2 + 4)h
    assert _bytes(qlora.activations_gib) == pytest.approx(16 * (2 * 256 + 2448 + 1648 + 640))

    freeze = estimate(shape, base.with_(method="freeze", trainable_layers=1, optim="adamw8bit"))
    assert freeze.trainable_params == 36_992
    # 8-bit states (2 B + an fp32 absmax per 256) for q, o, gate, up, down (4096+ elements); k, v (2048) and the
    # norms stay 32-bit (8 B)
    big, small = 4096 + 4096 + 3 * 8192, 2048 + 2048 + 128
    assert _bytes(freeze.optimizer_gib) == pytest.approx(2 * big + 8 * big / 256 + 8 * small)
    assert _bytes(freeze.activations_gib) == pytest.approx(16 * (2432 + 512))  # only the top block keeps any


def test_tiny_llama_counts_equal_what_the_engine_and_peft_report():
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    from core.config import FreezeSpec, LoraSpec, MethodSpec
    from core.methods import apply as apply_method

    torch.set_num_threads(1)
    shape = load_shape("demo:tiny-llama")
    config = LlamaConfig(**{k: v for k, v in TINY_LLAMA_CONFIG.items() if k != "architectures"})
    assert shape.total_params == sum(p.numel() for p in LlamaForCausalLM(config).parameters()) == 1_836_160
    cases = [
        (MethodSpec(kind="full"), EstimateSettings(method="full")),
        (MethodSpec(kind="freeze", freeze=FreezeSpec(trainable_layers=2)),
         EstimateSettings(method="freeze", trainable_layers=2)),
        (MethodSpec(kind="freeze", freeze=FreezeSpec(trainable_layers=-1, extra_modules=("norm", "lm_head"))),
         EstimateSettings(method="freeze", trainable_layers=-1, freeze_extra=("norm", "lm_head"))),
        (MethodSpec(kind="lora"), EstimateSettings(method="lora", lora_r=8)),
        (MethodSpec(kind="lora", lora=LoraSpec(r=4, target_modules=("q_proj", "v_proj"))),
         EstimateSettings(method="lora", lora_r=4, lora_targets=("q_proj", "v_proj"))),
        (MethodSpec(kind="qlora"), EstimateSettings(method="qlora", lora_r=8)),
    ]
    for spec, settings in cases:
        _, report = apply_method(LlamaForCausalLM(config), spec, "sft")
        e = estimate(shape, settings)
        assert (e.trainable_params, e.total_params) == (report.trainable_params, report.total_params), spec.kind
    for kind in ("full", "freeze", "lora"):  # a new `score` head replaces lm_head and always trains
        _, report = apply_method(LlamaForSequenceClassification(config), MethodSpec(kind=kind), "classification")
        e = estimate(shape, EstimateSettings(method=kind, task="classification"))
        assert (e.trainable_params, e.total_params) == (report.trainable_params, report.total_params), kind

    peft_model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=8, target_modules="all-linear"))
    trainable, total = peft_model.get_nb_trainable_parameters()
    lora = estimate(shape, EstimateSettings(method="lora", lora_r=8))
    assert (lora.trainable_params, lora.total_params) == (trainable, total)


@pytest.mark.parametrize("cfg", [
    {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "hidden_size": 64, "intermediate_size": 96,
     "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128,
     "tie_word_embeddings": True},
    {"model_type": "phi", "architectures": ["PhiForCausalLM"], "hidden_size": 64, "intermediate_size": 256,
     "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 128},
    {"model_type": "bert", "architectures": ["BertForMaskedLM"], "hidden_size": 64, "intermediate_size": 256,
     "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 128, "max_position_embeddings": 32},
    {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_embd": 64, "n_layer": 2, "n_head": 4,
     "vocab_size": 128, "n_positions": 32},  # not written out: counted on the meta device
])
def test_parameter_counts_match_transformers(cfg):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM

    torch.set_num_threads(1)
    config = AutoConfig.for_model(**cfg)
    cls = AutoModelForMaskedLM if cfg["model_type"] == "bert" else AutoModelForCausalLM
    model = cls.from_config(config)
    shape = shape_from_config(cfg)
    assert shape.total_params == sum(p.numel() for p in model.parameters())
    if cfg["model_type"] == "qwen2":
        assert all(lin.bias for lin in shape.linears[:3]) and not shape.linears[3].bias


def test_published_counts_for_llama_3_1_8b_and_llama_2_7b():
    llama3 = shape_from_config({"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
                                "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                                "vocab_size": 128256})
    assert llama3.total_params == 8_030_261_248
    assert estimate(llama3, EstimateSettings(lora_r=32)).trainable_params == 83_886_080  # docs/estimator.md §1: 83.9 M
    llama2 = shape_from_config({"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008,
                                "num_hidden_layers": 32, "num_attention_heads": 32, "vocab_size": 32000})
    assert llama2.total_params == 6_738_415_616
    # LitGPT's printed count for LoRA r8 on q,v
    assert estimate(llama2, EstimateSettings(lora_targets="q_proj,v_proj")).trainable_params == 4_194_304


def test_cheaper_settings_cost_less_where_a_user_expects():
    shape = shape_from_config(SMALL | {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
                                       "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 32000})
    s = EstimateSettings(batch_size=2, seq_len=512)
    peaks = {m: e.peak_gib for m, e in estimate_all(shape, s.with_(gradient_checkpointing=True)).items()}
    assert peaks["full"] > peaks["lora"] and peaks["full"] > peaks["freeze"]
    for method in ("full", "lora"):
        plain = estimate(shape, s.with_(method=method))
        assert estimate(shape, s.with_(method=method, gradient_checkpointing=True)).activations_gib < \
            plain.activations_gib / 2
        assert estimate(shape, s.with_(method=method, seq_len=256)).peak_gib < plain.peak_gib
    full = estimate(shape, s.with_(method="full", optim="adamw8bit"))
    assert full.optimizer_gib < estimate(shape, s.with_(method="full")).optimizer_gib / 1.5


def test_load_shape_reads_a_folder_a_config_file_and_the_hf_cache(tmp_path, monkeypatch):
    folder = tmp_path / "only-config"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(SMALL))
    assert load_shape(str(folder)).total_params == SMALL_TOTAL
    assert load_shape(str(folder / "config.json")).total_params == SMALL_TOTAL

    cache = tmp_path / "hub"
    snap = cache / "models--acme--tiny" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps(SMALL))
    (cache / "models--acme--tiny" / "refs").mkdir()
    (cache / "models--acme--tiny" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    assert load_shape("acme/tiny").total_params == SMALL_TOTAL

    with pytest.raises(TuneError, match="not in the Hugging Face cache") as missing:
        load_shape("acme/absent")
    assert "download" in (missing.value.fix or "")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(TuneError, match="not valid JSON"):
        load_shape(str(broken))
    with pytest.raises(TuneError, match="match no linear layer"):
        estimate(shape_from_config(SMALL), EstimateSettings(lora_targets="c_attn"))


def test_bert_classification_counts_and_mixed_precision_terms():
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    torch.set_num_threads(1)
    cfg = {"model_type": "bert", "architectures": ["BertForMaskedLM"], "hidden_size": 64, "intermediate_size": 256,
           "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 128, "max_position_embeddings": 32}
    model = AutoModelForSequenceClassification.from_config(AutoConfig.for_model(**cfg, num_labels=3))
    shape = shape_from_config(cfg)
    amp = EstimateSettings(method="full", task="classification", num_labels=3, precision="fp16",
                           weights_dtype="float32", batch_size=2, seq_len=16)
    e = estimate(shape, amp)
    n = sum(p.numel() for p in model.parameters())
    assert e.total_params == e.trainable_params == n and e.logits_gib == 0
    # AMP: fp32 weights and grads, 8 B of AdamW state, and the half copies autocast makes for the step
    assert (_bytes(e.weights_gib), _bytes(e.gradients_gib), _bytes(e.optimizer_gib)) == \
        pytest.approx((4 * n, 4 * n, 8 * n))
    # allocator slack on what comes and goes: the activations, then the widest gradients of a block's backward
    # (fc1's output and the GELU's, 2·2I, and the fp32 residual stream's in and out, 2·4h) per token
    work = 2 * 16 * (2 * 2 * 256 + 2 * 4 * 64)
    assert _bytes(e.overhead_gib) == pytest.approx(CTX + 2 * n + 0.1 * (_bytes(e.activations_gib) + work))
    fp32 = estimate(shape, amp.with_(precision="fp32"))
    assert fp32.activations_gib > e.activations_gib > 0


LLAMA2_7B = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
             "num_attention_heads": 32, "vocab_size": 32000}
P7B = 6_738_415_616
BLOCK_7B = 202_383_360  # 4·4096² + 3·4096·11008 + 2·4096
ROOT_7B = 262_148_096  # embeddings and LM head 2·32000·4096, final norm 4096


def test_fsdp_and_ddp_split_a_7b_full_fine_tune_over_4_gpus():
    shape = shape_from_config(LLAMA2_7B)
    assert shape.layer_params == BLOCK_7B
    # grad_accum 2: gradients live beside the activations, so every term adds and the arithmetic is linear
    one = EstimateSettings(method="full", batch_size=1, seq_len=2048, gradient_checkpointing=True, grad_accum=2)
    single = estimate(shape, one)
    assert single.strategy == "single" and single.gpus == 1
    fsdp = estimate(shape, one.with_(gpus=4, distributed="fsdp"))
    assert (fsdp.strategy, fsdp.gpus) == ("fsdp", 4)
    # bf16 weights (2 B), bf16 gradients (2 B) and AdamW states in bf16 (4 B): each ÷ 4
    assert _bytes(fsdp.weights_gib) == pytest.approx(2 * P7B / 4)
    assert _bytes(fsdp.gradients_gib) == pytest.approx(2 * P7B / 4)
    assert _bytes(fsdp.optimizer_gib) == pytest.approx(4 * P7B / 4)
    # the largest unit gathered whole: the root (embeddings, norm, head: 262 M) beats a block (202 M); its bf16
    # weights and, in backward, its bf16 gradients
    assert _bytes(fsdp.gathered_gib) == pytest.approx(ROOT_7B * (2 + 2))
    assert fsdp.activations_gib == single.activations_gib and fsdp.logits_gib == single.logits_gib
    assert _bytes(fsdp.peak_gib) == pytest.approx(_bytes(single.peak_gib) - 0.75 * 8 * P7B + ROOT_7B * 4)

    ddp = estimate(shape, one.with_(gpus=4, distributed="ddp"))
    assert ddp.strategy == "ddp" and ddp.weights_gib == single.weights_gib
    # a full replica plus DDP's buckets: the trainable gradients once more
    assert _bytes(ddp.buckets_gib) == pytest.approx(2 * P7B)
    assert _bytes(ddp.peak_gib) == pytest.approx(_bytes(single.peak_gib) + 2 * P7B)

    # auto: DDP while a replica fits the free memory, FSDP once it does not; DDP when the memory is not known
    assert estimate(shape, one.with_(gpus=4)).strategy == "ddp"
    assert estimate(shape, one.with_(gpus=4, gpu_free_gib=141)).strategy == "ddp"
    assert estimate(shape, one.with_(gpus=4, gpu_free_gib=40)).strategy == "fsdp"


def test_fsdp_shards_the_4_bit_base_of_qlora_and_checks_its_input():
    shape = shape_from_config(LLAMA2_7B)
    one = EstimateSettings(method="qlora", batch_size=1, seq_len=1024, gradient_checkpointing=True)
    single, fsdp = estimate(shape, one), estimate(shape, one.with_(gpus=8, distributed="fsdp"))
    assert fsdp.weights_gib == pytest.approx(single.weights_gib / 8)
    assert fsdp.optimizer_gib == pytest.approx(single.optimizer_gib / 8)
    assert any("4-bit base" in n for n in fsdp.notes)
    # the gathered unit: the fp32 root (embeddings, head) outweighs a 4-bit block
    assert _bytes(fsdp.gathered_gib) == pytest.approx(ROOT_7B * 4)
    with pytest.raises(TuneError, match="GPU count"):
        estimate(shape, one.with_(gpus=0))
    with pytest.raises(TuneError, match="Unknown distributed strategy"):
        estimate(shape, one.with_(gpus=2, distributed="zero3"))


def test_loss_buffers_and_a_recomputed_block_are_not_counted_together():
    shape = shape_from_config(LLAMA2_7B)
    s = EstimateSettings(method="lora", batch_size=1, seq_len=4096, gradient_checkpointing=True)
    e = estimate(shape, s)
    tokens = 4096
    assert _bytes(e.logits_gib) == pytest.approx(tokens * 32000 * 12)
    # the peak holds the checkpoints with the larger of the loss buffers and one block's recompute, so it sits
    # below the sum of the parts
    parts = e.weights_gib + e.trainable_state_gib + e.activations_gib + e.logits_gib + e.overhead_gib
    assert e.peak_gib < parts
    chunked = estimate(shape, s.with_(chunked_loss=True))
    assert chunked.peak_gib < e.peak_gib and _bytes(chunked.logits_gib) == pytest.approx(tokens * 32000 * 2)
