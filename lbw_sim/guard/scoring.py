"""Detection quality of a guard against labelled incidents, and what its interventions cost.

An *alarm* is the first row of each excursion out of the spec's initial regime (entering
`watch` counts: the guard noticed something). An incident `[start, end]` (optimizer steps,
inclusive) is *detected* when an alarm falls in `[start - horizon, end]`; an alarm is *true*
when it falls in such a window of any incident, else it is a *false alarm*.

- precision: true alarms / all alarms (NaN when there are no alarms)
- recall: detected incidents / incidents (NaN when there are no incidents)
- lead time: incident start minus its first alarm step, averaged over detected incidents
  (positive = the guard was early; NaN when nothing was detected)
- false alarms per 1,000 steps: per 1,000 *optimizer steps* spanned by the trace, so a
  trace logged every 10 steps is not penalised tenfold
- cost: share of rows out of the initial regime, skipped rows, mean lr_scale

Everything is whole-array numpy (searchsorted over sorted alarm steps), cheap enough to
score every spec of a 1,000-spec sweep.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lbw_sim.errors import TraceError

#: Metrics in the order they are reported (and become sweep columns).
QUALITY = ("precision", "recall", "lead_time", "false_alarms_per_1k", "alarms",
           "false_alarms", "detected", "incidents")
COST = ("out_share", "skipped", "mean_lr_scale")


@dataclass(frozen=True)
class Labels:
    """Incident windows as sorted int64 arrays, prepared once and reused for every spec."""

    start: np.ndarray
    end: np.ndarray
    kind: np.ndarray
    table: pd.DataFrame

    def __len__(self) -> int:
        return len(self.start)


def read_labels(labels: pd.DataFrame | str | Path) -> Labels:
    """Validate a label table (`start, end[, kind]`; a CSV path or a DataFrame)."""
    if isinstance(labels, (str, Path)):
        labels = _read_label_csv(Path(labels))
    if not isinstance(labels, pd.DataFrame):
        raise TraceError(f"labels: expected a DataFrame or CSV path, got {type(labels).__name__}")
    cols = {str(c).strip().lower(): c for c in labels.columns}
    if "start" not in cols:
        raise TraceError(f"labels: need columns start,end[,kind]; got "
                         f"{', '.join(map(str, labels.columns)) or 'none'}")
    start = _int_column(labels[cols["start"]], "start")
    end = _int_column(labels[cols["end"]], "end") if "end" in cols else start.copy()
    if np.any(end < start):
        i = int(np.flatnonzero(end < start)[0])
        raise TraceError(f"labels: row {i + 1}: end {end[i]} is before start {start[i]}")
    kind = (labels[cols["kind"]].astype(str).to_numpy() if "kind" in cols
            else np.full(len(start), "", dtype=object))
    order = np.argsort(start, kind="stable")
    table = pd.DataFrame({"start": start[order], "end": end[order], "kind": kind[order]})
    return Labels(start[order], end[order], kind[order], table)


def labels_from_bytes(name: str, data: bytes) -> Labels:
    """Labels from an uploaded CSV (`start,end[,kind]`); any problem is a one-line TraceError."""
    if len(data) > 50_000_000:
        raise TraceError(f"{name}: larger than 50 MB, not a label table")
    try:
        frame = pd.read_csv(io.BytesIO(data))
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise TraceError(f"{name}: cannot read labels: {first}") from None
    return read_labels(frame)


def _read_label_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise TraceError(f"{path}: no such labels file")
    if path.stat().st_size > 50_000_000:
        raise TraceError(f"{path.name}: larger than 50 MB, not a label table")
    try:
        return pd.read_csv(path)
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise TraceError(f"{path.name}: cannot read labels: {first}") from None


def _int_column(col: pd.Series, name: str) -> np.ndarray:
    x = pd.to_numeric(col, errors="coerce").to_numpy(np.float64, na_value=np.nan)
    bad = ~np.isfinite(x) | (x != np.round(x)) | (np.abs(x) >= 2.0**62)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise TraceError(f"labels: row {i + 1}: {name} {col.iloc[i]!r} is not a whole step")
    return x.astype(np.int64)


def alarm_rows(regime: np.ndarray, initial: int) -> np.ndarray:
    """Row indices where the guard leaves the initial regime (first row of each excursion)."""
    out = np.asarray(regime) != initial
    starts = out.copy()
    starts[1:] &= ~out[:-1]
    return np.flatnonzero(starts)


def score_walk(steps: np.ndarray, regime: np.ndarray, skipped: np.ndarray,
               lr_scale: np.ndarray, initial: int, labels: Labels | None = None,
               horizon: int = 0) -> dict[str, float]:
    """Detection quality (with labels) and intervention cost of one walk over one trace."""
    steps = np.asarray(steps, dtype=np.int64)
    out = np.asarray(regime) != initial
    result = {"out_share": float(out.mean()) if len(out) else 0.0,
              "skipped": float(np.count_nonzero(skipped)),
              "mean_lr_scale": float(np.mean(lr_scale)) if len(lr_scale) else 1.0}
    if labels is not None:
        alarms = steps[alarm_rows(regime, initial)]
        span = float(steps[-1] - steps[0] + 1) if len(steps) else 0.0
        result = {**quality(alarms, labels, horizon, span), **result}
    return result


def quality(alarms: np.ndarray, labels: Labels, horizon: int = 0,
            span: float = 0.0) -> dict[str, float]:
    """Precision, recall, lead time and false-alarm rate of sorted alarm steps."""
    if horizon < 0:
        raise ValueError(f"horizon must be >= 0, got {horizon}")
    alarms = np.asarray(alarms, dtype=np.int64)
    lo, hi = labels.start - horizon, labels.end
    true = _in_any_window(alarms, lo, hi)
    first = first_alarm(alarms, lo, hi)
    detected = first >= 0
    leads = labels.start[detected] - alarms[first[detected]]
    n_true = int(np.count_nonzero(true))
    n_false = len(alarms) - n_true
    return {
        "precision": n_true / len(alarms) if len(alarms) else np.nan,
        "recall": float(detected.mean()) if len(lo) else np.nan,
        "lead_time": float(leads.mean()) if len(leads) else np.nan,
        "false_alarms_per_1k": 1000.0 * n_false / span if span > 0 else np.nan,
        "alarms": float(len(alarms)), "false_alarms": float(n_false),
        "detected": float(np.count_nonzero(detected)), "incidents": float(len(lo)),
    }


def _in_any_window(alarms: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Whether each alarm lies in some [lo, hi] (windows sorted by lo, may overlap).

    Among the windows with lo <= a, the furthest any of them reaches is the running
    maximum of hi; the alarm is inside one of them iff that reach is >= a.
    """
    if len(lo) == 0:
        return np.zeros(len(alarms), dtype=bool)
    last = np.searchsorted(lo, alarms, side="right") - 1
    reach = np.maximum.accumulate(hi)[np.maximum(last, 0)]
    return (last >= 0) & (reach >= alarms)


def first_alarm(alarms: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Index into `alarms` of the first alarm in each window [lo, hi], or -1 for none."""
    if len(alarms) == 0:
        return np.full(len(lo), -1, dtype=np.int64)
    first = np.searchsorted(alarms, lo, side="left")
    inside = (first < len(alarms)) & (alarms[np.minimum(first, len(alarms) - 1)] <= hi)
    return np.where(inside, first, -1)


def score_replayed(out: pd.DataFrame, labels: Labels | None = None,
                   horizon: int = 0, initial: str | None = None) -> dict[str, float]:
    """`score` of a trace `replay` already annotated (no second replay)."""
    regime = out["regime"].astype(str).to_numpy()
    initial = initial if initial is not None else regime[0]
    return score_walk(out["step"].to_numpy(), regime, out["skipped"].to_numpy(),
                      out["lr_scale"].to_numpy(), initial, labels, horizon)


def score(trace: pd.DataFrame, spec=None, labels: Labels | pd.DataFrame | str | Path | None
          = None, horizon: int = 0) -> dict[str, float]:
    """Replay `spec` (default: the shipped one) over a trace and score it against labels."""
    from lbw_sim.guard.engine import compile_spec, decide, trace_columns
    from lbw_sim.guard.spec import GuardSpec

    spec = spec or GuardSpec.default()
    if labels is not None and not isinstance(labels, Labels):
        labels = read_labels(labels)
    steps, columns = trace_columns(trace)
    compiled = compile_spec(spec)
    walk, _, _ = decide(spec, steps, columns, compiled)
    return score_walk(steps, walk.regime, walk.skipped, walk.lr_scale, compiled.initial,
                      labels, horizon)


def incident_report(steps: np.ndarray, regime: np.ndarray, initial: int, labels: Labels,
                    horizon: int = 0) -> pd.DataFrame:
    """Per incident: its window, the first alarm in it (NaN if none) and the lead time."""
    alarms = np.asarray(steps, dtype=np.int64)[alarm_rows(regime, initial)]
    first = first_alarm(alarms, labels.start - horizon, labels.end)
    alarm = np.where(first >= 0, alarms[np.maximum(first, 0)] if len(alarms) else 0, np.nan)
    return labels.table.assign(alarm=alarm, lead=labels.start - alarm)
