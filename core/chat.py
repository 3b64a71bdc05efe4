"""Try what a run trained: load it (with its base for comparison), stream replies, classify.

What to load is found from the files alone by core.chattarget (resolve_target). `ChatModel.load` and everything
after it import torch, transformers and peft inside the functions. Never imports the UI.

What is compared with what:
- LoRA / QLoRA runs: the adapter on its recorded base (quantized as it was trained); "base" is the same model inside
  peft's `disable_adapter()`, so one copy is in memory.
- Full / Freeze runs: "tuned" is the saved model, "base" the config's base model, loaded beside it.
- A plain model folder or hub id: only "tuned" (the model itself); there is no base to compare with.
"""
from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

from core import methods
from core.chattarget import Target, resolve_target
from core.config import MethodSpec, ModelSpec
from core.errors import TuneError

AS_IS = MethodSpec(kind=methods.FULL.name)
"""How a whole model (a plain one, or a Full/Freeze run's final/) loads: every weight as stored, unquantized."""

TUNED, BASE = "tuned", "base"


@dataclass(frozen=True)
class Sampling:
    """How replies are drawn. temperature 0 is greedy decoding (top_p is then unused).

    Greedy by default: side by side, base and tuned then differ by their weights alone, not by the dice, and the same
    question always gets the same answer (small models also ramble at 0.7)."""

    temperature: float = 0.0
    top_p: float = 0.9
    max_new_tokens: int = 256
    seed: int = 0
    """Seeded before each reply, so base and tuned draw from the same random stream and a reply can be repeated."""

    def check(self) -> "Sampling":
        if not self.temperature >= 0:
            raise TuneError(f"The temperature is {self.temperature}", "--temperature",
                            "Use 0 for greedy decoding or a positive value such as 0.7")
        if not 0 < self.top_p <= 1:
            raise TuneError(f"top-p is {self.top_p}", "--top-p", "Use a value in (0, 1], e.g. 0.9")
        if self.max_new_tokens < 1:
            raise TuneError(f"max new tokens is {self.max_new_tokens}", "--max-new-tokens", "Use 1 or more")
        return self

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


# ================================================================== conversations

def conversation(prompt: str, history: list[tuple[str, str]] = (), system: str | None = None) -> list[dict]:
    """Chat messages for the model: the system prompt, earlier (user, assistant) turns, then the new prompt."""
    messages = [{"role": "system", "content": system}] if system else []
    for user, assistant in history:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return messages + [{"role": "user", "content": prompt}]


@dataclass(frozen=True)
class Classification:
    label: str
    probabilities: dict[str, float] = field(default_factory=dict)
    """Every class with its probability, in the head's order."""


# ================================================================== the loaded model

class ChatModel:
    """A loaded target: tokenizer, the tuned model and (when there is one) its base; one reply at a time."""

    def __init__(self, target: Target, tokenizer, tuned, base, device: str, *, shared_base: bool) -> None:
        self.target = target
        self.tokenizer = tokenizer
        self.device = device
        self._tuned = tuned
        self._base = base
        self._shared_base = shared_base
        """The base is the tuned PeftModel with its adapter disabled."""
        # disable_adapter() switches the one shared model: two replies at once would see each other's switch.
        self._lock = threading.Lock()
        self._encoder = None

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(cls, target: Target | str, *, device: str = "auto", with_base: bool = True,
             progress: Callable[[str], None] | None = None) -> "ChatModel":
        """Load `target` as it was trained (QLoRA bases quantized). `with_base=False` skips a Full/Freeze run's
        base copy; adapters always bring their base, since they sit on it."""
        from core.hub import has_tokenizer
        from core.training.models import load_model, load_tokenizer, resolve_device, resolve_model_dir

        say = progress or (lambda text: None)
        if isinstance(target, str):
            target = resolve_target(target)
        device = resolve_device(device)
        num_labels = len(target.labels) if target.labels else None
        seed = target.config.train.seed if target.config is not None else 0

        def load(spec: ModelSpec, method: MethodSpec, model_dir: Path, pad_token_id: int | None):
            # The run seeded its new classification head from train.seed before loading: so does this, so that
            # "base" is the head the run started from.
            with _seeded(seed):
                model = load_model(spec, method, target.task, num_labels, device, label_names=target.labels,
                                   pad_token_id=pad_token_id, model_dir=model_dir)
            model.eval()
            return model

        if target.weights is None or not target.adapter and target.run_dir is None:  # a plain model
            say(f"loading {target.model.name_or_path}")
            model_dir = target.weights or resolve_model_dir(target.model)
            tokenizer = load_tokenizer(target.model, model_dir)
            model = load(target.model, AS_IS, model_dir, tokenizer.pad_token_id)
            return cls(target, tokenizer, model, None, device, shared_base=False)

        say(f"resolving the base model {target.model.name_or_path}")
        base_dir = resolve_model_dir(target.model)
        tokenizer = load_tokenizer(target.model, target.weights if has_tokenizer(target.weights) else base_dir)
        if target.adapter:
            from peft import PeftModel

            quantized = methods.get(target.method.kind).quantized
            say(f"loading the base model {target.model.name_or_path}"
                + (f" ({target.method.quant.bits}-bit, as trained)" if quantized else ""))
            base = load(target.model, target.method, base_dir, tokenizer.pad_token_id)
            say(f"loading the adapter from {target.weights}")
            model = PeftModel.from_pretrained(base, str(target.weights))
            model.eval()
            return cls(target, tokenizer, model, model, device, shared_base=True)

        say(f"loading the tuned model from {target.weights}")
        tuned_spec = replace(target.model, name_or_path=str(target.weights))
        tuned = load(tuned_spec, AS_IS, target.weights, tokenizer.pad_token_id)
        base = None
        if with_base:
            say(f"loading the base model {target.model.name_or_path}")
            base = load(target.model, AS_IS, base_dir, tokenizer.pad_token_id)
        return cls(target, tokenizer, tuned, base, device, shared_base=False)

    @property
    def has_base(self) -> bool:
        return self._base is not None

    def unload(self) -> None:
        """Drop the models (and the GPU memory they hold)."""
        with self._lock:
            self._tuned = self._base = None
        import gc

        gc.collect()
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    def _model(self, which: str):
        """(model, context to run it in) for `which` = tuned | base."""
        if which == TUNED:
            model, context = self._tuned, contextlib.nullcontext
        elif which == BASE:
            if self._base is None:
                raise TuneError(f"{self.target.label} has no base model to compare with", "--base",
                                "Base replies need a run (LoRA, QLoRA, Full or Freeze) or an adapter folder")
            model = self._base
            context = self._base.disable_adapter if self._shared_base else contextlib.nullcontext
        else:
            raise ValueError(f"which must be {TUNED!r} or {BASE!r}, not {which!r}")
        if model is None:
            raise TuneError("The model was unloaded", None, "Load it again")
        return model, context

    # ------------------------------------------------------------------ generation

    def prompt_text(self, messages: list[dict]) -> str:
        """The text the model continues: the conversation in the run's chat template (the tokenizer's own, or
        the built-in one it trained with), ending with the assistant header. Text runs continue the prompt."""
        if self.target.task == "pretrain":
            return messages[-1]["content"]
        if self._encoder is None:
            from core.training.templates import ChatEncoder

            self._encoder = ChatEncoder(self.tokenizer)  # the exact template choice training made
        return self._encoder.render(messages, None, generation_prompt=True)

    def stream(self, messages: list[dict], *, which: str = TUNED, sampling: Sampling = Sampling(),
               stop: threading.Event | None = None) -> Iterator[str]:
        """Yield the reply's text piece by piece as it is generated (on a worker thread).

        Setting `stop` ends generation after the current token; so does closing this iterator early."""
        import torch
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        if self.target.task == "classification":
            raise TuneError(f"{self.target.label} is a classification model: it labels text, it does not reply",
                            None, "Use classify (in the CLI: --prompt prints the label and probabilities)")
        sampling.check()
        model, context = self._model(which)
        text = self.prompt_text(messages)
        # Chat templates write their own BOS; text runs trained on the tokenizer's defaults.
        inputs = self.tokenizer(text, return_tensors="pt", add_special_tokens=self.target.task == "pretrain")
        inputs = {k: v.to(model.device) for k, v in inputs.items()}
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        closed = threading.Event()
        kwargs = dict(inputs, max_new_tokens=sampling.max_new_tokens, streamer=streamer,
                      stopping_criteria=StoppingCriteriaList([_EventStop(closed, stop)]),
                      pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id,
                      do_sample=not sampling.greedy)
        if not sampling.greedy:
            kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p)
        else:  # the model's generation_config may ask for sampling settings greedy decoding would warn about
            kwargs.update(temperature=None, top_p=None, top_k=None)
        errors: list[BaseException] = []

        def generate() -> None:
            try:
                with self._lock, _seeded(sampling.seed), context():
                    model.generate(**kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the reader below
                errors.append(exc)
                streamer.end()  # the reader waits on the streamer's queue: let it finish

        thread = threading.Thread(target=generate, name="chat-generate", daemon=True)
        thread.start()
        try:
            for piece in streamer:
                if piece:
                    yield piece
        finally:
            closed.set()
            thread.join()
        if errors:
            raise errors[0]

    def reply(self, messages: list[dict], *, which: str = TUNED, sampling: Sampling = Sampling(),
              stop: threading.Event | None = None) -> str:
        return "".join(self.stream(messages, which=which, sampling=sampling, stop=stop))

    # ------------------------------------------------------------------ classification

    def classify(self, text: str, *, which: str = TUNED) -> Classification:
        """The predicted label and every class's probability (base: the head the run started from)."""
        import torch

        if self.target.task != "classification":
            raise TuneError(f"{self.target.label} is not a classification model", None, "Chat with it instead")
        model, context = self._model(which)
        max_length = self.target.config.data.max_length if self.target.config is not None else None
        inputs = self.tokenizer(text, return_tensors="pt", truncation=max_length is not None, max_length=max_length)
        inputs = {k: v.to(model.device) for k, v in inputs.items()}
        with self._lock, context(), torch.no_grad():
            logits = model(**inputs).logits[0].float()
        probs = torch.softmax(logits, dim=-1).tolist()
        labels = self.target.labels or [str(i) for i in range(len(probs))]
        best = max(range(len(probs)), key=probs.__getitem__)
        return Classification(label=labels[best], probabilities=dict(zip(labels, probs)))


class _EventStop:
    """A StoppingCriteria driven by threading.Events: generation ends after the token in hand once any is set."""

    def __init__(self, *events: threading.Event | None) -> None:
        self.events = [e for e in events if e is not None]

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        stop = any(e.is_set() for e in self.events)
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


@contextlib.contextmanager
def _seeded(seed: int):
    """Seed torch for what runs inside, then put the caller's random state back (a run training in the same
    process keeps its own stream, apart from draws made meanwhile)."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield

__all__ = ["Sampling", "conversation", "Classification", "ChatModel", "TUNED", "BASE"]
