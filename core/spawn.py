"""Starting `tunetui train` from another program (the app): which GPUs the run uses, the command line that says
so, and how the starter learns the run folder.

The app's GPU field is `all` (every GPU a run would see) or a list such as `0,2`; `plan_gpus` turns it into a
GpuPlan: one process per GPU, `--nproc N` for all of several, `--gpus LIST` for a subset (which sets
CUDA_VISIBLE_DEVICES before torch starts). `start_train` runs `tunetui train ... --run-dir-file PATH` in a session of
its own; the run folder's path appears in PATH as soon as the folder exists (core.launch makes it before any rank
starts), so the starter follows the run's events.jsonl from its first line.

Imports nothing heavy.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

ALL_GPUS = "all"
"""The app's GPU choice meaning every GPU a run would see (the default)."""
RUN_DIR_FILE_OPTION = "--run-dir-file"
"""`tunetui train --run-dir-file PATH`: the run folder's path is written to PATH once the folder exists (how the app
learns where a run it started in another process trains)."""


@dataclass(frozen=True)
class GpuPlan:
    """Which GPUs a run started from the app uses, and how `tunetui train` is told: one process per GPU."""

    gpus: tuple[str, ...]
    """nvidia-smi indexes; () when the machine has none (the run trains on the CPU, in one process)."""
    subset: bool = False
    """Some of the visible GPUs, not all: named with --gpus (which sets CUDA_VISIBLE_DEVICES)."""

    @property
    def nproc(self) -> int:
        return max(1, len(self.gpus))

    @property
    def separate_process(self) -> bool:
        """The run needs `tunetui train` in processes of its own: several of them, or CUDA_VISIBLE_DEVICES set
        before torch starts (which the app's own process may have imported already)."""
        return self.nproc > 1 or self.subset

    def arguments(self) -> list[str]:
        """What `tunetui train` needs on top of the config: `--gpus 0,2` (a subset), `--nproc N` (all of N > 1)."""
        if self.subset:
            return ["--gpus", ",".join(self.gpus)]
        return ["--nproc", str(self.nproc)] if self.nproc > 1 else []

    def describe(self, named: bool = True) -> str:
        """`GPUs 0,1: 2 processes, one per GPU`; `no GPU here: trains on the CPU in one process`. `named=False`
        leaves out the word GPU(s), for a line that has it as its label: `0,1: 2 processes, one per GPU`."""
        if not self.gpus:
            return f"{'no GPU' if named else 'none'} here: trains on the CPU in one process"
        which = ",".join(self.gpus)
        if named:
            which = f"GPU {which}" if len(self.gpus) == 1 else f"GPUs {which}"
        return f"{which}: one process" if len(self.gpus) == 1 else f"{which}: {len(self.gpus)} processes, one per GPU"


def plan_gpus(choice: str, available: Sequence[str] | None) -> GpuPlan:
    """The app's GPU field (`all`, or a list such as `0,2,3`) against the GPUs a run would see now (`available`,
    nvidia-smi indexes; None: not sampled yet, so only the form of `choice` is checked)."""
    from core.errors import TuneError
    from core.launch import parse_gpus

    text = (choice or "").strip().lower()
    hint = "Type all, or GPU numbers as the Monitor screen shows them, e.g. 0,2"
    if text in ("", ALL_GPUS):
        gpus = tuple(available or ())
        return GpuPlan(gpus=gpus)
    try:
        picked = parse_gpus(text)
    except TuneError:
        raise TuneError(f"{choice.strip()!r} is neither all nor a list of distinct GPU numbers", "GPUs",
                        hint) from None
    if available is not None:
        if not available:
            raise TuneError(f"GPU {text} was named, but this machine shows no GPU", "GPUs",
                            "Type all: the run trains on the CPU in one process")
        missing = [g for g in picked if g not in available]
        if missing:
            raise TuneError(f"GPU {', '.join(missing)} is not among this machine's GPUs ({','.join(available)})",
                            "GPUs", hint)
        if sorted(picked) == sorted(available):
            return GpuPlan(gpus=tuple(available))
    return GpuPlan(gpus=tuple(picked), subset=True)


def visible_gpu_numbers(snapshot) -> list[str]:
    """The nvidia-smi numbers of the GPUs a run started now would see (a core.resources.gpus.Snapshot), each once
    (a GPU split into MIG slices counts as one)."""
    out: list[str] = []
    for gpu in snapshot.run_gpus():
        if str(gpu.index) not in out:
            out.append(str(gpu.index))
    return out


def train_arguments(config_path: str | Path, plan: GpuPlan, *, resume: str | Path | None = None,
                    run_dir_file: str | Path | None = None) -> list[str]:
    """`tunetui train` arguments (after `train`) for a run of the config in `config_path` (or a resume of the run
    folder `resume`, from its own config) on the GPUs of `plan`."""
    args = ["--resume", str(resume)] if resume is not None else [str(config_path)]
    args += plan.arguments()
    if run_dir_file is not None:
        args += [RUN_DIR_FILE_OPTION, str(run_dir_file)]
    return args


def write_run_dir_file(path: str | Path | None, run_dir: str | Path) -> None:
    """Tell whoever started this `tunetui train` where its run trains (written whole, then renamed into place, so
    a reader never sees half a path)."""
    if not path:
        return
    target = Path(path)
    partial = target.with_name(target.name + ".partial")
    partial.write_text(str(Path(run_dir).resolve()), encoding="utf-8")
    os.replace(partial, target)


def start_train(arguments: list[str], log_path: str | Path) -> subprocess.Popen:
    """Start `tunetui train ARGUMENTS` in a session of its own (no hang-up or Ctrl-C of the caller's terminal
    reaches it), its output appended to `log_path`; returns at once."""
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "tui.cli", "train", *arguments], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def read_run_dir_file(path: str | Path) -> Path | None:
    """The run folder written by `write_run_dir_file`; None until it is there."""
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return Path(text) if text else None


__all__ = ["ALL_GPUS", "RUN_DIR_FILE_OPTION", "GpuPlan", "plan_gpus", "visible_gpu_numbers", "train_arguments",
           "start_train", "write_run_dir_file", "read_run_dir_file"]
