"""Incident labels made on the Tune page: from a box selection, as a table, as the CLI's CSV.

The table is the CLI's `start,end,kind` (optimizer steps, inclusive); `scoring.read_labels`
validates it, so a label made in the browser scores exactly like one given to
`python -m lbw_sim score --labels`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from lbw_sim.errors import TraceError
from lbw_sim.guard.scoring import Labels, read_labels

COLUMNS = ["start", "end", "kind"]


def empty() -> pd.DataFrame:
    return pd.DataFrame({"start": pd.Series(dtype="int64"), "end": pd.Series(dtype="int64"),
                         "kind": pd.Series(dtype="object")})


def from_box(selection: Any, steps: np.ndarray) -> tuple[int, int] | None:
    """The step range of a plotly box selection (`event.selection`), snapped to logged steps;
    None when nothing (or no logged step) is selected."""
    boxes = (selection or {}).get("box") or []
    if not boxes:
        return None
    xs = boxes[-1].get("x") or []
    if len(xs) < 2 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in xs):
        return None
    lo, hi = sorted(xs[:2])
    inside = steps[(steps >= lo) & (steps <= hi)]
    if not len(inside):
        return None
    return int(inside.min()), int(inside.max())


def add(table: pd.DataFrame, start: int, end: int, kind: str = "") -> pd.DataFrame:
    """The table with one more incident, sorted by start (an identical row is not doubled)."""
    row = pd.DataFrame({"start": [int(start)], "end": [int(end)], "kind": [kind]})
    out = pd.concat([clean(table), row], ignore_index=True).drop_duplicates()
    return out.sort_values(["start", "end"], kind="stable").reset_index(drop=True)


def clean(table: pd.DataFrame) -> pd.DataFrame:
    """Edited rows with blank ones dropped (a fresh row in the table editor)."""
    table = table.reindex(columns=COLUMNS)
    keep = ~(table["start"].isna() & table["end"].isna())
    out = table[keep].copy()
    out["kind"] = out["kind"].fillna("").astype(str)
    return out.reset_index(drop=True)


def to_labels(table: pd.DataFrame) -> Labels:
    """Validated Labels (TraceError naming the row when a start/end is missing or reversed)."""
    table = clean(table)
    if table["start"].isna().any():
        i = int(np.flatnonzero(table["start"].isna())[0])
        raise TraceError(f"labels: row {i + 1}: no start step")
    table = table.assign(end=table["end"].fillna(table["start"]))
    return read_labels(table)


def to_csv(table: pd.DataFrame) -> bytes:
    """The CLI's `start,end,kind` CSV."""
    return to_labels(table).table.to_csv(index=False).encode()
