"""`tunetui chat RUN_OR_MODEL [--base] [--prompt TEXT] ...`: talk to a trained model in the terminal, headless.

With --prompt: one reply on stdout, then exit (classification models print the label and every class's
probability). Without: a chat loop with streamed replies (/exit or ctrl-d leaves, /reset forgets the conversation).
Progress goes to stderr. Runs core.chat; never imports textual.
"""
from __future__ import annotations

import argparse
import sys

from core.errors import TuneError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from core.chat import Sampling

    d = Sampling()
    parser.add_argument("target", metavar="RUN_OR_MODEL",
                        help="a run folder (its final/, else its newest checkpoint), a final/ or checkpoint-N folder, "
                             "a model folder, or a hub id in the Hugging Face cache")
    parser.add_argument("--base", action="store_true",
                        help="talk to the run's base model instead (LoRA/QLoRA: the adapter switched off)")
    parser.add_argument("--prompt", metavar="TEXT", help="print one reply to this and exit")
    parser.add_argument("--system", metavar="TEXT",
                        help="system prompt (default: the run's data.system_prompt, if it trained with one)")
    parser.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens, metavar="N",
                        help=f"longest reply in tokens (default {d.max_new_tokens})")
    parser.add_argument("--temperature", type=float, default=d.temperature, metavar="T",
                        help=f"sampling temperature; 0 is greedy (default {d.temperature})")
    parser.add_argument("--top-p", type=float, default=d.top_p, metavar="P",
                        help=f"nucleus sampling: draw from the smallest set of tokens holding P (default {d.top_p})")
    parser.add_argument("--seed", type=int, default=d.seed, metavar="S",
                        help=f"random seed for sampling, set before each reply (default {d.seed})")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="where to load the model (default: auto, the GPU when there is one)")


def run(args: argparse.Namespace) -> int:
    from core.chat import BASE, TUNED, ChatModel, Sampling
    from core.chattarget import resolve_target
    from core.terminal import guard_std_streams

    guard_std_streams()
    sampling = Sampling(temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
                        seed=args.seed).check()
    target = resolve_target(args.target)
    if args.base and not target.has_base:
        raise TuneError(f"{args.target} is a plain model, so it has no base to compare with", "--base",
                        "Pass a run folder (or an adapter folder) to talk to its base, or drop --base")
    which = BASE if args.base else TUNED
    say = (lambda text: print(text, file=sys.stderr, flush=True))
    _quiet_libraries()
    # Only the model asked for: a Full/Freeze run's base is a second copy.
    model = ChatModel.load(target, device=args.device, with_base=args.base, progress=say)
    system = args.system if args.system is not None else target.system_prompt
    if args.prompt is not None:
        if target.task == "classification":
            _print_classification(model.classify(args.prompt, which=which))
        else:
            from core.chat import conversation

            for piece in model.stream(conversation(args.prompt, system=system), which=which, sampling=sampling):
                sys.stdout.write(piece)
                sys.stdout.flush()
            sys.stdout.write("\n")
        return 0
    return _loop(model, which, sampling, system)


def _quiet_libraries() -> None:
    """Loading bars and the libraries' deprecation notes say nothing to someone chatting; our progress lines do."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)


def _print_classification(result) -> None:
    print(result.label)
    width = max(len(name) for name in result.probabilities)
    for name, p in result.probabilities.items():
        print(f"  {name:<{width}}  {p:.3f}")


def _loop(model, which: str, sampling, system: str | None) -> int:
    """A plain terminal chat: rich for the prompt and colours; replies stream as they are generated."""
    from rich.console import Console
    from rich.markup import escape

    from core.chat import conversation

    console = Console(highlight=False)
    who = "base" if which == "base" else "tuned"
    classify = model.target.task == "classification"
    console.print(f"[bold]{escape(model.target.label)}[/] ({who}). "
                  + ("Type a text to classify" if classify else "Type a message")
                  + "; /reset forgets the conversation, /exit or ctrl-d leaves.", style="dim")
    history: list[tuple[str, str]] = []
    while True:
        try:
            prompt = console.input("[bold cyan]you>[/] ")
        except EOFError:
            console.print()
            return 0
        text = prompt.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            return 0
        if text == "/reset":
            history.clear()
            console.print("(conversation forgotten)", style="dim")
            continue
        if classify:
            result = model.classify(prompt, which=which)
            console.print(f"[bold green]{escape(result.label)}[/]  " + "  ".join(
                f"{escape(name)} {p:.3f}" for name, p in result.probabilities.items()))
            continue
        console.print(f"[bold green]{who}>[/] ", end="")
        pieces: list[str] = []
        stream = model.stream(conversation(prompt, history, system), which=which, sampling=sampling)
        try:
            for piece in stream:
                pieces.append(piece)
                console.out(piece, end="", highlight=False)
        except KeyboardInterrupt:  # ctrl-c stops this reply, not the chat: closing the stream ends generation
            stream.close()
            console.print(" [dim](stopped)[/]", end="")
        console.print()
        history.append((prompt, "".join(pieces)))
