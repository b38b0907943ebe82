"""The guard's per-step metrics as flat name -> float dicts: one declaration for every logger.

Telemetry goes under the canonical names our importers map back (`update_ratio`, …), the
guard's outputs and signals under `guard/…`. A live run's signals are the guard's own values
(`GuardedOptimizer.trace(signals=True)`, the ones its decisions saw), read only for the rows
not logged yet (`start=`), so a log call costs the same at step 10 and at step 100,000.
A trace without signal columns (read from a file) gets them from `replay(trace, spec,
signals=True)` (`annotated`): the same values, by the engine's live == replay contract.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from lbw_sim.guard.engine import replay
from lbw_sim.guard.spec import GuardSpec

PREFIX = "guard/"


def find_guard(optimizer: Any) -> Any:
    """The `GuardedOptimizer` inside trainer wrappers (Accelerate's `AcceleratedOptimizer`,
    Lightning's `LightningOptimizer`), or None when the optimizer is not guarded."""
    from lbw_sim.guard.optim import GuardedOptimizer

    seen = 0
    while optimizer is not None and seen < 8:
        if isinstance(optimizer, GuardedOptimizer):
            return optimizer
        optimizer = getattr(optimizer, "optimizer", None) or getattr(optimizer, "_optimizer", None)
        seen += 1
    return None


def regime_index(spec: GuardSpec, regime: str) -> int:
    """Position of a regime in the spec (its colour and its value on a scalar chart)."""
    names = list(spec.regimes)
    return names.index(regime) if regime in names else -1


def annotated(trace: pd.DataFrame, spec: GuardSpec) -> pd.DataFrame:
    """The trace with one column per signal (NaN while a signal warms up): its own where it
    has them all (`trace(signals=True)`), else recomputed by `replay`."""
    if trace.empty or set(spec.signals) <= set(trace.columns):
        return trace
    signals = replay(trace, spec, signals=True)
    out = trace.copy()
    for name in spec.signals:
        out[name] = signals[name].to_numpy()
    return out


def row_metrics(row: pd.Series, spec: GuardSpec, *, skipped: int | None = None,
                telemetry: tuple[str, ...] = ("update_ratio", "update_norm", "param_norm")
                ) -> dict[str, float]:
    """One step of `annotated()` as loggable floats; NaN values are left out (a missing key
    is normal in a log, a NaN scalar is not everywhere). `skipped` overrides the step's own
    0/1 with a count over a logging interval; `telemetry` names the guard's telemetry
    columns to log under their canonical names (those the host's own log lacks)."""
    out: dict[str, float] = {}
    for col in telemetry:
        if col in row and _finite(row[col]):
            out[col] = float(row[col])
    out[PREFIX + "regime"] = float(regime_index(spec, str(row["regime"])))
    out[PREFIX + "lr_scale"] = float(row["lr_scale"])
    out[PREFIX + "skipped"] = float(row["skipped"] if skipped is None else skipped)
    if "update_scale" in row and _finite(row["update_scale"]):
        out[PREFIX + "update_scale"] = float(row["update_scale"])
    for name in spec.signals:
        if name in row and _finite(row[name]):
            out[PREFIX + name] = float(row[name])
    return out


def transitions(frame: pd.DataFrame) -> list[tuple[int, str, str, str]]:
    """(step, transition, regime entered, cause) for every row where a transition fired."""
    if frame.empty or "transition" not in frame:
        return []
    fired = frame[frame["transition"].astype(str) != ""]
    return [(int(r.step), str(r.transition), str(r.regime), str(r.cause))
            for r in fired.itertuples(index=False)]


def transition_text(step: int, name: str, regime: str, cause: str) -> str:
    return f"guard: step {step}: {name} -> {regime} ({cause})"


def _finite(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False
