"""The torch backend of the guard: the engine's step on device tensors, no host syncs.

`TensorGuard` has the interface of the host backend (`engine.OnlineGuard`): `observe` ->
`Decision`, `trace`, `last_row`, `set_spec`, `state_dict`. It runs the same three stages —
signals, conditions, walk — but every value stays a tensor on the training device, so a
CUDA training loop never waits for the host. The estimators are `signals.estimators` run
with torch operations (`TORCH`), the very code the numba kernel runs, and so are the walk's
rules (`engine.walk_rules`; here vectorised over the transitions); tests/test_parity.py holds the
two backends equal decision by decision over generated specs and telemetry.

Each step's row (same layout as the host backend's log) is stacked on the device; rows are
copied to the host only when read (`trace`, `last_row`, `state_dict`), and the trace is
built by the engine's one trace builder.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import torch

from lbw_sim.guard.engine import (
    BOUND_LR_MAX,
    BOUND_LR_MIN,
    BOUND_MAX_CONSECUTIVE,
    BOUND_MAX_ROLLBACKS,
    BOUND_MAX_SKIP_FRACTION,
    BOUND_SKIP_WINDOW,
    BOUND_SLEW_DOWN,
    BOUND_SLEW_UP,
    Compiled,
    Decision,
    compile_spec,
    last_row,
    log_columns,
    log_tail,
    trace_frame,
    walk_rules,
)
from lbw_sim.guard.signals import KIND_CODE, estimators, per_input
from lbw_sim.guard.spec import TELEMETRY, GuardSpec

F64 = torch.float64
#: columns of `TensorGuard.reg_table`, one row per regime
R_LR, R_MOMENTUM, R_CAP, R_SKIP, R_ROLLBACK, R_STOP, R_SKIP_BATCHES = range(7)


def _at(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """`values[index]` for a 0-d index tensor, as a device op (no host read)."""
    return values.index_select(0, index.reshape(1)).reshape(())


def _scalar(v: torch.Tensor | float, device: torch.device) -> torch.Tensor:
    """A 0-d float64 tensor on `device`; Python numbers are filled there, never copied."""
    if torch.is_tensor(v):
        return v.detach().to(device=device, dtype=F64).reshape(())
    return torch.full((), float(v), dtype=F64, device=device)


class _SignalState:
    """One estimator's state as tensors (mean, variance, last/first step, started, prev,
    frozen reference, reference-set flag)."""

    def __init__(self, device: torch.device):
        z = lambda: torch.zeros((), dtype=F64, device=device)  # noqa: E731
        self.m, self.v, self.last, self.first, self.prev, self.ref = z(), z(), z(), z(), z(), z()
        self.started = torch.zeros((), dtype=torch.bool, device=device)
        self.has_ref = torch.zeros((), dtype=torch.bool, device=device)

    def tensors(self) -> list[torch.Tensor]:
        return [self.m, self.v, self.last, self.first, self.prev, self.started, self.ref,
                self.has_ref]

    def load(self, values: list[torch.Tensor], device: torch.device) -> None:
        """From `tensors()` (a state saved before the reference existed has six)."""
        values = [v.to(device) for v in values]
        self.m, self.v, self.last, self.first, self.prev, self.started = values[:6]
        if len(values) > 6:
            self.ref, self.has_ref = values[6], values[7]


def _where(cond, a, b):
    if isinstance(cond, bool):                  # a parameter test, decided on the host
        return a if cond else b
    if not (torch.is_tensor(a) or torch.is_tensor(b)):
        a = torch.full((), a, dtype=F64, device=cond.device)
    return torch.where(cond, a, b)


def _maximum(a, b):
    if not torch.is_tensor(b):
        return torch.clamp(a, min=b)
    return torch.maximum(a, b) if torch.is_tensor(a) else torch.clamp(b, min=a)


def _minimum(a, b):
    if not torch.is_tensor(b):
        return torch.clamp(a, max=b)
    return torch.minimum(a, b) if torch.is_tensor(a) else torch.clamp(b, max=a)


def _not(a):
    return ~a if torch.is_tensor(a) else not a


#: The namespace `signals.estimators` runs in on the device: 0-d float64 tensor operations.
TORCH = SimpleNamespace(jit=lambda fn: fn, where=_where, maximum=_maximum, minimum=_minimum,
                        clamp=torch.clamp, exp=torch.exp, sqrt=torch.sqrt, fabs=torch.abs,
                        isfinite=torch.isfinite, not_=_not)
_OBSERVE = estimators(TORCH)
_per_input = per_input(TORCH)
_debounce, _may_fire, _settle = walk_rules(TORCH)


def signal_step(kind: int, x: torch.Tensor, step: torch.Tensor, half_life: float,
                warmup: float, clip: float, floor: float, s: _SignalState,
                per: torch.Tensor | None = None) -> torch.Tensor:
    """One observation of one estimator (`signals.estimators` on tensors, state in `s`);
    `per` divides x (a ref_ratio with `per: lr`), a non-positive one making it NaN."""
    if per is not None:
        x = _per_input(x, per)
    out, s.m, s.v, s.last, s.first, s.started, s.prev, s.ref, s.has_ref = _OBSERVE[kind](
        x, step, s.m, s.v, s.last, s.first, s.started, s.prev, s.ref, s.has_ref,
        math.log(2.0) / half_life, warmup, clip, floor)
    return out


class TensorLog:
    """Logged rows as float64 device tensors, stacked in chunks; read back only on demand."""

    def __init__(self, width: int, device: torch.device, chunk: int = 256):
        self.width, self.device, self.chunk = width, device, chunk
        self.pending: list[torch.Tensor] = []     # rows not yet stacked
        self.chunks: list[torch.Tensor] = []      # (chunk, width) on the device
        self.host: list[np.ndarray] = []          # chunks already read back

    def append(self, row: torch.Tensor) -> None:
        self.pending.append(row)
        if len(self.pending) == self.chunk:       # a device op: no sync
            self.chunks.append(torch.stack(self.pending))
            self.pending = []

    def __len__(self) -> int:
        return sum(len(h) for h in self.host) + self.chunk * len(self.chunks) + \
            len(self.pending)

    def matrix(self, last: bool = False, start: int = 0) -> np.ndarray:
        """The rows `start:` on the host (the one synchronisation); `last`: only the latest
        row. Rows read once stay on the host, so reading new rows costs only those."""
        if last:
            row = (self.pending[-1] if self.pending else self.chunks[-1][-1] if self.chunks
                   else None)
            if row is None:
                return self.host[-1][-1:] if self.host else np.zeros((0, self.width))
            return row.reshape(1, -1).cpu().numpy()
        if self.chunks:
            self.host += list(torch.cat(self.chunks).cpu().numpy().reshape(
                len(self.chunks), self.chunk, self.width))
            self.chunks = []
        parts, offset = [], 0
        for h in self.host:
            if offset + len(h) > start:
                parts.append(h[max(start - offset, 0):])
            offset += len(h)
        if self.pending:
            rows = self.pending[max(start - offset, 0):]
            if rows:
                parts.append(torch.stack(rows).cpu().numpy())
        return np.concatenate(parts) if parts else np.zeros((0, self.width))

    def state_dict(self) -> torch.Tensor:
        return torch.from_numpy(self.matrix().copy())

    def load_state_dict(self, rows: torch.Tensor) -> None:
        self.host, self.chunks, self.pending = [rows.numpy().copy()], [], []


class TensorGuard:
    """The guard's online step with all state on `device`; `observe` returns tensors."""

    def __init__(self, spec: GuardSpec, device: torch.device | str = "cpu"):
        self.spec, self.device = spec, torch.device(device)
        dev = self.device
        self._nan = torch.full((), math.nan, dtype=F64, device=dev)
        self._tables(compile_spec(spec))
        self.sig = {name: _SignalState(dev) for name in spec.signals}
        zi = lambda: torch.zeros((), dtype=torch.int64, device=dev)  # noqa: E731
        self.regime = torch.full((), self.compiled.initial, dtype=torch.int64, device=dev)
        self.entered = torch.zeros((), dtype=F64, device=dev)
        self.lr_prev = torch.ones((), dtype=F64, device=dev)
        self.consec, self.wcount, self.wpos, self.n_rb = zi(), zi(), zi(), zi()
        self.stopped = torch.zeros((), dtype=torch.bool, device=dev)
        self.runs = torch.zeros(len(self.compiled.trans_names), dtype=torch.int64, device=dev)
        self.ring = torch.zeros(self.window, dtype=torch.int64, device=dev)
        self.started = False
        self._last_step: int | None = None
        self.segments: list[tuple[Compiled, TensorLog]] = [(self.compiled, self._log())]

    def _tables(self, c: Compiled) -> None:
        """The compiled spec's tables as device tensors (on creation and on `set_spec`)."""
        t = lambda a, dtype: torch.as_tensor(np.asarray(a), dtype=dtype,  # noqa: E731
                                             device=self.device)
        self.compiled = c
        self.from_mask, self.to = t(c.from_mask, torch.bool), t(c.to, torch.int64)
        self.for_, self.dwell = t(c.for_, torch.int64), t(c.dwell, F64)
        # one row per regime, read with one index_select (a 0-d index tensor used as
        # `table[regime]` would be read back to the host inside ATen)
        self.reg_table = t(np.stack([np.asarray(c.reg_lr, np.float64), c.reg_momentum,
                                     c.reg_cap, c.reg_skip, c.reg_rollback, c.reg_stop,
                                     [r.skip_batches for r in self.spec.regimes.values()]],
                                    axis=1).astype(np.float64), F64)
        self.b = [float(x) for x in c.bounds]
        self.window = max(int(c.bounds[BOUND_SKIP_WINDOW]), 1)

    def _log(self) -> TensorLog:
        return TensorLog(len(log_columns(self.spec)), self.device)

    def _signals(self, step: torch.Tensor, tel: dict[str, torch.Tensor]) -> dict:
        out = {}
        for name, sig in self.spec.signals.items():
            if sig.kind == "nonfinite":
                sources = (sig.source,) if isinstance(sig.source, str) else sig.source
                flag = torch.zeros((), dtype=torch.bool, device=self.device)
                for src in sources:
                    if src in tel:
                        flag = flag | ~torch.isfinite(tel[src])
                out[name] = flag.to(F64)
                continue
            x = tel.get(sig.source)
            if x is None:
                out[name] = self._nan
                continue
            per = None
            if sig.per:
                per = tel.get(sig.per, self._nan)
            clip = -1.0 if sig.clip is None else float(sig.clip)
            out[name] = signal_step(KIND_CODE[sig.kind], x, step, float(sig.half_life),
                                    float(sig.warmup), clip, float(sig.floor), self.sig[name],
                                    per)
        return out

    @torch.no_grad()
    def observe(self, step: int, **telemetry: torch.Tensor | float) -> Decision:
        """Decide step `step` from 0-d telemetry tensors; nothing is read back to the host."""
        step = int(step)
        if self._last_step is not None and step <= self._last_step:
            raise ValueError(f"steps must increase: got {step} after {self._last_step}")
        self._last_step = step
        dev, b, c = self.device, self.b, self.compiled
        tel = {k: _scalar(v, dev) for k, v in telemetry.items()
               if k in TELEMETRY and v is not None}
        step_t = torch.full((), float(step), dtype=F64, device=dev)
        if not self.started:   # as the walk kernel's first row: from the current spec
            self.entered = step_t
            self.lr_prev = torch.clamp(self._regime_row(self.regime)[R_LR], b[BOUND_LR_MIN],
                                       b[BOUND_LR_MAX])
            self.started = True
        env = {k: tel.get(k, self._nan) for k in TELEMETRY}
        signals = self._signals(step_t, tel)
        env.update(signals)
        if len(c.trans_names):
            cond = torch.stack([torch.as_tensor(fn(env), device=dev).reshape(())
                                for fn in c.conds]).to(torch.bool)
            self.runs = _debounce(cond, self.runs)
            from_here = self.from_mask.index_select(1, self.regime.reshape(1)).reshape(-1)
            elig = _may_fire(from_here, self.runs, self.for_, self.to, self.regime,
                             step_t - self.entered, self.dwell, self.stopped)
            fired = elig.any()
            k = torch.argmax(elig.to(torch.int64))
            regime = torch.where(fired, _at(self.to, k), self.regime)
            trans = torch.where(fired, k, torch.full_like(k, -1))
        else:
            fired = torch.zeros((), dtype=torch.bool, device=dev)
            regime, trans = self.regime, torch.full((), -1, dtype=torch.int64, device=dev)
        row = self._regime_row(regime)
        self.entered = torch.where(fired, step_t, self.entered)
        rollback, self.stopped, lr, skip, self.n_rb, self.wcount, self.consec = _settle(
            fired, row[R_ROLLBACK] > 0, row[R_STOP] > 0, row[R_SKIP] > 0, row[R_LR],
            self.lr_prev, self.n_rb, self.stopped, self.consec, self.wcount,
            _at(self.ring, self.wpos), self.window, b[BOUND_LR_MIN], b[BOUND_LR_MAX],
            b[BOUND_SLEW_DOWN], b[BOUND_SLEW_UP], b[BOUND_MAX_CONSECUTIVE],
            b[BOUND_MAX_SKIP_FRACTION], b[BOUND_MAX_ROLLBACKS])
        self.ring = self.ring.index_put((self.wpos.reshape(1),),
                                        skip.to(torch.int64).reshape(1))
        self.wpos = (self.wpos + 1) % self.window
        self.regime, self.lr_prev = regime, lr
        self.segments[-1][1].append(torch.stack(
            [step_t, *(env[k] for k in TELEMETRY), regime, trans, lr, skip, rollback,
             *signals.values()]).to(F64))
        return Decision(step=step, regime=regime, lr_scale=lr, skip=skip,
                        momentum_scale=row[R_MOMENTUM], update_cap=row[R_CAP],
                        rollback=rollback, skip_batches=rollback * row[R_SKIP_BATCHES],
                        stop=row[R_STOP] > 0, initial=regime == c.initial,
                        transition=trans)

    def _regime_row(self, regime: torch.Tensor) -> torch.Tensor:
        """The regime's controls (`R_*` columns) without reading its index back."""
        return self.reg_table.index_select(0, regime.reshape(1)).reshape(-1)

    def trace(self, signals: bool = False, start: int = 0) -> pd.DataFrame:
        """Everything observed so far (reads the rows back), as `OnlineGuard.trace`."""
        return trace_frame(log_tail(self.segments, start), signals, start)

    def last_row(self, signals: bool = False) -> dict[str, Any]:
        """The latest step's trace row as host values (one read of one row)."""
        c, log = self.segments[-1]
        return last_row(c, log.matrix(last=True), signals)

    def stop_reason(self) -> str:
        """Why the guard stopped the run ('' while it has not); reads two flags back."""
        r = int(self.regime)
        if not (bool(self.stopped) or self.compiled.reg_stop[r]):
            return ""
        name = self.compiled.regimes[r]
        return self.spec.regimes[name].reason or f"regime {name}"

    def set_spec(self, spec: GuardSpec) -> None:
        """Swap in an edited spec from the next observation, as `OnlineGuard.set_spec`
        (regime kept by name, unchanged signals keep their state) — with tensor ops only."""
        dev, old, old_c = self.device, self.spec, self.compiled
        new_c = compile_spec(spec)
        self.sig = {name: (self.sig[name] if old.signals.get(name) == sig else
                           _SignalState(dev)) for name, sig in spec.signals.items()}
        idx = [old_c.trans_names.index(n) if n in old_c.trans_names else -1
               for n in new_c.trans_names]
        if idx:
            gather = torch.tensor([max(i, 0) for i in idx], dtype=torch.int64, device=dev)
            keep = torch.tensor([i >= 0 for i in idx], dtype=torch.bool, device=dev)
            old_runs = self.runs if len(self.runs) else torch.zeros(1, dtype=torch.int64,
                                                                    device=dev)
            self.runs = torch.where(keep, old_runs[gather], torch.zeros_like(gather))
        else:
            self.runs = torch.zeros(0, dtype=torch.int64, device=dev)
        mapping = torch.tensor([new_c.regimes.index(r) if r in new_c.regimes else -1
                                for r in old_c.regimes], dtype=torch.int64, device=dev)
        new_regime = _at(mapping, self.regime)
        found = new_regime >= 0
        self.regime = torch.where(found, new_regime, torch.full_like(new_regime,
                                                                     new_c.initial))
        self.entered = torch.where(found, self.entered,
                                   torch.full_like(self.entered, float(self._last_step or 0)))
        self.spec = spec
        window = self.window
        self._tables(new_c)
        if self.window != window:
            self.ring = torch.zeros(self.window, dtype=torch.int64, device=dev)
            self.wcount, self.wpos = torch.zeros_like(self.wcount), torch.zeros_like(self.wpos)
        self.segments.append((new_c, self._log()))

    _WALK = ("regime", "entered", "lr_prev", "consec", "wcount", "wpos", "n_rb", "stopped",
             "runs", "ring")

    def state_dict(self) -> dict[str, Any]:
        """Every tensor of the walk and the estimators, plus the rows logged so far."""
        return {"spec": self.spec.to_dict(),
                "walk": {n: getattr(self, n).clone() for n in self._WALK},
                "signals": {k: s.tensors() for k, s in self.sig.items()},
                "started": self.started, "last_step": self._last_step,
                "segments": [{"spec": c.spec.to_dict(), "rows": log.state_dict()}
                             for c, log in self.segments]}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.spec = GuardSpec.from_dict(sd["spec"])
        self._tables(compile_spec(self.spec))
        for name, value in sd["walk"].items():
            setattr(self, name, value.to(self.device))
        self.sig = {}
        for k, values in sd["signals"].items():
            self.sig[k] = _SignalState(self.device)
            self.sig[k].load(values, self.device)
        self.started, self._last_step = bool(sd["started"]), sd["last_step"]
        self.segments = []
        for i, seg in enumerate(sd["segments"]):
            last = i == len(sd["segments"]) - 1
            spec = self.spec if last else GuardSpec.from_dict(seg["spec"])
            log = TensorLog(len(log_columns(spec)), self.device)
            log.load_state_dict(seg["rows"])
            self.segments.append((self.compiled if last else compile_spec(spec), log))
