"""The arms of a comparison: plain AdamW, clip-norm, ZClip, OLMo-style skip-step, the guard,
and AdamW under torch's ReduceLROnPlateau.

Every arm is a `torch.optim.Optimizer` with the surface of `GuardedOptimizer`, so a runner
treats them alike:

    arm = make_arm("skipstep", model, lr=3e-3)
    loss = model(x, y)[1]; loss.backward()
    arm.step(loss=loss); arm.zero_grad()
    arm.trace()          # step, loss, grad_norm, lr, lr_scale, skipped, clipped
    arm.last_row()       # the latest step as one flat row of host values
    arm.take_skip_batches(), arm.should_stop, arm.set_spec(spec)   # no-ops but for the guard

The guard arm *is* `GuardedOptimizer` (never re-implemented here); every arm shares its
torch.optim shell (`guard.shell.WrappedOptimizer`). Telemetry of the baselines stays on the
device as 0-d tensors and is read back only by `trace()` / `last_row()`.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch
import torch.nn as nn

from lbw_sim.errors import SpecError
from lbw_sim.guard.adamw import adamw_step
from lbw_sim.guard.shell import WrappedOptimizer

ARMS = ("adamw", "clip", "zclip", "skipstep", "guard", "plateau")
ALIASES = {"plain": "adamw"}  # with optimizer="sgd" the plain arm is not AdamW
OPTIMIZERS = ("adamw", "sgd")


def build_optimizer(model: nn.Module, lr: float, *, optimizer: str = "adamw",
                    betas: tuple[float, float] = (0.9, 0.95), weight_decay: float = 0.1,
                    eps: float = 1e-8, momentum: float = 0.0) -> torch.optim.Optimizer:
    """The scenario's optimizer: the model's own AdamW groups where it has them (no decay on
    biases and norms), else one group; SGD for landscapes where GD stability is the point."""
    if optimizer not in OPTIMIZERS:
        raise SpecError("optimizer.kind", f"must be one of {OPTIMIZERS}, got {optimizer!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if hasattr(model, "configure_optimizer"):
        opt = model.configure_optimizer(lr, weight_decay, tuple(betas))
        for g in opt.param_groups:
            g["eps"] = eps
        return opt
    return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), eps=eps,
                             weight_decay=weight_decay)


class Arm(WrappedOptimizer):
    """Plain optimizer step plus telemetry; subclasses change `_update` only.

    Like `GuardedOptimizer` it shares the wrapped optimizer's `param_groups` and `state`.
    With `telemetry=False` nothing is measured (the benchmark's bare-AdamW reference).
    """

    name = "adamw"

    def __init__(self, optimizer: torch.optim.Optimizer, *, telemetry: bool = True):
        super().__init__(optimizer)
        self.telemetry = telemetry
        self.should_stop = False
        self.stop_reason = ""
        self._log: dict[str, list] = {k: [] for k in ("step", "loss", "grad_norm", "lr",
                                                      "skipped", "clipped")}

    @torch.no_grad()
    def step(self, closure: Any = None, *, loss: torch.Tensor | float | None = None) -> Any:
        loss = self._closure_loss(closure, loss)
        grad_norm, skipped, clipped = self._update(loss)
        if self.telemetry:
            self._record(loss, grad_norm, skipped, clipped)
        self.step_count += 1
        return loss

    def _update(self, loss: Any) -> tuple[Any, Any, Any]:
        """Apply one update; return (grad norm before any change, skipped, clipped)."""
        norm = self.grad_norm() if self.telemetry else None
        self.optimizer.step()
        return norm, False, False

    def _record(self, loss: Any, grad_norm: Any, skipped: Any, clipped: Any) -> None:
        log = self._log
        log["step"].append(self.step_count)
        log["loss"].append(torch.as_tensor(float("nan") if loss is None else loss)
                           .detach().float().reshape(()))
        log["grad_norm"].append(torch.as_tensor(grad_norm).detach().float().reshape(()))
        log["lr"].append(float(self.param_groups[0]["lr"]))
        log["skipped"].append(torch.as_tensor(skipped).reshape(()))
        log["clipped"].append(torch.as_tensor(clipped).reshape(()))

    def _host(self, key: str, sl: slice = slice(None)) -> list:
        values = self._log[key][sl]
        if values and torch.is_tensor(values[0]):
            dtype = torch.bool if values[0].dtype == torch.bool else torch.float64
            return torch.stack([v.to(values[0].device) for v in values]).to(dtype).cpu().tolist()
        return list(values)

    def last_row(self) -> dict[str, Any]:
        """The latest step's telemetry as host values (one device read)."""
        if not self._log["step"]:
            return {}
        row = {k: self._host(k, slice(-1, None))[0] for k in self._log}
        row["skipped"], row["clipped"] = bool(row["skipped"]), bool(row["clipped"])
        row["lr_scale"] = 0.0 if row["skipped"] else 1.0
        return row

    def trace(self) -> pd.DataFrame:
        """Every step so far in the canonical trace schema (one batched device read)."""
        df = pd.DataFrame({k: self._host(k) for k in self._log})
        df["skipped"] = df["skipped"].astype(bool)
        df["clipped"] = df["clipped"].astype(bool)
        df["lr_scale"] = (~df["skipped"]).astype(float)
        return df

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "step_count": self.step_count}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(sd["optimizer"])
        self.step_count = int(sd["step_count"])


class ClipArm(Arm):
    """AdamW after `clip_grad_norm_(params, max_norm)`: the default of most LLM recipes."""

    name = "clip"

    def __init__(self, optimizer: torch.optim.Optimizer, max_norm: float = 1.0, **kw: Any):
        super().__init__(optimizer, **kw)
        self.max_norm = float(max_norm)

    def _update(self, loss: Any) -> tuple[Any, Any, Any]:
        norm = torch.nn.utils.clip_grad_norm_(self._params(), self.max_norm, foreach=True)
        self.optimizer.step()
        return norm, False, norm > self.max_norm


class ZClipArm(Arm):
    """AdamW after the `zclip` package's adaptive z-score clipping (used as shipped).

    ZClip reads `model.parameters()` and returns the pre-clip norm as a float; whether it
    clipped is seen by measuring the norm again (telemetry only).
    """

    name = "zclip"

    def __init__(self, optimizer: torch.optim.Optimizer, model: nn.Module, **kw: Any):
        from zclip import ZClip

        telemetry = kw.pop("telemetry", True)
        super().__init__(optimizer, telemetry=telemetry)
        self.model = model
        self.zclip = ZClip(**kw)

    def _update(self, loss: Any) -> tuple[Any, Any, Any]:
        total = self.zclip.step(self.model)
        clipped = False
        if self.telemetry:
            clipped = bool(self.grad_norm() < total * (1 - 1e-6))
        self.optimizer.step()
        return torch.tensor(total), False, clipped


class PlateauArm(Arm):
    """AdamW under torch's `ReduceLROnPlateau`, used as shipped: every `every` steps it is
    stepped with the mean training loss of those steps (one step's loss is too noisy to be
    its metric), and its cuts multiply the LR the caller sets each step (the runner's
    warm-up and grid LR). The scheduler drives a one-parameter shadow optimizer whose LR,
    starting at 1, is that multiplier (`scale`, the trace's `lr_scale`). Defaults: halve the
    LR after 3 windows of 10 steps without a 1e-4 relative improvement, down to 1e-3x."""

    name = "plateau"

    def __init__(self, optimizer: torch.optim.Optimizer, *, every: int = 10,
                 factor: float = 0.5, patience: int = 3, threshold: float = 1e-4,
                 cooldown: int = 0, min_scale: float = 1e-3, telemetry: bool = True):
        super().__init__(optimizer, telemetry=telemetry)
        if not (isinstance(every, int) and every >= 1):
            raise SpecError("arm_options.plateau.every", f"must be an integer >= 1, got {every!r}")
        self.every = every
        self._shadow = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self._shadow, factor=factor, patience=patience, threshold=threshold,
            cooldown=cooldown, min_lr=min_scale)
        self._window: list[float] = []
        self._scales: list[float] = []
        self._base = [g["lr"] for g in self.param_groups]
        self._applied = list(self._base)

    @property
    def scale(self) -> float:
        return float(self._shadow.param_groups[0]["lr"])

    def _update(self, loss: Any) -> tuple[Any, Any, Any]:
        if loss is None:
            raise ValueError("the plateau arm needs step(loss=...)")
        scale = self.scale
        for i, g in enumerate(self.param_groups):  # an LR nobody reset is not scaled twice
            self._base[i] = self._base[i] if g["lr"] == self._applied[i] else g["lr"]
            g["lr"] = self._applied[i] = self._base[i] * scale
        norm = self.grad_norm() if self.telemetry else None
        self.optimizer.step()
        self._scales.append(scale)
        self._window.append(float(loss))
        if len(self._window) == self.every:
            self.scheduler.step(sum(self._window) / self.every)
            self._window.clear()
        return norm, False, False

    def last_row(self) -> dict[str, Any]:
        row = super().last_row()
        if row:
            row["lr_scale"] = self._scales[-1]
        return row

    def trace(self) -> pd.DataFrame:
        df = super().trace()
        df["lr_scale"] = self._scales[-len(df):] if len(df) else []
        return df


class SkipStepAdamW(torch.optim.Optimizer):
    """AdamW that skips an update whose loss or gradient norm is an outlier (OLMo-core style).

    The z-scores |x - mean| / std are taken against the previous `window` steps; once
    `min_history` steps are seen, a step with either |z| > `sigma` gets step factor 0. The
    factor multiplies the moment updates, the weight decay and the update on the device, so
    the decision never reads a value back to the host. A skipped step leaves parameters,
    moments and the step count bit-identical: its gradient is masked with `torch.where`
    (0 * NaN would otherwise poison the moments), and non-finite values are kept out of the
    window statistics (OLMo-core lets one NaN disable the test for a whole window).
    """

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, *, window: int = 128,
                 sigma: float = 6.0, min_history: int | None = None):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay))
        self.window, self.sigma = int(window), float(sigma)
        self.min_history = max(20, self.window // 2) if min_history is None else min_history
        self.latest_loss: torch.Tensor | None = None
        self.latest_grad_norm: torch.Tensor | None = None
        self.step_factor = torch.tensor(1.0)
        self._hist: torch.Tensor | None = None  # (2, window): loss, grad norm
        self._count = 0

    def get_step_factor(self) -> torch.Tensor:
        """1.0 to take the step, 0.0 to skip it; a device tensor, no host sync."""
        if self.latest_loss is None or self.latest_grad_norm is None:
            raise RuntimeError("set latest_loss and latest_grad_norm before step()")
        x = torch.stack([self.latest_loss.detach().float().reshape(()),
                         self.latest_grad_norm.detach().float().reshape(())])
        if self._hist is None:
            self._hist = torch.zeros(2, self.window, device=x.device)
        factor = torch.ones((), device=x.device)
        if self._count >= self.min_history:
            h = self._hist[:, : min(self._count, self.window)]
            ok = torch.isfinite(h)
            n = ok.sum(1).clamp(min=2)
            mean = torch.where(ok, h, 0.0).sum(1) / n
            var = torch.where(ok, h - mean[:, None], 0.0).square().sum(1) / (n - 1)
            z = (x - mean).abs() / var.sqrt()
            factor = (z <= self.sigma).all().float()  # NaN or inf z: skip
        self._hist[:, self._count % self.window] = x
        self._count += 1
        return factor

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        factor = self.step_factor = self.get_step_factor()
        one = torch.ones((), dtype=torch.float64, device=factor.device)
        adamw_step(self, lr_scale=one, apply=factor > 0, momentum_scale=one)
        return loss


class SkipStepArm(Arm):
    """`SkipStepAdamW` fed with this step's loss and gradient norm."""

    name = "skipstep"

    def _update(self, loss: Any) -> tuple[Any, Any, Any]:
        if loss is None:
            raise ValueError("the skipstep arm needs step(loss=...)")
        norm = self.grad_norm()
        opt: SkipStepAdamW = self.optimizer  # type: ignore[assignment]
        opt.latest_loss, opt.latest_grad_norm = torch.as_tensor(loss), norm
        opt.step()
        return norm, 1.0 - opt.step_factor, False


def _skipstep_from(opt: torch.optim.Optimizer, **kw: Any) -> SkipStepAdamW:
    """A SkipStepAdamW over the same parameter groups (same decay split) as an AdamW."""
    if not isinstance(opt, torch.optim.AdamW):
        raise SpecError("arms", "skipstep is an AdamW variant; the scenario's optimizer is "
                                f"{type(opt).__name__}")
    keep = ("params", "lr", "betas", "eps", "weight_decay")
    groups = [{k: g[k] for k in keep} for g in opt.param_groups]
    return SkipStepAdamW(groups, **kw)
