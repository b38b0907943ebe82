"""GuardedOptimizer: the guard as an actuator around any `torch.optim.Optimizer`.

    opt = GuardedOptimizer(torch.optim.AdamW(model.parameters(), lr=3e-4), GuardSpec.default())
    loss = model(x, y); loss.backward()
    opt.step(loss=loss)          # the guard observes, decides, and applies bounded control
    opt.zero_grad()

Each step: the gradient norm is computed with foreach ops, the loss and the norm are handed
to the guard (`engine.Guard`: the host or the torch backend, both deciding exactly as
`replay`), and the decision is applied to the wrapped optimizer:
- **lr_scale** multiplies each group's LR for this step only (the scheduler never sees it);
- **skip** leaves parameters *and* optimizer state bit-identical (no moment decay, no weight
  decay);
- **momentum_scale** damps first moments (`exp_avg`, `momentum_buffer`) before the step;
- **update_cap** rescales an update whose norm exceeds `cap · ‖θ‖` (an action: the trace's
  `update_scale` < 1 and a `cause` "update capped: ‖Δθ‖/‖θ‖=… > cap …");
- **rollback** restores the last known-good snapshot (taken every `snapshot_every` steps
  while the guard is in its initial regime) and asks the runner to skip the next N batches;
- **stop** sets `should_stop` with the spec's reason; later steps are skipped.
An update with a non-finite gradient is never applied, whatever the spec says
(`safety_skip` in the trace marks the steps where the actuator overrode the decision).

One `step()` for both backends (`decide_on`): telemetry, update ratio, cap, snapshots,
rollback, skip batches, stop and the trace are one code path; only *how* a decision is
applied differs. On the host (numba backend; free on CPU, any wrapped optimizer) a decision
is a Python value and applying it is a branch. On the device (torch backend; AdamW, chosen
by `auto` on a GPU) a decision is a 0-d tensor and applying it is arithmetic: the AdamW
kernel takes a 0/1 step factor (`adamw.adamw_step`), rollback and snapshots are
`torch.where` between live and saved tensors, so `step()` never waits for the host.
Rows reach the host only when read (`trace()`, `last_row()`, `should_stop`,
`take_skip_batches()`), outside `step()`.

Under `torch.distributed`, loss and gradient norm are all-reduced before the decision, so
every rank reaches the same regime.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any

import pandas as pd
import torch
import torch.distributed as dist

from lbw_sim.guard.adamw import adamw_step
from lbw_sim.guard.analysis import cap_cause, with_cap_causes
from lbw_sim.guard.engine import Decision, Guard, OnlineGuard, StepLog
from lbw_sim.guard.shell import WrappedOptimizer
from lbw_sim.guard.spec import TRACE_NAMES, GuardSpec
from lbw_sim.guard.torch_backend import TensorGuard, TensorLog
from lbw_sim.traces.schema import ACTUATOR_COLUMNS

MOMENTUM_KEYS = ("exp_avg", "momentum_buffer")


class UpdateCap:
    """Bound each update θ_new - θ_old to `cap`·‖θ‖, with one reusable copy of the parameters.

    `before()` copies θ into a persistent buffer; `apply()` turns the buffer into θ_old - θ_new,
    measures it and, where the cap binds, moves θ back towards θ_old: θ ← f·θ_new + (1-f)·θ_old.
    ‖θ‖ is refreshed every `refresh` steps (it drifts slowly). Tensor arithmetic only, so the
    device path uses it without a host read; `on_host=True` reads the factor and skips the
    rewrite when the cap does not bind.
    """

    def __init__(self, refresh: int = 10):
        self.refresh, self.calls = refresh, 0
        self.buf: list[torch.Tensor] | None = None
        self.p_norm: torch.Tensor | None = None

    def before(self, params: list[torch.Tensor], apply: bool | torch.Tensor = True) -> None:
        """Copy θ; ‖θ‖ is refreshed on every `refresh`-th applied update. On the host this is
        called only for applied updates; on the device every step, with `apply` a tensor."""
        if self.buf is None or len(self.buf) != len(params):
            self.buf = [p.detach().clone() for p in params]
        else:
            torch._foreach_copy_(self.buf, [p.detach() for p in params])
        if not torch.is_tensor(apply):
            if self.p_norm is None or self.calls % self.refresh == 0:
                self.p_norm = _norm(self.buf)
            self.calls += 1
            return
        norm = _norm(self.buf)
        if not torch.is_tensor(self.calls):   # a fill on the device, not a copy
            self.calls = torch.full((), self.calls, dtype=torch.int64, device=norm.device)
        due = (self.calls % self.refresh == 0) & apply
        self.p_norm = norm if self.p_norm is None else torch.where(due, norm, self.p_norm)
        self.calls = self.calls + apply.to(torch.int64)

    def state_dict(self) -> dict[str, Any]:
        """The refresh phase and the cached ‖θ‖, so a resumed run caps exactly as before."""
        return {"calls": self.calls, "p_norm": self.p_norm}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.calls, self.p_norm = sd["calls"], sd["p_norm"]

    def apply(self, params: list[torch.Tensor], cap: float | torch.Tensor,
              on_host: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (‖update‖, factor applied)."""
        with torch.no_grad():
            torch._foreach_sub_(self.buf, params)                      # θ_old - θ_new
            d_norm = _norm(self.buf)
            factor = torch.clamp(cap * self.p_norm / (d_norm + 1e-12), max=1.0)
            if on_host:
                f = float(factor)
                if f < 1.0:
                    torch._foreach_add_(params, self.buf, alpha=1.0 - f)
            else:                                           # factor 1 adds exact zeros
                torch._foreach_mul_(self.buf, 1.0 - factor)
                torch._foreach_add_(params, self.buf)
        return d_norm, factor


def _norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors)))


def reads_update_ratio(spec: GuardSpec) -> bool:
    """Whether a signal reads `update_ratio`: then every applied update is measured (with an
    infinite cap where the regime has none). Decided once per spec, not per step."""
    return any(s.source == "update_ratio" for s in spec.signals.values())


def _not(x: Any) -> Any:
    """Logical not of a host bool or a bool tensor."""
    return (not x) if isinstance(x, bool) else ~x


class GuardedOptimizer(WrappedOptimizer):
    """Drop-in wrapper: `step(loss=…)`, `zero_grad()`, `param_groups`, `state_dict()`, `trace()`.

    It is a `torch.optim.Optimizer` (so LR schedulers and trainers accept it) that shares
    the wrapped optimizer's `param_groups` and `state` rather than copying them.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, spec: GuardSpec | None = None, *,
                 process_group: Any = None, track_norms: bool = False,
                 decide_on: str = "auto"):
        super().__init__(optimizer)
        self.spec = spec or GuardSpec.default()
        self.process_group = process_group
        self.track_norms = track_norms
        self.mode = self._choose_mode(decide_on)
        self.on_device = self.mode == "device"
        dev = self._params()[0].device
        self.device = dev
        self.guard: Guard = (TensorGuard(self.spec, dev) if self.on_device
                             else OnlineGuard(self.spec))
        self._nan = torch.full((), math.nan, device=dev)
        # bools and ints on the host, 0-d tensors on the device
        self._stop: bool | torch.Tensor = self._flag(False)
        self.pending_skip_batches: int | torch.Tensor = (
            torch.zeros((), dtype=torch.int64, device=dev) if self.on_device else 0)
        self._stop_reason = ""
        self.snapshot: dict[str, Any] | None = None
        self.last: Decision | None = None
        self._pending_loss: list[torch.Tensor] = []
        self._log = (TensorLog(len(ACTUATOR_COLUMNS) - 1, dev) if self.on_device
                     else StepLog(len(ACTUATOR_COLUMNS) - 1))   # wall_time is kept apart
        self._wall: list[float] = []
        self._capper = UpdateCap()
        # ‖update‖/‖θ‖ of the last applied update (before the cap), seen at the next step
        self._update_ratio: torch.Tensor = self._nan
        self._set_spec_flags(self.spec)
        self._t0 = time.perf_counter()

    def _choose_mode(self, decide_on: str) -> str:
        """'host' (numba backend, free on CPU) or 'device' (torch backend, no syncs on GPU)."""
        if decide_on not in ("auto", "host", "device"):
            raise ValueError(f"decide_on must be auto, host or device, got {decide_on!r}")
        adamw = type(self.optimizer) is torch.optim.AdamW
        if decide_on == "device" and not adamw:
            raise ValueError("decide_on='device' needs torch.optim.AdamW (its math is "
                             "re-implemented with a device-side step factor)")
        if decide_on == "auto":
            on_gpu = self._params()[0].device.type in ("cuda", "mps")
            return "device" if on_gpu and adamw else "host"
        return decide_on

    def _flag(self, value: bool) -> bool | torch.Tensor:
        return torch.tensor(value, device=self.device) if self.on_device else value

    def _set_spec_flags(self, spec: GuardSpec) -> None:
        self._reads_ratio = reads_update_ratio(spec)
        self._has_cap = any(r.update_cap is not None for r in spec.regimes.values())
        self._has_rollback = any(r.rollback for r in spec.regimes.values())

    @property
    def should_stop(self) -> bool:
        """True once the guard entered a stop regime (on the device: reads one flag back)."""
        return bool(self._stop)

    @property
    def stop_reason(self) -> str:
        """The stop regime's reason, once the guard stopped the run ('' before)."""
        if not self._stop_reason and self.should_stop:
            self._stop_reason = self.guard.stop_reason() or "stopped by the guard"
        return self._stop_reason

    @property
    def snapshot_step(self) -> int | None:
        """The step of the known-good snapshot a rollback restores (None: none yet)."""
        if self.snapshot is None or not bool(self.snapshot["valid"]):
            return None
        return int(self.snapshot["step"])

    def observe_loss(self, loss: torch.Tensor | float) -> None:
        """Hand over a (micro-batch) loss for the next `step()` that is called without one.

        For trainers that call `optimizer.step()` themselves (Hugging Face, Lightning):
        losses of accumulated micro-batches are averaged.
        """
        self._pending_loss.append(torch.as_tensor(loss).detach().float().reshape(()))

    def __repr__(self) -> str:
        return f"GuardedOptimizer({self.optimizer.__class__.__name__}, spec={self.spec.name})"

    # --- one guarded step -------------------------------------------------------------------
    def telemetry(self, loss: torch.Tensor | float | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, gradient norm) as 0-d tensors, all-reduced across ranks when distributed."""
        grad_norm = self.grad_norm()
        if torch.is_tensor(loss):
            loss_t = loss.detach().reshape(())
        else:
            loss_t = torch.full((), math.nan if loss is None else float(loss),
                                dtype=torch.float64, device=grad_norm.device)
        if not self._distributed():
            return loss_t, grad_norm
        packed = torch.stack([loss_t.float().to(grad_norm.device), grad_norm.float()])
        dist.all_reduce(packed, op=dist.ReduceOp.SUM, group=self.process_group)
        packed = packed.double() / dist.get_world_size(self.process_group)
        return packed[0], packed[1]

    @staticmethod
    def _distributed() -> bool:
        return dist.is_available() and dist.is_initialized()

    @torch.no_grad()
    def step(self, closure: Any = None, *, loss: torch.Tensor | float | None = None) -> Any:
        """Observe this step's loss and gradient, decide, and apply the bounded control."""
        loss = self._closure_loss(closure, loss)
        if loss is None and self._pending_loss:
            loss = torch.stack(self._pending_loss).mean()
        self._pending_loss = []
        loss_t, grad_norm = self.telemetry(loss)
        d = self.guard.observe(self.step_count, loss=loss_t, grad_norm=grad_norm,
                               lr=self.param_groups[0]["lr"], update_ratio=self._update_ratio)
        self.last = d
        finite = torch.isfinite(grad_norm)
        finite = finite if self.on_device else bool(finite)
        apply = _not(d.skip) & finite
        self._restore(d.rollback)
        self.pending_skip_batches = self.pending_skip_batches + d.skip_batches
        update_norm, update_scale = self._apply(d, apply)
        if self._has_rollback and self.step_count % self.spec.bounds.snapshot_every == 0:
            self._snapshot(apply & d.initial)
        self._stop = self._stop | d.stop
        self._record(_not(d.skip) & _not(finite), update_norm, update_scale)
        self.step_count += 1
        return loss

    def _apply(self, d: Decision, apply: bool | torch.Tensor) -> tuple[Any, Any]:
        """Apply the update as decided; returns (‖update‖, cap factor), NaN where none.

        The one fork of the step: on the host a branch around the wrapped optimizer's own
        step; on the device the AdamW kernel with a 0/1 step factor."""
        params = self._params()
        if self.on_device:
            measure = self._reads_ratio or self._has_cap
            if measure:
                self._capper.before(params, apply)
            adamw_step(self.optimizer, lr_scale=d.lr_scale, apply=apply,
                       momentum_scale=d.momentum_scale)
        else:
            measure = apply and (math.isfinite(d.update_cap) or self._reads_ratio)
            if measure:
                self._capper.before(params)
            if apply:
                self._host_update(d)
        if not measure:
            self._update_ratio = self._nan
            return self._nan, self._nan
        # an infinite cap only measures: factor 1, nothing rewritten
        cap = d.update_cap.to(self._capper.buf[0].dtype) if self.on_device else d.update_cap
        d_norm, factor = self._capper.apply(params, cap, on_host=not self.on_device)
        ratio = (d_norm / self._capper.p_norm).float()   # float32, alike on both paths
        self._update_ratio = torch.where(apply, ratio, self._nan) if self.on_device else ratio
        if self.on_device:
            return torch.where(apply, d_norm, self._nan), torch.where(apply, factor, self._nan)
        return d_norm, factor

    def _host_update(self, d: Decision) -> None:
        if d.momentum_scale != 1.0:
            bufs = [s[k] for s in self.optimizer.state.values() for k in MOMENTUM_KEYS
                    if k in s and torch.is_tensor(s[k])]
            if bufs:
                torch._foreach_mul_(bufs, d.momentum_scale)
        base = [g["lr"] for g in self.param_groups]
        for g, lr in zip(self.param_groups, base):
            g["lr"] = lr * d.lr_scale if not torch.is_tensor(lr) else lr.mul(d.lr_scale)
        try:
            self.optimizer.step()
        finally:
            for g, lr in zip(self.param_groups, base):
                g["lr"] = lr

    # --- snapshots and rollback: one layout, one restore -----------------------------------
    def _live(self) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
        """Parameters and their optimizer state, in the snapshot's layout."""
        params = self._params()
        return [p.detach() for p in params], [self.optimizer.state.get(p, {}) for p in params]

    def _snapshot(self, good: bool | torch.Tensor) -> None:
        """Keep θ and the optimizer state as known-good where `good`."""
        params, states = self._live()
        clone = lambda v: v.clone() if torch.is_tensor(v) else copy.deepcopy(v)  # noqa: E731
        if self.snapshot is None or not self.on_device:
            if self.on_device or good:
                self.snapshot = {"params": [p.clone() for p in params],
                                 "state": [{k: clone(v) for k, v in s.items()} for s in states],
                                 "valid": good if self.on_device else True,
                                 "step": torch.where(good, self.step_count, -1)
                                 if self.on_device else self.step_count}
            return
        snap = self.snapshot
        for saved, cur in self._pairs(params, states):
            saved.copy_(torch.where(good, cur, saved))
        snap["valid"] = snap["valid"] | good
        snap["step"] = torch.where(good, self.step_count, snap["step"])

    def _pairs(self, params: list[torch.Tensor],
               states: list[dict[str, Any]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        snap = self.snapshot
        pairs = list(zip(snap["params"], params))
        for saved, cur in zip(snap["state"], states):
            pairs += [(saved[k], cur[k]) for k in saved if torch.is_tensor(saved[k])]
        return pairs

    def _restore(self, rollback: bool | torch.Tensor) -> None:
        """Put the snapshot back where `rollback` (and a known-good snapshot exists)."""
        if self.snapshot is None:
            return
        params, states = self._live()
        if self.on_device:
            back = rollback & self.snapshot["valid"]
            for saved, cur in self._pairs(params, states):
                cur.copy_(torch.where(back, saved, cur))
        elif rollback:
            for p, saved, st in zip(self._params(), self.snapshot["params"],
                                    self.snapshot["state"]):
                p.detach().copy_(saved)
                self.optimizer.state.pop(p, None)
                if st:
                    self.optimizer.state[p] = {
                        k: v.clone() if torch.is_tensor(v) else copy.deepcopy(v)
                        for k, v in st.items()}

    def take_skip_batches(self) -> int:
        """Batches the runner should skip now (after a rollback); resets the counter."""
        n = int(self.pending_skip_batches)
        self.pending_skip_batches = self.pending_skip_batches * 0
        return n

    # --- records ----------------------------------------------------------------------------
    def _record(self, safety: Any, update_norm: Any, update_scale: Any) -> None:
        pn = _norm(self._params()) if self.track_norms else self._nan
        if self.on_device:
            self._log.append(torch.stack([safety, pn, update_norm, update_scale]).double())
        else:
            self._log.append([float(safety), float(pn), float(update_norm),
                              float(update_scale)])
        self._wall.append(time.perf_counter() - self._t0)

    def _actuator(self, m: Any) -> dict[str, Any]:
        cols = [c for c in ACTUATOR_COLUMNS if c != "wall_time"]
        out = {c: m[:, i] for i, c in enumerate(cols)}
        out["safety_skip"] = out["safety_skip"].astype(bool)
        return out

    def trace(self, signals: bool = False, start: int = 0) -> pd.DataFrame:
        """Telemetry and decisions of every step so far, in the canonical trace schema.

        `signals=True` appends each signal's column (the values the live decisions saw,
        as `replay(trace, spec, signals=True)`; kept even where all NaN). `start` keeps
        only rows `start:` (index and all; columns empty in those rows are left out, as
        in a whole trace) and costs only those: a logger's new rows."""
        df = self.guard.trace(signals, start)
        names = [c for c in df.columns if c not in TRACE_NAMES]     # the signal columns
        sig, df = df[names], df.drop(columns=names)
        extra = self._actuator(self._log.matrix(start=start))
        extra["wall_time"] = self._wall[start:]
        for col in ACTUATOR_COLUMNS:
            if len(extra[col]) == len(df):
                df[col] = extra[col]
        df = with_cap_causes(df.dropna(axis=1, how="all"))
        for name in names:
            df[name] = sig[name]
        return df

    def last_row(self, signals: bool = False) -> dict[str, Any]:
        """The latest step's trace row as host values (on the device: reads it back);
        `signals=True` adds the signals the decision saw."""
        row = self.guard.last_row(signals)
        if not row:
            return row
        sig = {k: row.pop(k) for k in list(row) if k not in TRACE_NAMES}
        extra = self._actuator(self._log.matrix(last=True))
        row.update({k: v[0].item() for k, v in extra.items()}, wall_time=self._wall[-1],
                   clipped=False)
        if row["update_scale"] < 1:       # the cap bound: an action with its cause
            text = cap_cause(float(row["update_cap"]), float(row["update_scale"]))
            row["cause"] = f"{row['cause']}; {text}" if row.get("cause") else text
        row.update(sig)
        return row

    # --- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The wrapped optimizer's state plus the guard's, so a resumed run continues exactly."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "decide_on": self.mode,
            "guard": self.guard.state_dict(),
            "step_count": self.step_count,
            "pending_skip_batches": self.pending_skip_batches,
            "stop": self._stop,
            "stop_reason": self._stop_reason,
            "snapshot": copy.deepcopy(self.snapshot),
            "update_ratio": self._update_ratio,
            "capper": self._capper.state_dict(),
            "actuator": self._log.state_dict(),
            "wall_time": list(self._wall),
        }

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        if sd.get("decide_on") != self.mode:
            raise ValueError(f"this state was saved with decide_on={sd.get('decide_on')!r}; "
                             f"this optimizer decides on {self.mode!r}")
        self.optimizer.load_state_dict(sd["optimizer"])
        self.guard.load_state_dict(sd["guard"])
        self.spec = self.guard.spec
        self._set_spec_flags(self.spec)
        self.step_count = int(sd["step_count"])
        move = lambda v: v.to(self.device) if torch.is_tensor(v) else v  # noqa: E731
        self.pending_skip_batches = move(sd["pending_skip_batches"])
        self._stop, self._stop_reason = move(sd["stop"]), str(sd["stop_reason"])
        snap = sd["snapshot"]
        if snap is not None:
            snap = {"params": [move(p) for p in snap["params"]],
                    "state": [{k: move(v) for k, v in s.items()} for s in snap["state"]],
                    "valid": move(snap["valid"]), "step": move(snap["step"])}
        self.snapshot = snap
        self._capper.load_state_dict(sd["capper"])
        self._update_ratio = move(sd["update_ratio"])
        self._log.load_state_dict(sd["actuator"])
        self._wall = list(sd["wall_time"])

    def set_spec(self, spec: GuardSpec) -> None:
        """Swap the spec mid-run (live edits); it decides from the next step on, on either
        backend, and the trace records each step's `spec_hash`."""
        self.spec = spec
        self._set_spec_flags(spec)
        self.guard.set_spec(spec)
