"""`tunetui gpus [--json]`: the GPUs (memory, utilisation, temperature, power, processes) and the host, once."""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")


def run(args: argparse.Namespace, sampler=None) -> int:
    """`sampler`: tests pass a ScriptedSampler; by default this machine is read once."""
    from core.resources.gpus import SystemSampler

    own = sampler is None
    sampler = sampler or SystemSampler()
    try:
        snapshot = sampler.sample()
        if own and snapshot.host.cpu_pct is None:  # CPU % needs an interval: take a second reading shortly after
            time.sleep(0.3)
            snapshot = sampler.sample()
    finally:
        if own:
            sampler.close()
    if args.json:
        data = asdict(snapshot)
        data["run_gpus"] = [g.index for g in snapshot.run_gpus()]
        print(json.dumps(data, indent=2))
        return 0
    print_snapshot(snapshot)
    return 0


def _num(value: float | None, fmt: str = "{:.1f}") -> str:
    return "?" if value is None else fmt.format(value)


def print_snapshot(snapshot, console=None) -> None:
    from tui.commands.output import StdoutConsole
    from rich.table import Table

    console = console or StdoutConsole()
    if not snapshot.gpus:
        console.print(f"[yellow]{snapshot.gpu_status}[/]: training would run on the CPU.")
    else:
        # (GPU, MIG slice): a GPU in MIG mode is used through its slices, which CUDA sees instead of it
        used_by_run = {(g.index, g.mig_index) for g in snapshot.run_gpus()}
        table = Table(title="GPUs", title_justify="left")
        for col, justify in (("#", "right"), ("name", "left"), ("memory used / total GiB", "right"),
                             ("free GiB", "right"), ("util", "right"), ("temp", "right"), ("power / limit W", "right"),
                             ("run", "center")):
            table.add_column(col, justify=justify)
        for g in snapshot.gpus:
            table.add_row(str(g.index), g.name, f"{_num(g.memory_used_gib)} / {_num(g.memory_total_gib)}",
                          _num(g.memory_free_gib), _num(g.utilization_pct, "{:.0f}%"),
                          _num(g.temperature_c, "{:.0f}°C"), f"{_num(g.power_w, '{:.0f}')} / "
                          f"{_num(g.power_limit_w, '{:.0f}')}", "✓" if (g.index, None) in used_by_run else "")
            for m in (m for m in snapshot.migs if m.index == g.index):  # its MIG slices, as GPU:slice
                table.add_row(f"{m.index}:{m.mig_index}", m.name,
                              f"{_num(m.memory_used_gib)} / {_num(m.memory_total_gib)}", _num(m.memory_free_gib),
                              "", "", "", "✓" if (m.index, m.mig_index) in used_by_run else "")
        console.print(table)
        if snapshot.visible is not None:
            named = [f"{m.index}:{m.mig_index}" for m in snapshot.run_gpus() if m.mig_index is not None]
            console.print("CUDA_VISIBLE_DEVICES: a run uses " + (f"MIG slice {', '.join(named)}" if named else
                          f"GPU {', '.join(map(str, snapshot.visible)) or 'none'}"))
        procs = [(g.index, p) for g in snapshot.gpus for p in g.processes]
        if procs:
            ptable = Table(title="GPU processes", title_justify="left")
            for col, justify in (("GPU", "right"), ("pid", "right"), ("user", "left"), ("GiB", "right"),
                                 ("command", "left")):
                ptable.add_column(col, justify=justify)
            for index, p in procs:
                ptable.add_row(str(index), str(p.pid), p.user or "?", _num(p.memory_gib), p.command or "?")
            console.print(ptable)
        else:
            console.print("No processes on the GPUs.")
    h = snapshot.host
    console.print(f"Host: CPU {_num(h.cpu_pct, '{:.0f}%')} of {h.cpu_count} cores · RAM {h.ram_used_gib:.1f} / "
                  f"{h.ram_total_gib:.1f} GiB used, {h.ram_available_gib:.1f} GiB available · this process "
                  f"{h.process_rss_gib:.2f} GiB")
