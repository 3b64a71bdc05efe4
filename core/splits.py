"""How many rows the validation split takes: the one rule the engine and the screens both follow. Imports nothing.

`data.val_size` is a row count from 1 up, a share of the rows below 1 (at least one row once it is above 0), and
0 for no split. A separate validation file (`data.val_path`) replaces the split: no training row is held out.
"""
from __future__ import annotations


def val_rows(rows: int, val_size: float) -> int:
    """Rows held out of `rows` for validation by `val_size` (may exceed `rows`: the caller says that is wrong)."""
    if val_size <= 0:
        return 0
    return int(val_size) if val_size >= 1 else max(1, round(val_size * rows))


def train_rows(rows: int, val_size: float) -> int:
    """Rows left to train on once the validation split is taken (never below 0)."""
    return max(0, rows - val_rows(rows, val_size))


__all__ = ["val_rows", "train_rows"]
