"""Rebuild core/assets/tiny-llama/ (the demo tokenizer) from the shared demo datasets.

A byte-level BPE trained locally, so the built-in demo runs offline. Run once; the output is committed.
"""
import json
import sys
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

DATA = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data")
OUT = Path(__file__).resolve().parents[1] / "core" / "assets" / "tiny-llama"
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
# ChatML, the format Qwen and many others use.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def texts():
    for name in ("alpaca_en_demo.json", "alpaca_zh_demo.json", "glaive_toolcall_en_demo.json"):
        for row in json.loads((DATA / name).read_text()):
            yield " ".join(str(v) for v in row.values() if isinstance(v, str))
            for turn in row.get("conversations", []):
                yield turn.get("value", "")
    for line in (DATA / "c4_demo.jsonl").read_text().splitlines():
        yield json.loads(line)["text"]


def main():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=4096, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|pad|>",
                                   unk_token=None, bos_token=None, model_max_length=2048)
    fast.add_special_tokens({"additional_special_tokens": ["<|endoftext|>", "<|im_start|>"]})
    fast.chat_template = CHAT_TEMPLATE
    OUT.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(OUT)
    print(f"saved {len(fast)} tokens to {OUT}")


if __name__ == "__main__":
    main()
