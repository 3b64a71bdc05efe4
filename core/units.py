"""Numbers for people: counts (1.24 B parameters), byte sizes (3.2 GiB) and durations (1:02:03). Imports nothing.

One definition each; the few styles the screens need (a table's narrow "8.4M", a form's "8.4 M") are arguments.
"""
from __future__ import annotations

import math

_COUNT_UNITS = (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3))
_SIZE_UNITS = (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))


def count(n: float | None, *, digits: str = ".3g", sep: str = " ", none: str = "–") -> str:
    """1240000000 → "1.24 B", 8400000 → "8.4 M", 512 → "512". `digits` formats the scaled number, `sep` goes
    between it and the unit."""
    if n is None:
        return none
    for unit, size in _COUNT_UNITS:
        if abs(n) >= size:
            return f"{n / size:{digits}}{sep}{unit}"
    return str(int(n))


def count_short(n: float | None) -> str:
    """One decimal, "?" when unknown: "1.2 M" rows or parameters in a form."""
    return count(n, digits=".1f", none="?")


def size(n: float | None, *, none: str = "?") -> str:
    """Bytes in the largest binary unit that keeps a whole number: "3.2 GiB", "512.0 KiB", "100 B"."""
    if n is None:
        return none
    for unit, step in _SIZE_UNITS:
        if abs(n) >= step:
            return f"{n / step:.1f} {unit}"
    return f"{int(n)} B"


def duration(seconds: float | None, *, none: str = "–") -> str:
    """`1:02:03`, `4:05`."""
    if seconds is None or not math.isfinite(seconds):
        return none
    seconds = int(round(max(seconds, 0)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


__all__ = ["count", "count_short", "size", "duration"]
