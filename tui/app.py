"""The tunetui App: navigation between screens, the draft RunConfig, the GPU poll and the training session.

How screens hear from the App (the messages are in tui.messages):

- `SnapshotTaken(snapshot)`: a thread worker samples `app.sampler` every POLL_SECONDS (the first right after the
  first frame) and posts it to the App, which stores it in `app.snapshot` and forwards a fresh `SnapshotTaken` to
  the active screen (`app.screen`) only. A screen that becomes active later reads `app.snapshot` in its
  `on_screen_resume`.
- `ConfigChanged(config)`: `app.set_config()` stores the new draft and posts one to every screen that exists, so a
  hidden screen is current when it is shown again.
- `FactsChanged()`: `app.draft` (tui.draft) derives what the screens show about the draft (the model's shape, the
  data's rows and split, the estimates and the recommendation); it posts one to the active screen when a slow
  input arrives from its workers.
- Engine events arrive as `EngineEvent` (posted to the App by the training thread) and are folded by
  `app.session.handle`; screens redraw from `app.session.state` on their own timer.

Screens are Textual modes (one stack each, created on first visit, kept afterwards), so each keeps its state when
the user moves between them and may push its own dialogs.

Over 400 lines because it is the one place screens, the draft, the GPU poll and the session meet.
"""
from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Callable, Iterable

from textual.app import App, ScreenStackError, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.timer import Timer

from core import methods
from core.config import DataSpec, LoraSpec, MethodSpec, OutputSpec, RunConfig, TrainSpec, load
from core.errors import TuneError
from tui.draft import Draft
from tui.messages import ConfigChanged, DataRead, EngineEvent, HungUp, ShapeRead, SnapshotTaken

if TYPE_CHECKING:
    from core.resources.gpus import Sampler, Snapshot

log = logging.getLogger(__name__)

POLL_SECONDS = 1.5
"""How often the GPU / host sampler runs (NVML calls take milliseconds; the poll never blocks input)."""

DEMO_DATA = "demo:identity"
HANG_UP_GRACE_SECONDS = 2.0
"""After a hang-up and the end of the run, how long the UI gets to close itself before the process just ends."""
FOLLOW_SECONDS = 0.1
"""How often an attached run's events.jsonl is checked for new lines (one fstat when nothing changed)."""

# name -> (module under tui.screens, class, title); the order is the order of the number keys.
SCREENS: dict[str, tuple[str, str, str]] = {
    "model": ("model", "ModelScreen", "Model"),
    "method": ("method", "MethodScreen", "Method"),
    "data": ("data", "DataScreen", "Data"),
    "review": ("review", "ReviewScreen", "Review"),
    "run": ("run", "RunScreen", "Run"),
    "monitor": ("monitor", "MonitorScreen", "Monitor"),
    "runs": ("runs", "RunsScreen", "Runs"),
    "chat": ("chat", "ChatScreen", "Chat"),
}
SETUP_ORDER = ("model", "method", "data", "review")
"""Where Enter leads on the set-up screens."""


def default_config(output_dir: str | None = None) -> RunConfig:
    """The draft the app opens with: presets/demo.yaml (the built-in demo model learns its name, Tuney, from the
    identity demo data with LoRA; seconds on a CPU). Written out here because an installed app has no presets
    folder; a test keeps the two equal."""
    config = RunConfig(
        method=MethodSpec(kind=methods.LORA.name, lora=LoraSpec(r=16, alpha=32, dropout=0.0)),
        data=DataSpec(path=DEMO_DATA, max_length=128, val_size=3),
        train=TrainSpec(max_steps=150, batch_size=8, lr=1e-2, seed=1, warmup_ratio=0.05, eval_steps=30,
                        save_steps=50),
    )
    if output_dir:
        config = replace(config, output=OutputSpec(dir=output_dir))
    return config


def _screen_factory(name: str) -> Callable[[], Screen]:
    module_name, class_name, _title = SCREENS[name]

    def make() -> Screen:
        # Imported on first visit so the first frame only pays for the screen it shows.
        module = importlib.import_module(f"tui.screens.{module_name}")
        return getattr(module, class_name)()

    return make


def _screen_bindings() -> list[Binding]:
    # Not in the footer: the top bar of every screen shows each digit beside its screen's name (and the palette
    # lists them). Seven more footer keys made every screen switch ~2x slower: the footer is rebuilt each time.
    return [Binding(str(i), f"app.show('{name}')", title, show=False)
            for i, (name, (_m, _c, title)) in enumerate(SCREENS.items(), start=1)]


class TuneApp(App):
    """The terminal app. One instance per process; the CLI and the tests build it with `create_app`."""

    TITLE = "tunetui"
    CSS_PATH = "tunetui.tcss"
    MODES = {name: _screen_factory(name) for name in SCREENS}
    BINDINGS = [*_screen_bindings(), Binding("ctrl+q", "quit", "Quit", priority=True)]

    def __init__(self, config: RunConfig | None = None, *, sampler: Sampler | None = None,
                 output_dir: str | None = None, models_dir: str | None = None, start_screen: str | None = None,
                 config_path: str | None = None, warm_imports: bool = False) -> None:
        """`config_path`: a YAML file to open on the Review screen; if it cannot be loaded, its TuneError message
        is kept in `config_error` and shown there. `warm_imports`: import the training stack in the background
        after the first frame (the CLI does; tests that never train skip the cost)."""
        config_error: str | None = None
        if config is None and config_path:
            try:
                config = load(config_path)
            except TuneError as exc:
                config_error = str(exc)
            start_screen = start_screen or "review"
        if start_screen is not None and start_screen not in SCREENS:
            raise ValueError(f"unknown screen {start_screen!r}; use one of {', '.join(SCREENS)}")
        self.start_screen = start_screen or "model"
        # The first screen is the App's starting mode, so the first frame is that screen (not a blank default one).
        self.DEFAULT_MODE = self.start_screen
        super().__init__()
        self.config_error: str | None = config_error
        self.config_path: str | None = config_path
        self.config: RunConfig = config or default_config()
        if output_dir:
            self.config = replace(self.config, output=replace(self.config.output, dir=output_dir))
        self.output_dir: str = output_dir or self.config.output.dir
        self.models_dir: str | None = models_dir
        self.sampler: Sampler | None = sampler
        """Where GPU/host samples come from; None until the first poll builds a SystemSampler (in the worker, so
        psutil/NVML never delay the first frame)."""
        self.snapshot: Snapshot | None = None
        self.draft = Draft(self)
        """What the screens show about the draft config, derived once (tui.draft)."""
        from tui.session import TrainingSession

        self.session: TrainingSession = TrainingSession(self)
        self.warm_imports = warm_imports
        self._exit_when_stopped = False
        self.hung_up = False
        """The terminal went away (SIGHUP): a running run trains on, headless, until it ends."""
        self.hang_up_log: str | None = None
        """After a hang-up during a run trained here: the run's output.log (its output goes there once the UI is
        gone)."""
        self._follow_timer: Timer | None = None
        self.plan_vram_gib: float | None = None
        """Method's "Plan for" GiB per GPU: the fit words and the recommendation plan for that card, not this one."""
        self.detach_run: str | None = None
        """A run folder to go on training in a background process once the app has closed (detach)."""
        self.attach_dir: str | None = None
        """A run folder to follow on the Run view once the first frame is up (`tunetui attach`)."""
        self.chat_request: str | None = None
        """A run folder or model for the Chat screen to load when it is next drawn (`open_chat`)."""
        self.launch_gpus: str = "all"
        """Review's GPU choice: `all` (every GPU a run would see) or a list such as `0,2`. App state, not a config
        key: which GPUs are free is this machine's business today, not the run's (the headless line says it as
        --nproc/--gpus)."""

    # ------------------------------------------------------------------ start-up

    def on_mount(self) -> None:
        self.call_after_refresh(self._after_first_frame)
        if not self.is_headless and hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, self._on_sighup)

    def on_unmount(self) -> None:
        self.session.close()  # an attached viewer stops counting as one; a run trained here is main()'s to handle

    def _after_first_frame(self) -> None:
        if self.attach_dir:
            self.attach(self.attach_dir)
        self.poll_sampler()
        self.set_interval(POLL_SECONDS, self.poll_sampler, name="sampler")
        if self.warm_imports:
            self.run_worker(_warm_training_imports, thread=True, group="warm-imports", exit_on_error=False)

    def poll_sampler(self) -> None:
        # Exclusive: a slow NVML call is never overtaken by a queue of newer polls.
        self.run_worker(self._sample, thread=True, group="sampler", exclusive=True, exit_on_error=False)

    def _sample(self) -> None:
        try:
            if self.sampler is None:
                from core.resources.gpus import SystemSampler

                self.sampler = SystemSampler()
            snapshot = self.sampler.sample()
        except Exception:  # noqa: BLE001 - a broken sampler must not take the app down; the log says why
            log.exception("GPU/host sampling failed")
            return
        self.post_message(SnapshotTaken(snapshot))

    def on_snapshot_taken(self, message: SnapshotTaken) -> None:
        self.snapshot = message.snapshot
        try:
            screen = self.screen
        except ScreenStackError:  # shutting down: the screens are gone
            return
        screen.post_message(SnapshotTaken(message.snapshot))

    def on_shape_read(self, message: ShapeRead) -> None:
        self.draft.shape_read(message.reading)

    def on_data_read(self, message: DataRead) -> None:
        self.draft.data_read(message.reading)

    # ------------------------------------------------------------------ the draft config and navigation

    def set_config(self, new_config: RunConfig) -> None:
        """Store a new draft and tell every existing screen."""
        self.config = new_config
        for screen in self._existing_screens():
            screen.post_message(ConfigChanged(new_config))

    def _existing_screens(self) -> Iterable[Screen]:
        for stack in self._screen_stacks.values():
            yield from stack

    def show(self, name: str) -> None:
        """Bring a screen to the front by name (model, method, data, review, run, monitor, runs)."""
        if name not in SCREENS:
            raise ValueError(f"unknown screen {name!r}; use one of {', '.join(SCREENS)}")
        self.switch_mode(name)

    def action_show(self, name: str) -> None:
        self.show(name)

    def show_next(self, after: str) -> None:
        """Enter on a set-up screen: go to the next one."""
        index = SETUP_ORDER.index(after)
        self.show(SETUP_ORDER[min(index + 1, len(SETUP_ORDER) - 1)])

    def gpu_plan(self):
        """The GPUs a launch uses now (core.launch.GpuPlan) from `launch_gpus` and the latest GPU snapshot; raises
        TuneError when the choice names GPUs this machine does not show."""
        from core.spawn import plan_gpus, visible_gpu_numbers

        available = None if self.snapshot is None else visible_gpu_numbers(self.snapshot)
        return plan_gpus(self.launch_gpus, available)

    def gpu_problem(self) -> str | None:
        """Why `launch_gpus` cannot be used now (Review shows it at the field); None when it can."""
        try:
            self.gpu_plan()
        except TuneError as exc:
            return str(exc)
        return None

    def launch(self, config: RunConfig | None = None, resume_from: str | None = None) -> bool:
        """Start a run of `config` (default: the draft) and show the run screen; False when one is already going.

        On one GPU (or none) the run trains in this process; on several, or on GPUs other than all of them, it
        trains in `tunetui train` processes of their own, followed here from their run folder (LaunchedSession)."""
        config = config or self.config
        if self.session.running:
            self.notify("A run is already going. Stop it on the Run screen (5) before launching another.",
                        title="Cannot launch", severity="warning")
            self.show("run")
            return False
        try:
            plan = self.gpu_plan()
        except TuneError as exc:
            self.notify(str(exc), title="Cannot launch", severity="error", markup=False)
            return False
        try:
            from core.catalog import remember_model

            remember_model(config.model.name_or_path)
        except Exception:  # noqa: BLE001 - the recent-models list is a convenience; never block a launch on it
            log.exception("could not remember the model")
        if plan.separate_process:
            from tui.session import LaunchedSession

            try:
                session = LaunchedSession.begin(self, config, plan, resume_from=resume_from)
            except (OSError, TuneError) as exc:
                self.notify(f"Could not start tunetui train: {exc}", title="Cannot launch", severity="error",
                            markup=False)
                return False
            self._stop_following()
            self.session = session
            self._follow_timer = self.set_interval(FOLLOW_SECONDS, self.session.poll, name="follow-run")
            self.show("run")
            return True
        if not self.session.owns_process:  # the followed run has ended: this app trains its own again
            from tui.session import TrainingSession

            self._stop_following()
            self.session = TrainingSession(self)
        self.session.start(config, resume_from=resume_from)
        self.show("run")
        return True

    def _launch_via_review(self) -> None:
        """The palette's Launch goes through Review's checks (a config file that failed to load, a setting shown
        as wrong, no data), as the Launch button does."""
        self.show("review")
        self.call_after_refresh(lambda: self.screen.action_launch())

    def attach(self, run_dir: str) -> bool:
        """Follow a run trained by another process on the Run view; False while this app trains its own."""
        from tui.session import AttachedSession

        if self.session.running and self.session.owns_process:
            self.notify("This app is training a run; attach to another once it ends.", title="Cannot attach",
                        severity="warning")
            return False
        self._stop_following()
        self.session = AttachedSession(self, run_dir)
        self._follow_timer = self.set_interval(FOLLOW_SECONDS, self.session.poll, name="follow-run")
        self.show("run")
        return True

    def _stop_following(self) -> None:
        if self._follow_timer is not None:
            self._follow_timer.stop()
            self._follow_timer = None
        self.session.close()

    def open_chat(self, target: str) -> None:
        """Show the Chat screen loading `target` (a run folder, one of its checkpoints, or a model)."""
        importlib.import_module("tui.screens.chat").open_chat(self, target)

    def on_engine_event(self, message: EngineEvent) -> None:
        self.session.handle(message.event)

    # ------------------------------------------------------------------ command palette

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        for i, (name, (_m, _c, title)) in enumerate(SCREENS.items(), start=1):
            yield SystemCommand(f"Go to {title}", f"Show the {title} screen (key {i})",
                                lambda name=name: self.show(name))
        yield SystemCommand("Launch", "Start training the current config and show the Run screen",
                            self._launch_via_review)
        # The active screen's own actions, the ones its footer shows (launch, save, pause, stop, ...); not the
        # widgets' cursor keys.
        seen = {"Launch"}
        for key, active in screen.active_bindings.items():
            binding = active.binding
            if not binding.show or not binding.description or active.node is self or binding.description in seen:
                continue
            seen.add(binding.description)
            yield SystemCommand(binding.description, f"Key: {self.get_key_display(binding)}",
                                lambda node=active.node, action=binding.action: self.run_action(action, node))
        yield from super().get_system_commands(screen)

    # ------------------------------------------------------------------ leaving

    async def action_quit(self) -> None:
        if self._exit_when_stopped:
            self.exit()  # second ctrl+q while stopping: leave now; the thread still finishes its checkpoint
            return
        if not self.session.running or not self.session.owns_process:
            self.exit()  # closing a viewer of another process's run changes nothing for that run
            return
        from tui.widgets.confirm import ConfirmScreen

        def answered(choice: str | None) -> None:
            if choice == "stop":
                self.stop_run_and_exit()
            elif choice == "detach":
                self.detach()

        self.push_screen(ConfirmScreen(
            "A run is going. Stop it (saving a checkpoint) and quit, or detach: close the app and let the run go "
            "on in the background (tunetui attach brings it back)?",
            choices=[("y", "Stop and quit", "stop", "error"), ("d", "Detach", "detach", "warning"),
                     ("n", "Keep training", None, "primary")]), answered)

    def stop_run_and_exit(self, detach: bool = False) -> None:
        """Stop the run with a checkpoint and exit once the training thread has ended (`detach`: then `main` goes
        on with the run in a background process)."""
        self.session.stop(save=True)
        self._exit_when_stopped = True
        if detach:
            self.notify("Saving a checkpoint; then the run goes on in a background process and the app closes.",
                        title="Detaching", timeout=60)
        else:
            self.notify("Stopping the run and saving a checkpoint; the app closes when it is written. "
                        "Ctrl+Q again leaves at once.", title="Stopping", timeout=60)
        self.set_interval(0.2, self._exit_if_stopped, name="exit-when-stopped")

    def detach(self) -> None:
        """Close the app, keep the run: a viewer just leaves. A run training in this process is checkpointed and
        continued by a background `tunetui train --resume` started once the app has closed (see `main`), because
        the shell only gets its prompt back when this process ends. The cost is one checkpoint and one reload."""
        if not (self.session.running and self.session.owns_process):
            self.exit()
            return
        self.detach_run = self.session.state.run_dir
        self.stop_run_and_exit(detach=True)

    def _exit_if_stopped(self) -> None:
        if not self.session.running:
            self.exit()

    def hang_up(self) -> None:
        """The terminal went away: leave the UI; a run (if any) goes on training in this process, headless."""
        if self.session.running:
            log.warning("terminal hung up; the run goes on training in process %s", os.getpid())
        self.exit()

    def on_hung_up(self, message: HungUp) -> None:
        self.hang_up()

    def _on_sighup(self, signum: int, frame: FrameType | None) -> None:
        """SIGHUP (the SSH connection dropped). A plain signal handler, not the event loop's: once the terminal is
        gone, a write can block the UI thread for good, and the run must go on regardless."""
        from core import rundir
        from core.terminal import detach_from_terminal

        self.hung_up = True
        session = self.session
        # Every later write goes to /dev/null instead of raising EIO on the dead terminal or blocking on it: the UI's
        # last frame and its goodbye mean nothing in a log. Once the UI is gone, main() points the output of a run
        # trained here at the run's log, which opens with what happened (os calls only: safe in a signal handler).
        # A viewer of another process's run writes nothing into that run's folder.
        detach_from_terminal(None)
        run_dir = session.state.run_dir if session.owns_process and session.running else None
        if run_dir:
            self.hang_up_log = os.path.join(run_dir, rundir.LOG_FILE)
            note = (f"{time.strftime('%Y-%m-%d %H:%M:%S')} terminal hung up (SIGHUP): the app closed; training goes "
                    f"on in process {os.getpid()} until the run ends (tunetui attach {run_dir} follows it)\n")
            try:
                fd = os.open(self.hang_up_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, note.encode("utf-8", "replace"))
                finally:
                    os.close(fd)
            except OSError:
                pass
        self.post_message(HungUp())  # the rest happens on the UI loop, in the App's context
        threading.Thread(target=self._leave_after_hang_up, name="hang-up", daemon=True).start()

    def _leave_after_hang_up(self) -> None:
        # With no terminal, shutting the UI down may never finish. Once the run has ended (final/ or its failure
        # written, events.jsonl closed), nothing is left to do: leave.
        self.session.wait()
        time.sleep(HANG_UP_GRACE_SECONDS)  # a clean exit usually wins this race
        os._exit(0)


def _warm_training_imports() -> None:
    """Import the training stack after the first frame so Launch does not wait for torch & co."""
    try:
        importlib.import_module("core.training.runner").import_engine()
    except Exception:  # noqa: BLE001 - Launch imports it again and reports the problem as a failed run
        log.exception("warming the training imports failed")


def create_app(config: RunConfig | None = None, *, sampler: Sampler | None = None,
               output_dir: str | None = None, models_dir: str | None = None, start_screen: str | None = None,
               config_path: str | None = None, warm_imports: bool = False,
               attach_dir: str | None = None) -> TuneApp:
    """The one way to build the app, shared by the CLI and the tests."""
    models_dir = models_dir or os.environ.get("TUNETUI_MODELS_DIR")
    app = TuneApp(config, sampler=sampler, output_dir=output_dir, models_dir=models_dir,
                  start_screen=start_screen, config_path=config_path, warm_imports=warm_imports)
    app.attach_dir = attach_dir
    return app


def main(config_path: str | None = None, output_dir: str | None = None, attach_dir: str | None = None) -> int:
    """`tunetui [CONFIG.yaml]`: run the app (`attach_dir`: on the live view of that run); returns the exit code."""
    app = create_app(config_path=config_path, output_dir=output_dir, warm_imports=attach_dir is None,
                     attach_dir=attach_dir)
    stopped_here = False
    try:
        app.run()
    finally:
        if app.hang_up_log:  # the UI has let go of the (dead) terminal: what the run prints from now on is logged
            from core.terminal import detach_from_terminal

            detach_from_terminal(app.hang_up_log)
        # However the app ended (quit, crash), never leave a run without its checkpoint; after a hang-up the run
        # trains on to its end in this process, as it would have in the open app.
        if app.session.running and app.session.owns_process and not app.hung_up:
            app.session.stop(save=True)
            stopped_here = True
        app.session.wait()
    from core.terminal import safe_print

    run_dir = app.session.state.run_dir
    if app.detach_run:
        from tui.session import continue_in_background

        # After a blank line: the terminal's first row may still be redrawn as the UI lets go of it.
        safe_print("\n" + continue_in_background(app.detach_run), file=sys.stdout)
    elif run_dir and app.session.owns_process and (stopped_here or app._exit_when_stopped):
        safe_print(_stopped_words(run_dir), file=sys.stdout)
    elif words := app.session.leaving_words():  # a run launched in processes of its own trains on
        safe_print("\n" + words, file=sys.stdout)
    return app.return_code or 0


def _stopped_words(run_dir: str) -> str:
    """What a quit that stopped a run says on the way out: where it stopped and how to go on."""
    from core import rundir

    summary = rundir.summarize(Path(run_dir))
    if summary.status == "stopped" and summary.checkpoint is not None:
        return (f"Stopped at step {summary.step} with a checkpoint. Go on with:\n"
                f"  tunetui train --resume {run_dir}\n(or r on the Runs screen)")
    if summary.status == "stopped":
        return f"Stopped before the first step; nothing to resume. The run folder: {run_dir}"
    return f"The run {summary.status}: {run_dir}"


__all__ = ["TuneApp", "ConfigChanged", "SnapshotTaken", "create_app", "main", "default_config", "SCREENS",
           "SETUP_ORDER", "POLL_SECONDS", "DEMO_DATA"]
