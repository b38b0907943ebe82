"""Causal signal estimators over telemetry: EMA, z-scores, ratios, slope, non-finite.

Every estimator's one-row update is written once, in `estimators`, over a tiny namespace of
operations; the numba kernel runs it with jitted scalar helpers over an explicit state
vector, so a whole trace (replay) and one step at a time (online) run the very same code
and give the same floats, and the torch backend runs it with 0-d tensor operations.
Signals never depend on the guard's regime, which is what lets the engine compute them
once per trace and reuse them across thousands of specs in a sweep.

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
- `above_best`: (m - b) / s, how far the smoothed x sits above the lowest it has been, in
  units of its own noise: m an EMA of x, b the running minimum of m from the end of warm-up
  on, s = 1.2533 · (EMA of |x - previous x|) / √2, the noise of one observation measured on
  successive differences, so that a climbing or falling x does not inflate it (s >=
  floor·|m|); 0 during warm-up.
  0 while x is still falling; for n rows in a row above 0 means no new low for n rows
  (a plateau); well above 0, a loss that climbed back up from where it had got to.
- `nonfinite`: 1 where any source column is NaN or ±inf, else 0.
A NaN or inf input yields a NaN signal (comparisons with NaN are false) and leaves the
state untouched, so a NaN loss cannot poison the statistics; the `nonfinite` signal is
what reacts to it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numba
import numpy as np

from lbw_sim.guard.spec import GuardSpec, SignalSpec

KIND_CODE = {"ema": 0, "ema_z": 1, "ratio": 2, "slope": 3, "robust_z": 4, "ref_ratio": 5,
             "above_best": 6}
#: State layout: mean, variance (robust_z: mean absolute deviation), last step, first step,
#: started flag, previous x, frozen reference, reference-set flag.
STATE_SIZE = 8
#: The mean absolute deviation of a normal variable times this is its standard deviation.
MAD_TO_SD = 1.2533141373155003
SQRT2 = math.sqrt(2.0)


def estimators(xp: Any) -> tuple[Callable, ...]:
    """The one definition of every estimator, over the array namespace `xp`.

    Returns one `observe` per kind, indexed by `KIND_CODE`: one observation of one
    estimator, (x, step, state…, params) -> (value, state…). `xp` supplies `jit` and the
    operations (`where`, `maximum`, `minimum`, `clamp`, `exp`, `sqrt`, `fabs`, `isfinite`, `not_`):
    numba scalar helpers here (`NUMBA`), 0-d torch tensor operations in the torch backend,
    so both backends run this very code.
    Data-dependent choices are `where` (branch-free, never read back to a host); plain `if`
    only tests parameters (kind, clip, warmup), which are host numbers in both backends.
    x is already divided by `per` (`per_input`).
    """
    where, maximum, minimum, clamp, exp = xp.where, xp.maximum, xp.minimum, xp.clamp, xp.exp
    sqrt, fabs, isfinite, not_, jit = xp.sqrt, xp.fabs, xp.isfinite, xp.not_, xp.jit
    nan = math.nan

    # Each kind: (x, step - first, dt, decay a, warm, first observation, mean m, spread v,
    # previous x, reference, reference set, warmup, clip, floor) -> (value, m, v, ref,
    # reference set). x is finite wherever the value is kept; `warm` is false on the first
    # observation, where a = 0 (every mean starts at x) and `frame` resets m and v.
    @jit
    def ema(x, since, dt, a, warm, fresh, m, v, prev, ref, has_ref, warmup, clip, floor):
        m = a * m + (1.0 - a) * x
        return m, m, v, ref, has_ref

    @jit
    def ema_z(x, since, dt, a, warm, fresh, m, v, prev, ref, has_ref, warmup, clip, floor):
        sd = maximum(maximum(sqrt(v), floor * fabs(m)), 1e-12)
        out = where(warm, (x - m) / sd, 0.0)
        xc = where(warm, clamp(x, m - clip * sd, m + clip * sd), x) if clip > 0.0 else x
        d = xc - m
        return out, m + (1.0 - a) * d, a * (v + (1.0 - a) * d * d), ref, has_ref

    @jit
    def ratio(x, since, dt, a, warm, fresh, m, v, prev, ref, has_ref, warmup, clip, floor):
        out = where(warm, where(m > floor, x / m, nan), 1.0)
        xc = where(warm & (m > 0.0), clamp(x, m / clip, m * clip), x) if clip > 1.0 else x
        return out, a * m + (1.0 - a) * xc, v, ref, has_ref

    @jit
    def slope(x, since, dt, a, warm, fresh, m, v, prev, ref, has_ref, warmup, clip, floor):
        g = (x - prev) / dt
        m = where(since > dt, a * m + (1.0 - a) * g, g)
        return where(warm, m, 0.0), m, v, ref, has_ref

    @jit
    def robust_z(x, since, dt, a, warm, fresh, m, v, prev, ref, has_ref, warmup, clip,
                 floor):
        sd = maximum(maximum(MAD_TO_SD * v, floor * fabs(m)), 1e-12)
        out = where(warm, (x - m) / sd, 0.0)
        xc = where(warm, clamp(x, m - clip * sd, m + clip * sd), x) if clip > 0.0 else x
        d = xc - m
        return out, m + (1.0 - a) * d, a * v + (1.0 - a) * fabs(d), ref, has_ref

    @jit
    def ref_ratio(x, since, dt, a, warm, fresh, m, v, prev, ref, has_ref, warmup, clip,
                  floor):
        m = a * m + (1.0 - a) * x
        # the reference freezes once, `warmup` steps after the first observation
        due = (warm | fresh) if warmup <= 0.0 else warm
        freeze = due & not_(has_ref)
        ref = where(freeze, m, ref)
        has_ref = has_ref | freeze
        return where(has_ref, where(ref > floor, m / ref, nan), 1.0), m, v, ref, has_ref

    @jit
    def above_best(x, since, dt, a, warm, fresh, m, v, prev, ref, has_ref, warmup, clip,
                   floor):
        v = a * v + (1.0 - a) * fabs(x - prev)      # a trend does not inflate the noise unit
        m = a * m + (1.0 - a) * x
        sd = maximum(maximum(MAD_TO_SD / SQRT2 * v, floor * fabs(m)), 1e-12)
        ref = where(warm, where(has_ref, minimum(ref, m), m), ref)   # the lowest m so far
        has_ref = has_ref | warm
        return where(warm, (m - ref) / sd, 0.0), m, v, ref, has_ref

    def frame(kind_step: Callable) -> Callable:
        """One observation of the kind whose update is `kind_step`: NaN handling, the first
        observation, decay and warm-up, the same for every kind."""
        @jit
        def observe(x, step, m, v, last, first, started, prev, ref, has_ref, rate, warmup,
                    clip, floor):
            finite = isfinite(x)
            fresh = finite & not_(started)
            live = finite & started
            xs = where(finite, x, m)                   # a NaN never enters the arithmetic
            dt = maximum(step - last, 1.0)
            a = where(fresh, 0.0, exp(-rate * dt))
            since = step - first
            warm = live & (since >= warmup)
            out, m_new, v_new, ref, has_ref = kind_step(xs, since, dt, a, warm, fresh, m, v,
                                                        prev, ref, has_ref, warmup, clip, floor)
            return (where(finite, out, nan), where(live, m_new, where(fresh, xs, m)),
                    where(live, v_new, where(fresh, 0.0, v)), where(finite, step, last),
                    where(fresh, step, first), started | finite, where(finite, xs, prev), ref,
                    has_ref)

        return observe

    return tuple(frame(k) for k in (ema, ema_z, ratio, slope, robust_z, ref_ratio,
                                          above_best))


def per_input(xp: Any) -> Callable:
    """x / per row by row, NaN where per is not a positive finite number (`per: lr`)."""
    where, isfinite = xp.where, xp.isfinite

    @xp.jit
    def divide(x, per):
        return where((per > 0.0) & isfinite(per), x / per, math.nan)

    return divide


_jit = numba.njit(cache=True, nogil=True, error_model="numpy")


@_jit
def _where(cond, a, b):
    return a if cond else b


@_jit
def _maximum(a, b):
    return max(a, b)


@_jit
def _minimum(a, b):
    return min(a, b)


@_jit
def _clamp(x, lo, hi):
    return min(max(x, lo), hi)


@_jit
def _exp(a):
    return math.exp(a)


@_jit
def _sqrt(a):
    return math.sqrt(a)


@_jit
def _fabs(a):
    return abs(a)


@_jit
def _isfinite(a):
    return math.isfinite(a)


@_jit
def _not(a):
    return not a


#: The namespace `estimators` runs in for numba: scalar functions, jitted. numba's disk
#: cache tracks only the file of what it compiled: `engine.walk_kernel` uses these too, so
#: after editing one, clear lbw_sim/guard/__pycache__ (or touch engine.py).
NUMBA = SimpleNamespace(jit=_jit, where=_where, maximum=_maximum, minimum=_minimum,
                        clamp=_clamp, exp=_exp, sqrt=_sqrt, fabs=_fabs, isfinite=_isfinite,
                        not_=_not)
_per_input = per_input(NUMBA)


def _over_rows(observe: Callable) -> Callable:
    """A loop over rows for one kind (the kind is chosen once per call, not per row)."""
    @_jit
    def advance(x, steps, per, state, out, rate, warmup, clip, floor):
        m, v, last, first, prev, ref = state[0], state[1], state[2], state[3], state[5], state[6]
        started, has_ref = state[4] != 0.0, state[7] != 0.0
        for i in range(x.shape[0]):
            out[i], m, v, last, first, started, prev, ref, has_ref = observe(
                _per_input(x[i], per[i]), float(steps[i]), m, v, last, first, started, prev,
                ref, has_ref, rate, warmup, clip, floor)
        state[0], state[1], state[2], state[3], state[5], state[6] = m, v, last, first, prev, ref
        state[4], state[7] = 1.0 if started else 0.0, 1.0 if has_ref else 0.0

    return advance


(_ema, _ema_z, _ratio, _slope, _robust_z, _ref_ratio,
 _above_best) = map(_over_rows, estimators(NUMBA))


@_jit
def signal_kernel(kind: int, x: np.ndarray, steps: np.ndarray, half_life: float, warmup: float,
                  clip: float, floor: float, state: np.ndarray, out: np.ndarray,
                  per: np.ndarray) -> None:
    """Advance one estimator over x (state updated in place, values written to out).

    `per` divides x row by row (all ones unless a ref_ratio reads `per: lr`)."""
    args = (x, steps, per, state, out, math.log(2.0) / half_life, warmup, clip, floor)
    if kind == 0:
        _ema(*args)
    elif kind == 1:
        _ema_z(*args)
    elif kind == 2:
        _ratio(*args)
    elif kind == 3:
        _slope(*args)
    elif kind == 4:
        _robust_z(*args)
    elif kind == 5:
        _ref_ratio(*args)
    else:
        _above_best(*args)


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
