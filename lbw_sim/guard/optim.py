"""GuardedOptimizer: the guard as an actuator around any `torch.optim.Optimizer`.

    opt = GuardedOptimizer(torch.optim.AdamW(model.parameters(), lr=3e-4), GuardSpec.default())
    loss = model(x, y); loss.backward()
    opt.step(loss=loss)          # the guard observes, decides, and applies bounded control
    opt.zero_grad()

Each step: the gradient norm is computed with foreach ops, the loss and the norm are handed
to the engine (`OnlineGuard`, the same numba walk that `replay` runs, so live == replay),
and the decision is applied to the wrapped optimizer:
- **lr_scale** multiplies each group's LR for this step only (the scheduler never sees it);
- **skip** does not call the inner step at all: parameters *and* optimizer state stay
  bit-identical (no moment decay, no weight decay);
- **momentum_scale** damps first moments (`exp_avg`, `momentum_buffer`) before the step;
- **update_cap** rescales an update whose norm exceeds `cap · ‖θ‖`;
- **rollback** restores the last known-good snapshot (taken every `snapshot_every` steps
  while the guard is in its initial regime) and asks the runner to skip the next N batches;
- **stop** sets `should_stop` with the spec's reason; later steps are skipped.
An update with a non-finite gradient is never applied, whatever the spec says
(`safety_skip` in the trace marks the steps where the actuator overrode the decision).

Under `torch.distributed`, loss and gradient norm are all-reduced before the decision, so
every rank reaches the same regime.

Where decisions are taken (`decide_on`): on CPU the host engine (`OnlineGuard`, numba) costs
nothing and supports any wrapped optimizer. On a GPU with AdamW the device engine
(`TensorGuard`) keeps every decision a tensor and applies it through `adamw.adamw_step`
with a 0/1 step factor, so no step waits for the host; telemetry reaches the host in
batches. Rollback there is a `torch.where` between live and snapshot tensors (one extra
pass over parameters and state per step when the spec has a rollback regime).
"""

from __future__ import annotations

import copy
import math
import time
from collections import OrderedDict
from typing import Any

import pandas as pd
import torch
import torch.distributed as dist

from lbw_sim.guard.adamw import adamw_step
from lbw_sim.guard.device import TensorGuard
from lbw_sim.guard.engine import Decision, OnlineGuard
from lbw_sim.guard.spec import GuardSpec

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

    def before(self, params: list[torch.Tensor]) -> None:
        if self.buf is None or len(self.buf) != len(params):
            self.buf = [p.detach().clone() for p in params]
        else:
            torch._foreach_copy_(self.buf, [p.detach() for p in params])
        if self.p_norm is None or self.calls % self.refresh == 0:
            self.p_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(self.buf)))
        self.calls += 1

    def state_dict(self) -> dict[str, Any]:
        """The refresh phase and the cached ‖θ‖, so a resumed run caps exactly as before."""
        return {"calls": self.calls, "p_norm": self.p_norm}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.calls, self.p_norm = int(sd["calls"]), sd["p_norm"]

    def apply(self, params: list[torch.Tensor], cap: float | torch.Tensor,
              on_host: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (‖update‖, factor applied)."""
        with torch.no_grad():
            torch._foreach_sub_(self.buf, params)                      # θ_old - θ_new
            d_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(self.buf)))
            factor = torch.clamp(cap * self.p_norm / (d_norm + 1e-12), max=1.0)
            if on_host:
                f = float(factor)
                if f < 1.0:
                    torch._foreach_add_(params, self.buf, alpha=1.0 - f)
            else:                                           # factor 1 adds exact zeros
                torch._foreach_mul_(self.buf, 1.0 - factor)
                torch._foreach_add_(params, self.buf)
        return d_norm, factor


def reads_update_ratio(spec: GuardSpec) -> bool:
    """Whether a signal reads `update_ratio`: then every applied update is measured (with an
    infinite cap where the regime has none). Decided once per spec, not per step."""
    return any(s.source == "update_ratio" for s in spec.signals.values())


class GuardedOptimizer(torch.optim.Optimizer):
    """Drop-in wrapper: `step(loss=…)`, `zero_grad()`, `param_groups`, `state_dict()`, `trace()`.

    It is a `torch.optim.Optimizer` (so LR schedulers and trainers accept it) that shares
    the wrapped optimizer's `param_groups` and `state` rather than copying them.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, spec: GuardSpec | None = None, *,
                 process_group: Any = None, track_norms: bool = False,
                 decide_on: str = "auto"):
        # Deliberately not Optimizer.__init__: the wrapped optimizer owns params and state.
        self.defaults = optimizer.defaults
        for hooks in ("step_pre", "step_post", "state_dict_pre", "state_dict_post",
                      "load_state_dict_pre", "load_state_dict_post"):
            setattr(self, f"_optimizer_{hooks}_hooks", OrderedDict())
        self.optimizer = optimizer
        self.spec = spec or GuardSpec.default()
        self.guard = OnlineGuard(self.spec)
        self.process_group = process_group
        self.track_norms = track_norms
        self.step_count = 0
        self.snapshot: dict[str, Any] | None = None
        self.snapshot_step: int | None = None
        self.pending_skip_batches = 0
        self._should_stop = False
        self.stop_reason = ""
        self.mode = self._choose_mode(decide_on)
        self.device_guard: TensorGuard | None = None
        if self.mode == "device":
            self.device_guard = TensorGuard(self.spec, self._params()[0].device)
            dev = self._params()[0].device
            self._pending_dev = torch.zeros((), dtype=torch.int64, device=dev)
            self._skip_batches = torch.tensor([r.skip_batches for r in self.spec.regimes.values()],
                                              dtype=torch.int64, device=dev)
        self.last: Decision | None = None
        self._pending_loss: list[torch.Tensor] = []
        self._extra: dict[str, list] = {"safety_skip": [], "param_norm": [], "wall_time": [],
                                        "update_norm": [], "update_scale": []}
        self._cap: tuple[float, float] | None = None
        self._capper = UpdateCap()
        # ‖update‖/‖θ‖ of the last applied update (before the cap), seen at the next step;
        # a 0-d tensor on the device path
        self._update_ratio: float | torch.Tensor = math.nan
        self._reads_ratio = reads_update_ratio(self.spec)
        if self.mode == "device":
            self._update_ratio = torch.full((), math.nan, device=self._params()[0].device)
        self._t0 = time.perf_counter()

    def _choose_mode(self, decide_on: str) -> str:
        """'host' (numba engine, free on CPU) or 'device' (tensor engine, no syncs on GPU)."""
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

    @property
    def should_stop(self) -> bool:
        """True once the guard entered a stop regime (on device: reads one flag back)."""
        if self.device_guard is not None:
            return bool(self.device_guard.stopped)
        return self._should_stop

    # --- the torch.optim surface ------------------------------------------------------------
    @property  # type: ignore[override]
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    @property  # type: ignore[override]
    def state(self) -> Any:
        return self.optimizer.state

    def observe_loss(self, loss: torch.Tensor | float) -> None:
        """Hand over a (micro-batch) loss for the next `step()` that is called without one.

        For trainers that call `optimizer.step()` themselves (Hugging Face, Lightning):
        losses of accumulated micro-batches are averaged.
        """
        self._pending_loss.append(torch.as_tensor(loss).detach().float().reshape(()))

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, group: dict[str, Any]) -> None:
        self.optimizer.add_param_group(group)

    def __repr__(self) -> str:
        return f"GuardedOptimizer({self.optimizer.__class__.__name__}, spec={self.spec.name})"

    # --- one guarded step -------------------------------------------------------------------
    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    def _grads(self) -> list[torch.Tensor]:
        return [p.grad for p in self._params() if p.grad is not None]

    def telemetry(self, loss: torch.Tensor | float | None) -> tuple[float, float]:
        """(loss, gradient norm), all-reduced across ranks when distributed."""
        grads = self._grads()
        if not grads:
            grad_norm = torch.tensor(float("nan"))
        else:
            norms = torch._foreach_norm(grads, 2.0)
            if norms[0].dtype != torch.float32 or len({n.dtype for n in norms}) > 1:
                norms = [n.float() for n in norms]
            grad_norm = torch.linalg.vector_norm(torch.stack(norms))
        if not self._distributed():
            loss = loss.detach() if torch.is_tensor(loss) else loss
            return (float("nan") if loss is None else float(loss)), float(grad_norm)
        loss_t = torch.as_tensor(float("nan") if loss is None else loss).detach().float()
        packed = torch.stack([loss_t.to(grad_norm.device).reshape(()), grad_norm.reshape(())])
        dist.all_reduce(packed, op=dist.ReduceOp.SUM, group=self.process_group)
        packed = packed.double() / dist.get_world_size(self.process_group)
        values = packed.cpu().tolist()
        return values[0], values[1]

    @staticmethod
    def _distributed() -> bool:
        return dist.is_available() and dist.is_initialized()

    @torch.no_grad()
    def step(self, closure: Any = None, *, loss: torch.Tensor | float | None = None) -> Any:
        """Observe this step's loss and gradient, decide, and apply the bounded control."""
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if loss is None and self._pending_loss:
            loss = torch.stack(self._pending_loss).mean()
        self._pending_loss = []
        if self.device_guard is not None:
            self._step_device(loss)
            return loss
        loss_value, grad_norm = self.telemetry(loss)
        d = self.guard.observe(self.step_count, loss=loss_value, grad_norm=grad_norm,
                               lr=float(self.param_groups[0]["lr"]),
                               update_ratio=self._update_ratio)
        self.last = d
        self._update_ratio = math.nan
        safety = not d.skip and not math.isfinite(grad_norm)
        if d.rollback:
            self._restore()
            self.pending_skip_batches += d.skip_batches
        elif not d.skip and not safety:
            self._apply(d)
            self._maybe_snapshot(d)
        if d.stop and not self._should_stop:
            self._should_stop, self.stop_reason = True, d.reason or f"regime {d.regime}"
        self._record(d, safety)
        self.step_count += 1
        return loss

    def _apply(self, d: Decision) -> None:
        if d.momentum_scale != 1.0:
            self._damp_momentum(d.momentum_scale)
        capped = math.isfinite(d.update_cap) or self._reads_ratio
        if capped:
            self._capper.before(self._params())
        base = [g["lr"] for g in self.param_groups]
        for g, lr in zip(self.param_groups, base):
            g["lr"] = lr * d.lr_scale if not torch.is_tensor(lr) else lr.mul(d.lr_scale)
        try:
            self.optimizer.step()
        finally:
            for g, lr in zip(self.param_groups, base):
                g["lr"] = lr
        if capped:   # an infinite cap only measures: factor 1, nothing rewritten
            d_norm, factor = self._capper.apply(self._params(), d.update_cap, on_host=True)
            self._cap = (float(d_norm), float(factor))
            # divided as tensors (float32), like the device path, so both decide alike
            self._update_ratio = float(d_norm / self._capper.p_norm)

    def _damp_momentum(self, scale: float) -> None:
        bufs = [s[k] for s in self.optimizer.state.values() for k in MOMENTUM_KEYS
                if k in s and torch.is_tensor(s[k])]
        if bufs:
            torch._foreach_mul_(bufs, scale)

    # --- snapshots and rollback -------------------------------------------------------------
    def _maybe_snapshot(self, d: Decision) -> None:
        every = self.spec.bounds.snapshot_every
        if d.regime == self.spec.initial and self.step_count % every == 0:
            state = self.optimizer.state_dict()   # tensors are shared: clone just those
            state["state"] = {k: {n: v.clone() if torch.is_tensor(v) else copy.deepcopy(v)
                                  for n, v in s.items()} for k, s in state["state"].items()}
            self.snapshot = {
                "params": [p.detach().clone() for p in self._params()],
                "optimizer": state,
            }
            self.snapshot_step = self.step_count

    def _restore(self) -> None:
        if self.snapshot is None:
            return
        for p, saved in zip(self._params(), self.snapshot["params"]):
            p.copy_(saved)
        self.optimizer.load_state_dict(copy.deepcopy(self.snapshot["optimizer"]))

    def take_skip_batches(self) -> int:
        """Batches the runner should skip now (after a rollback); resets the counter."""
        if self.device_guard is not None:
            n = int(self._pending_dev)
            self._pending_dev.zero_()
            return n
        n, self.pending_skip_batches = self.pending_skip_batches, 0
        return n

    # --- the device path --------------------------------------------------------------------
    def _telemetry_device(self, loss: Any) -> tuple[torch.Tensor, torch.Tensor]:
        grads = self._grads()
        dev = self._params()[0].device
        norms = torch._foreach_norm(grads, 2.0) if grads else []
        grad_norm = (torch.linalg.vector_norm(torch.stack([n.float() for n in norms]))
                     if grads else torch.full((), float("nan"), device=dev))
        loss_t = (loss if torch.is_tensor(loss) else
                  torch.full((), float("nan") if loss is None else float(loss), device=dev))
        packed = torch.stack([loss_t.detach().float().reshape(()), grad_norm.reshape(())])
        if self._distributed():
            dist.all_reduce(packed, op=dist.ReduceOp.SUM, group=self.process_group)
            packed = packed / dist.get_world_size(self.process_group)
        return packed[0], packed[1]

    def _step_device(self, loss: Any) -> None:
        """The whole step as tensor arithmetic: no value is read back to the host."""
        g = self.device_guard
        loss_t, grad_norm = self._telemetry_device(loss)
        d = g.observe(self.step_count, loss=loss_t, grad_norm=grad_norm,
                      lr=float(self.param_groups[0]["lr"]), update_ratio=self._update_ratio)
        apply = ~d["skip"] & torch.isfinite(grad_norm)
        if self.snapshot is not None:
            self._restore_where(d["rollback"])
        self._pending_dev += d["rollback"].to(torch.int64) * self._skip_batches[d["regime"]]
        has_cap = self._reads_ratio or self._has_cap()
        if has_cap:
            self._capper.before(self._params())
        adamw_step(self.optimizer, lr_scale=d["lr_scale"], apply=apply,
                   momentum_scale=d["momentum_scale"])
        if has_cap:   # an infinite cap gives factor 1: the update is kept as is
            d_norm, _ = self._capper.apply(self._params(),
                                           d["update_cap"].to(self._capper.buf[0].dtype))
            ratio = (d_norm / self._capper.p_norm).float()
            self._update_ratio = torch.where(apply, ratio, torch.full_like(ratio, math.nan))
        if self.step_count % self.spec.bounds.snapshot_every == 0 and self._has_rollback():
            self._snapshot_where(apply & (d["regime"] == g.c.initial))
        self.step_count += 1

    def _has_cap(self) -> bool:
        return any(r.update_cap is not None for r in self.spec.regimes.values())

    def _has_rollback(self) -> bool:
        return any(r.rollback for r in self.spec.regimes.values())

    def _state_tensors(self) -> list[torch.Tensor]:
        return [t for p in self._params() for t in self.optimizer.state.get(p, {}).values()
                if torch.is_tensor(t)]

    def _snapshot_where(self, good: torch.Tensor) -> None:
        current = [p.detach() for p in self._params()] + self._state_tensors()
        if self.snapshot is None:
            self.snapshot = {"tensors": [t.clone() for t in current]}
            return
        for saved, cur in zip(self.snapshot["tensors"], current):
            saved.copy_(torch.where(good, cur, saved))

    def _restore_where(self, rollback: torch.Tensor) -> None:
        current = [p.detach() for p in self._params()] + self._state_tensors()
        for saved, cur in zip(self.snapshot["tensors"], current):
            cur.copy_(torch.where(rollback, saved, cur))

    # --- records ----------------------------------------------------------------------------
    def _record(self, d: Decision, safety: bool) -> None:
        e = self._extra
        e["safety_skip"].append(safety)
        norm, scale = self._cap if self._cap is not None else (float("nan"), float("nan"))
        self._cap = None
        e["update_norm"].append(norm)
        e["update_scale"].append(scale)
        e["wall_time"].append(time.perf_counter() - self._t0)
        if self.track_norms:
            params = self._params()
            e["param_norm"].append(float(torch.linalg.vector_norm(
                torch.stack(torch._foreach_norm(params)))))
        else:
            e["param_norm"].append(float("nan"))

    def trace(self) -> pd.DataFrame:
        """Telemetry and decisions of every step so far, in the canonical trace schema."""
        if self.device_guard is not None:
            return self.device_guard.trace()
        df = self.guard.trace()
        for key, values in self._extra.items():
            if len(values) == len(df):
                df[key] = values
        return df.dropna(axis=1, how="all")

    # --- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The wrapped optimizer's state plus the guard's, so a resumed run continues exactly."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "guard": self.guard.state_dict(),
            "step_count": self.step_count,
            "pending_skip_batches": self.pending_skip_batches,
            "should_stop": self._should_stop,
            "device_guard": (self.device_guard.state_dict() if self.device_guard is not None
                             else None),
            "stop_reason": self.stop_reason,
            "snapshot": copy.deepcopy(self.snapshot),
            "snapshot_step": self.snapshot_step,
            "update_ratio": self._update_ratio,
            "capper": self._capper.state_dict(),
            "extra": {k: list(v) for k, v in self._extra.items()},
        }

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(sd["optimizer"])
        self.guard.load_state_dict(sd["guard"])
        self.spec = self.guard.spec
        self._reads_ratio = reads_update_ratio(self.spec)
        self.step_count = int(sd["step_count"])
        self.pending_skip_batches = int(sd["pending_skip_batches"])
        self._should_stop = bool(sd["should_stop"])
        if self.device_guard is not None and sd.get("device_guard") is not None:
            self.device_guard.load_state_dict(sd["device_guard"])
        self.stop_reason = str(sd["stop_reason"])
        self.snapshot = sd["snapshot"]
        self.snapshot_step = sd["snapshot_step"]
        if "capper" in sd:
            self._capper.load_state_dict(sd["capper"])
        ratio = sd.get("update_ratio", math.nan)
        self._update_ratio = (ratio.to(self._params()[0].device) if torch.is_tensor(ratio)
                              else float(ratio))
        self._extra = {k: list(v) for k, v in sd.get("extra", self._extra).items()}

    def set_spec(self, spec: GuardSpec) -> None:
        """Swap the spec mid-run (live edits); takes effect at the next step."""
        if self.device_guard is not None:
            raise NotImplementedError("live spec edits run on the host engine "
                                      "(decide_on='host')")
        self.spec = spec
        self._reads_ratio = reads_update_ratio(spec)
        self.guard.set_spec(spec)
