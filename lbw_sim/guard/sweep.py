"""Sweeps over guard settings: grids, random samples, scoring and the Pareto front.

A grid maps dotted spec paths (`thresholds.spike_z`, `transitions.spike.for`) to value
lists. Each point becomes a spec through `GuardSpec.with_values`; a point the validator
rejects (e.g. an exit threshold above its entry threshold) is skipped and reported in
`table.attrs["skipped"]`, never fatal. All specs run through the batched engine
(`iter_walks`) and are scored with `scoring.score_walk`.

Pareto front (the `pareto` column): a row is on it when no other row is at least as good
on every objective and strictly better on one.
- with labels: maximise recall and precision, minimise false alarms per 1,000 steps and
  out_share (the share of rows out of the initial regime, i.e. intervention cost);
  a NaN precision (no alarms at all) counts as 0, a NaN recall as 0.
- without labels: only cost is known — minimise out_share and skipped rows, maximise
  mean_lr_scale (the least intrusive specs).
"""

from __future__ import annotations

import itertools
import math
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lbw_sim.checks import load_yaml
from lbw_sim.errors import SpecError
from lbw_sim.guard.scoring import Labels, read_labels, score_walk
from lbw_sim.guard.spec import GuardSpec, RegimeSpec, SignalSpec

MAX_VALUES = 100_000          # per dimension: a typo like 0:1e9:1 must not eat the memory
MAX_POINTS = 1_000_000        # per sweep
#: (column, +1 maximise / -1 minimise) for the Pareto front.
OBJECTIVES_LABELLED = (("recall", 1), ("precision", 1), ("false_alarms_per_1k", -1),
                       ("out_share", -1))
OBJECTIVES_COST = (("out_share", -1), ("skipped", -1), ("mean_lr_scale", 1))


# --- grid parsing --------------------------------------------------------------------------

def parse_grid_arg(text: str) -> tuple[str, list[Any]]:
    """`path=lo:hi:step` (inclusive range) or `path=a,b,c` -> (path, values)."""
    path, sep, spec = text.partition("=")
    path = path.strip()
    if not sep or not path:
        raise SpecError(path or text, "a grid is PATH=lo:hi:step or PATH=a,b,c")
    return path, parse_values(path, spec)


def parse_values(path: str, text: str) -> list[Any]:
    """Values of one grid dimension from `lo:hi:step` or a comma list."""
    text = text.strip()
    if not text:
        raise SpecError(path, "no values given")
    if ":" in text:
        parts = text.split(":")
        if len(parts) != 3:
            raise SpecError(path, f"a range is lo:hi:step, got {text!r}")
        lo, hi, step = (_scalar(path, p) for p in parts)
        return value_range(path, lo, hi, step)
    return [_scalar(path, p) for p in text.split(",")]


def value_range(path: str, lo: Any, hi: Any, step: Any) -> list[Any]:
    """lo, lo+step, … up to hi inclusive; integers stay integers."""
    for name, v in (("lo", lo), ("hi", hi), ("step", step)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise SpecError(path, f"range {name} must be a finite number, got {v!r}")
    if step <= 0:
        raise SpecError(path, f"range step must be > 0, got {step!r}")
    if hi < lo:
        raise SpecError(path, f"range hi {hi!r} is below lo {lo!r}")
    count = math.floor((hi - lo) / step + 1e-9) + 1
    if count > MAX_VALUES:
        raise SpecError(path, f"range gives {count} values (at most {MAX_VALUES})")
    if all(isinstance(v, int) for v in (lo, hi, step)):
        return list(range(lo, hi + 1, step))
    return [round(lo + i * step, 12) for i in range(count)]


def _scalar(path: str, text: str) -> Any:
    """A number, a bool, or a bare word (e.g. a regime name)."""
    text = text.strip()
    if not text:
        raise SpecError(path, "empty value in list")
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def load_ranges(path: str | Path) -> dict[str, list[Any]]:
    """A YAML file of `path: [lo, hi, step]`, `path: {lo:, hi:, step:}`, `path: "a,b"`
    or `path: {values: [...]}` entries -> grid."""
    path = Path(path)
    if not path.is_file():
        raise SpecError("", f"{path}: no such ranges file")
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise SpecError("", f"{path.name}: not UTF-8 text") from None
    except SpecError as exc:
        raise SpecError("", f"{path.name}: {exc.problem}") from None
    if not isinstance(data, dict) or not data:
        raise SpecError("", f"{path.name}: expected a mapping of spec path -> range")
    return {str(k): _range_entry(str(k), v) for k, v in data.items()}


def _range_entry(path: str, v: Any) -> list[Any]:
    if isinstance(v, str):
        return parse_values(path, v)
    if isinstance(v, dict) and set(v) == {"values"} and isinstance(v["values"], list):
        v = v["values"]
        if not v:
            raise SpecError(path, "no values given")
        return list(v)
    if isinstance(v, dict) and set(v) == {"lo", "hi", "step"}:
        return value_range(path, v["lo"], v["hi"], v["step"])
    if isinstance(v, list) and len(v) == 3:
        return value_range(path, *v)
    raise SpecError(path, "expected [lo, hi, step], {lo, hi, step}, {values: [...]} or 'a,b,c'")


def check_paths(base: GuardSpec, paths: list[str]) -> None:
    """Every swept path must name a setting of the base spec (no silent new thresholds)."""
    flat = base.flat()
    known_fields = {"regimes": (base.regimes, {f.name for f in fields(RegimeSpec)}),
                    "signals": (base.signals, {f.name for f in fields(SignalSpec)})}
    for path in paths:
        parts = path.split(".")
        if path in flat or path == "name":
            continue
        if len(parts) == 3 and parts[0] in known_fields:
            names, attrs = known_fields[parts[0]]
            if parts[1] in names and parts[2] in attrs:
                continue
        raise SpecError(path, f"no such setting in spec {base.name!r} "
                              "(see `python -m lbw_sim spec --default`)")


# --- points --------------------------------------------------------------------------------

def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The full cross product of a grid, in row-major order."""
    total = math.prod(len(v) for v in grid.values())
    if total > MAX_POINTS:
        raise SpecError(next(iter(grid), ""), f"grid has {total:,} points (at most "
                                              f"{MAX_POINTS:,}); use --random N")
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*grid.values())]


def random_points(grid: dict[str, list[Any]], n: int, seed: int = 0) -> list[dict[str, Any]]:
    """`n` distinct points drawn uniformly from the grid (the whole grid if it is smaller)."""
    if n < 1:
        raise SpecError("random", f"need at least one sample, got {n}")
    sizes = [len(v) for v in grid.values()]
    if math.prod(sizes) <= n:
        return grid_points(grid)
    rng = np.random.default_rng(seed)
    seen: dict[tuple[int, ...], None] = {}
    for _ in range(20):  # redraw until n distinct points (duplicates are rare)
        idx = np.stack([rng.integers(0, s, 2 * n) for s in sizes], axis=1)
        seen.update(dict.fromkeys(map(tuple, idx.tolist())))
        if len(seen) >= n:
            break
    keys, values = list(grid), list(grid.values())
    return [{k: values[d][i] for d, (k, i) in enumerate(zip(keys, combo))}
            for combo in list(seen)[:n]]


def build_specs(base: GuardSpec, points: list[dict[str, Any]]
                ) -> tuple[list[GuardSpec], list[dict[str, Any]], list[dict[str, Any]]]:
    """Specs for the valid points, those points, and the skipped ones with their error."""
    check_paths(base, list(points[0]) if points else [])
    specs, kept, skipped = [], [], []
    for point in points:
        try:
            specs.append(base.with_values(point))
            kept.append(point)
        except SpecError as exc:
            skipped.append({**point, "error": str(exc)})
    return specs, kept, skipped


# --- running -------------------------------------------------------------------------------

def sweep(trace: pd.DataFrame, base_spec: GuardSpec | None = None,
          grid: dict[str, list[Any]] | None = None,
          labels: Labels | pd.DataFrame | str | Path | None = None, *, horizon: int = 0,
          points: list[dict[str, Any]] | None = None, progress: bool = False,
          chunk: int = 32) -> pd.DataFrame:
    """One row per valid spec: swept values, spec_hash, quality, cost and `pareto`.

    Pass `grid` (full cross product) or explicit `points` (e.g. from `random_points`).
    Invalid points are listed in `table.attrs["skipped"]` (values + error message).
    """
    from lbw_sim.guard.engine import iter_walks, trace_columns

    base_spec = base_spec or GuardSpec.default()
    if points is None:
        points = grid_points(grid or {})
    if labels is not None and not isinstance(labels, Labels):
        labels = read_labels(labels)
    specs, kept, skipped = build_specs(base_spec, points)
    steps, _ = trace_columns(trace)
    rows: list[dict[str, Any]] = [{}] * len(specs)
    bar = _progress(len(specs), progress)
    for i, compiled, walk, _ in iter_walks(trace, specs, chunk=chunk):
        metrics = score_walk(steps, walk.regime, walk.skipped, walk.lr_scale,
                             compiled.initial, labels, horizon)
        rows[i] = {**kept[i], "spec_hash": compiled.spec.hash, **metrics,
                   "transitions": int(np.count_nonzero(walk.transition >= 0))}
        bar.update(1)
    bar.close()
    table = pd.DataFrame(rows, columns=_columns(points, labels is not None))
    objectives = OBJECTIVES_LABELLED if labels is not None else OBJECTIVES_COST
    table["pareto"] = pareto_front(table, objectives) if len(table) else []
    table.attrs.update(skipped=skipped, objectives=[c for c, _ in objectives],
                       spec=base_spec.name, base_hash=base_spec.hash)
    return table


def _columns(points: list[dict[str, Any]], labelled: bool) -> list[str]:
    from lbw_sim.guard.scoring import COST, QUALITY

    swept = list(points[0]) if points else []
    return [*swept, "spec_hash", *(QUALITY if labelled else ()), *COST, "transitions"]


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, file=sys.stderr, disable=None if enabled else True, unit="spec",
                desc="sweep", leave=False)


def pareto_front(table: pd.DataFrame, objectives) -> np.ndarray:
    """Boolean mask of non-dominated rows; objectives are (column, +1 max / -1 min)."""
    x = np.column_stack([np.nan_to_num(table[c].to_numpy(np.float64) * sign,
                                       nan=0.0 if sign > 0 else -np.inf)
                         for c, sign in objectives])
    n = len(x)
    front = np.ones(n, dtype=bool)
    for start in range(0, n, 256):  # blocks keep the (block, n, k) comparison small
        a = x[start:start + 256, None, :]
        ge = (x[None, :, :] >= a).all(axis=2)
        gt = (x[None, :, :] > a).any(axis=2)
        front[start:start + 256] = ~(ge & gt).any(axis=1)
    return front
