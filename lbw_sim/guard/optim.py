"""GuardedOptimizer: the guard as an actuator around any `torch.optim.Optimizer`.

    opt = GuardedOptimizer(torch.optim.AdamW(model.parameters(), lr=3e-4), GuardSpec.default())
    loss = model(x, y); loss.backward()
    opt.step(loss=loss)          # the guard observes, decides, and applies bounded control
    opt.zero_grad()

Each step the global gradient norm (over every shard under FSDP2, or the one the user's
clip returned: `step(loss=…, grad_norm=…)`) and the loss (averaged over ranks, one
all-reduce for both) are handed to the guard (`engine.Guard`: the host or the torch
backend, both deciding exactly as `replay`) and the decision is applied to the wrapped
optimizer:
- **lr_scale** multiplies each group's LR for this step only (the scheduler never sees it);
- **skip** leaves parameters *and* optimizer state bit-identical (no moment decay, no weight
  decay, no step count);
- **momentum_scale** damps first moments (`exp_avg`, `momentum_buffer`) before the step;
- **update_cap** rescales an update whose norm exceeds `cap · ‖θ‖` (`update_scale` < 1);
- **rollback** restores the last known-good snapshot (taken every `snapshot_every` steps
  while the guard is in its initial regime) and asks the runner to skip the next N batches;
- **stop** sets `should_stop` with the spec's reason; later steps are skipped.
An update with a non-finite gradient is never applied (`safety_skip` marks the steps where
the actuator withheld an update the guard did not skip).

Where the decision is made (`decide_on`):
- **host**: the numba backend on two values read back in one transfer (loss, gradient norm);
  applying a decision is a branch around the wrapped optimizer's own `step()`, so every
  torch optimizer and option works. The default on the CPU, where a read is not a wait.
- **device**: the torch backend, every value a 0-d tensor; the decision reaches torch's own
  fused Adam/AdamW/SGD kernel as `found_inf` and a tensor LR (`guard.fused`), so `step()`
  reads nothing back. Rare actions that need the host (restore a snapshot, skip batches,
  stop) reach it one step late through a non-blocking copy (`guard.late`): a rollback
  decided at step t is carried out at step t+1, whose update is dropped (`restored`).
  `auto` chooses it on a GPU when the wrapped optimizer is fused.
`act=False` is shadow mode: every step is decided and recorded, nothing is applied, and the
weights stay bit-identical to the unwrapped optimizer's.

Mixed precision: `GradScaler.step(opt, loss=loss)` calls this optimizer on every step with
the scaler's `grad_scale` and `found_inf` (`_step_supports_amp_scaling`), so the guard sees
the overflow steps the scaler skips (as a non-finite gradient norm) and unscales itself.
"""

from __future__ import annotations

import copy
import io
import math
import time
from typing import Any

import pandas as pd
import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

from lbw_sim.guard.analysis import cap_cause, with_cap_causes
from lbw_sim.guard.engine import Decision, Guard, OnlineGuard, StepLog
from lbw_sim.guard.fused import (
    check_device_kernel,
    device_kernel_problem,
    first_moments,
    fused_step,
)
from lbw_sim.guard.late import LateMirror
from lbw_sim.guard.shell import WrappedOptimizer, full_norm
from lbw_sim.guard.spec import TRACE_NAMES, GuardSpec
from lbw_sim.guard.torch_backend import TensorGuard, TensorLog
from lbw_sim.traces.schema import ACTUATOR_COLUMNS

#: `state_dict()` layout version; older layouts load where they can (see `load_state_dict`).
STATE_FORMAT = 2
#: Running totals the device path mirrors to the host, in this order.
MIRROR = ("rollbacks", "skip_batches", "stop", "snap0", "snap1", "applied")


class UpdateCap:
    """Bound each update θ_new - θ_old to `cap`·‖θ‖, with one reusable copy of the parameters.

    `before()` copies θ into a persistent buffer; `apply()` turns the buffer into θ_old - θ_new,
    measures it and, where the cap binds, moves θ back towards θ_old: θ ← f·θ_new + (1-f)·θ_old.
    ‖θ‖ is refreshed every `refresh` steps (it drifts slowly). Tensor arithmetic only, so the
    device path uses it without a host read; `on_host=True` reads the factor and skips the
    rewrite when the cap does not bind. Only specs with a cap or an update-ratio signal pay it.
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
    return full_norm(torch.linalg.vector_norm(torch.stack(
        [full_norm(n) for n in torch._foreach_norm(tensors)])))


def reads_update_ratio(spec: GuardSpec) -> bool:
    """Whether a signal reads `update_ratio`: then every applied update is measured (with an
    infinite cap where the regime has none). Decided once per spec, not per step."""
    return any(s.source == "update_ratio" for s in spec.signals.values())


class GuardedOptimizer(WrappedOptimizer):
    """Drop-in wrapper: `step(loss=…)`, `zero_grad()`, `param_groups`, `state_dict()`, `trace()`.

    It is a `torch.optim.Optimizer` (so LR schedulers, trainers and `GradScaler` accept it)
    that shares the wrapped optimizer's `param_groups` and `state` rather than copying them.
    """

    _step_supports_amp_scaling = True     # GradScaler calls step() on overflow steps too

    def __init__(self, optimizer: torch.optim.Optimizer, spec: GuardSpec | None = None, *,
                 decide_on: str = "auto", act: bool = True, process_group: Any = None,
                 track_norms: bool = False):
        super().__init__(optimizer)
        self.spec = spec or GuardSpec.default()
        self.act = bool(act)
        self.process_group = process_group
        self.track_norms = track_norms
        self.mode = self._choose_mode(decide_on)
        self.on_device = self.mode == "device"
        self.device = self._params()[0].device
        dev = self.device
        self.guard: Guard = (TensorGuard(self.spec, dev) if self.on_device
                             else OnlineGuard(self.spec))
        self._nan = torch.full((), math.nan, device=dev)
        self._stop_reason = ""
        self.last: Decision | None = None
        self._pending_loss: list[torch.Tensor] = []
        width = len(ACTUATOR_COLUMNS) - 1                 # wall_time is kept apart
        self._log = TensorLog(width, dev) if self.on_device else StepLog(width)
        self._wall: list[float] = []
        self._capper = UpdateCap()
        # ‖update‖/‖θ‖ of the last applied update (before the cap), seen at the next step
        self._update_ratio: torch.Tensor | None = self._nan if self.on_device else None
        # snapshots: slot 0 on the host path; two slots on the device path, where whether a
        # candidate was good is learned one step late (see `_take_snapshot`)
        self.slots: list[dict[str, Any] | None] = [None, None]
        self.slot_steps = [-1.0, -1.0]                  # host view: step of a good snapshot
        self.pending_skip_batches = 0
        self._host_stop = False
        self._applied = True                            # host view of the last step
        self._restored = False
        if self.on_device:
            z = lambda dtype: torch.zeros((), dtype=dtype, device=dev)  # noqa: E731
            self._totals = {"rollbacks": z(torch.float64), "skip_batches": z(torch.float64),
                            "stop": z(torch.bool)}
            self._slot_good = torch.full((2,), -1.0, dtype=torch.float64, device=dev)
            self._dev_applied = torch.ones((), dtype=torch.bool, device=dev)
            self._mirror = LateMirror(len(MIRROR), dev)
            self._seen = {"step": -1, "rollbacks": 0.0, "skip_batches": 0.0}
        self._set_spec_flags(self.spec)
        self._t0 = time.perf_counter()

    def _choose_mode(self, decide_on: str) -> str:
        """'host' (numba backend, free on CPU) or 'device' (torch backend, no syncs on GPU)."""
        if decide_on not in ("auto", "host", "device"):
            raise ValueError(f"decide_on must be auto, host or device, got {decide_on!r}")
        if decide_on == "device":
            check_device_kernel(self.optimizer)
        if decide_on == "auto":
            on_gpu = self._params()[0].device.type in ("cuda", "mps")
            return "device" if on_gpu and not device_kernel_problem(self.optimizer) else "host"
        return decide_on

    def _set_spec_flags(self, spec: GuardSpec) -> None:
        self._reads_ratio = reads_update_ratio(spec)
        self._has_cap = any(r.update_cap is not None for r in spec.regimes.values())
        self._has_rollback = any(r.rollback for r in spec.regimes.values())
        self._damps = any(r.momentum_scale != 1.0 for r in spec.regimes.values())

    # --- what the loop reads --------------------------------------------------------------
    @property
    def should_stop(self) -> bool:
        """True once the guard entered a stop regime. On the device path this is the latest
        value that has reached the host (no wait: at most a step late, and every step after
        a stop is skipped on the device anyway)."""
        self._poll()
        return self._host_stop

    @property
    def stop_reason(self) -> str:
        """The stop regime's reason, once the guard stopped the run ('' before)."""
        if not self._stop_reason and self.should_stop:
            self._stop_reason = self.guard.stop_reason() or "stopped by the guard"
        return self._stop_reason

    @property
    def step_was_skipped(self) -> bool:
        """Whether the last `step()` withheld its update (a guard skip, a non-finite or AMP
        overflow gradient, a rollback, a stop). Trainers read it to hold the LR schedule
        (see docs/training-loop.md); on the device path it reads one flag back."""
        if self.on_device:
            return not bool(self._dev_applied)
        return not self._applied

    @property
    def snapshot_step(self) -> int | None:
        """The step of the known-good snapshot a rollback restores (None: none yet)."""
        self._poll(wait=True)
        best = max(self.slot_steps)
        return int(best) if best >= 0 else None

    @property
    def snapshot(self) -> dict[str, Any] | None:
        """The known-good snapshot a rollback restores ({'params', 'state'}; None: none)."""
        self._poll(wait=True)
        slot = self._good_slot()
        return None if slot is None else self.slots[slot]

    def take_skip_batches(self) -> int:
        """Batches the runner should skip now (after a rollback); resets the counter."""
        self._poll()
        n, self.pending_skip_batches = self.pending_skip_batches, 0
        return n

    def observe_loss(self, loss: torch.Tensor | float) -> None:
        """Hand over a (micro-batch) loss for the next `step()` that is called without one.

        For trainers that call `optimizer.step()` themselves (Hugging Face, Lightning):
        losses of accumulated micro-batches are averaged.
        """
        self._pending_loss.append(torch.as_tensor(loss).detach().float().reshape(()))

    def __repr__(self) -> str:
        shadow = ", act=False" if not self.act else ""
        return (f"GuardedOptimizer({self.optimizer.__class__.__name__}, spec={self.spec.name}"
                f", decide_on={self.mode!r}{shadow})")

    # --- one guarded step -------------------------------------------------------------------
    def telemetry(self, loss: torch.Tensor | float | None, grad_norm: Any = None,
                  grad_scale: torch.Tensor | None = None,
                  found_inf: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, gradient norm) as 0-d tensors: the norm global over shards and unscaled
        (inf where the scaler found an overflow), the loss averaged over ranks."""
        norm = self.grad_norm() if grad_norm is None else _as_norm(grad_norm, self.device)
        if grad_scale is not None:
            norm = norm / grad_scale.to(norm.dtype)
        if found_inf is not None:
            norm = torch.where(found_inf.to(norm.device) > 0, math.inf, norm)
        if torch.is_tensor(loss):
            loss_t = full_norm(loss.detach()).reshape(()).to(norm.device)
        else:
            loss_t = torch.full((), math.nan if loss is None else float(loss),
                                dtype=torch.float64, device=norm.device)
        if not self._distributed():
            return loss_t, norm
        packed = torch.stack([loss_t.double(), norm.double()])
        dist.all_reduce(packed, op=dist.ReduceOp.SUM, group=self.process_group)
        packed = packed / dist.get_world_size(self.process_group)
        return packed[0], packed[1]

    @staticmethod
    def _distributed() -> bool:
        return dist.is_available() and dist.is_initialized()

    def _run_closure(self, closure: Any, loss: Any) -> tuple[Any, Any]:
        """(the loss the guard decides on, what `step` returns)."""
        loss = self._closure_loss(closure, loss)
        return loss, loss

    @torch.no_grad()
    def step(self, closure: Any = None, *, loss: torch.Tensor | float | None = None,
             grad_norm: torch.Tensor | float | None = None) -> Any:
        """Observe this step's loss and gradient, decide, and apply the bounded control.

        `grad_norm`: the norm your `clip_grad_norm_` returned (pre-clip), so it is not
        computed twice; leave it out and the guard measures the norm itself."""
        loss, out = self._run_closure(closure, loss)
        if loss is None and self._pending_loss:
            loss = torch.stack(self._pending_loss).mean()
        self._pending_loss = []
        grad_scale = getattr(self, "grad_scale", None)      # set by GradScaler.step
        found_inf = getattr(self, "found_inf", None)
        loss_t, norm = self.telemetry(loss, grad_norm, grad_scale, found_inf)
        if self.on_device:
            self._device_step(loss_t, norm, grad_scale, found_inf)
        else:
            self._host_step(loss_t, norm, grad_scale, found_inf)
        self.step_count += 1
        return out

    def _lr(self) -> Any:
        return self.param_groups[0]["lr"]

    # --- the host path: two values read in one transfer, control by branches --------------
    def _host_step(self, loss_t: torch.Tensor, norm: torch.Tensor,
                   grad_scale: torch.Tensor | None, found_inf: torch.Tensor | None) -> None:
        lr, ratio = self._lr(), self._update_ratio
        extra = [("lr", lr), ("update_ratio", ratio)]
        extra = [(k, v) for k, v in extra if torch.is_tensor(v)]  # a tensor LR; a measured ratio
        values = [loss_t.double(), norm.double(),
                  *(v.detach().double().to(norm.device).reshape(()) for _, v in extra)]
        read = torch.stack(values).tolist()                    # the one transfer
        loss, grad_norm = read[0], read[1]
        tel = {"lr": lr, "update_ratio": math.nan, **dict(zip((k for k, _ in extra), read[2:]))}
        d = self.guard.observe(self.step_count, loss=loss, grad_norm=grad_norm, **tel)
        self.last = d
        finite = math.isfinite(grad_norm)
        if not self.act:
            self._shadow_step(grad_scale, found_inf)
            self._record(False, math.nan, math.nan, False)
            return
        self._restored = bool(d.rollback) and self._restore(0)
        self.pending_skip_batches += int(d.skip_batches)
        apply = not d.skip and finite
        update_norm, update_scale = math.nan, math.nan
        measure = apply and (math.isfinite(d.update_cap) or self._reads_ratio)
        if apply:
            params = self._params()
            if measure:
                self._capper.before(params)
            self._host_update(d, grad_scale)
            if measure:
                update_norm, update_scale = self._capper.apply(params, d.update_cap,
                                                               on_host=True)
                self._update_ratio = (update_norm / self._capper.p_norm).float()
        if not measure:
            self._update_ratio = None
        if (self._has_rollback and self.step_count % self.spec.bounds.snapshot_every == 0
                and apply and d.initial):
            self._snapshot_into(0)
            self.slot_steps[0] = float(self.step_count)
        self._host_stop = self._host_stop or bool(d.stop)
        self._applied = apply
        self._record(not d.skip and not finite, update_norm, update_scale, self._restored)

    def _host_update(self, d: Decision, grad_scale: torch.Tensor | None) -> None:
        if d.momentum_scale != 1.0:
            bufs = first_moments(self.optimizer)
            if bufs:
                torch._foreach_mul_(bufs, d.momentum_scale)
        if grad_scale is not None:
            _unscale(self._grads(), grad_scale)
        base = [g["lr"] for g in self.param_groups]
        for g, lr in zip(self.param_groups, base):
            g["lr"] = lr * d.lr_scale if not torch.is_tensor(lr) else lr.mul(d.lr_scale)
        try:
            self.optimizer.step()
        finally:
            for g, lr in zip(self.param_groups, base):
                g["lr"] = lr

    def _shadow_step(self, grad_scale: torch.Tensor | None,
                     found_inf: torch.Tensor | None) -> None:
        """What the unwrapped optimizer would do under GradScaler (or plainly)."""
        if found_inf is None:
            self.optimizer.step()
        elif self.on_device or getattr(self.optimizer, "_step_supports_amp_scaling", False):
            fused_step(self.optimizer, lr_scale=None, skip=None, grad_scale=grad_scale,
                       found_inf=found_inf)
        elif not float(found_inf):                 # as GradScaler._maybe_opt_step
            if grad_scale is not None:
                _unscale(self._grads(), grad_scale)
            self.optimizer.step()
        if not self.on_device:
            self._applied = found_inf is None or not float(found_inf)

    # --- the device path: decisions as tensors, torch's fused kernel, no reads -------------
    def _device_step(self, loss_t: torch.Tensor, norm: torch.Tensor,
                     grad_scale: torch.Tensor | None, found_inf: torch.Tensor | None) -> None:
        self._poll()
        restored = self.act and self._restore_due() and self._restore(self._good_slot())
        self._restored = restored
        d = self.guard.observe(self.step_count, loss=loss_t, grad_norm=norm, lr=self._lr(),
                               update_ratio=self._update_ratio)
        self.last = d
        if not self.act:
            self._shadow_step(grad_scale, found_inf)
            self._dev_applied = (torch.ones((), dtype=torch.bool, device=self.device)
                                 if found_inf is None else found_inf.to(self.device) == 0)
            self._record(torch.zeros((), dtype=torch.bool, device=self.device), self._nan,
                         self._nan, False)
            return
        finite = torch.isfinite(norm)
        apply = ~d.skip & finite
        if restored:
            apply = torch.zeros_like(apply)
        params = self._params()
        measure = self._reads_ratio or self._has_cap
        if measure:
            self._capper.before(params, apply)
        fused_step(self.optimizer, lr_scale=d.lr_scale, skip=~apply,
                   momentum_scale=d.momentum_scale if self._damps else None,
                   grad_scale=grad_scale, found_inf=None)
        update_norm = update_scale = self._nan
        self._update_ratio = self._nan
        if measure:
            cap = d.update_cap.to(self._capper.buf[0].dtype)
            d_norm, factor = self._capper.apply(params, cap)
            ratio = (d_norm / self._capper.p_norm).float()
            self._update_ratio = torch.where(apply, ratio, self._nan)
            update_norm = torch.where(apply, d_norm, self._nan)
            update_scale = torch.where(apply, factor, self._nan)
        if self._has_rollback and self.step_count % self.spec.bounds.snapshot_every == 0:
            self._take_snapshot(apply & d.initial)
        t = self._totals
        t["rollbacks"] = t["rollbacks"] + d.rollback.double()
        t["skip_batches"] = t["skip_batches"] + d.skip_batches.double()
        t["stop"] = t["stop"] | d.stop
        self._dev_applied = apply
        self._mirror.push(self.step_count, torch.stack([
            t["rollbacks"], t["skip_batches"], t["stop"].double(), self._slot_good[0],
            self._slot_good[1], apply.double()]))
        safety = ~d.skip & ~finite
        if restored:
            safety = ~d.skip
        self._record(safety, update_norm, update_scale, restored)

    def _poll(self, wait: bool = False) -> None:
        """Take in what the device has decided since the host last looked (device path)."""
        if not self.on_device:
            return
        got = self._mirror.latest(wait)
        if got is None or got[0] <= self._seen["step"]:
            return
        step, v = got
        seen = self._seen
        seen["step"] = step
        self.pending_skip_batches += int(v[1] - seen["skip_batches"])
        seen["skip_batches"] = float(v[1])
        if v[0] > seen["rollbacks"]:
            seen["rollbacks"], seen["due"] = float(v[0]), True
        self._host_stop = self._host_stop or bool(v[2])
        self.slot_steps = [float(v[3]), float(v[4])]

    def _restore_due(self) -> bool:
        due = self._seen.pop("due", False)
        return due and self._good_slot() is not None

    def _good_slot(self) -> int | None:
        best = max(range(2), key=lambda i: self.slot_steps[i])
        return best if self.slot_steps[best] >= 0 else None

    # --- snapshots and rollback: one layout, one restore -----------------------------------
    def _take_snapshot(self, good: torch.Tensor) -> None:
        """A candidate snapshot on the device path: written into the slot that does not hold
        the newest known-good one; whether it was good is learned with the next mirror."""
        last_candidate = max(self.slot_steps + [self._seen.get("candidate", -1.0)])
        if self._seen["step"] < last_candidate:       # rare: the host is far behind
            self._poll(wait=True)
        keep = self._good_slot()
        slot = 0 if keep is None else 1 - keep
        self._snapshot_into(slot)
        self._seen["candidate"] = float(self.step_count)
        self._slot_good[slot] = torch.where(good, float(self.step_count), -1.0)

    def _snapshot_into(self, slot: int) -> None:
        """Copy θ and the optimizer state (this rank's shards: local tensors) into `slot`."""
        params = [_local(p.detach()) for p in self._params()]
        states = [self.optimizer.state.get(p, {}) for p in self._params()]
        snap = self.slots[slot]
        same = (snap is not None and len(snap["state"]) == len(states)
                and all(a.keys() == b.keys() for a, b in zip(snap["state"], states)))
        if not same:
            self.slots[slot] = {"params": [p.clone() for p in params],
                                "state": [{k: _clone(v) for k, v in s.items()}
                                          for s in states]}
            return
        torch._foreach_copy_(snap["params"], params)
        for saved, cur in zip(snap["state"], states):
            for k, v in cur.items():
                if torch.is_tensor(v):
                    saved[k].copy_(_local(v))
                else:
                    saved[k] = copy.deepcopy(v)

    def _restore(self, slot: int | None) -> bool:
        """Put the snapshot in `slot` back (parameters and optimizer state, in place)."""
        snap = None if slot is None else self.slots[slot]
        if snap is None or self.slot_steps[slot] < 0:
            return False
        for p, saved, st in zip(self._params(), snap["params"], snap["state"]):
            _local(p.detach()).copy_(saved)
            cur = self.optimizer.state.get(p)
            if not st:
                self.optimizer.state.pop(p, None)
            elif cur is not None and cur.keys() == st.keys():
                for k, v in st.items():
                    if torch.is_tensor(v):
                        _local(cur[k]).copy_(v)
                    else:
                        cur[k] = copy.deepcopy(v)
            else:
                self.optimizer.state[p] = {k: _clone(v) for k, v in st.items()}
        return True

    # --- records ----------------------------------------------------------------------------
    def _record(self, safety: Any, update_norm: Any, update_scale: Any, restored: Any) -> None:
        pn = _norm(self._params()) if self.track_norms else math.nan
        if self.on_device:
            pn = self._nan if not self.track_norms else pn
            self._log.append(torch.stack([
                torch.as_tensor(safety, device=self.device).double(), pn.double(),
                update_norm.double(), update_scale.double(),
                torch.full((), float(restored), dtype=torch.float64, device=self.device)]))
        else:
            self._log.append([float(safety), float(pn), float(update_norm),
                              float(update_scale), float(restored)])
        self._wall.append(time.perf_counter() - self._t0)

    def _actuator(self, m: Any) -> dict[str, Any]:
        cols = [c for c in ACTUATOR_COLUMNS if c != "wall_time"]
        out = {c: m[:, i] for i, c in enumerate(cols)}
        for flag in ("safety_skip", "restored"):
            out[flag] = out[flag].astype(bool)
        return out

    def trace(self, signals: bool = False, start: int = 0) -> pd.DataFrame:
        """Telemetry and decisions of every step so far, in the canonical trace schema.

        `signals=True` appends each signal's column (the values the live decisions saw,
        as `replay(trace, spec, signals=True)`; kept even where all NaN). `start` keeps
        only rows `start:` (index and all; columns empty in those rows are left out, as
        in a whole trace) and costs only those: a logger's new rows. In shadow mode
        (`act=False`) a `shadow` column says that none of the decisions was applied."""
        df = self.guard.trace(signals, start)
        names = [c for c in df.columns if c not in TRACE_NAMES]     # the signal columns
        sig, df = df[names], df.drop(columns=names)
        extra = self._actuator(self._log.matrix(start=start))
        extra["wall_time"] = self._wall[start:]
        for col in ACTUATOR_COLUMNS:
            if len(extra[col]) == len(df):
                df[col] = extra[col]
        df = with_cap_causes(df.dropna(axis=1, how="all"))
        if not self.act:
            df["shadow"] = True
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
        if not self.act:
            row["shadow"] = True
        row.update(sig)
        return row

    # --- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The wrapped optimizer's state plus the guard's (`STATE_FORMAT`), so a resumed run
        continues exactly. Under FSDP2 save `optimizer` through torch.distributed.checkpoint
        and the rest (`guard_state_dict()`) beside it."""
        return {"optimizer": self.optimizer.state_dict(), **self.guard_state_dict()}

    def guard_state_dict(self) -> dict[str, Any]:
        """Everything but the wrapped optimizer's state."""
        self._poll(wait=True)
        sd = {
            "format": STATE_FORMAT,
            "decide_on": self.mode,
            "act": self.act,
            "guard": self.guard.state_dict(),
            "step_count": self.step_count,
            "pending_skip_batches": self.pending_skip_batches,
            "stop": self._host_stop,
            "stop_reason": self._stop_reason,
            "slots": copy.deepcopy(self.slots),
            "slot_steps": list(self.slot_steps),
            "update_ratio": self._update_ratio,
            "capper": self._capper.state_dict(),
            "actuator": self._log.state_dict(),
            "wall_time": list(self._wall),
        }
        if self.on_device:
            sd["device"] = {"totals": dict(self._totals), "slot_good": self._slot_good,
                            "seen": dict(self._seen), "applied": self._dev_applied}
        return sd

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        version = sd.get("format", 1 if "decide_on" in sd else 0)
        if version != STATE_FORMAT:
            sd = _upgrade(sd, version, self.mode)
        if sd["decide_on"] != self.mode:
            raise ValueError(f"this state was saved with decide_on={sd['decide_on']!r}; this "
                             f"optimizer decides on {self.mode!r} (the two keep different "
                             "guard state); construct it with the same decide_on")
        if "optimizer" in sd:
            self.optimizer.load_state_dict(sd["optimizer"])
        self.load_guard_state_dict(sd)

    def dcp_state(self) -> dict[str, io.BytesIO]:
        """This rank's guard state as one entry of a torch.distributed.checkpoint state dict
        (keyed by rank: its snapshots hold this rank's shards). Pass the same call's result
        to `dcp.load` and then to `load_dcp_state`."""
        buf = io.BytesIO()
        torch.save(self.guard_state_dict(), buf)
        buf.seek(0)
        return {self._dcp_key(): buf}

    def load_dcp_state(self, state: dict[str, Any]) -> None:
        """The guard state `dcp.load` filled in (read with `weights_only=True`)."""
        buf = state[self._dcp_key()]
        buf.seek(0)
        self.load_guard_state_dict(torch.load(buf, weights_only=True))

    def _dcp_key(self) -> str:
        rank = dist.get_rank(self.process_group) if self._distributed() else 0
        return f"lbw_guard/rank{rank}"

    def load_guard_state_dict(self, sd: dict[str, Any]) -> None:
        """The counterpart of `guard_state_dict` (the wrapped optimizer's state apart)."""
        self.guard.load_state_dict(sd["guard"])
        self.spec = self.guard.spec
        self._set_spec_flags(self.spec)
        self.step_count = int(sd["step_count"])
        move = lambda v: v.to(self.device) if torch.is_tensor(v) else v  # noqa: E731
        self.pending_skip_batches = int(sd["pending_skip_batches"])
        self._host_stop, self._stop_reason = bool(sd["stop"]), str(sd["stop_reason"])
        self.slots = [None if s is None else
                      {"params": [move(p) for p in s["params"]],
                       "state": [{k: move(v) for k, v in st.items()} for st in s["state"]]}
                      for s in sd["slots"]]
        self.slot_steps = [float(x) for x in sd["slot_steps"]]
        self._capper.load_state_dict(sd["capper"])
        self._update_ratio = move(sd["update_ratio"])
        self._log.load_state_dict(sd["actuator"])
        self._wall = list(sd["wall_time"])
        if self.on_device:
            dev = sd["device"]
            self._totals = {k: move(v) for k, v in dev["totals"].items()}
            self._slot_good = move(dev["slot_good"])
            self._seen = dict(dev["seen"])
            self._dev_applied = move(dev["applied"])
            self._mirror = LateMirror(len(MIRROR), self.device)

    def set_spec(self, spec: GuardSpec) -> None:
        """Swap the spec mid-run (live edits); it decides from the next step on, on either
        backend, and the trace records each step's `spec_hash`."""
        self.spec = spec
        self._set_spec_flags(spec)
        self.guard.set_spec(spec)


def _as_norm(norm: Any, device: torch.device) -> torch.Tensor:
    """A user-supplied gradient norm (a float, a tensor, a DTensor) as a float32 0-d tensor."""
    if torch.is_tensor(norm):
        return full_norm(norm.detach()).reshape(()).float()
    return torch.full((), float(norm), dtype=torch.float32, device=device)


def _unscale(grads: list[torch.Tensor], grad_scale: torch.Tensor) -> None:
    """Divide the gradients by the AMP scale in place (one foreach pass per dtype)."""
    inv = grad_scale.double().reciprocal()
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for g in grads:
        by_dtype.setdefault(g.dtype, []).append(g)
    for dtype, group in by_dtype.items():
        torch._foreach_mul_(group, inv.to(dtype))


def _clone(v: Any) -> Any:
    return _local(v).clone() if torch.is_tensor(v) else copy.deepcopy(v)


def _local(t: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor (the storage itself), or the tensor."""
    return t.to_local() if isinstance(t, DTensor) else t


def _upgrade(sd: dict[str, Any], version: int, mode: str) -> dict[str, Any]:
    """An older `state_dict` layout in the current one, or ValueError naming the version."""
    if version == 1 and sd.get("decide_on") == "host":
        snap = sd.get("snapshot")
        actuator = sd["actuator"]
        rows = [list(r) + [0.0] for r in actuator]            # the `restored` column
        return {**sd, "format": STATE_FORMAT, "act": True,
                "stop": bool(sd["stop"]),
                "pending_skip_batches": int(sd["pending_skip_batches"]),
                "slots": [None if snap is None else
                          {"params": snap["params"], "state": snap["state"]}, None],
                "slot_steps": [float(snap["step"]) if snap is not None else -1.0, -1.0],
                "actuator": rows}
    saved = {0: "lbw_sim before 2026-12-01 (no 'format' and no 'decide_on' key)",
             1: f"lbw_sim of 2026-12-01..04 (decide_on={sd.get('decide_on')!r})"}
    raise ValueError(
        f"this GuardedOptimizer state has format {version}, saved by "
        f"{saved.get(version, 'an unknown release')}; this release reads format "
        f"{STATE_FORMAT} and format-1 states decided on the host. Resume from a checkpoint "
        "saved by this release, or load only the wrapped optimizer's state "
        "(opt.optimizer.load_state_dict(state['optimizer'])) and start the guard afresh")
