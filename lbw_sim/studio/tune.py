"""The Tune page's core: which settings can be swept, their ranges, a sweep, and a pick.

A *setting* is a dotted spec path that `GuardSpec.with_values` accepts and whose value is
a number (`thresholds.spike_z`, `transitions.spike.for`, `signals.grad_z.half_life`,
`regimes.intervene.lr_scale`, `bounds.lr_slew_up` …). The sweep itself is
`lbw_sim.guard.sweep.sweep` (the batched engine); this module only chooses the points,
names the picked spec and says how it differs from the one in use.
"""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any

import numpy as np
import pandas as pd

from lbw_sim.errors import SpecError
from lbw_sim.guard.scoring import Labels
from lbw_sim.guard.spec import GuardSpec, RegimeSpec
from lbw_sim.guard.sweep import sweep

MAX_POINTS = 2_500            # a page's sweep; the CLI takes up to a million
EDITED = " (edited)"
#: Objectives of the trade-off chart: (x, y, colour) with and without labels.
AXES_LABELLED = ("false_alarms_per_1k", "recall", "lead_time")
AXES_COST = ("mean_lr_scale", "out_share", "skipped")
TITLES = {"false_alarms_per_1k": "false alarms per 1,000 steps", "recall": "recall",
          "lead_time": "lead time (steps)", "precision": "precision",
          "mean_lr_scale": "mean LR scale", "out_share": "share of steps out of nominal",
          "skipped": "skipped steps"}


def edited_name(name: str) -> str:
    """The name of an edit of `name`: `lbw-default` → `lbw-default (edited)` (once)."""
    return name if name.endswith(EDITED) else name + EDITED


def numeric_settings(spec: GuardSpec) -> dict[str, float]:
    """Every numeric setting by dotted path, with its value (thresholds first)."""
    flat = {k: v for k, v in spec.flat().items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for name, regime in spec.regimes.items():   # defaults are not in flat(); still settable
        for f in fields(RegimeSpec):
            value = getattr(regime, f.name)
            if f.name in ("lr_scale", "momentum_scale", "update_cap", "skip_batches") \
                    and value is not None:
                flat.setdefault(f"regimes.{name}.{f.name}", value)
    order = ("thresholds", "transitions", "signals", "regimes", "bounds")
    return dict(sorted(flat.items(), key=lambda kv: (order.index(kv[0].split(".")[0])
                                                     if kv[0].split(".")[0] in order else 9)))


def is_whole(spec: GuardSpec, path: str) -> bool:
    """Whether a setting takes whole numbers (`for`, `min_dwell`, `warmup`, counts)."""
    return isinstance(numeric_settings(spec).get(path), int) or path.endswith(
        (".for", ".min_dwell", ".priority", ".warmup", ".skip_batches"))


def default_range(spec: GuardSpec, path: str) -> tuple[float, float]:
    """A first range around the current value: half to twice it (0..1 for scales)."""
    value = float(numeric_settings(spec)[path])
    if path.endswith(("lr_scale", "momentum_scale", "max_skip_fraction")):
        return max(0.0, value / 2) if value else 0.0, 1.0
    if value == 0:
        return 0.0, 1.0
    lo, hi = sorted((value / 2, value * 2))
    if is_whole(spec, path):
        lo, hi = max(1.0, math.floor(lo)), max(2.0, math.ceil(hi))
    return lo, hi


def grid_values(lo: float, hi: float, n: int, whole: bool = False) -> list[float | int]:
    """`n` evenly spaced values in [lo, hi] (distinct whole numbers for an integer field)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi < lo:
        raise SpecError("range", f"need a finite range with lo <= hi, got {lo:g} .. {hi:g}")
    if n < 1:
        raise SpecError("range", f"need at least one value, got {n}")
    values = np.linspace(lo, hi, n) if n > 1 else np.array([lo])
    if whole:
        return sorted({int(round(v)) for v in values})
    return [float(f"{v:.6g}") for v in values]


def with_current(values: list, current: float) -> list:
    """The grid with the value in use added (when inside it), so the chart can mark it."""
    if not values or not values[0] <= current <= values[-1] or current in values:
        return values
    return sorted([*values, type(values[0])(current)])


def tune(trace: pd.DataFrame, base: GuardSpec, grid: dict[str, list[Any]],
         labels: Labels | None = None, horizon: int = 0) -> pd.DataFrame:
    """Sweep `grid` around `base` over a trace: one row per valid spec, scored and with the
    Pareto front (`sweep.sweep`); points the validator refuses are in attrs["skipped"]."""
    size = math.prod(len(v) for v in grid.values())
    if size > MAX_POINTS:
        raise SpecError(next(iter(grid)), f"{size:,} points is more than the page sweeps "
                                          f"({MAX_POINTS:,}); use `python -m lbw_sim sweep`")
    table = sweep(trace, base, grid, labels, horizon=horizon,
                  chunk=64 if len(trace) < 200_000 else 16)
    return table


def point_of(table: pd.DataFrame, row: int, params: list[str]) -> dict[str, Any]:
    """The swept values of one table row, as plain Python numbers."""
    out = {}
    for p in params:
        v = table[p].iloc[row]
        out[p] = int(v) if isinstance(v, (int, np.integer)) else float(v)
    return out


def pick(base: GuardSpec, point: dict[str, Any], name: str | None = None) -> GuardSpec:
    """The spec a clicked point stands for, named as an edit of `base`."""
    return base.with_values(point).renamed(name or edited_name(base.name))


def diff_table(current: GuardSpec, picked: GuardSpec) -> pd.DataFrame:
    """Settings that differ between the spec in use and the picked one (the name aside)."""
    rows = [(p, str(a), str(b)) for p, a, b in current.diff(picked) if p != "name"]
    return pd.DataFrame(rows, columns=["setting", "in use", "picked"])


def current_row(table: pd.DataFrame, spec: GuardSpec, params: list[str]) -> int | None:
    """The row whose swept values equal the spec in use (None when the grid misses it)."""
    values = numeric_settings(spec)
    mask = np.ones(len(table), dtype=bool)
    for p in params:
        mask &= np.isclose(table[p].to_numpy(np.float64), float(values[p]), rtol=1e-9)
    hits = np.flatnonzero(mask)
    return int(hits[0]) if len(hits) else None
