"""The engine's step on device tensors: decisions without host-device synchronisation.

`TensorGuard` runs the same three stages as `engine.OnlineGuard` — signals, conditions,
walk — but every value stays a tensor on the training device, so a CUDA training loop never
waits for the host. The arithmetic follows `signals.signal_kernel` and `engine.walk_kernel`
operation for operation (float64), and tests check it against `replay` step for step.
Per-step telemetry and decisions are written into a device buffer and copied to the host
in batches (`flush`), the only point that synchronises.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from lbw_sim.guard.engine import (
    B_CONSEC,
    B_DOWN,
    B_FRAC,
    B_HI,
    B_LO,
    B_ROLLBACKS,
    B_UP,
    B_WINDOW,
    cause_text,
    compile_spec,
)
from lbw_sim.guard.signals import KIND_CODE
from lbw_sim.guard.spec import TELEMETRY, GuardSpec

F64 = torch.float64
# columns of the on-device record buffer
RECORD = ("step", "loss", "grad_norm", "lr", "update_ratio", "regime", "transition", "lr_scale",
          "skipped", "rollback", "stop")


def _scalar(v: torch.Tensor | float, device: torch.device) -> torch.Tensor:
    """A 0-d float64 tensor on `device`; Python numbers are filled there, never copied."""
    if torch.is_tensor(v):
        return v.detach().to(device=device, dtype=F64).reshape(())
    return torch.full((), float(v), dtype=F64, device=device)


class _SignalState:
    """One estimator's state as tensors (mean, variance, last/first step, started, prev)."""

    def __init__(self, device: torch.device):
        z = lambda: torch.zeros((), dtype=F64, device=device)  # noqa: E731
        self.m, self.v, self.last, self.first, self.prev = z(), z(), z(), z(), z()
        self.started = torch.zeros((), dtype=torch.bool, device=device)

    def tensors(self) -> list[torch.Tensor]:
        return [self.m, self.v, self.last, self.first, self.prev, self.started]


def signal_step(kind: int, x: torch.Tensor, step: torch.Tensor, half_life: float,
                warmup: float, clip: float, floor: float, s: _SignalState) -> torch.Tensor:
    """One observation of one estimator, branch-free (see `signals.signal_kernel`)."""
    nan = torch.full_like(x, math.nan)
    finite = torch.isfinite(x)
    first_obs = finite & ~s.started
    upd = finite & s.started
    xs = torch.where(finite, x, s.m)                     # keep NaN out of the arithmetic
    dt = torch.clamp(step - s.last, min=1.0)
    a = torch.exp(-(math.log(2.0) / half_life) * dt)
    warm = (step - s.first) >= warmup
    v_new = s.v
    if kind == 0:
        m_new = a * s.m + (1.0 - a) * xs
        out, first_out = m_new, xs
    elif kind == 1:
        sd = torch.maximum(torch.maximum(torch.sqrt(s.v), floor * torch.abs(s.m)),
                           torch.full_like(x, 1e-12))
        out = torch.where(warm, (xs - s.m) / sd, torch.zeros_like(x))
        xc = torch.clamp(xs, s.m - clip * sd, s.m + clip * sd) if clip > 0 else xs
        xc = torch.where(warm, xc, xs)
        d = xc - s.m
        m_new = s.m + (1.0 - a) * d
        v_new = a * (s.v + (1.0 - a) * d * d)
        first_out = torch.zeros_like(x)
    elif kind == 2:
        ratio = torch.where(s.m > floor, xs / s.m, torch.full_like(x, math.nan))
        out = torch.where(warm, ratio, torch.ones_like(x))
        xc = xs
        if clip > 1.0:
            xc = torch.where(warm & (s.m > 0), torch.clamp(xs, s.m / clip, s.m * clip), xs)
        m_new = a * s.m + (1.0 - a) * xc
        first_out = torch.ones_like(x)
    else:
        g = (xs - s.prev) / dt
        m_new = torch.where((step - s.first) > dt, a * s.m + (1.0 - a) * g, g)
        out = torch.where(warm, m_new, torch.zeros_like(x))
        first_out = torch.zeros_like(x)
    result = torch.where(first_obs, first_out, torch.where(upd, out, nan))
    s.m = torch.where(first_obs, xs, torch.where(upd, m_new, s.m))
    s.v = torch.where(upd, v_new, torch.where(first_obs, torch.zeros_like(x), s.v))
    s.first = torch.where(first_obs, step, s.first)
    s.last = torch.where(finite, step, s.last)
    s.prev = torch.where(finite, xs, s.prev)
    s.started = s.started | finite
    return result


class TensorGuard:
    """The guard's online step with all state on `device`; `observe` returns tensors."""

    def __init__(self, spec: GuardSpec, device: torch.device | str = "cpu",
                 buffer_rows: int = 256):
        self.spec, self.device = spec, torch.device(device)
        self.c = c = compile_spec(spec)
        dev = self.device
        t = lambda a, dtype: torch.as_tensor(np.asarray(a), dtype=dtype, device=dev)  # noqa: E731
        self.from_mask, self.to = t(c.from_mask, torch.bool), t(c.to, torch.int64)
        self.for_, self.dwell = t(c.for_, torch.int64), t(c.dwell, F64)
        self.reg_lr, self.reg_mom, self.reg_cap = t(c.reg_lr, F64), t(c.reg_momentum, F64), \
            t(c.reg_cap, F64)
        self.reg_skip, self.reg_rb = t(c.reg_skip, torch.bool), t(c.reg_rollback, torch.bool)
        self.reg_stop = t(c.reg_stop, torch.bool)
        self.b = [float(x) for x in c.bounds]
        self.window = max(int(c.bounds[B_WINDOW]), 1)
        self.sig = {name: _SignalState(dev) for name in spec.signals}
        zi = lambda: torch.zeros((), dtype=torch.int64, device=dev)  # noqa: E731
        self.regime = torch.full((), c.initial, dtype=torch.int64, device=dev)
        self.entered = torch.zeros((), dtype=F64, device=dev)
        self.lr_prev = torch.full((), min(max(c.reg_lr[c.initial], self.b[B_LO]), self.b[B_HI]),
                                  dtype=F64, device=dev)
        self.consec, self.wcount, self.wpos, self.n_rb = zi(), zi(), zi(), zi()
        self.stopped = torch.zeros((), dtype=torch.bool, device=dev)
        self.runs = torch.zeros(len(c.trans_names), dtype=torch.int64, device=dev)
        self.ring = torch.zeros(self.window, dtype=torch.int64, device=dev)
        self.started = False
        self.buffer = torch.zeros((buffer_rows, len(RECORD) + len(spec.signals)), dtype=F64,
                                  device=dev)
        self.rows = 0
        self.host: list[np.ndarray] = []

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
                out[name] = torch.full((), math.nan, dtype=F64, device=self.device)
                continue
            clip = -1.0 if sig.clip is None else float(sig.clip)
            out[name] = signal_step(KIND_CODE[sig.kind], x, step, float(sig.half_life),
                                    float(sig.warmup), clip, float(sig.floor), self.sig[name])
        return out

    @torch.no_grad()
    def observe(self, step: int, **telemetry: torch.Tensor | float) -> dict[str, torch.Tensor]:
        """Decide step `step` from 0-d telemetry tensors; nothing is read back to the host."""
        dev, b = self.device, self.b
        tel = {k: _scalar(v, dev) for k, v in telemetry.items()
               if k in TELEMETRY and v is not None}
        step_t = torch.full((), float(step), dtype=F64, device=dev)
        if not self.started:
            self.entered = step_t.clone()
            self.started = True
        env = {k: tel.get(k, torch.full((), math.nan, dtype=F64, device=dev)) for k in TELEMETRY}
        signals = self._signals(step_t, tel)
        env.update(signals)
        k_n = len(self.c.trans_names)
        if k_n:
            cond = torch.stack([torch.as_tensor(fn(env), device=dev).reshape(())
                                for fn in self.c.conds]).to(torch.bool)
            self.runs = torch.where(cond, self.runs + 1, torch.zeros_like(self.runs))
            elig = (self.from_mask[:, self.regime] & (self.runs >= self.for_)
                    & (self.to != self.regime) & ((step_t - self.entered) >= self.dwell)
                    & ~self.stopped)
            fired = elig.any()
            k = torch.argmax(elig.to(torch.int64))
            regime = torch.where(fired, self.to[k], self.regime)
            trans = torch.where(fired, k, torch.full_like(k, -1))
        else:
            fired = torch.zeros((), dtype=torch.bool, device=dev)
            regime, trans = self.regime, torch.full((), -1, dtype=torch.int64, device=dev)
        self.entered = torch.where(fired, step_t, self.entered)
        rollback = fired & self.reg_rb[regime] & (self.n_rb < b[B_ROLLBACKS])
        self.n_rb = self.n_rb + rollback.to(torch.int64)
        self.stopped = self.stopped | (fired & self.reg_stop[regime])
        target = torch.clamp(self.reg_lr[regime], b[B_LO], b[B_HI])
        lr = torch.minimum(torch.maximum(target, self.lr_prev * b[B_DOWN]), self.lr_prev * b[B_UP])
        lr = torch.clamp(lr, b[B_LO], b[B_HI])
        skip = (self.reg_skip[regime] & (self.consec < b[B_CONSEC])
                & ((self.wcount + 1) <= b[B_FRAC] * self.window))
        skip = skip | rollback | self.stopped
        skip_i = skip.to(torch.int64)
        self.wcount = self.wcount + skip_i - self.ring[self.wpos]
        self.ring = self.ring.index_put((self.wpos.reshape(1),), skip_i.reshape(1))
        self.wpos = (self.wpos + 1) % self.window
        self.consec = torch.where(skip, self.consec + 1, torch.zeros_like(self.consec))
        self.regime, self.lr_prev = regime, lr
        d = {"regime": regime, "transition": trans, "lr_scale": lr, "skip": skip,
             "rollback": rollback, "stop": self.reg_stop[regime],
             "momentum_scale": self.reg_mom[regime], "update_cap": self.reg_cap[regime]}
        self._record(step_t, env, signals, d)
        return d

    def _record(self, step_t, env, signals, d) -> None:
        if self.rows == self.buffer.shape[0]:
            self.flush()
        vals = [step_t, env["loss"], env["grad_norm"], env["lr"], env["update_ratio"],
                d["regime"], d["transition"],
                d["lr_scale"], d["skip"], d["rollback"], d["stop"], *signals.values()]
        self.buffer[self.rows] = torch.stack([v.to(F64).reshape(()) for v in vals])
        self.rows += 1

    def state_dict(self) -> dict:
        """Every tensor of the walk and the estimators, plus the rows recorded so far."""
        self.flush()
        names = ("regime", "entered", "lr_prev", "consec", "wcount", "wpos", "n_rb", "stopped",
                 "runs", "ring")
        return {"walk": {n: getattr(self, n).clone() for n in names},
                "signals": {k: s.tensors() for k, s in self.sig.items()},
                "started": self.started,
                "host": [torch.from_numpy(h) for h in self.host]}

    def load_state_dict(self, sd: dict) -> None:
        for name, value in sd["walk"].items():
            setattr(self, name, value.to(self.device))
        for k, values in sd["signals"].items():
            s = self.sig[k]
            s.m, s.v, s.last, s.first, s.prev, s.started = (v.to(self.device) for v in values)
        self.started = bool(sd["started"])
        self.host = [h.numpy() for h in sd["host"]]
        self.rows = 0

    def flush(self) -> None:
        """Copy the buffered rows to the host: the one synchronisation, once per buffer."""
        if self.rows:
            self.host.append(self.buffer[: self.rows].cpu().numpy().copy())
            self.rows = 0

    def trace(self) -> pd.DataFrame:
        """Everything observed so far (flushes), in the same columns as `OnlineGuard.trace`."""
        self.flush()
        cols = list(RECORD) + list(self.spec.signals)
        data = np.concatenate(self.host) if self.host else np.zeros((0, len(cols)))
        raw = pd.DataFrame(data, columns=cols)
        c = self.c
        regime = raw["regime"].to_numpy(np.int64)
        trans = raw["transition"].to_numpy(np.int64)
        env = {k: raw[k].to_numpy() for k in cols}
        df = pd.DataFrame({"step": raw["step"].to_numpy(np.int64)})
        for col in ("loss", "grad_norm", "lr", "update_ratio"):
            if np.isfinite(raw[col]).any():
                df[col] = raw[col]
        df["regime"] = pd.Categorical.from_codes(regime, categories=c.regimes)
        df["lr_scale"] = raw["lr_scale"]
        df["skipped"] = raw["skipped"].astype(bool)
        df["momentum_scale"] = c.reg_momentum[regime]
        df["update_cap"] = c.reg_cap[regime]
        df["rollback"] = raw["rollback"].astype(bool)
        df["stop"] = raw["stop"].astype(bool)
        df["transition"] = [c.trans_names[k] if k >= 0 else "" for k in trans]
        df["cause"] = [cause_text(c, int(k), env, i) if k >= 0 else "" for i, k in enumerate(trans)]
        return df

