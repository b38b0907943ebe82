"""A device-side decision applied through torch's own fused optimizer kernels.

torch's fused Adam, AdamW and SGD kernels take two device tensors from `GradScaler`'s
protocol: `grad_scale` (divide the gradients by it) and `found_inf` (when 1, skip the
update, the weight decay and the step count), and a tensor `lr`. That is all a guard needs
to skip a step, scale the LR and honour AMP without reading anything back to the host:
`found_inf` becomes "the scaler found an overflow, or the guard skips", `lr` becomes the
group's LR times the guard's scale. Every other option (maximize, amsgrad, weight decay,
nesterov, capturable, …) stays the wrapped optimizer's own, in its own kernel. Momentum
damping is one foreach multiply on the first moments.

Optimizers these kernels cannot drive are refused by `check_device_kernel` with the reason.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor

#: The torch optimizers whose fused kernel takes `found_inf` and a tensor `lr`.
FUSED_FOUND_INF = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD)
#: Optimizer-state keys holding a first moment (damped by `momentum_scale`).
MOMENTUM_KEYS = ("exp_avg", "momentum_buffer")


def device_kernel_problem(optimizer: torch.optim.Optimizer) -> str:
    """Why `optimizer` cannot decide on the device ('' when it can)."""
    name = type(optimizer).__name__
    if type(optimizer) not in FUSED_FOUND_INF:
        return (f"{name} is not one of torch.optim.Adam, AdamW, SGD: only their fused kernels "
                "take the guard's skip as a device-side found_inf")
    for i, group in enumerate(optimizer.param_groups):
        if not group.get("fused"):
            return (f"{name} param group {i} has fused={group.get('fused')!r}: only the fused "
                    "kernel takes the guard's skip as a device-side found_inf (the foreach and "
                    f"for-loop kernels would need a host read per step); pass {name}(..., "
                    "fused=True) or decide_on='host'")
        if group.get("differentiable"):
            return f"{name} param group {i} has differentiable=True, which fused kernels refuse"
    return ""


def check_device_kernel(optimizer: torch.optim.Optimizer) -> None:
    """Raise ValueError naming the option when `optimizer` cannot decide on the device."""
    problem = device_kernel_problem(optimizer)
    if problem:
        raise ValueError(f"decide_on='device': {problem}")


def first_moments(optimizer: torch.optim.Optimizer) -> list[Tensor]:
    """The state tensors that `momentum_scale` damps (none before the first step)."""
    return [s[k] for s in optimizer.state.values() for k in MOMENTUM_KEYS
            if torch.is_tensor(s.get(k))]


@torch.no_grad()
def fused_step(optimizer: torch.optim.Optimizer, *, lr_scale: Tensor | None,
               skip: Tensor | None, momentum_scale: Tensor | None = None,
               grad_scale: Tensor | None = None, found_inf: Tensor | None = None) -> None:
    """One step of `optimizer`'s own fused kernel under device-side control.

    `skip` (bool, 0-d) joins `found_inf` (the scaler's overflow flag); `lr_scale` multiplies
    each group's LR for this step only; `momentum_scale` damps the first moments where the
    step is applied. `None` leaves that control out (a plain step). Nothing is read back."""
    if momentum_scale is not None:
        bufs = first_moments(optimizer)
        if bufs:
            keep = torch.ones_like(momentum_scale)
            damp = momentum_scale if skip is None else torch.where(skip, keep, momentum_scale)
            torch._foreach_mul_(bufs, damp.to(bufs[0].dtype))
    flag = found_inf
    if skip is not None:
        flag = skip.float() if flag is None else torch.maximum(flag.float(), skip.float())
    base = [g["lr"] for g in optimizer.param_groups]
    if lr_scale is not None:
        for g, lr in zip(optimizer.param_groups, base):
            g["lr"] = _scaled_lr(lr, lr_scale)
    _set_amp(optimizer, grad_scale, flag)
    try:
        optimizer.step()
    finally:
        _set_amp(optimizer, None, None)
        for g, lr in zip(optimizer.param_groups, base):
            g["lr"] = lr


def _scaled_lr(lr: Any, scale: Tensor) -> Tensor:
    """The group's LR times the guard's scale, as a float64 0-d tensor on the scale's device
    (a Python LR is filled there, never copied)."""
    if torch.is_tensor(lr):
        return lr.to(scale.device, torch.float64) * scale.to(torch.float64)
    return torch.full((), float(lr), dtype=torch.float64, device=scale.device) * scale


def _set_amp(optimizer: torch.optim.Optimizer, grad_scale: Tensor | None,
             found_inf: Tensor | None) -> None:
    """Set (or remove) the two attributes torch's optimizers read from GradScaler."""
    for name, value in (("grad_scale", grad_scale), ("found_inf", found_inf)):
        if value is not None:
            setattr(optimizer, name, value)
        elif hasattr(optimizer, name):
            delattr(optimizer, name)


def fused_twin(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The same torch Adam/AdamW/SGD over the same groups and options, with its fused
    kernel (for harnesses that build their own optimizer and want the device path)."""
    if optimizer.state:
        raise ValueError("fused_twin: the optimizer has already stepped")
    accepted = inspect.signature(type(optimizer).__init__).parameters
    defaults = {k: v for k, v in optimizer.defaults.items() if k in accepted}
    groups = [{k: v for k, v in g.items() if k == "params" or k in accepted}
              for g in optimizer.param_groups]
    for g in groups:
        g.update(fused=True, foreach=None)
    return type(optimizer)(groups, **{**defaults, "fused": True, "foreach": None})
