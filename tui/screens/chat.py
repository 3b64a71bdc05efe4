"""The Chat screen: one prompt, two columns (Base and Tuned) streaming their replies; classifiers show labels.

Loading, generating and unloading run in thread workers that call core.chat. Replies are collected by the worker in
plain attributes and painted by a 0.1 s timer (≤ 10 redraws/s however fast tokens come); the rest comes back as
messages posted with `post_message` (thread-safe, never blocking the worker).

Over 400 lines because loading,
streaming two columns, classification and the settings row share one conversation's state.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, TypeVar, Union

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Input, Label, Static

from core import rundir
from core.errors import TuneError
from tui.messages import GenerationDone, LoadProgress, ModelLoaded, ReplyDone, TargetDescribed
from tui.screens.base import TuneScreen

if TYPE_CHECKING:
    from core.chat import ChatModel, Classification, Sampling
    from core.chattarget import LoadEstimate, Target
    from tui.app import TuneApp

REDRAW_SECONDS = 0.1
COLUMNS = ("base", "tuned")
ORDER = ("tuned", "base")
"""Replies are generated one after the other (a LoRA run's base is the same model with its adapter off): the tuned
reply first, as it is what the user came to see."""
GIB = 2**30


# ------------------------------------------------------------------ what the workers call (tests replace these)

def describe_target(text: str, device: str) -> tuple[Target, LoadEstimate]:
    """(core.chattarget.Target, LoadEstimate) from the files alone."""
    from core.chattarget import load_estimate, resolve_target

    target = resolve_target(text)
    return target, load_estimate(target, device)


def load_target(target: Target, progress: Callable[[str], None]) -> ChatModel:
    from core.chat import ChatModel
    from core.imports import import_heavy

    import_heavy("torch", "datasets", "transformers", "peft")  # never beside a preview's or a run's first imports

    return ChatModel.load(target, progress=progress)


def default_target(app: TuneApp) -> str | None:
    """The App's current or last run, else the newest run in the output folder with something saved."""
    state = app.session.state
    if state.run_dir and (state.final_dir or state.checkpoint):
        return str(state.run_dir)
    for run in rundir.list_runs(app.output_dir):
        if run.final_dir or run.checkpoint:
            return str(run.run_dir)
    return None


def open_chat(app: TuneApp, target: str) -> None:
    """Show the Chat screen and load `target` there (a run folder, one of its checkpoints, or a model)."""
    app.chat_request = str(target)
    app.show("chat")


def decoding_words(temperature: str) -> str:
    """What the temperature field means for the replies: 0 is greedy decoding (the default), above 0 sampling."""
    try:
        value = float(temperature)
    except ValueError:
        return ""  # sending says what is wrong with it
    return "greedy" if value == 0 else "sampled"


N = TypeVar("N", int, float)
Reply = Union[str, "Classification"]
"""A chat reply's text, or a classifier's labels with their probabilities."""


@dataclass
class Column:
    """One side's conversation: finished (prompt, reply) turns, what is streaming now, what the transcript shows."""

    turns: list[tuple[str, Reply, str]] = field(default_factory=list)
    """(prompt, reply text or Classification, note) — note: "stopped", an error, or ""."""
    prompt: str | None = None
    live: str = ""
    waiting: bool = False

    def history(self) -> list[tuple[str, str]]:
        return [(p, r) for p, r, note in self.turns if isinstance(r, str) and not note]


class ChatScreen(TuneScreen):
    """Talk to a run's tuned model and its base side by side."""

    NAME = "chat"
    BINDINGS = [
        Binding("enter", "send", "Send", key_display="⏎"),
        Binding("ctrl+o", "load", "Load"),
        # Priority: the focused Input lets escape through to the Screen's own escape handler (clear a selection),
        # which would swallow it before a plain binding is looked at.
        Binding("escape", "stop", "Stop / leave prompt", priority=True),
        Binding("ctrl+l", "clear", "Clear"),
        Binding("ctrl+r", "unload", "Unload"),
    ]

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.model: ChatModel | None = None
        self.target: Target | None = None
        self.estimate: LoadEstimate | None = None
        self.loading = False
        self.load_error: str | None = None
        """Why the last load did not happen or failed (shown in the status line)."""
        self.generating = False
        self.columns = {name: Column() for name in COLUMNS}
        self._stop = threading.Event()
        self._version = 0
        self._painted = -1
        self._described = False

    def compose_body(self) -> ComposeResult:
        from core.chat import Sampling

        d = Sampling()
        with Horizontal(classes="chat-row"):
            yield Label("Run or model")
            yield Input(placeholder=f"a run folder, its {rundir.FINAL}/ or {rundir.CHECKPOINT_PREFIX}N, a model folder or "
                                    "hub id (⏎ loads)",
                        id="chat-target", compact=True)
        yield Static(id="chat-status")
        with Horizontal(classes="chat-row", id="chat-settings"):
            yield Label("Temperature")
            yield Input(str(d.temperature), id="chat-temperature", type="number", compact=True)
            yield Label(decoding_words(str(d.temperature)), id="chat-decoding")
            yield Label("Top-p")
            yield Input(str(d.top_p), id="chat-top-p", type="number", compact=True)
            yield Label("Max new tokens")
            yield Input(str(d.max_new_tokens), id="chat-max-new-tokens", type="integer", compact=True)
            yield Label("Seed")
            yield Input(str(d.seed), id="chat-seed", type="integer", compact=True)
        with Horizontal(id="chat-columns"):
            for name in COLUMNS:
                with VerticalScroll(id=f"chat-{name}", classes="chat-column"):
                    yield Static(id=f"chat-{name}-text")
        with Horizontal(id="chat-prompt-row"):
            yield Label("›")
            yield Input(placeholder="type a message, ⏎ sends to both", id="chat-prompt", compact=True)

    def on_mount(self) -> None:
        self.query_one("#chat-base").border_title = "Base"
        self.query_one("#chat-tuned").border_title = "Tuned"
        self._status(Text("Give a run folder (or a model) above and press ⏎ to load it.", style="dim"))
        self.set_interval(REDRAW_SECONDS, self._tick)

    def on_unmount(self) -> None:
        self._stop.set()  # quitting mid-reply: let the generation thread end instead of running to max_new_tokens

    def on_screen_resume(self) -> None:
        # A request from open_chat() is taken by the redraw timer: loading from inside this handler, while the
        # mode switch is still under way, left the screen unpainted.
        requested = self.app.chat_request
        if not requested and not self._described and self.model is None and not self.loading:
            self._described = True  # suggest the current/last run once; what the user types afterwards wins
            self.run_worker(self._suggest, thread=True, group="chat-describe", exclusive=True, exit_on_error=False)
        self.query_one("#chat-prompt" if self.model is not None else "#chat-target", Input).focus()

    def _take_request(self) -> bool:
        request = self.app.chat_request
        if not request:
            return False
        self.app.chat_request = None
        self.query_one("#chat-target", Input).value = request
        self.load(request)
        return True

    # ------------------------------------------------------------------ which model, what it costs

    def _device(self) -> str:
        snapshot = self.app.snapshot
        return "cuda" if snapshot is not None and snapshot.run_gpus() else "cpu"

    def _suggest(self) -> None:
        try:
            text = default_target(self.app)
        except Exception:  # noqa: BLE001 - a suggestion only; the user can type a folder
            text = None
        if text:
            self._describe(text, load=False)

    def _describe(self, text: str, load: bool) -> None:
        """Thread worker: find the model, say what loading takes; then load it when asked and allowed."""
        target = estimate = error = None
        try:
            target, estimate = describe_target(text, self._device())
            refusal = self._refusal(estimate)
            if refusal and load:
                error, load = refusal, False
        except TuneError as exc:
            error, load = str(exc), False
        except Exception as exc:  # noqa: BLE001 - shown in place, with the details in the log
            error, load = f"Cannot read {text}: {exc}", False
        self.post_message(TargetDescribed(text, target, estimate, error, load))
        if load and target is not None:
            self._load(target)

    def _refusal(self, estimate: LoadEstimate) -> str | None:
        """Why loading must wait: this app trains on the GPU and the model would not fit beside the run."""
        session, snapshot = self.app.session, self.app.snapshot
        model = session.state.model
        if not (session.running and model is not None and str(model.device).startswith("cuda")):
            return None
        free = snapshot.free_gib() if snapshot is not None else None
        if free is None or estimate.bytes <= free * GIB:
            return None
        return (f"Loading this model takes {estimate.text} of GPU memory, but only {free:.1f} GiB are free while "
                "this app's run trains on the GPU. Let the run finish, or stop it on the Run screen (5), then load "
                "it again (ctrl+o).")

    def on_target_described(self, message: TargetDescribed) -> None:
        self.target, self.estimate = message.target, message.estimate
        if message.error:
            self.loading = False
            self.load_error = message.error
            self._status(Text(message.error, style="red"))
            return
        assert message.target is not None and message.estimate is not None  # described without an error
        target_input = self.query_one("#chat-target", Input)
        if not target_input.value:
            target_input.value = message.text
        device = self._device()
        where = "GPU" if device == "cuda" else "CPU memory"
        text = Text.assemble((message.target.label, "bold"), f"  {message.target.description}\n",
                             (f"Loading takes {message.estimate.text} of {where}.", "dim"))
        if not message.load:
            text.append("  ctrl+o loads it.", style="bold")
        self._status(text)

    # ------------------------------------------------------------------ loading and unloading

    def action_load(self) -> None:
        self.load(self.query_one("#chat-target", Input).value)

    def load(self, text: str) -> None:
        text = text.strip()
        if not text:
            self._status(Text("Type a run folder or a model first.", style="yellow"))
            return
        if self.loading:
            self.notify("A model is loading already.", severity="warning")
            return
        self._drop_model()
        self.loading, self.load_error = True, None
        self._status(Text(f"Loading {text}…", style="bold"))
        self.refresh_bindings()
        self.run_worker(lambda: self._describe(text, load=True), thread=True, group="chat-load", exit_on_error=False)

    def _load(self, target: Target) -> None:
        model, error = None, None
        try:
            model = load_target(target, lambda text: self.post_message(LoadProgress(text)))
        except TuneError as exc:
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 - shown in place; the traceback goes to the log
            import logging

            logging.getLogger(__name__).exception("loading %s failed", target.source)
            error = f"Loading {target.source} failed: {type(exc).__name__}: {exc}"
        self.post_message(ModelLoaded(model, error))

    def on_load_progress(self, message: LoadProgress) -> None:
        if self.loading:
            self._status(Text.assemble(("Loading: ", "bold"), message.text))

    def on_model_loaded(self, message: ModelLoaded) -> None:
        self.loading = False
        self.model = message.model
        self.refresh_bindings()
        if message.error:
            self.load_error = message.error
            self._status(Text(message.error, style="red"))
            return
        assert self.model is not None  # loaded without an error
        target = self.model.target
        status = Text.assemble((target.label, "bold"), f"  {target.description}")
        status.append(f"\nLoaded on {self.model.device}" + (f", {self.estimate.text}." if self.estimate else "."),
                      style="dim")
        if not self.model.has_base:
            status.append("\nA plain model: there is no base to compare with, so only Tuned answers.", style="dim")
        self._status(status)
        classify = target.task == "classification"
        self.query_one("#chat-prompt", Input).placeholder = (
            "type a text, ⏎ classifies it with both heads" if classify else "type a message, ⏎ sends to both")
        self.query_one("#chat-settings").display = not classify
        self.query_one("#chat-prompt", Input).focus()

    def action_unload(self) -> None:
        if self.model is None:
            self.notify("No model is loaded.", severity="warning")
            return
        self._drop_model()
        self._status(Text("Unloaded. ctrl+o loads a model again.", style="dim"))

    def _drop_model(self) -> None:
        model, self.model = self.model, None
        if model is None:
            return
        self._stop.set()
        # Waits for a reply in progress to end (the model's lock) off the UI thread, then frees the memory.
        self.run_worker(model.unload, thread=True, group="chat-unload", exit_on_error=False)
        self.refresh_bindings()

    # ------------------------------------------------------------------ sending

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "chat-temperature":
            self.query_one("#chat-decoding", Label).update(decoding_words(event.value))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "chat-target":
            self.load(event.value)
        elif event.input.id == "chat-prompt":
            self.action_send()
        event.stop()

    def action_send(self) -> None:
        prompt_input = self.query_one("#chat-prompt", Input)
        prompt = prompt_input.value.strip()
        if self.model is None:
            self._status(Text("Load a model first: a run folder above, then ⏎.", style="yellow"))
            return
        if self.generating or not prompt:
            return
        try:
            sampling = self.sampling()
        except (TuneError, ValueError) as exc:
            self._status(Text(str(exc), style="red"))
            return
        prompt_input.value = ""
        model = self.model
        sides = [side for side in ORDER if side == "tuned" or model.has_base]
        histories = {side: self.columns[side].history() for side in sides}
        for side in sides:
            column = self.columns[side]
            column.prompt, column.live, column.waiting = prompt, "", True
        self._stop = threading.Event()
        self.generating = True
        self._version += 1
        self.refresh_bindings()
        self.run_worker(lambda: self._generate(model, prompt, sampling, sides, histories, self._stop), thread=True,
                        group="chat-generate", exit_on_error=False)

    def sampling(self) -> Sampling:
        from core.chat import Sampling

        def number(id_: str, kind: Callable[[str], N]) -> N:
            text = self.query_one(f"#chat-{id_}", Input).value.strip()
            try:
                return kind(text)
            except ValueError:
                raise TuneError(f"{id_.replace('-', ' ')} is {text!r}, not a number", None,
                                "Fix it above the columns") from None

        return Sampling(temperature=number("temperature", float), top_p=number("top-p", float),
                        max_new_tokens=number("max-new-tokens", int), seed=number("seed", int)).check()

    def _generate(self, model: ChatModel, prompt: str, sampling: Sampling, sides: list[str],
                  histories: dict[str, list[tuple[str, str]]], stop: threading.Event) -> None:
        """Thread worker: each side in turn, streaming into its column (same seed for both)."""
        from core.chat import conversation

        for side in sides:
            column = self.columns[side]
            text, error, result = "", None, None
            if not stop.is_set():
                column.waiting = False
                try:
                    if model.target.task == "classification":
                        result = model.classify(prompt, which=side)
                    else:
                        messages = conversation(prompt, histories[side], model.target.system_prompt)
                        for piece in model.stream(messages, which=side, sampling=sampling, stop=stop):
                            if stop.is_set():
                                break  # leaving the stream ends its generation; what came after the key is dropped
                            text += piece
                            column.live = text
                            self._version += 1
                except TuneError as exc:
                    error = str(exc)
                except Exception as exc:  # noqa: BLE001 - shown in the column; the traceback goes to the log
                    import logging

                    logging.getLogger(__name__).exception("generating the %s reply failed", side)
                    error = f"{type(exc).__name__}: {exc}"
            self.post_message(ReplyDone(side, text, stop.is_set(), error, result))
        self.post_message(GenerationDone())

    def on_reply_done(self, message: ReplyDone) -> None:
        column = self.columns[message.column]
        note = message.error or ("stopped" if message.stopped else "")
        reply = message.result if message.result is not None else message.text
        if column.prompt is not None:
            column.turns.append((column.prompt, reply, note))
        column.prompt, column.live, column.waiting = None, "", False
        self._version += 1

    def on_generation_done(self, message: GenerationDone) -> None:
        self.generating = False
        self.refresh_bindings()
        self._paint()

    def action_stop(self) -> None:
        """Escape: stop a reply in progress; with none, leave the prompt so digits switch screens again (Tab or a
        click goes back to it)."""
        if self.generating:
            self._stop.set()
        else:
            self.set_focus(None)

    def action_clear(self) -> None:
        """Forget both conversations (a reply in progress is stopped first)."""
        self._stop.set()
        self.columns = {name: Column() for name in COLUMNS}
        self._version += 1
        self._paint()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "stop":  # stops a reply, or leaves the prompt (digits switch screens again)
            return True if self.generating or self.focused is not None else None
        if action in ("send", "unload"):
            return True if self.model is not None else None
        if action == "load":
            return None if self.loading else True
        return True

    # ------------------------------------------------------------------ drawing

    def _status(self, text: Text) -> None:
        self.query_one("#chat-status", Static).update(text)

    def _tick(self) -> None:
        if not self._take_request() and self._version != self._painted:
            self._paint()

    def _paint(self) -> None:
        self._painted = self._version
        for name in COLUMNS:
            column = self.columns[name]
            view = self.query_one(f"#chat-{name}", VerticalScroll)
            self.query_one(f"#chat-{name}-text", Static).update(self._transcript(name, column))
            view.scroll_end(animate=False)

    def _transcript(self, name: str, column: Column) -> Text:
        text = Text()
        if name == "base" and self.model is not None and not self.model.has_base:
            return Text("(no base model: this is a plain model, not a run)", style="dim")
        for prompt, reply, note in column.turns:
            _turn(text, prompt, reply, note)
        if column.prompt is not None:
            text.append("› ", style="bold cyan").append(column.prompt + "\n", style="bold")
            if column.waiting:
                text.append("…waiting for the other side\n", style="dim")
            else:
                text.append(column.live).append("▍", style="reverse")
        return text


def _turn(text: Text, prompt: str, reply: Reply, note: str) -> None:
    text.append("› ", style="bold cyan").append(prompt + "\n", style="bold")
    if isinstance(reply, str):
        text.append(reply)
        if note:
            text.append(f" ({note})", style="yellow" if note == "stopped" else "red")
        text.append("\n\n")
        return
    # A classification: the label, then each class with a bar of its probability.
    text.append(f"→ {reply.label}\n", style="bold green")
    width = max(len(label) for label in reply.probabilities)
    for label, p in reply.probabilities.items():
        bar = "█" * round(p * 20)
        text.append(f"  {label:<{width}} ").append(bar.ljust(20, "·"), style="green" if label == reply.label
                                                   else "dim").append(f" {p:.2f}\n")
    text.append("\n")


__all__ = ["ChatScreen", "open_chat", "describe_target", "load_target", "default_target", "decoding_words"]
