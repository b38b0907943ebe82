"""Causal signal estimators over telemetry: EMA, z-scores, ratios, slope, non-finite.

Every estimator is one numba loop that reads and writes an explicit state vector, so a
whole trace (replay) and one step at a time (online) run the very same code and give the
same floats. Signals never depend on the guard's regime, which is what lets the engine
compute them once per trace and reuse them across thousands of specs in a sweep.

Semantics, all in *steps* (a trace logged every N steps decays by N steps per row):
- `ema`: m ← a·m + (1-a)·x with a = 0.5 ** (Δstep / half_life); starts at the first x.
- `ema_z`: (x - m) / sd using the statistics *before* x (a spike does not hide itself);
  sd = max(sqrt(v), floor·|m|); 0 during warm-up. With `clip`, x enters the statistics
  clipped to m ± clip·sd, so one outlier cannot inflate the variance.
- `ratio`: x / m (m before x); 1 during warm-up; NaN while m <= floor (a loss that hovers
  around zero, as in RL objectives, has no meaningful ratio); with `clip`, x enters m
  clipped to [m/clip, m·clip].
- `slope`: EMA of Δx/Δstep; 0 during warm-up.
- `robust_z`: (x - m) / s with m an EMA of x and s = 1.2533 · (EMA of |x - m|) — the
  mean absolute deviation scaled to a normal sd, far less moved by heavy tails than the
  variance; s >= floor·|m|; statistics before x; 0 during warm-up; `clip` as for ema_z.
  The unit is the series' own noise, so one threshold serves a loss logged every step
  (noisy) and one logged every 100 steps (smooth).
- `ref_ratio`: m / r, where m is an EMA of y (y = x, or x / lr with `per: lr`) and r is m
  frozen `warmup` steps after the first observation: "how large is this now, relative to
  what it was for this model early on". 1 until the freeze; NaN while r <= floor. With
  `per: lr` a non-finite or non-positive lr counts as a NaN input.
- `nonfinite`: 1 where any source column is NaN or ±inf, else 0.
A NaN or inf input yields a NaN signal (comparisons with NaN are false) and leaves the
state untouched, so a NaN loss cannot poison the statistics; the `nonfinite` signal is
what reacts to it.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from lbw_sim.guard.spec import GuardSpec, SignalSpec

KIND_CODE = {"ema": 0, "ema_z": 1, "ratio": 2, "slope": 3, "robust_z": 4, "ref_ratio": 5}
#: State layout: mean, variance (robust_z: mean absolute deviation), last step, first step,
#: started flag, previous x, frozen reference, reference-set flag.
STATE_SIZE = 8
#: The mean absolute deviation of a normal variable times this is its standard deviation.
MAD_TO_SD = 1.2533141373155003


@numba.njit(cache=True, nogil=True, error_model="numpy")
def signal_kernel(kind: int, x: np.ndarray, steps: np.ndarray, half_life: float, warmup: float,
                  clip: float, floor: float, state: np.ndarray, out: np.ndarray,
                  per: np.ndarray) -> None:
    """Advance one estimator over x (state updated in place, values written to out).

    `per` divides x row by row (all ones unless a ref_ratio reads `per: lr`)."""
    m, v, last, first, started, prev = state[0], state[1], state[2], state[3], state[4], state[5]
    ref, has_ref = state[6], state[7]
    rate = math.log(2.0) / half_life
    for i in range(x.shape[0]):
        xi = x[i] / per[i] if per[i] > 0.0 and math.isfinite(per[i]) else np.nan
        s = float(steps[i])
        if not math.isfinite(xi):
            out[i] = np.nan
            continue
        if started == 0.0:
            started, m, v, first, last, prev = 1.0, xi, 0.0, s, s, xi
            out[i] = xi if kind == 0 else (1.0 if kind == 2 or kind == 5 else 0.0)
            if kind == 5 and warmup <= 0.0:
                ref, has_ref = m, 1.0
                out[i] = 1.0 if ref > floor else np.nan
            continue
        dt = max(s - last, 1.0)
        a = math.exp(-rate * dt)
        warm = (s - first) >= warmup
        if kind == 0:
            m = a * m + (1.0 - a) * xi
            out[i] = m
        elif kind == 1:
            sd = max(math.sqrt(v), floor * abs(m), 1e-12)
            out[i] = (xi - m) / sd if warm else 0.0
            xc = xi
            if warm and clip > 0.0:
                xc = min(max(xi, m - clip * sd), m + clip * sd)
            d = xc - m
            m = m + (1.0 - a) * d
            v = a * (v + (1.0 - a) * d * d)
        elif kind == 2:
            out[i] = (xi / m if m > floor else np.nan) if warm else 1.0
            xc = xi
            if warm and clip > 1.0 and m > 0.0:
                xc = min(max(xi, m / clip), m * clip)
            m = a * m + (1.0 - a) * xc
        elif kind == 4:
            sd = max(MAD_TO_SD * v, floor * abs(m), 1e-12)
            out[i] = (xi - m) / sd if warm else 0.0
            xc = xi
            if warm and clip > 0.0:
                xc = min(max(xi, m - clip * sd), m + clip * sd)
            d = xc - m
            v = a * v + (1.0 - a) * abs(d)
            m = m + (1.0 - a) * d
        elif kind == 5:
            m = a * m + (1.0 - a) * xi
            if has_ref == 0.0 and warm:
                ref, has_ref = m, 1.0
            out[i] = (m / ref if ref > floor else np.nan) if has_ref != 0.0 else 1.0
        else:
            g = (xi - prev) / dt
            m = a * m + (1.0 - a) * g if (s - first) > dt else g
            out[i] = m if warm else 0.0
        prev, last = xi, s
    state[0], state[1], state[2], state[3], state[4], state[5] = m, v, last, first, started, prev
    state[6], state[7] = ref, has_ref


def new_state(n_signals: int) -> np.ndarray:
    """Fresh estimator state for `n_signals` signals (one row each)."""
    return np.zeros((n_signals, STATE_SIZE))


def compute_signal(sig: SignalSpec, columns: dict[str, np.ndarray], steps: np.ndarray,
                   state: np.ndarray | None = None) -> np.ndarray:
    """One signal over a column block; `state` (a STATE_SIZE row) carries across calls.

    A source column absent from `columns` gives an all-NaN signal (nonfinite: all 0).
    """
    n = steps.shape[0]
    if sig.kind == "nonfinite":
        sources = (sig.source,) if isinstance(sig.source, str) else sig.source
        flag = np.zeros(n, dtype=bool)
        for src in sources:
            if src in columns:
                flag |= ~np.isfinite(columns[src])
        return flag.astype(np.float64)
    x = columns.get(sig.source)
    out = np.empty(n)
    if x is None:
        out.fill(np.nan)
        return out
    if state is None:
        state = np.zeros(STATE_SIZE)
    if sig.per:
        per = columns.get(sig.per)
        per = np.full(n, np.nan) if per is None else np.where(np.isfinite(per), per, np.nan)
    else:
        per = np.ones(n)
    clip = -1.0 if sig.clip is None else float(sig.clip)
    signal_kernel(KIND_CODE[sig.kind], np.ascontiguousarray(x, dtype=np.float64),
                  np.ascontiguousarray(steps, dtype=np.int64), float(sig.half_life),
                  float(sig.warmup), clip, float(sig.floor), state, out,
                  np.ascontiguousarray(per, dtype=np.float64))
    return out


def compute_signals(spec: GuardSpec, columns: dict[str, np.ndarray], steps: np.ndarray,
                    state: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every signal of a spec over a block of telemetry (state: one row per signal)."""
    if state is None:
        state = new_state(len(spec.signals))
    return {name: compute_signal(sig, columns, steps, state[i])
            for i, (name, sig) in enumerate(spec.signals.items())}


def missing_sources(spec: GuardSpec, columns: dict[str, np.ndarray]) -> list[str]:
    """Telemetry columns the spec's signals read but the trace does not have (or is all-NaN)."""
    wanted: list[str] = []
    for sig in spec.signals.values():
        for src in ((sig.source,) if isinstance(sig.source, str) else sig.source) + \
                ((sig.per,) if sig.per else ()):
            if src not in wanted:
                wanted.append(src)
    return [c for c in wanted if c not in columns or not np.isfinite(columns[c]).any()]
