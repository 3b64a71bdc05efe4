"""Run directories: create OUTPUT_DIR/<run-id>/, list runs and their state, find checkpoints. Imports nothing heavy.

Layout: config.yaml (full resolved config), events.jsonl (one event per line, appended), run.pid (while a process
trains it), labels.json (classification runs: the class names, in the head's order), checkpoints/checkpoint-<step>/
(renamed into place once complete; checkpoints/.partial/ holds one being written), final/ (adapter or full model,
tokenizer, labels.json; also renamed into place), output.log (what the process printed after its terminal went away),
control.json (a pause/resume/stop request waiting for the runner; see core.control), viewers/ (one empty file per app
attached to the run from another process, named <host>-<pid>; the run's status shows who is watching).
Under torchrun (`tunetui train --nproc N`, core.launch) the folder is still one run with one writer: rank 0 writes all
of the above; the other ranks only add their part of each checkpoint (rng_state_<rank>.pth).
Over 400 lines on purpose: it is the one module that knows this layout, so every reader and writer of it is here.
"""
from __future__ import annotations

import json
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from core import config as cfg
from core.config import RunConfig
from core.errors import TuneError
from core.events import (EvalEnded, LogLine, RunFailed, RunFinished, RunStarted, StepEnded, read_events)

CONFIG_FILE = "config.yaml"
EVENTS_FILE = "events.jsonl"
PID_FILE = "run.pid"
CHECKPOINTS = "checkpoints"
FINAL = "final"
LABELS_FILE = "labels.json"
LOG_FILE = "output.log"
CONTROL_FILE = "control.json"
VIEWERS_DIR = "viewers"

CHECKPOINT_PREFIX = "checkpoint-"
PARTIAL_CHECKPOINT = ".partial"
"""checkpoints/.partial/: where a checkpoint is written before it is renamed into place (core.training.checkpoints)."""
TRAINER_STATE = "trainer_state.json"
"""Written last into a checkpoint by the Trainer."""
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin", "model.safetensors", "pytorch_model.bin")
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class RunSummary:
    run_id: str
    run_dir: Path
    model: str
    method: str
    status: str
    """running | finished | stopped | failed | crashed."""
    step: int
    max_steps: int | None
    last_loss: float | None
    started: float
    """Unix time the run first started."""
    checkpoint: Path | None
    """Newest complete checkpoint (resume point), if any."""
    final_dir: Path | None
    message: str | None
    """Why it failed, when it did."""
    eval_loss: float | None = None
    """The last evaluation's loss, when the run evaluated."""
    eval_metrics: dict | None = None
    """The last evaluation's other metrics (classification: accuracy, macro_f1)."""
    confusion_matrix: list[list[int]] | None = None
    """The last confusion matrix a classification run reported (rows: true class, columns: predicted)."""
    labels: list[str] | None = None
    """Classification runs: the class names, in the order of the matrix."""
    pid: int | None = None
    """The training process while the run is running (on this host)."""
    eta_seconds: float | None = None
    """The last reported time to the end, while running."""
    viewers: int = 0
    """Apps attached to the run from other processes, while running."""

    def status_words(self, here: bool = False) -> str:
        """The status as the Runs screen and `tunetui runs` say it: `running here` (`here`: the asking app trains
        it), `running · pid 4242 · 2 watching` (another process; apps attached to it), else the status as it is
        (finished, stopped, failed, crashed)."""
        if self.status != "running":
            return self.status
        if here:
            return "running here"
        words = "running" + (f" · pid {self.pid}" if self.pid else "")
        return words + (f" · {self.viewers} watching" if self.viewers else "")


def slug(text: str) -> str:
    """A file-name-safe short form: `Qwen/Qwen2.5-0.5B-Instruct` → `Qwen2.5-0.5B-Instruct`."""
    text = text.rstrip("/").rsplit("/", 1)[-1].split(":")[-1]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "model"


def run_id_for(config: RunConfig, when: float | None = None) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(when or time.time()))
    name = config.output.run_name or f"{slug(config.model.name_or_path)}-{config.method.kind}"
    return f"{stamp}-{slug(name)}"


def new_run_dir(output_dir: str | Path, config: RunConfig) -> Path:
    """Create OUTPUT_DIR/<yyyymmdd-hhmmss>-<model>-<method>/ (suffix -2, -3 … if two start in the same second)."""
    root = Path(output_dir).expanduser()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TuneError(f"Cannot create the output folder {root}: {exc.strerror or exc}", "output.dir",
                        "Choose a writable folder with --output-dir or output.dir") from None
    base = run_id_for(config)
    for n in range(1, 1000):
        candidate = root / (base if n == 1 else f"{base}-{n}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise TuneError(f"Too many runs named {base} in {root}", "output.dir", "Use another output.run_name")


def apply_umask(folder: str | Path) -> None:
    """Give FOLDER and everything in it the permissions the umask allows. The safetensors writer creates its files
    owner-only (0600) whatever the umask, so without this a model others on the box should read (a merged export,
    a run's final/ or checkpoints under umask 022) is readable by its owner alone."""
    mask = os.umask(0)  # the only way to read the umask; put straight back
    os.umask(mask)
    folder = Path(folder)
    for path in [folder, *folder.rglob("*")] if folder.is_dir() else []:
        try:
            path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)
        except OSError:  # not ours, or gone meanwhile (checkpoint rotation): leave it
            pass


def write_pid(run_dir: Path) -> None:
    (run_dir / PID_FILE).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))


def clear_pid(run_dir: Path) -> None:
    try:
        (run_dir / PID_FILE).unlink()
    except OSError:
        pass


def read_pid(run_dir: str | Path) -> int | None:
    """The pid in run.pid when it was written on this host and that process still runs; None otherwise."""
    run_dir = Path(run_dir)
    try:
        info = json.loads((run_dir / PID_FILE).read_text())
        pid = int(info["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if info.get("host") != socket.gethostname() or not _owner_alive(run_dir):
        return None
    return pid


def is_running(run_dir: str | Path) -> bool:
    """True while a live process (this one included) holds the run's run.pid."""
    return (Path(run_dir) / PID_FILE).is_file() and _owner_alive(Path(run_dir))


def _owner_alive(run_dir: Path) -> bool:
    """True when the process that wrote run.pid still runs (on this host; elsewhere we can't tell: assume yes)."""
    try:
        info = json.loads((run_dir / PID_FILE).read_text())
    except (OSError, ValueError):
        return False
    if info.get("host") != socket.gethostname():
        return True
    try:
        return _pid_alive(int(info["pid"]))
    except (KeyError, ValueError, TypeError):
        return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: someone else's process, alive
        return True
    return True


def checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints (see `checkpoint_problem`), oldest first."""
    return [p for p in _checkpoint_dirs(run_dir) if checkpoint_problem(p) is None]


def incomplete_checkpoints(run_dir: str | Path) -> list[tuple[Path, str]]:
    """(folder, what is wrong) for each checkpoint-N folder that cannot be resumed from, oldest first: torn ones in
    checkpoints/, and the one a process was still writing into checkpoints/.partial/ when it ended (kill -9)."""
    found = []
    for path in _checkpoint_dirs(run_dir):
        problem = checkpoint_problem(path)
        if problem is not None:
            found.append((path, problem))
    for path in _checkpoint_dirs(Path(run_dir), Path(CHECKPOINTS) / PARTIAL_CHECKPOINT):
        found.append((path, "it was still being written when its process ended"))
    return sorted(found, key=lambda item: checkpoint_step(item[0]))


def checkpoint_problem(path: str | Path) -> str | None:
    """None for a complete checkpoint; otherwise what is missing, in words.

    Complete: a readable trainer_state.json (the Trainer writes it last) and the model or adapter weights (every
    shard an index lists). Runs of this version write checkpoints whole (a rename); older ones, or a folder someone
    emptied, may be torn.
    """
    path = Path(path)
    try:
        json.loads((path / TRAINER_STATE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"it has no {TRAINER_STATE}"
    except (OSError, ValueError):
        return f"its {TRAINER_STATE} is unreadable or cut short"
    for index in WEIGHT_INDEXES:
        if (path / index).is_file():
            try:
                shards = set(json.loads((path / index).read_text(encoding="utf-8"))["weight_map"].values())
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                return f"its {index} is unreadable"
            missing = sorted(s for s in shards if not (path / s).is_file())
            return f"weight shards are missing ({', '.join(missing)})" if missing else None
    if any((path / name).is_file() for name in WEIGHT_FILES):
        return None
    return "it has no model or adapter weights"


def _checkpoint_dirs(run_dir: str | Path, folder: str | Path = CHECKPOINTS) -> list[Path]:
    root = Path(run_dir) / folder
    found = []
    if root.is_dir():
        for child in root.iterdir():
            m = _CHECKPOINT.match(child.name)
            if m and child.is_dir():
                found.append((int(m.group(1)), child))
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint (the resume point); torn ones are passed over."""
    for path in reversed(_checkpoint_dirs(run_dir)):  # newest first: only the one found is read in full
        if checkpoint_problem(path) is None:
            return path
    return None


def checkpoint_step(path: str | Path) -> int:
    m = _CHECKPOINT.match(Path(path).name)
    return int(m.group(1)) if m else 0


def load_run_config(run_dir: str | Path) -> RunConfig:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise TuneError(f"{run_dir} is not a run folder (it has no {CONFIG_FILE})", None,
                        "Pass a folder listed by `tunetui runs`")
    return cfg.load(path)


def write_labels(folder: str | Path, labels: list[str]) -> None:
    """labels.json: a classification head's class names, index i being output i."""
    (Path(folder) / LABELS_FILE).write_text(json.dumps({"labels": list(labels)}, ensure_ascii=False, indent=1),
                                            encoding="utf-8")


def read_labels(*folders: str | Path) -> list[str] | None:
    """The class names from the first of `folders` that holds a labels.json; None when none does."""
    for folder in folders:
        path = Path(folder) / LABELS_FILE
        if path.is_file():
            return list(json.loads(path.read_text(encoding="utf-8"))["labels"])
    return None


def list_runs(output_dir: str | Path) -> list[RunSummary]:
    """Every run under OUTPUT_DIR, running ones first, then newest first; torn or missing files give partial rows, never an error."""
    root = Path(output_dir).expanduser()
    if not root.is_dir():
        return []
    runs = []
    for child in root.iterdir():
        if child.is_dir() and ((child / CONFIG_FILE).is_file() or (child / EVENTS_FILE).is_file()):
            runs.append(summarize(child))
    # Live runs first (the ones a user comes to watch or control), then newest first.
    runs.sort(key=lambda r: (r.status == "running", r.started), reverse=True)
    return runs


def live_runs(output_dir: str | Path) -> list[RunSummary]:
    """The runs under OUTPUT_DIR whose process still trains, newest first."""
    return [r for r in list_runs(output_dir) if r.status == "running"]


def summarize(run_dir: Path) -> RunSummary:
    run_dir = Path(run_dir)
    try:
        events = read_events(run_dir / EVENTS_FILE)
    except OSError:
        events = []
    raw = _read_yaml(run_dir / CONFIG_FILE)
    started_events = [e for e in events if isinstance(e, RunStarted)]
    if not raw and started_events:
        raw = started_events[-1].config
    model = str(((raw or {}).get("model") or {}).get("name_or_path", "?"))
    method = str(((raw or {}).get("method") or {}).get("kind", "?"))

    # A resumed run appends to the same log: its state is what happened since the last RunStarted.
    last_start = max((i for i, e in enumerate(events) if isinstance(e, RunStarted)), default=-1)
    current = events[last_start + 1:] if last_start >= 0 else events
    status, message = "running", None
    for e in current:
        if isinstance(e, RunFinished):
            status = "stopped" if e.stopped else "finished"
        elif isinstance(e, RunFailed):
            status, message = "failed", e.message
    if status == "running" and not _owner_alive(run_dir):
        status = "crashed"
        if not events:
            message = "no events were written"

    step, last_loss, max_steps = 0, None, None
    for e in events:
        if isinstance(e, StepEnded):
            step, max_steps = e.step, e.max_steps
            if e.loss is not None:
                last_loss = e.loss
        elif isinstance(e, RunFinished):
            step, max_steps = max(step, e.step), e.max_steps
    evals = [e for e in events if isinstance(e, EvalEnded)]
    last_eval = evals[-1] if evals else None
    matrix = next((e.confusion_matrix for e in reversed(evals) if e.confusion_matrix), None)
    if status == "crashed" and message is None:
        errors = [e for e in current if isinstance(e, LogLine) and e.level in ("ERROR", "CRITICAL")]
        message = errors[-1].message if errors else "the process ended without finishing the run"

    started = started_events[0].time if started_events else _mtime(run_dir)
    final = run_dir / FINAL
    pid = eta = None
    watching = 0
    if status == "running":
        pid = read_pid(run_dir)
        eta = next((e.eta_seconds for e in reversed(current) if isinstance(e, StepEnded)), None)
        watching = len(viewers(run_dir))
    return RunSummary(run_id=run_dir.name, run_dir=run_dir, model=model, method=method, status=status,
                      step=step, max_steps=max_steps, last_loss=last_loss, started=started,
                      checkpoint=latest_checkpoint(run_dir), final_dir=final if final.is_dir() else None,
                      message=message, eval_loss=last_eval.eval_loss if last_eval else None,
                      eval_metrics=dict(last_eval.metrics) if last_eval and last_eval.metrics else None,
                      confusion_matrix=matrix, labels=_labels(run_dir) if matrix else None,
                      pid=pid, eta_seconds=eta, viewers=watching)


def add_viewer(run_dir: str | Path) -> Path | None:
    """Mark this process as watching the run (RUN_DIR/viewers/<host>-<pid>); None where the folder is read-only
    (watching still works, it just goes uncounted)."""
    path = Path(run_dir) / VIEWERS_DIR / f"{socket.gethostname()}-{os.getpid()}"
    try:
        path.parent.mkdir(exist_ok=True)
        path.touch()
    except OSError:
        return None
    return path


def remove_viewer(path: Path | None) -> None:
    if path is not None:
        try:
            path.unlink()
        except OSError:
            pass


def viewers(run_dir: str | Path) -> list[str]:
    """The `<host>-<pid>` of the apps watching the run; marks left by processes gone from this host are dropped
    (a viewer killed with -9 cannot remove its own). Other hosts' marks are kept: we cannot check them."""
    host = socket.gethostname()
    folder = Path(run_dir) / VIEWERS_DIR
    try:
        names = sorted(p.name for p in folder.iterdir())
    except OSError:
        return []
    alive = []
    for name in names:
        mark_host, _, pid = name.rpartition("-")
        if mark_host == host and pid.isdigit() and not _pid_alive(int(pid)):
            remove_viewer(folder / name)
            continue
        alive.append(name)
    return alive


def _labels(run_dir: Path) -> list[str] | None:
    try:
        return read_labels(run_dir, run_dir / FINAL)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _read_yaml(path: Path) -> dict | None:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


__all__ = ["RunSummary", "new_run_dir", "list_runs", "summarize", "is_running", "latest_checkpoint", "checkpoints",
           "checkpoint_step", "incomplete_checkpoints", "checkpoint_problem", "load_run_config", "run_id_for", "slug",
           "write_pid", "clear_pid", "CONFIG_FILE", "EVENTS_FILE", "CHECKPOINTS", "FINAL", "LABELS_FILE",
           "write_labels", "read_labels", "LOG_FILE", "CONTROL_FILE", "read_pid", "live_runs", "CHECKPOINT_PREFIX",
           "PARTIAL_CHECKPOINT", "add_viewer", "remove_viewer", "viewers", "VIEWERS_DIR"]
