"""The guard engine: one semantics, three uses — replay, online stepping, batched sweeps.

A step is decided in three stages:
1. signals (signals.py) — causal estimators over telemetry, independent of the regime;
2. conditions — each transition's condition over the signals, evaluated as whole arrays;
3. the walk — the only sequential part: debounce counters, dwell, priority, the regime,
   and the bounded controls (LR slew, skip limits, rollback budget, stop).
Stage 3 is one numba kernel (`walk_kernel`) with explicit state. Replay runs it over a
whole trace, `OnlineGuard` runs it one row at a time with carried state, and `walk_batch`
runs it for many specs in parallel; all three therefore give the same decisions.

Decision timing: the controls of row t are decided from the telemetry of row t (loss and
gradient of that step, before its update is applied) and apply to that same update.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np
import pandas as pd

from lbw_sim.errors import TraceError
from lbw_sim.guard import conditions as C
from lbw_sim.guard.signals import compute_signal, compute_signals, missing_sources, new_state
from lbw_sim.guard.spec import TELEMETRY, GuardSpec, sources_of

# bounds vector layout
B_LO, B_HI, B_DOWN, B_UP, B_CONSEC, B_FRAC, B_WINDOW, B_ROLLBACKS = range(8)
# walk state layout
S_REGIME, S_ENTERED, S_LR, S_CONSEC, S_WCOUNT, S_WPOS, S_ROLLBACKS, S_STOPPED, S_INIT = range(9)
STATE_LEN = 9
COMPLEMENT = {">=": "<", ">": "<=", "<": ">=", "<=": ">", "==": "!=", "!=": "=="}


@numba.njit(cache=True, nogil=True)
def walk_kernel(cond, steps, from_mask, to, for_, dwell, reg_lr, reg_skip, reg_rollback,
                reg_stop, bounds, state, runs, ring,
                out_regime, out_trans, out_lr, out_skip, out_rollback):  # pragma: no cover
    """Walk the regime machine over rows of precomputed condition truth (state in place).

    Transitions are ordered by priority (highest first): the first that may fire wins.
    A transition may fire when its condition has held for `for_` consecutive rows, the
    current regime is one of its sources, and the regime was entered >= `dwell` steps ago.
    A stop regime is absorbing. Skips are limited by the consecutive and windowed bounds;
    a rollback fires on entry into a rollback regime while the rollback budget lasts.
    """
    n_trans, n_rows = cond.shape
    lo, hi = bounds[B_LO], bounds[B_HI]
    window = ring.shape[0]
    if state[S_INIT] == 0.0:
        state[S_ENTERED] = steps[0] if n_rows > 0 else 0
        state[S_LR] = min(max(reg_lr[int(state[S_REGIME])], lo), hi)
        state[S_INIT] = 1.0
    regime = int(state[S_REGIME])
    entered = state[S_ENTERED]
    lr_prev = state[S_LR]
    consec = int(state[S_CONSEC])
    wcount = int(state[S_WCOUNT])
    wpos = int(state[S_WPOS])
    n_rollbacks = int(state[S_ROLLBACKS])
    stopped = state[S_STOPPED] != 0.0
    for t in range(n_rows):
        for k in range(n_trans):
            runs[k] = runs[k] + 1 if cond[k, t] else 0
        fired = -1
        if not stopped:
            for k in range(n_trans):
                if (from_mask[k, regime] and runs[k] >= for_[k] and to[k] != regime
                        and steps[t] - entered >= dwell[k]):
                    fired = k
                    break
        rollback = False
        if fired >= 0:
            regime = to[fired]
            entered = steps[t]
            if reg_rollback[regime] and n_rollbacks < bounds[B_ROLLBACKS]:
                rollback = True
                n_rollbacks += 1
            if reg_stop[regime]:
                stopped = True
        target = min(max(reg_lr[regime], lo), hi)
        lr = min(max(target, lr_prev * bounds[B_DOWN]), lr_prev * bounds[B_UP])
        lr = min(max(lr, lo), hi)
        skip = reg_skip[regime] != 0
        if skip and consec >= bounds[B_CONSEC]:
            skip = False
        if skip and wcount + 1 > bounds[B_FRAC] * window:
            skip = False
        skip = skip or rollback or stopped
        wcount += int(skip) - int(ring[wpos])
        ring[wpos] = skip
        wpos = (wpos + 1) % window
        consec = consec + 1 if skip else 0
        out_regime[t] = regime
        out_trans[t] = fired
        out_lr[t] = lr
        out_skip[t] = skip
        out_rollback[t] = rollback
        lr_prev = lr
    state[S_REGIME] = regime
    state[S_ENTERED] = entered
    state[S_LR] = lr_prev
    state[S_CONSEC] = consec
    state[S_WCOUNT] = wcount
    state[S_WPOS] = wpos
    state[S_ROLLBACKS] = n_rollbacks
    state[S_STOPPED] = 1.0 if stopped else 0.0


@numba.njit(cache=True, parallel=True)
def walk_batch(cond, steps, from_mask, to, for_, dwell, reg_lr, reg_skip, reg_rollback,
               reg_stop, bounds, initial,
               out_regime, out_trans, out_lr, out_skip, out_rollback):  # pragma: no cover
    """`walk_kernel` for many specs at once (leading axis = spec), in parallel."""
    for s in numba.prange(cond.shape[0]):
        state = np.zeros(STATE_LEN)
        state[S_REGIME] = initial[s]
        runs = np.zeros(cond.shape[1], dtype=np.int64)
        ring = np.zeros(max(int(bounds[s, B_WINDOW]), 1), dtype=np.uint8)
        walk_kernel(cond[s], steps, from_mask[s], to[s], for_[s], dwell[s], reg_lr[s],
                    reg_skip[s], reg_rollback[s], reg_stop[s], bounds[s], state, runs, ring,
                    out_regime[s], out_trans[s], out_lr[s], out_skip[s], out_rollback[s])


@dataclass
class Compiled:
    """A spec lowered to the tables the walk reads (transitions in priority order)."""

    spec: GuardSpec
    regimes: list[str]
    trans_names: list[str]
    trees: list[C.Node]
    conds: list[Any]
    from_mask: np.ndarray
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
    trees = [C.bind(C.parse(t.when, f"transitions.{t.name}.when"), spec.thresholds)
             for t in trans]
    rs = list(spec.regimes.values())
    b = spec.bounds
    return Compiled(
        spec=spec, regimes=regimes, trans_names=[t.name for t in trans], trees=trees,
        conds=[C.compile_condition(tree) for tree in trees], from_mask=from_mask,
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
        ring = np.zeros(int(compiled.bounds[B_WINDOW]), dtype=np.uint8)
    w = _alloc((n,))
    walk_kernel(cond, steps, compiled.from_mask, compiled.to, compiled.for_, compiled.dwell,
                compiled.reg_lr, compiled.reg_skip, compiled.reg_rollback, compiled.reg_stop,
                compiled.bounds, state, runs, ring,
                w.regime, w.transition, w.lr_scale, w.skipped, w.rollback)
    return w


def initial_state(compiled: Compiled) -> np.ndarray:
    state = np.zeros(STATE_LEN)
    state[S_REGIME] = compiled.initial
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
    _annotate(out, compiled, walk, env)
    if signals:
        for name in spec.signals:
            out[name] = env[name]
    out.attrs.update(spec=spec.name, spec_hash=spec.hash,
                     missing=missing_sources(spec, columns))
    return out


def _annotate(df: pd.DataFrame, compiled: Compiled, walk: Walk,
              env: dict[str, np.ndarray]) -> None:
    regime = walk.regime.astype(np.int64)
    df["regime"] = pd.Categorical.from_codes(regime, categories=compiled.regimes)
    df["lr_scale"] = walk.lr_scale
    df["skipped"] = walk.skipped.astype(bool)
    df["momentum_scale"] = compiled.reg_momentum[regime]
    df["update_cap"] = compiled.reg_cap[regime]
    df["rollback"] = walk.rollback.astype(bool)
    df["stop"] = compiled.reg_stop[regime].astype(bool)
    trans = walk.transition.astype(np.int64)
    df["transition"] = pd.Categorical.from_codes(trans + 1, categories=[""] +
                                                 compiled.trans_names)
    fired = np.flatnonzero(trans >= 0)
    texts = [cause_text(compiled, int(trans[t]), env, int(t)) for t in fired]
    categories = ["", *dict.fromkeys(texts)]
    lookup = {text: i for i, text in enumerate(categories)}
    codes = np.zeros(len(df), dtype=np.int32)
    codes[fired] = [lookup[text] for text in texts]
    df["cause"] = pd.Categorical.from_codes(codes, categories=categories)


def cause_text(compiled: Compiled, k: int, env: dict[str, np.ndarray], t: int) -> str:
    """Which signals crossed which thresholds, e.g. `grad_z=9.31 > 8 (for 1)`."""
    parts = []
    for c in C.comparisons(compiled.trees[k]):
        value = float(env[c.signal][t]) if c.signal in env else float("nan")
        holds = C.CMP_OPS[c.op](value, c.threshold) == c.positive
        op = c.op if c.positive else COMPLEMENT[c.op]   # `not x >= t` reads `x < t`
        if holds:
            parts.append(f"{c.signal}={value:.4g} {op} {c.threshold:g}")
    spec_t = next(t_ for t_ in compiled.spec.transitions if t_.name == compiled.trans_names[k])
    text = " and ".join(parts) if parts else C.unparse(compiled.trees[k])
    return f"{text} (for {spec_t.for_})"


# --- online -----------------------------------------------------------------------------------

@dataclass
class Decision:
    """The guard's controls for one step."""

    step: int
    regime: str
    lr_scale: float
    skip: bool
    momentum_scale: float
    update_cap: float
    rollback: bool
    skip_batches: int
    stop: bool
    reason: str = ""
    transition: str = ""
    cause: str = ""


@dataclass
class OnlineGuard:
    """The engine one step at a time, for a training loop; bit-identical to `replay`.

    `observe(step, loss=…, grad_norm=…)` returns the Decision for that step's update.
    `set_spec` swaps the spec mid-run (thresholds edited live): signal state is kept for
    signals whose definition is unchanged, the regime is kept by name.
    """

    spec: GuardSpec
    history: dict[str, list] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.compiled = compile_spec(self.spec)
        self.sig_state = new_state(len(self.spec.signals))
        self.walk_state = initial_state(self.compiled)
        self.runs = np.zeros(len(self.compiled.trans_names), dtype=np.int64)
        self.ring = np.zeros(int(self.compiled.bounds[B_WINDOW]), dtype=np.uint8)
        self.history = {k: [] for k in ("step", *TELEMETRY, "regime", "lr_scale", "skipped",
                                        "momentum_scale", "update_cap", "rollback", "stop",
                                        "transition", "cause", "spec_hash")}
        self._last_step: int | None = None

    @property
    def regime(self) -> str:
        return self.compiled.regimes[int(self.walk_state[S_REGIME])]

    def observe(self, step: int, **telemetry: float) -> Decision:
        step = int(step)
        if self._last_step is not None and step <= self._last_step:
            raise ValueError(f"steps must increase: got {step} after {self._last_step}")
        self._last_step = step
        steps = np.array([step], dtype=np.int64)
        columns = {k: np.array([float(v)]) for k, v in telemetry.items()
                   if k in TELEMETRY and v is not None}
        signals = compute_signals(self.spec, columns, steps, self.sig_state)
        env = _env(self.compiled, columns, signals, 1)
        # numpy scalars compare exactly like array elements, at a tenth of the cost
        cond = evaluate_conditions(self.compiled, {k: v[0] for k, v in env.items()}, 1)
        w = run_walk(self.compiled, cond, steps, self.walk_state, self.runs, self.ring)
        return self._decision(step, w, env, telemetry)

    def _decision(self, step: int, w: Walk, env: dict, telemetry: dict) -> Decision:
        c = self.compiled
        r, k = int(w.regime[0]), int(w.transition[0])
        name = c.regimes[r]
        regime = self.spec.regimes[name]
        d = Decision(step=step, regime=name, lr_scale=float(w.lr_scale[0]),
                     skip=bool(w.skipped[0]), momentum_scale=float(c.reg_momentum[r]),
                     update_cap=float(c.reg_cap[r]), rollback=bool(w.rollback[0]),
                     skip_batches=regime.skip_batches if w.rollback[0] else 0,
                     stop=bool(c.reg_stop[r]), reason=regime.reason if c.reg_stop[r] else "",
                     transition=c.trans_names[k] if k >= 0 else "",
                     cause=cause_text(c, k, env, 0) if k >= 0 else "")
        h = self.history
        h["step"].append(step)
        for col in TELEMETRY:
            v = telemetry.get(col)
            h[col].append(np.nan if v is None else float(v))
        h["regime"].append(name)
        h["lr_scale"].append(d.lr_scale)
        h["skipped"].append(d.skip)
        h["momentum_scale"].append(d.momentum_scale)
        h["update_cap"].append(d.update_cap)
        h["rollback"].append(d.rollback)
        h["stop"].append(d.stop)
        h["transition"].append(d.transition)
        h["cause"].append(d.cause)
        h["spec_hash"].append(self.spec.hash)
        return d

    def trace(self) -> pd.DataFrame:
        """Everything observed and decided so far, in the canonical trace schema."""
        df = pd.DataFrame(self.history)
        seen = [r for r in dict.fromkeys(self.history["regime"]) if r not in self.compiled.regimes]
        df["regime"] = pd.Categorical(df["regime"], categories=self.compiled.regimes + seen)
        telemetry = [c for c in TELEMETRY if df[c].isna().all()]
        return df.drop(columns=telemetry)

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
            self.walk_state[S_REGIME] = self.compiled.regimes.index(regime)
        else:
            self.walk_state[S_REGIME] = self.compiled.initial
            self.walk_state[S_ENTERED] = self._last_step or 0
        window = int(self.compiled.bounds[B_WINDOW])
        if window != self.ring.shape[0]:
            self.ring = np.zeros(window, dtype=np.uint8)
            self.walk_state[S_WCOUNT] = self.walk_state[S_WPOS] = 0

    def state_dict(self) -> dict[str, Any]:
        """Plain Python data only (no numpy), so `torch.load(weights_only=True)` accepts it."""
        return {"spec": self.spec.to_dict(), "sig_state": self.sig_state.tolist(),
                "walk_state": self.walk_state.tolist(), "runs": self.runs.tolist(),
                "ring": self.ring.tolist(), "last_step": self._last_step,
                "history": {k: list(v) for k, v in self.history.items()}}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.spec = GuardSpec.from_dict(sd["spec"])
        self.compiled = compile_spec(self.spec)
        self.sig_state = np.array(sd["sig_state"], dtype=np.float64)
        self.walk_state = np.array(sd["walk_state"], dtype=np.float64)
        self.runs = np.array(sd["runs"], dtype=np.int64)
        self.ring = np.array(sd["ring"], dtype=np.uint8)
        self._last_step = sd["last_step"]
        if "history" in sd:
            self.history = {k: list(v) for k, v in sd["history"].items()}


# --- batched ----------------------------------------------------------------------------------

class SignalCache:
    """Signals and condition arrays shared across specs that define them identically."""

    def __init__(self, steps: np.ndarray, columns: dict[str, np.ndarray]):
        self.steps, self.columns = steps, columns
        n = steps.shape[0]
        self._telemetry = {c: columns.get(c, np.full(n, np.nan)) for c in TELEMETRY}
        self._signals: dict[Any, np.ndarray] = {}
        self._conds: dict[Any, np.ndarray] = {}

    def env(self, spec: GuardSpec) -> dict[str, np.ndarray]:
        env = dict(self._telemetry)
        for name, sig in spec.signals.items():
            if sig not in self._signals:
                self._signals[sig] = compute_signal(sig, self.columns, self.steps)
            env[name] = self._signals[sig]
        return env

    def conditions(self, compiled: Compiled, out: np.ndarray) -> None:
        """Fill out[k] with transition k's condition truth, reusing equal conditions."""
        spec, n = compiled.spec, self.steps.shape[0]
        env = None
        for k, tree in enumerate(compiled.trees):
            key = (tree, tuple((nm, spec.signals.get(nm)) for nm in sorted(C.names(tree))))
            if key not in self._conds:
                env = env or self.env(spec)
                self._conds[key] = np.broadcast_to(compiled.conds[k](env), (n,)).astype(np.uint8)
            out[k] = self._conds[key]


def iter_walks(trace: pd.DataFrame, specs: Sequence[GuardSpec],
               chunk: int = 16) -> Iterator[tuple[int, Compiled, Walk, SignalCache]]:
    """Walk many specs over one trace, `chunk` specs at a time in parallel."""
    steps, columns = trace_columns(trace)
    cache = SignalCache(steps, columns)
    n = steps.shape[0]
    for start in range(0, len(specs), chunk):
        comps = [compile_spec(s) for s in specs[start:start + chunk]]
        n_k = max(len(c.trans_names) for c in comps)
        n_r = max(len(c.regimes) for c in comps)
        S = len(comps)
        cond = np.zeros((S, n_k, n), dtype=np.uint8)
        from_mask = np.zeros((S, n_k, n_r), dtype=np.uint8)
        to, for_, dwell = (np.zeros((S, n_k), dtype=np.int64) for _ in range(3))
        reg = {k: np.zeros((S, n_r), dtype=dt) for k, dt in
               (("lr", np.float64), ("skip", np.uint8), ("rb", np.uint8), ("stop", np.uint8))}
        bounds = np.zeros((S, 8))
        initial = np.zeros(S, dtype=np.int64)
        for i, c in enumerate(comps):
            k, r = len(c.trans_names), len(c.regimes)
            cache.conditions(c, cond[i, :k])
            from_mask[i, :k, :r] = c.from_mask
            to[i, :k], for_[i, :k], dwell[i, :k] = c.to, c.for_, c.dwell
            for_[i, k:] = np.iinfo(np.int64).max
            reg["lr"][i, :r], reg["skip"][i, :r] = c.reg_lr, c.reg_skip
            reg["rb"][i, :r], reg["stop"][i, :r] = c.reg_rollback, c.reg_stop
            bounds[i], initial[i] = c.bounds, c.initial
        w = _alloc((S, n))
        walk_batch(cond, steps, from_mask, to, for_, dwell, reg["lr"], reg["skip"], reg["rb"],
                   reg["stop"], bounds, initial,
                   w.regime, w.transition, w.lr_scale, w.skipped, w.rollback)
        for i, c in enumerate(comps):
            yield start + i, c, Walk(w.regime[i], w.transition[i], w.lr_scale[i],
                                     w.skipped[i], w.rollback[i]), cache


def replay_many(trace: pd.DataFrame, specs: Sequence[GuardSpec]) -> list[pd.DataFrame]:
    """`replay` for several specs through the batched engine (same results, shared signals)."""
    out: list[pd.DataFrame] = [pd.DataFrame()] * len(specs)
    for i, compiled, walk, cache in iter_walks(trace, specs):
        df = trace.copy()
        _annotate(df, compiled, walk, cache.env(compiled.spec))
        df.attrs.update(spec=compiled.spec.name, spec_hash=compiled.spec.hash)
        out[i] = df
    return out
