"""Chat formatting and loss masks: dataset rows → chat messages → token ids with labels only on assistant turns.

Imports transformers only through the tokenizer it is handed; never imports textual or tui.
"""
from __future__ import annotations

import json
from typing import Any

from core.errors import TuneError

IGNORE_INDEX = -100  # the label value torch's cross-entropy (and transformers) skips

# LLaMA-Factory's sharegpt role tags. Tool calls are what the model must learn to emit, so they train like any
# assistant turn; tool results come from outside, so they are context (a `tool` turn).
SHAREGPT_ROLES = {
    "human": "user", "user": "user",
    "gpt": "assistant", "assistant": "assistant", "function_call": "assistant",
    "observation": "tool", "tool": "tool",
    "system": "system",
}
MESSAGE_ROLES = {"system": "system", "user": "user", "assistant": "assistant", "tool": "tool"}
ASSISTANT_TAGS = ("gpt", "assistant", "function_call")

# Used only when the tokenizer has no chat template (a base model): plain-text headers any tokenizer can encode,
# with no special tokens the vocabulary may lack. The header ends in a newline so the first word of a response is
# its own token rather than merged with the header's trailing space. EOS closes each assistant turn so the tuned
# model learns to stop.
BUILTIN_TEMPLATE = (
    "{% if bos_token %}{{ bos_token }}{% endif %}"
    "{% if tools %}### Tools:\n{{ tools | tojson }}\n\n{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}### System:\n{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'user' %}### User:\n{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'assistant' %}### Assistant:\n{{ message['content'] }}{{ eos_token }}\n\n"
    "{% else %}### {{ message['role'] | capitalize }}:\n{{ message['content'] }}\n\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}### Assistant:\n{% endif %}"
)


# ------------------------------------------------------------------ rows → messages

def alpaca_messages(row: dict, system_default: str | None) -> list[dict]:
    """instruction (+ input on the next line), output; optional system and history [[query, response], ...]."""
    messages = []
    system = row.get("system") or system_default
    if system:
        messages.append({"role": "system", "content": system})
    for pair in row.get("history") or []:
        messages.append({"role": "user", "content": str(pair[0])})
        messages.append({"role": "assistant", "content": str(pair[1])})
    prompt = row.get("instruction") or ""
    if row.get("input"):
        prompt = f"{prompt}\n{row['input']}" if prompt else row["input"]
    messages.append({"role": "user", "content": prompt})
    messages.append({"role": "assistant", "content": row["output"]})
    return messages


def chat_messages(turns: list[dict], role_key: str, content_key: str, roles: dict[str, str],
                  system: str | None) -> list[dict]:
    """sharegpt / messages turns → {role, content} messages, with a row-level or default system prompt first."""
    messages = []
    if system and not (turns and roles.get(turns[0][role_key]) == "system"):
        messages.append({"role": "system", "content": system})
    for turn in turns:
        message = {"role": roles[turn[role_key]], "content": turn.get(content_key)}
        # OpenAI-style tool calls ride along for templates that render them; None-valued keys are dropped by
        # apply_chat_template.
        if turn.get("tool_calls"):
            message["tool_calls"] = turn["tool_calls"]
        messages.append(message)
    return messages


def parse_tools(value: Any) -> list | None:
    """The `tools` column: a JSON string (glaive/LLaMA-Factory) or an already-parsed list. Raises ValueError."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        value = json.loads(value)
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise ValueError("tools must be a JSON list of tool schemas")
    return value or None


# ------------------------------------------------------------------ messages → ids + labels

class ChatEncoder:
    """Renders conversations with the tokenizer's chat template and labels exactly the assistant turns (+ EOS)."""

    def __init__(self, tokenizer, force_segments: bool = False):
        self.tokenizer = tokenizer
        try:
            self.template = tokenizer.get_chat_template()
            self.builtin = False
        except ValueError:  # no chat template: a base model
            self.template = BUILTIN_TEMPLATE
            self.builtin = True
        self.eos = tokenizer.eos_token
        self.eos_id = tokenizer.eos_token_id
        if self.eos is None or self.eos_id is None:
            raise TuneError("The tokenizer has no EOS token, so a tuned model could not learn where to stop",
                            getattr(tokenizer, "name_or_path", None),
                            "Use a tokenizer with an eos_token (set it in tokenizer_config.json)")
        self.takes_tools = "tools" in self.template
        # Offsets let the whole conversation be tokenized in one piece, exactly as at inference. Tokenizers without
        # them (pure-Python ones) get each span tokenized on its own.
        self.use_offsets = bool(getattr(tokenizer, "is_fast", False)) and not force_segments

    def render(self, messages: list[dict], tools: list | None, generation_prompt: bool = False) -> str:
        if not messages:
            return ""
        return self.tokenizer.apply_chat_template(
            messages, tools=tools, chat_template=self.template, tokenize=False,
            add_generation_prompt=generation_prompt)

    def encode(self, messages: list[dict], tools: list | None = None) -> tuple[list[int], list[int]]:
        """Token ids and labels (IGNORE_INDEX outside assistant turns) for one whole conversation."""
        if tools and not self.takes_tools:
            messages = _fold_tools(messages, tools)
            tools = None
        text, spans = self.spans(messages, tools)
        if self.use_offsets:
            return self._label_by_offsets(text, spans)
        return self._label_by_segments(text, spans)

    def spans(self, messages: list[dict], tools: list | None) -> tuple[str, list[tuple[int, int]]]:
        """The rendered text and the character span of each assistant turn, each ending after its EOS if present.

        Rendering the conversation up to each assistant turn (with and without it) finds the turn's text no matter
        how the template wraps it. Templates that re-render earlier turns differently (e.g. stripping reasoning)
        break the prefix property; then the turn's content is searched for in the full text instead.
        """
        full = self.render(messages, tools)
        spans: list[tuple[int, int]] = []
        cursor = 0
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            start = end = None
            if i > 0:
                before = self.render(messages[:i], tools, generation_prompt=True)
                upto = self.render(messages[:i + 1], tools)
                if upto.startswith(before) and full.startswith(upto) and len(before) >= cursor:
                    start, end = len(before), len(upto)
            if start is None:
                content = message.get("content") or ""
                pos = full.find(content, cursor) if content else -1
                if pos < 0:
                    raise TuneError(
                        "The chat template changes assistant messages when rendering them, so tunetui cannot tell "
                        "which tokens are the response", getattr(self.tokenizer, "name_or_path", None),
                        "Use a tokenizer whose template keeps messages verbatim, or train this data as text")
                start, end = pos, pos + len(content)
                after = full[end:]
                k = after.find(self.eos)
                if k >= 0 and not after[:k].strip():
                    end += k + len(self.eos)
            piece = full[start:end]
            k = piece.rfind(self.eos)
            # Trailing template text after EOS (a newline, the next turn's header) is not the model's to produce.
            end = start + k + len(self.eos) if k >= 0 else start + len(piece.rstrip())
            spans.append((start, end))
            cursor = end
        return full, spans

    def _label_by_offsets(self, text: str, spans: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        labels = [IGNORE_INDEX] * len(ids)
        last: dict[int, int] = {}
        span = 0
        for t, (s, e) in enumerate(enc["offset_mapping"]):
            while span < len(spans) and s >= spans[span][1]:
                span += 1
            if span == len(spans):
                break
            # Any token overlapping the span trains: a token that straddles the header/response boundary is still
            # one the model has to generate.
            if e > s and e > spans[span][0]:
                labels[t] = ids[t]
                last[span] = t
        # Insert EOS after turns whose template doesn't close them with it, last first so indices stay valid.
        for t in sorted(last.values(), reverse=True):
            if ids[t] != self.eos_id:
                ids.insert(t + 1, self.eos_id)
                labels.insert(t + 1, self.eos_id)
        return ids, labels

    def _label_by_segments(self, text: str, spans: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
        ids: list[int] = []
        labels: list[int] = []
        pos = 0
        for start, end in spans + [(len(text), len(text))]:
            prompt = self.tokenizer.encode(text[pos:start], add_special_tokens=False) if start > pos else []
            ids += prompt
            labels += [IGNORE_INDEX] * len(prompt)
            if end > start:
                answer = self.tokenizer.encode(text[start:end], add_special_tokens=False)
                if not answer or answer[-1] != self.eos_id:
                    answer.append(self.eos_id)
                ids += answer
                labels += answer
            pos = max(pos, end)
        return ids, labels


def _fold_tools(messages: list[dict], tools: list) -> list[dict]:
    """For templates that ignore `tools`: state the tool schemas in the system prompt so the model still sees them."""
    note = "You can call these tools:\n" + json.dumps(tools, ensure_ascii=False)
    if messages and messages[0]["role"] == "system":
        return [{**messages[0], "content": f"{messages[0]['content']}\n\n{note}"}] + messages[1:]
    return [{"role": "system", "content": note}] + messages
