"""The Tune page's core: which settings can be swept, their ranges, a sweep, and a pick.

A *setting* is a dotted spec path that `GuardSpec.with_values` accepts and whose value is
a number (`thresholds.spike_z`, `transitions.spike.for`, `signals.grad_z.half_life`,
`regimes.intervene.lr_scale`, `bounds.lr_slew_up` …). The sweep itself is
`lbw_sim.guard.sweep.sweep` (the batched engine); this module only chooses the points,
names the picked spec and says how it differs from the one in use.
"""

from __future__ import annotations

import math
import re
from dataclasses import fields, replace
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


#: What each kind of setting is, in words (the identifier follows in brackets).
_SETTING_WORDS = {"thresholds": "threshold", "signals": "signal", "regimes": "regime",
                  "transitions": "transition", "bounds": "bound"}
_FIELD_WORDS = {"for": "steps its condition must hold (debounce)",
                "min_dwell": "steps in a regime before it may leave (dwell)",
                "priority": "priority", "half_life": "memory (half-life, steps)",
                "warmup": "warm-up steps", "clip": "outlier clip", "floor": "noise floor",
                "lr_scale": "LR scale", "momentum_scale": "momentum scale",
                "update_cap": "update cap", "skip_batches": "batches skipped on rollback"}


def setting_label(path: str) -> str:
    """A plain label with the identifier beside it: `threshold watch_z
    (thresholds.watch_z)`, `transition spike: steps its condition must hold (debounce)
    (transitions.spike.for)`."""
    parts = path.split(".")
    kind = _SETTING_WORDS.get(parts[0], parts[0])
    if len(parts) == 2:
        return f"{kind} {parts[1]} ({path})"
    if len(parts) == 3:
        return f"{kind} {parts[1]}: {_FIELD_WORDS.get(parts[2], parts[2])} ({path})"
    return path


def is_whole(spec: GuardSpec, path: str) -> bool:
    """Whether a setting takes whole numbers (`for`, `min_dwell`, `warmup`, counts)."""
    return isinstance(numeric_settings(spec).get(path), int) or path.endswith(
        (".for", ".min_dwell", ".priority", ".warmup", ".skip_batches"))


def default_range(spec: GuardSpec, path: str) -> tuple[float, float]:
    """A first range around the current value, half to twice it (0..1 for scales), shrunk
    toward the current value until the validator accepts both ends (`valid_range`)."""
    value = float(numeric_settings(spec)[path])
    if path.endswith(("lr_scale", "momentum_scale", "max_skip_fraction")):
        lo, hi = (max(0.0, value / 2) if value else 0.0), 1.0
    elif value == 0:
        lo, hi = 0.0, 1.0
    else:
        lo, hi = sorted((value / 2, value * 2))
    return valid_range(spec, path, lo, hi)


def is_valid(spec: GuardSpec, path: str, value: float) -> bool:
    """Whether the validator accepts `spec` with `path` set to `value`."""
    try:
        spec.with_values({path: int(round(value)) if is_whole(spec, path) else value})
    except (SpecError, ValueError, TypeError):
        return False
    return True


def valid_range(spec: GuardSpec, path: str, lo: float, hi: float) -> tuple[float, float]:
    """[lo, hi] with each end moved toward the current value, by bisection, until the spec
    stays valid there (the valid values around a setting are one interval: its neighbours
    in hysteresis pairs and its bounds fence it). Whole-number settings get whole ends."""
    value = float(numeric_settings(spec)[path])
    whole = is_whole(spec, path)

    def inward(end: float) -> float:
        if is_valid(spec, path, end):
            return end
        good, bad = value, end
        for _ in range(40):
            mid = (good + bad) / 2
            good, bad = (mid, bad) if is_valid(spec, path, mid) else (good, mid)
        return good

    lo, hi = inward(lo), inward(hi)
    if whole:
        lo, hi = math.ceil(lo - 1e-9), math.floor(hi + 1e-9)
        lo, hi = max(0 if value == 0 else 1, lo), max(hi, lo + 1)
        while hi > value and not is_valid(spec, path, hi):
            hi -= 1
        return float(lo), float(hi)
    return _shown(spec, path, lo, value), _shown(spec, path, hi, value)


def _shown(spec: GuardSpec, path: str, end: float, value: float) -> float:
    """`end` to 4 significant digits (as a person would type it), moved toward `value` until
    valid: a bisected end sits just inside the validator's limit."""
    step = (value - end) / 1000 if end != value else 0.0
    for _ in range(1000):
        shown = float(f"{end:.4g}")
        if shown == value or is_valid(spec, path, shown) and (
                (end <= value) == (shown <= value)):
            return shown
        end += step
    return value


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
    """The grid with the value in use in place of its nearest value (when inside the
    range), so the chart can mark it and `n` values asked are `n` values swept."""
    if not values or not values[0] <= current <= values[-1] or current in values:
        return values
    cast = type(values[0])(current)
    if len(values) < 3:
        return sorted({*values, cast})
    inner = values[1:-1]                 # the ends stay: the range asked for is the range swept
    near = min(range(len(inner)), key=lambda i: abs(inner[i] - current))
    return sorted({values[0], *inner[:near], cast, *inner[near + 1:], values[-1]})


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


def pick(base: GuardSpec, point: dict[str, Any], name: str | None = None,
         origin: GuardSpec | None = None) -> GuardSpec:
    """The spec a picked point stands for: named after what changed against `origin` (the
    spec the design started from; `base` without one) and described with it."""
    origin = origin or base
    spec = base.with_values(point)
    return described(spec.renamed(name or changed_name(origin, spec)), origin)


def _short(path: str) -> str:
    return path.split(".", 1)[1] if path.startswith("thresholds.") else path


def changes(origin: GuardSpec, spec: GuardSpec) -> list[tuple[str, Any, Any]]:
    """Settings that differ (the name and description aside)."""
    return [c for c in origin.diff(spec) if c[0] not in ("name", "description")]


def changed_name(origin: GuardSpec, spec: GuardSpec, most: int = 3) -> str:
    """`lbw-adaptive (watch_z 8)`: the origin's name and what changed (`(edited)` when
    more than `most` settings changed, or none)."""
    diff = changes(origin, spec)
    if not diff or len(diff) > most:
        return edited_name(origin.name)
    parts = [f"{_short(p)} {b:g}" if isinstance(b, (int, float)) else f"{_short(p)} {b}"
             for p, _, b in diff]
    return f"{origin.name} ({', '.join(parts)})"


def described(spec: GuardSpec, origin: GuardSpec) -> GuardSpec:
    """`spec` with a description that says what changed against `origin` first, so the
    original's text (which may quote the old values) is not read as this spec's."""
    diff = changes(origin, spec)
    if not diff:
        return spec
    what = "; ".join(f"{p} {a} → {b}" for p, a, b in diff)
    head = f"Changed from {origin.name} (hash {origin.hash}): {what}."
    body = origin.description.strip()
    text = head + (f" The description of {origin.name} follows; its numbers are the "
                   f"original's. {body}" if body else "")
    return replace(spec, description=text)


def file_name(spec: GuardSpec) -> str:
    """A file name for an exported spec: `lbw-adaptive_watch_z-8.yaml` (no spaces)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", spec.name.replace(" (", "_").replace(" ", "-"))
    return safe.strip("_") + ".yaml"


def diff_table(current: GuardSpec, picked: GuardSpec) -> pd.DataFrame:
    """Settings that differ between the spec in use and the picked one (the name and the
    description aside)."""
    rows = [(p, str(a), str(b)) for p, a, b in changes(current, picked)]
    return pd.DataFrame(rows, columns=["setting", "in use", "picked"])


def current_row(table: pd.DataFrame, spec: GuardSpec, params: list[str]) -> int | None:
    """The row whose swept values equal the spec in use (None when the grid misses it)."""
    values = numeric_settings(spec)
    mask = np.ones(len(table), dtype=bool)
    for p in params:
        mask &= np.isclose(table[p].to_numpy(np.float64), float(values[p]), rtol=1e-9)
    hits = np.flatnonzero(mask)
    return int(hits[0]) if len(hits) else None
