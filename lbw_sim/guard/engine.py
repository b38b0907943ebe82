"""The guard engine: one semantics, three uses — replay, online stepping, batched sweeps.

A step is decided in three stages:
1. signals (signals.py) — causal estimators over telemetry, independent of the regime;
2. conditions — each transition's condition over the signals, evaluated as whole arrays,
   and its debounce count (`debounce_kernel`: how many rows in a row it has held), which
   depends on the condition alone, so a sweep counts each distinct condition once;
3. the walk — the only sequential part: dwell, priority, the regime, and the bounded
   controls (LR slew, skip limits, rollback budget, stop).
Stage 3 is one numba kernel (`walk_kernel`) with explicit state. Replay runs it over a
whole trace and `OnlineGuard` one row at a time with carried state (both via `walk_rows`,
which debounces as it goes), and `walk_batch` runs it for many specs in parallel over
shared counts; all three therefore give the same decisions. Its rules (`walk_rules`) are
written once for numba and the torch backend.

Decision timing: the controls of row t are decided from the telemetry of row t (loss and
gradient of that step, before its update is applied) and apply to that same update.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numba
import numpy as np
import pandas as pd
from pandas.api.types import union_categoricals

from lbw_sim.errors import TraceError
from lbw_sim.guard import conditions
from lbw_sim.guard.signals import (
    NUMBA,
    compute_signal,
    compute_signals,
    missing_sources,
    new_state,
)
from lbw_sim.guard.spec import TELEMETRY, GuardSpec, sources_of
from lbw_sim.traces.schema import DECISION_COLUMNS

# bounds vector layout
(BOUND_LR_MIN, BOUND_LR_MAX, BOUND_SLEW_DOWN, BOUND_SLEW_UP, BOUND_MAX_CONSECUTIVE,
 BOUND_MAX_SKIP_FRACTION, BOUND_SKIP_WINDOW, BOUND_MAX_ROLLBACKS) = range(8)
# walk state layout
(STATE_REGIME, STATE_ENTERED, STATE_LR_SCALE, STATE_CONSECUTIVE_SKIPS, STATE_SKIPS_IN_WINDOW,
 STATE_WINDOW_POS, STATE_ROLLBACKS, STATE_STOPPED, STATE_STARTED) = range(9)
STATE_LEN = 9
COMPLEMENT = {">=": "<", ">": "<=", "<": ">=", "<=": ">", "==": "!=", "!=": "=="}


def walk_rules(xp: Any) -> tuple[Callable, Callable, Callable]:
    """The walk's rules, written once over the array namespace `xp` (see
    `signals.estimators`): numba runs them on scalars, the torch backend on 0-d tensors
    and, for the per-transition rules, on vectors over the transitions.

    Returns (`debounce`, `may_fire`, `settle`); what stays with each backend is mechanics:
    the first eligible transition in priority order, the regime's row of the tables, the
    skip window's ring buffer.
    """
    where, maximum, minimum, clamp, not_, jit = (xp.where, xp.maximum, xp.minimum, xp.clamp,
                                                  xp.not_, xp.jit)

    @jit
    def debounce(held, runs):
        """Consecutive rows a transition's condition has held."""
        return where(held, runs + 1, 0)

    @jit
    def may_fire(from_here, runs, for_, to, regime, since_entered, dwell, stopped):
        """Fired from one of its sources, held `for` rows, to another regime, past the
        dwell; a stop regime is absorbing."""
        return (from_here & (runs >= for_) & (to != regime) & (since_entered >= dwell)
                & not_(stopped))

    @jit
    def settle(fired, rollback_here, stop_here, skip_here, lr_here, lr_prev, n_rollbacks,
               stopped, consec, wcount, leaving, window, lo, hi, down, up, max_consec,
               max_frac, max_rollbacks):
        """The bounded controls in the (possibly new) regime: a rollback on entry while
        the budget lasts, stop, the LR slewed toward the regime's, skips limited by the
        consecutive and windowed bounds (`leaving`: the skip leaving the window).
        -> (rollback, stopped, lr, skip, rollbacks, skips in window, consecutive skips)"""
        rollback = fired & rollback_here & (n_rollbacks < max_rollbacks)
        stopped = stopped | (fired & stop_here)
        lr = clamp(minimum(maximum(clamp(lr_here, lo, hi), lr_prev * down), lr_prev * up),
                   lo, hi)
        skip = ((skip_here & (consec < max_consec) & (wcount + 1 <= max_frac * window))
                | rollback | stopped)
        return (rollback, stopped, lr, skip, n_rollbacks + rollback, wcount + skip - leaving,
                where(skip, consec + 1, 0))

    return debounce, may_fire, settle


_debounce, _may_fire, _settle = walk_rules(NUMBA)

#: Debounce counts reach the walk as int32 (a quarter of int64's memory traffic in a sweep),
#: saturated here; exact, since a transition's `for` is at most 10⁹ (spec validation).
RUNS_CAP = np.iinfo(np.int32).max
#: Rows debounced at a time before they are walked (`walk_rows`): the counts stay in cache.
BLOCK = 4096


@numba.njit(cache=True, nogil=True)
def debounce_kernel(cond, runs, out):  # pragma: no cover
    """Consecutive rows each condition has held, row by row (`runs` carried in place).

    The count depends on the condition alone, never on the regime, so a sweep counts each
    distinct condition once for all its specs instead of once per spec.
    """
    for k in range(cond.shape[0]):
        r = runs[k]
        for t in range(cond.shape[1]):
            r = _debounce(cond[k, t] != 0, r)
            out[k, t] = min(r, RUNS_CAP)
        runs[k] = r


@numba.njit(cache=True, nogil=True)
def walk_kernel(runs, rows, leaving, steps, to, for_, dwell, reg_lr, reg_skip, reg_rollback,
                reg_stop, bounds, state, ring,
                out_regime, out_trans, out_lr, out_skip, out_rollback):  # pragma: no cover
    """Walk the regime machine over rows of debounce counts (state in place).

    Transition k's condition has held `runs[rows[k], t]` consecutive rows at row t
    (`debounce_kernel`). Only the transitions leaving the current regime are tried
    (`leaving[regime]`, in priority order, -1 after the last): the first that may fire
    wins. The rules (`walk_rules`): a transition may fire when its condition has held for
    `for_` consecutive rows and the regime was entered >= `dwell` steps ago. A stop regime
    is absorbing. Skips are limited by the consecutive and windowed bounds; a rollback fires
    on entry into a rollback regime while the rollback budget lasts.
    """
    n_rows = steps.shape[0]
    lo, hi = bounds[BOUND_LR_MIN], bounds[BOUND_LR_MAX]
    window = ring.shape[0]
    if state[STATE_STARTED] == 0.0:
        state[STATE_ENTERED] = steps[0] if n_rows > 0 else 0
        state[STATE_LR_SCALE] = min(max(reg_lr[int(state[STATE_REGIME])], lo), hi)
        state[STATE_STARTED] = 1.0
    regime = int(state[STATE_REGIME])
    entered = state[STATE_ENTERED]
    lr_prev = state[STATE_LR_SCALE]
    consec = int(state[STATE_CONSECUTIVE_SKIPS])
    wcount = int(state[STATE_SKIPS_IN_WINDOW])
    wpos = int(state[STATE_WINDOW_POS])
    n_rollbacks = int(state[STATE_ROLLBACKS])
    stopped = state[STATE_STOPPED] != 0.0
    for t in range(n_rows):
        fired = -1
        for j in range(leaving.shape[1]):
            k = leaving[regime, j]
            if k < 0:
                break
            if _may_fire(True, runs[rows[k], t], for_[k], to[k], regime, steps[t] - entered,
                         dwell[k], stopped):
                fired = k
                break
        if fired >= 0:
            regime = to[fired]
            entered = steps[t]
        rollback, stopped, lr, skip, n_rollbacks, wcount, consec = _settle(
            fired >= 0, reg_rollback[regime] != 0, reg_stop[regime] != 0,
            reg_skip[regime] != 0, reg_lr[regime], lr_prev, n_rollbacks, stopped, consec,
            wcount, int(ring[wpos]), window, lo, hi, bounds[BOUND_SLEW_DOWN],
            bounds[BOUND_SLEW_UP], bounds[BOUND_MAX_CONSECUTIVE], bounds[BOUND_MAX_SKIP_FRACTION],
            bounds[BOUND_MAX_ROLLBACKS])
        ring[wpos] = skip
        wpos = wpos + 1 if wpos + 1 < window else 0     # a branch is cheaper than %
        out_regime[t] = regime
        out_trans[t] = fired
        out_lr[t] = lr
        out_skip[t] = skip
        out_rollback[t] = rollback
        lr_prev = lr
    state[STATE_REGIME] = regime
    state[STATE_ENTERED] = entered
    state[STATE_LR_SCALE] = lr_prev
    state[STATE_CONSECUTIVE_SKIPS] = consec
    state[STATE_SKIPS_IN_WINDOW] = wcount
    state[STATE_WINDOW_POS] = wpos
    state[STATE_ROLLBACKS] = n_rollbacks
    state[STATE_STOPPED] = 1.0 if stopped else 0.0


@numba.njit(cache=True, nogil=True)
def walk_rows(cond, steps, leaving, to, for_, dwell, reg_lr, reg_skip, reg_rollback, reg_stop,
              bounds, state, runs, ring,
              out_regime, out_trans, out_lr, out_skip, out_rollback):  # pragma: no cover
    """One spec over rows of condition truth (replay, the online guard): debounce, then
    walk, `BLOCK` rows at a time (`runs` carried per transition, state in place)."""
    n_trans, n_rows = cond.shape
    rows = np.arange(n_trans)
    counts = np.empty((n_trans, min(max(n_rows, 1), BLOCK)), dtype=np.int32)
    for a in range(0, max(n_rows, 1), BLOCK):   # an empty walk still sets up the state
        b = min(a + BLOCK, n_rows)
        debounce_kernel(cond[:, a:b], runs, counts)
        walk_kernel(counts, rows, leaving, steps[a:b], to, for_, dwell, reg_lr, reg_skip,
                    reg_rollback, reg_stop, bounds, state, ring, out_regime[a:b],
                    out_trans[a:b], out_lr[a:b], out_skip[a:b], out_rollback[a:b])


@numba.njit(cache=True, parallel=True)
def walk_batch(runs, rows, leaving, steps, to, for_, dwell, reg_lr, reg_skip, reg_rollback,
               reg_stop, bounds, initial,
               out_regime, out_trans, out_lr, out_skip, out_rollback):  # pragma: no cover
    """`walk_kernel` for many specs at once (leading axis = spec), in parallel, over shared
    debounce counts: `runs` has one row per distinct condition, `rows[s]` picks spec s's."""
    for s in numba.prange(rows.shape[0]):
        state = np.zeros(STATE_LEN)
        state[STATE_REGIME] = initial[s]
        ring = np.zeros(max(int(bounds[s, BOUND_SKIP_WINDOW]), 1), dtype=np.uint8)
        walk_kernel(runs, rows[s], leaving[s], steps, to[s], for_[s], dwell[s], reg_lr[s],
                    reg_skip[s], reg_rollback[s], reg_stop[s], bounds[s], state, ring,
                    out_regime[s], out_trans[s], out_lr[s], out_skip[s], out_rollback[s])


@dataclass
class Compiled:
    """A spec lowered to the tables the walk reads (transitions in priority order)."""

    spec: GuardSpec
    regimes: list[str]
    trans_names: list[str]
    trees: list[conditions.Node]
    conds: list[Any]
    cond_keys: list[tuple[str, tuple[str, ...]]]   # canonical text, names read
    from_mask: np.ndarray
    leaving: np.ndarray
    to: np.ndarray
    for_: np.ndarray
    dwell: np.ndarray
    reg_lr: np.ndarray
    reg_skip: np.ndarray
    reg_rollback: np.ndarray
    reg_stop: np.ndarray
    reg_momentum: np.ndarray
    reg_cap: np.ndarray
    bounds: np.ndarray
    initial: int


class Bound(NamedTuple):
    """A transition's condition with the spec's thresholds bound in."""

    tree: conditions.Node
    fn: Callable[[Any], Any]
    text: str                     # canonical (`conditions.unparse`): equal text, equal test
    reads: tuple[str, ...]        # the signal and telemetry names it reads, sorted


@functools.lru_cache(maxsize=8192)
def _names(when: str, field: str) -> tuple[str, ...]:
    return tuple(sorted(conditions.names(conditions.parse(when, field))))


def _constants(when: str, field: str, thresholds: dict[str, float]
               ) -> tuple[tuple[str, float], ...]:
    """The thresholds a condition names, with their values: all that binding it reads."""
    return tuple((nm, thresholds[nm]) for nm in _names(when, field) if nm in thresholds)


@functools.lru_cache(maxsize=8192)
def bound_condition(when: str, field: str, constants: tuple[tuple[str, float], ...]) -> Bound:
    """Parse, bind and compile a condition once per distinct text and threshold values: a
    sweep compiles the same few conditions for every spec."""
    tree = conditions.bind(conditions.parse(when, field), dict(constants))
    return Bound(tree, conditions.compile_condition(tree), conditions.unparse(tree),
                 tuple(sorted(conditions.names(tree))))


def compile_spec(spec: GuardSpec) -> Compiled:
    """Lower a validated spec into arrays; priorities are resolved here, once."""
    regimes = list(spec.regimes)
    index = {r: i for i, r in enumerate(regimes)}
    order = sorted(range(len(spec.transitions)), key=lambda i: -spec.transitions[i].priority)
    trans = [spec.transitions[i] for i in order]
    from_mask = np.zeros((len(trans), len(regimes)), dtype=np.uint8)
    for k, t in enumerate(trans):
        for src in sources_of(t, spec):
            from_mask[k, index[src]] = 1
    bound = [bound_condition(t.when, f"transitions.{t.name}.when",
                             _constants(t.when, f"transitions.{t.name}.when", spec.thresholds))
             for t in trans]
    rs = list(spec.regimes.values())
    b = spec.bounds
    return Compiled(
        spec=spec, regimes=regimes, trans_names=[t.name for t in trans],
        trees=[b.tree for b in bound], conds=[b.fn for b in bound],
        cond_keys=[(b.text, b.reads) for b in bound], from_mask=from_mask,
        leaving=leaving_table(from_mask),
        to=np.array([index[t.to] for t in trans], dtype=np.int64),
        for_=np.array([t.for_ for t in trans], dtype=np.int64),
        dwell=np.array([t.min_dwell for t in trans], dtype=np.int64),
        reg_lr=np.array([r.lr_scale for r in rs]),
        reg_skip=np.array([r.skip for r in rs], dtype=np.uint8),
        reg_rollback=np.array([r.rollback for r in rs], dtype=np.uint8),
        reg_stop=np.array([r.stop for r in rs], dtype=np.uint8),
        reg_momentum=np.array([r.momentum_scale for r in rs]),
        reg_cap=np.array([np.inf if r.update_cap is None else r.update_cap for r in rs]),
        bounds=np.array([b.lr_scale_min, b.lr_scale_max, b.lr_slew_down, b.lr_slew_up,
                         b.max_consecutive_skips, b.max_skip_fraction, b.skip_window,
                         b.max_rollbacks], dtype=np.float64),
        initial=index[spec.initial],
    )


def leaving_table(from_mask: np.ndarray) -> np.ndarray:
    """Per regime, the transitions that leave it in priority order, -1 after the last: the
    walk tries only these (a regime has a few of a spec's transitions)."""
    leaves = from_mask.T != 0
    first = np.argsort(~leaves, axis=1, kind="stable")   # leaving ones first, in order
    return np.where(np.take_along_axis(leaves, first, axis=1), first, -1).astype(np.int64)


_NAN1 = np.full(1, np.nan)
_NAN1.flags.writeable = False


def _env(compiled: Compiled, columns: dict[str, np.ndarray], signals: dict[str, np.ndarray],
         n: int) -> dict[str, np.ndarray]:
    env = {c: columns[c] if c in columns else (_NAN1 if n == 1 else np.full(n, np.nan))
           for c in TELEMETRY}
    env.update(signals)
    return env


def evaluate_conditions(compiled: Compiled, env: dict[str, np.ndarray], n: int) -> np.ndarray:
    """Condition truth per transition and row: a (transitions, rows) uint8 matrix."""
    out = np.zeros((len(compiled.conds), n), dtype=np.uint8)
    for k, cond in enumerate(compiled.conds):
        out[k] = cond(env)
    return out


@dataclass
class Walk:
    """Raw per-row outputs of the walk for one spec."""

    regime: np.ndarray
    transition: np.ndarray
    lr_scale: np.ndarray
    skipped: np.ndarray
    rollback: np.ndarray


def _alloc(shape: tuple[int, ...]) -> Walk:
    return Walk(np.empty(shape, np.int16), np.empty(shape, np.int16), np.empty(shape),
                np.empty(shape, np.uint8), np.empty(shape, np.uint8))


def run_walk(compiled: Compiled, cond: np.ndarray, steps: np.ndarray,
             state: np.ndarray | None = None, runs: np.ndarray | None = None,
             ring: np.ndarray | None = None) -> Walk:
    """Run the walk kernel over rows; pass state/runs/ring to continue an earlier walk."""
    n = cond.shape[1]
    if state is None:
        state = initial_state(compiled)
    if runs is None:
        runs = np.zeros(cond.shape[0], dtype=np.int64)
    if ring is None:
        ring = np.zeros(int(compiled.bounds[BOUND_SKIP_WINDOW]), dtype=np.uint8)
    w = _alloc((n,))
    walk_rows(cond, steps, compiled.leaving, compiled.to, compiled.for_, compiled.dwell,
              compiled.reg_lr, compiled.reg_skip, compiled.reg_rollback, compiled.reg_stop,
              compiled.bounds, state, runs, ring,
              w.regime, w.transition, w.lr_scale, w.skipped, w.rollback)
    return w


def initial_state(compiled: Compiled) -> np.ndarray:
    state = np.zeros(STATE_LEN)
    state[STATE_REGIME] = compiled.initial
    return state


# --- replay -----------------------------------------------------------------------------------

def trace_columns(trace: pd.DataFrame) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Steps and float telemetry columns of a canonical trace (validated)."""
    if not isinstance(trace, pd.DataFrame):
        raise TraceError(f"a trace is a pandas DataFrame, got {type(trace).__name__}")
    if "step" not in trace.columns or len(trace) == 0:
        raise TraceError("trace needs a 'step' column and at least one row")
    steps = trace["step"].to_numpy()
    if steps.dtype.kind not in "iu":
        raise TraceError("column 'step' must hold integers")
    steps = steps.astype(np.int64, copy=False)
    if len(steps) > 1 and np.any(np.diff(steps) <= 0):
        raise TraceError("column 'step' must increase strictly (canonicalize the trace first)")
    columns = {}
    for c in TELEMETRY:
        if c in trace.columns:
            col = pd.to_numeric(trace[c], errors="coerce").to_numpy(np.float64, na_value=np.nan)
            columns[c] = np.ascontiguousarray(col)
    return steps, columns


def decide(spec: GuardSpec, steps: np.ndarray, columns: dict[str, np.ndarray],
           compiled: Compiled | None = None) -> tuple[Walk, dict[str, np.ndarray], np.ndarray]:
    """Signals, conditions and walk over whole arrays: the replay pipeline without pandas."""
    compiled = compiled or compile_spec(spec)
    n = steps.shape[0]
    signals = compute_signals(spec, columns, steps)
    env = _env(compiled, columns, signals, n)
    cond = evaluate_conditions(compiled, env, n)
    return run_walk(compiled, cond, steps), env, cond


def replay(trace: pd.DataFrame, spec: GuardSpec | None = None, *,
           signals: bool = False) -> pd.DataFrame:
    """Run a spec over a recorded trace; returns the trace plus the guard's columns.

    Added columns: regime, lr_scale, skipped, momentum_scale, update_cap, rollback, stop,
    transition (name of the transition that fired, '' if none) and cause (which signals
    crossed which thresholds). With `signals=True` every signal is added under its name.
    `df.attrs` holds the spec's name and hash and the telemetry the spec lacked.
    """
    spec = spec or GuardSpec.default()
    steps, columns = trace_columns(trace)
    compiled = compile_spec(spec)
    walk, env, _ = decide(spec, steps, columns, compiled)
    out = trace.copy()
    annotate(out, compiled, walk, env)
    if signals:
        for name in spec.signals:
            out[name] = env[name]
    out.attrs.update(spec=spec.name, spec_hash=spec.hash,
                     missing=missing_sources(spec, columns))
    return out


def decision_columns(compiled: Compiled, walk: Walk, env: dict[str, np.ndarray],
                     categorical: bool = True) -> dict[str, Any]:
    """The guard's columns (DECISION_COLUMNS) for rows of a walk; causes read `env`.
    `categorical=False`: regime, transition and cause as lists of str (`last_row`'s one
    row, without the cost of building three Categoricals)."""
    regime = walk.regime.astype(np.int64)
    trans = walk.transition.astype(np.int64)
    fired = np.flatnonzero(trans >= 0)
    texts = [cause_text(compiled, int(trans[t]), env, int(t)) for t in fired]
    categories = ["", *dict.fromkeys(texts)]
    lookup = {text: i for i, text in enumerate(categories)}
    codes = np.zeros(len(regime), dtype=np.int32)
    codes[fired] = [lookup[text] for text in texts]
    cat = ((lambda c, names: pd.Categorical.from_codes(c, categories=names)) if categorical
           else (lambda c, names: [names[i] for i in c]))
    values = (
        cat(regime, compiled.regimes),
        np.asarray(walk.lr_scale, dtype=np.float64),
        walk.skipped.astype(bool),
        compiled.reg_momentum[regime],
        compiled.reg_cap[regime],
        walk.rollback.astype(bool),
        compiled.reg_stop[regime].astype(bool),
        cat(trans + 1, ["", *compiled.trans_names]),
        cat(codes, categories),
    )
    return dict(zip(DECISION_COLUMNS, values, strict=True))


def annotate(df: pd.DataFrame, compiled: Compiled, walk: Walk,
             env: dict[str, np.ndarray]) -> None:
    """Add the guard's columns to `df` (one row per walked row): the one trace builder,
    used by replay, sweeps and both online backends."""
    for name, col in decision_columns(compiled, walk, env).items():
        df[name] = col


def cause_text(compiled: Compiled, k: int, env: dict[str, np.ndarray], t: int) -> str:
    """Which signals crossed which thresholds, e.g. `grad_z=9.31 > 8 (for 1)`."""
    parts = []
    for c in conditions.comparisons(compiled.trees[k]):
        value = float(env[c.signal][t]) if c.signal in env else float("nan")
        holds = conditions.CMP_OPS[c.op](value, c.threshold) == c.positive
        op = c.op if c.positive else COMPLEMENT[c.op]   # `not x >= t` reads `x < t`
        if holds:
            parts.append(f"{c.signal}={value:.4g} {op} {c.threshold:g}")
    spec_t = next(t_ for t_ in compiled.spec.transitions if t_.name == compiled.trans_names[k])
    text = " and ".join(parts) if parts else conditions.unparse(compiled.trees[k])
    return f"{text} (for {spec_t.for_})"


# --- online: one interface, two backends ---------------------------------------------------

@dataclass
class Decision:
    """The guard's controls for one step: one record for both backends.

    On the host backend the fields are Python values. On the torch backend they are 0-d
    tensors on the training device (`regime` and `transition` are indices into
    `compiled.regimes` / `compiled.trans_names`, -1 for no transition), and `reason` and
    `cause` are '' (they are written into the trace, read back in batches).
    """

    step: int
    regime: Any
    lr_scale: Any
    skip: Any
    momentum_scale: Any
    update_cap: Any
    rollback: Any
    skip_batches: Any
    stop: Any
    initial: Any          # in the spec's initial regime (the only one that takes snapshots)
    reason: str = ""
    transition: Any = ""
    cause: str = ""


class Guard(Protocol):
    """What a training loop sees of the guard, whichever backend decides."""

    spec: GuardSpec

    def observe(self, step: int, **telemetry: Any) -> Decision: ...
    def trace(self, signals: bool = False, start: int = 0) -> pd.DataFrame: ...
    def last_row(self, signals: bool = False) -> dict[str, Any]: ...
    def stop_reason(self) -> str: ...
    def set_spec(self, spec: GuardSpec) -> None: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, sd: dict[str, Any]) -> None: ...


#: Layout of one logged row (float64): step, telemetry, the walk's outputs, then the signals.
LOG_HEAD = ("step", *TELEMETRY)
LOG_WALK = ("regime", "transition", "lr_scale", "skipped", "rollback")


def log_columns(spec: GuardSpec) -> tuple[str, ...]:
    return (*LOG_HEAD, *LOG_WALK, *(f"signal:{name}" for name in spec.signals))


class StepLog:
    """Logged rows as Python floats (host backend); `matrix()` stacks them."""

    def __init__(self, width: int):
        self.width = width
        self.rows: list[list[float]] = []

    def append(self, row: list[float]) -> None:
        self.rows.append(row)

    def __len__(self) -> int:
        return len(self.rows)

    def matrix(self, last: bool = False, start: int = 0) -> np.ndarray:
        """Rows `start:` (`last`: only the latest) as one float64 matrix."""
        rows = self.rows[-1:] if last else self.rows[start:]
        return np.array(rows, dtype=np.float64).reshape(len(rows), self.width)

    def state_dict(self) -> list[list[float]]:
        return [list(r) for r in self.rows]

    def load_state_dict(self, rows: list[list[float]]) -> None:
        self.rows = [list(r) for r in rows]


def _columns(compiled: Compiled, m: np.ndarray, signals: bool = False,
             categorical: bool = True) -> dict[str, Any]:
    """Columns of logged rows: telemetry, the decision (via `decision_columns`), spec hash,
    and with `signals` each signal under its name (the values the live decision saw)."""
    head, walk_at = len(LOG_HEAD), len(LOG_HEAD) + len(LOG_WALK)
    env = {c: m[:, 1 + i] for i, c in enumerate(TELEMETRY)}
    env.update({name: m[:, walk_at + i] for i, name in enumerate(compiled.spec.signals)})
    w = m[:, head:walk_at]
    walk = Walk(w[:, 0].astype(np.int16), w[:, 1].astype(np.int16), w[:, 2],
                w[:, 3].astype(np.uint8), w[:, 4].astype(np.uint8))
    cols: dict[str, Any] = {"step": m[:, 0].astype(np.int64)}
    cols.update({c: env[c] for c in TELEMETRY})
    cols.update(decision_columns(compiled, walk, env, categorical))
    cols["spec_hash"] = np.full(len(m), compiled.spec.hash, dtype=object)
    if signals:
        cols.update({name: env[name] for name in compiled.spec.signals})
    return cols


def trace_frame(segments: Sequence[tuple[Compiled, np.ndarray]], signals: bool = False,
                start: int = 0) -> pd.DataFrame:
    """The online backends' trace: logged rows, one block per spec used (`set_spec`).

    `signals`: add each signal's column (the union over the specs; NaN in a block whose
    spec lacks it). `start`: the blocks hold rows `start:` of the run (the index says so),
    so a logger reads only its new rows."""
    parts = [pd.DataFrame(_columns(c, m, signals)) for c, m in segments if len(m)]
    if not parts:     # nothing observed yet: the columns, no rows
        c = segments[-1][0]
        parts = [pd.DataFrame(_columns(c, np.zeros((0, len(log_columns(c.spec)))), signals))]
    if len(parts) == 1:
        df = parts[0]
    else:
        df = pd.concat(parts, ignore_index=True)
        for col in ("regime", "transition", "cause"):
            df[col] = union_categoricals([p[col] for p in parts])
    if start:
        df.index = pd.RangeIndex(start, start + len(df))
    empty = [c for c in TELEMETRY if df[c].isna().all()]
    return df.drop(columns=empty)


def log_tail(segments: Sequence[tuple[Compiled, Any]],
             start: int) -> list[tuple[Compiled, np.ndarray]]:
    """Each segment's logged rows from run row `start` on (its log's `matrix(start=…)`)."""
    out, offset = [], 0
    for c, log in segments:
        n = len(log)
        if offset + n > start:
            out.append((c, log.matrix(start=max(start - offset, 0))))
        offset += n
    return out or [(segments[-1][0], np.zeros((0, len(log_columns(segments[-1][0].spec)))))]


def last_row(compiled: Compiled, m: np.ndarray, signals: bool = False) -> dict[str, Any]:
    """The latest logged row as host scalars (the same builder as `trace_frame`)."""
    if not len(m):
        return {}
    return {k: (v[-1].item() if isinstance(v, np.ndarray) and v.dtype != object else v[-1])
            for k, v in _columns(compiled, m[-1:], signals, categorical=False).items()}


class OnlineGuard:
    """The host backend: the numba walk one step at a time, bit-identical to `replay`.

    `observe(step, loss=…, grad_norm=…)` returns the Decision for that step's update
    (telemetry as floats or 0-d tensors). `set_spec` swaps the spec mid-run (thresholds
    edited live): signal state is kept for signals whose definition is unchanged, the
    regime is kept by name; the trace records each row's `spec_hash`.
    """

    def __init__(self, spec: GuardSpec):
        self.spec = spec
        self.compiled = compile_spec(spec)
        self.sig_state = new_state(len(spec.signals))
        self.walk_state = initial_state(self.compiled)
        self.runs = np.zeros(len(self.compiled.trans_names), dtype=np.int64)
        self.ring = np.zeros(int(self.compiled.bounds[BOUND_SKIP_WINDOW]), dtype=np.uint8)
        self.segments: list[tuple[Compiled, StepLog]] = [(self.compiled, self._log())]
        self._last_step: int | None = None

    def _log(self) -> StepLog:
        return StepLog(len(log_columns(self.spec)))

    @property
    def regime(self) -> str:
        return self.compiled.regimes[int(self.walk_state[STATE_REGIME])]

    def observe(self, step: int, **telemetry: Any) -> Decision:
        step = int(step)
        if self._last_step is not None and step <= self._last_step:
            raise ValueError(f"steps must increase: got {step} after {self._last_step}")
        self._last_step = step
        steps = np.array([step], dtype=np.int64)
        values = {k: float(v) for k, v in telemetry.items() if k in TELEMETRY and v is not None}
        columns = {k: np.array([v]) for k, v in values.items()}
        signals = compute_signals(self.spec, columns, steps, self.sig_state)
        env = _env(self.compiled, columns, signals, 1)
        # numpy scalars compare exactly like array elements, at a tenth of the cost
        cond = evaluate_conditions(self.compiled, {k: v[0] for k, v in env.items()}, 1)
        w = run_walk(self.compiled, cond, steps, self.walk_state, self.runs, self.ring)
        self.segments[-1][1].append(
            [float(step), *(values.get(c, np.nan) for c in TELEMETRY), float(w.regime[0]),
             float(w.transition[0]), float(w.lr_scale[0]), float(w.skipped[0]),
             float(w.rollback[0]), *(float(v[0]) for v in signals.values())])
        return self._decision(step, w, env)

    def _decision(self, step: int, w: Walk, env: dict) -> Decision:
        c = self.compiled
        r, k = int(w.regime[0]), int(w.transition[0])
        name = c.regimes[r]
        regime = self.spec.regimes[name]
        return Decision(step=step, regime=name, lr_scale=float(w.lr_scale[0]),
                        skip=bool(w.skipped[0]), momentum_scale=float(c.reg_momentum[r]),
                        update_cap=float(c.reg_cap[r]), rollback=bool(w.rollback[0]),
                        skip_batches=regime.skip_batches if w.rollback[0] else 0,
                        stop=bool(c.reg_stop[r]), initial=r == c.initial,
                        reason=regime.reason if c.reg_stop[r] else "",
                        transition=c.trans_names[k] if k >= 0 else "",
                        cause=cause_text(c, k, env, 0) if k >= 0 else "")

    def trace(self, signals: bool = False, start: int = 0) -> pd.DataFrame:
        """Everything observed and decided so far, in the canonical trace schema; `signals`
        adds each signal's column, `start` keeps only rows `start:` (see `trace_frame`)."""
        return trace_frame(log_tail(self.segments, start), signals, start)

    def last_row(self, signals: bool = False) -> dict[str, Any]:
        """The latest step's trace row as host values (`signals`: with the signals)."""
        c, log = self.segments[-1]
        return last_row(c, log.matrix(last=True), signals)

    def stop_reason(self) -> str:
        """Why the guard stopped the run ('' while it has not)."""
        r = int(self.walk_state[STATE_REGIME])
        if not (self.walk_state[STATE_STOPPED] or self.compiled.reg_stop[r]):
            return ""
        return self.spec.regimes[self.regime].reason or f"regime {self.regime}"

    def set_spec(self, spec: GuardSpec) -> None:
        """Swap in an edited spec; it takes effect at the next observation."""
        old, old_names = self.spec, self.compiled.trans_names
        old_state, old_runs, regime = self.sig_state, self.runs, self.regime
        self.spec, self.compiled = spec, compile_spec(spec)
        self.sig_state = new_state(len(spec.signals))
        for i, (name, sig) in enumerate(spec.signals.items()):
            if old.signals.get(name) == sig:
                self.sig_state[i] = old_state[list(old.signals).index(name)]
        self.runs = np.array([old_runs[old_names.index(n)] if n in old_names else 0
                              for n in self.compiled.trans_names], dtype=np.int64)
        if regime in spec.regimes:
            self.walk_state[STATE_REGIME] = self.compiled.regimes.index(regime)
        else:
            self.walk_state[STATE_REGIME] = self.compiled.initial
            self.walk_state[STATE_ENTERED] = self._last_step or 0
        window = int(self.compiled.bounds[BOUND_SKIP_WINDOW])
        if window != self.ring.shape[0]:
            self.ring = np.zeros(window, dtype=np.uint8)
            self.walk_state[STATE_SKIPS_IN_WINDOW] = self.walk_state[STATE_WINDOW_POS] = 0
        self.segments.append((self.compiled, self._log()))

    def state_dict(self) -> dict[str, Any]:
        """Plain Python data only (no numpy), so `torch.load(weights_only=True)` accepts it."""
        return {"spec": self.spec.to_dict(), "sig_state": self.sig_state.tolist(),
                "walk_state": self.walk_state.tolist(), "runs": self.runs.tolist(),
                "ring": self.ring.tolist(), "last_step": self._last_step,
                "segments": [{"spec": c.spec.to_dict(), "rows": log.state_dict()}
                             for c, log in self.segments]}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.spec = GuardSpec.from_dict(sd["spec"])
        self.compiled = compile_spec(self.spec)
        saved = np.array(sd["sig_state"], dtype=np.float64).reshape(len(self.spec.signals), -1)
        self.sig_state = new_state(len(self.spec.signals))   # older states: fewer columns
        self.sig_state[:, :saved.shape[1]] = saved
        self.walk_state = np.array(sd["walk_state"], dtype=np.float64)
        self.runs = np.array(sd["runs"], dtype=np.int64)
        self.ring = np.array(sd["ring"], dtype=np.uint8)
        self._last_step = sd["last_step"]
        self.segments = []
        for i, seg in enumerate(sd["segments"]):
            last = i == len(sd["segments"]) - 1
            spec = self.spec if last else GuardSpec.from_dict(seg["spec"])
            log = StepLog(len(log_columns(spec)))
            log.load_state_dict(seg["rows"])
            self.segments.append((self.compiled if last else compile_spec(spec), log))


# --- batched ----------------------------------------------------------------------------------

class RunCounts:
    """Debounce counts (`debounce_kernel`) of distinct conditions, one int32 row each.

    A chunk of specs asks for the conditions it reads; rows the chunk does not read are
    reused for its new ones. Neighbouring grid points share most conditions, so each is
    counted about once per sweep, and memory stays bounded by a chunk, not the sweep.
    """

    def __init__(self, n: int):
        self.counts = np.empty((0, n), dtype=np.int32)
        self.row: dict[Hashable, int] = {}

    def hold(self, truth: dict[Hashable, Callable[[], np.ndarray]]) -> None:
        """Make `row[key]` the counts of each key's condition (`truth[key]()` evaluates it)."""
        self.row = {key: r for key, r in self.row.items() if key in truth}
        new = [key for key in truth if key not in self.row]
        free = sorted(set(range(len(self.counts))) - set(self.row.values()))
        if len(new) > len(free):
            free += self._grow(len(new) - len(free))
        for key, r in zip(new, free):
            debounce_kernel(truth[key]()[None], np.zeros(1, dtype=np.int64),
                            self.counts[r:r + 1])
            self.row[key] = r

    def _grow(self, extra: int) -> list[int]:
        old = len(self.counts)
        counts = np.empty((max(2 * old, old + extra), self.counts.shape[1]), dtype=np.int32)
        counts[:old] = self.counts
        self.counts = counts
        return list(range(old, len(counts)))


class SignalCache:
    """Signals and debounce counts shared across specs that define them identically."""

    def __init__(self, steps: np.ndarray, columns: dict[str, np.ndarray]):
        self.steps, self.columns = steps, columns
        n = steps.shape[0]
        self._telemetry = {c: columns.get(c, np.full(n, np.nan)) for c in TELEMETRY}
        self._signals: dict[Any, np.ndarray] = {}
        self._ids: dict[Any, int] = {}          # signal definition -> number
        self.runs = RunCounts(n)

    def env(self, spec: GuardSpec) -> dict[str, np.ndarray]:
        env = dict(self._telemetry)
        for name, sig in spec.signals.items():
            if sig not in self._signals:
                self._signals[sig] = compute_signal(sig, self.columns, self.steps)
            env[name] = self._signals[sig]
        return env

    def condition(self, compiled: Compiled, k: int) -> np.ndarray:
        """Transition k's condition truth over the trace (uint8)."""
        truth = compiled.conds[k](self.env(compiled.spec))
        return np.broadcast_to(truth, self.steps.shape).astype(np.uint8)

    def condition_keys(self, compiled: Compiled) -> list[Hashable]:
        """Per transition, what its condition's truth depends on: the bound condition's
        text and the definitions of the signals it reads (by number, so that a signal's
        definition is hashed once a spec, not once a condition)."""
        ids = {nm: self._ids.setdefault(sig, len(self._ids))
               for nm, sig in compiled.spec.signals.items()}
        return [(text, tuple(ids.get(nm, -1) for nm in reads))
                for text, reads in compiled.cond_keys]

    def run_rows(self, comps: Sequence[Compiled]) -> np.ndarray:
        """(spec, transition) -> row of `runs.counts`: equal conditions over equal signals
        share one row, counted once."""
        keys = [self.condition_keys(c) for c in comps]
        truth: dict[Hashable, Callable[[], np.ndarray]] = {}
        for c, ks in zip(comps, keys):
            for k, key in enumerate(ks):
                truth.setdefault(key, lambda c=c, k=k: self.condition(c, k))
        self.runs.hold(truth)
        rows = np.zeros((len(comps), max(map(len, keys))), dtype=np.int64)
        for i, ks in enumerate(keys):
            rows[i, :len(ks)] = [self.runs.row[key] for key in ks]
        return rows


def batch_tables(comps: Sequence[Compiled]) -> dict[str, np.ndarray]:
    """The walk's tables of several specs stacked (leading axis = spec), zero-padded to the
    largest; a padded transition is never tried, since no `leaving` row names it."""
    n_k = max(len(c.trans_names) for c in comps)
    n_r = max(len(c.regimes) for c in comps)
    tables = {"leaving": np.full((len(comps), n_r, n_k), -1, dtype=np.int64)}
    for name, dtype, width in (("to", np.int64, n_k), ("for_", np.int64, n_k),
                               ("dwell", np.int64, n_k), ("reg_lr", np.float64, n_r),
                               ("reg_skip", np.uint8, n_r), ("reg_rollback", np.uint8, n_r),
                               ("reg_stop", np.uint8, n_r), ("bounds", np.float64, 8)):
        tables[name] = np.zeros((len(comps), width), dtype=dtype)
    for i, c in enumerate(comps):
        tables["leaving"][i, :len(c.regimes), :len(c.trans_names)] = c.leaving
        for name in tables.keys() - {"leaving"}:
            value = getattr(c, name)
            tables[name][i, :len(value)] = value
    tables["initial"] = np.array([c.initial for c in comps], dtype=np.int64)
    return tables


def iter_walks(trace: pd.DataFrame, specs: Sequence[GuardSpec],
               chunk: int = 16) -> Iterator[tuple[int, Compiled, Walk, SignalCache]]:
    """Walk many specs over one trace, `chunk` specs at a time in parallel."""
    steps, columns = trace_columns(trace)
    cache = SignalCache(steps, columns)
    for start in range(0, len(specs), chunk):
        comps = [compile_spec(s) for s in specs[start:start + chunk]]
        rows = cache.run_rows(comps)
        t = batch_tables(comps)
        w = _alloc((len(comps), steps.shape[0]))
        walk_batch(cache.runs.counts, rows, t["leaving"], steps, t["to"], t["for_"],
                   t["dwell"], t["reg_lr"], t["reg_skip"], t["reg_rollback"], t["reg_stop"],
                   t["bounds"], t["initial"],
                   w.regime, w.transition, w.lr_scale, w.skipped, w.rollback)
        for i, c in enumerate(comps):
            yield start + i, c, Walk(w.regime[i], w.transition[i], w.lr_scale[i],
                                     w.skipped[i], w.rollback[i]), cache


def replay_many(trace: pd.DataFrame, specs: Sequence[GuardSpec]) -> list[pd.DataFrame]:
    """`replay` for several specs through the batched engine (same results, shared signals)."""
    out: list[pd.DataFrame] = [pd.DataFrame()] * len(specs)
    for i, compiled, walk, cache in iter_walks(trace, specs):
        df = trace.copy()
        annotate(df, compiled, walk, cache.env(compiled.spec))
        df.attrs.update(spec=compiled.spec.name, spec_hash=compiled.spec.hash)
        out[i] = df
    return out
