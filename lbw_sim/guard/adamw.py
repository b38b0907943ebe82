"""AdamW math with device-side control: LR scale, momentum damping and a 0/1 step factor.

The guard's device path cannot branch on a decision without reading it back to the host,
so skipping is arithmetic (as in OLMo-core's SkipStepAdamW): every state change is
multiplied or interpolated by `apply` ∈ {0, 1}. With apply = 0 each update reduces to
`x * 1` or `x + 0`, which leaves parameters and moments bit-identical, and a non-finite
gradient is replaced by zero first so that 0 · NaN never reaches the state.

Same state layout as `torch.optim.AdamW` (`step`, `exp_avg`, `exp_avg_sq`), so a state dict
moves freely between the two. Used by the skip-step baseline (`baselines.SkipStepAdamW`),
which reproduces OLMo-core's SkipStepAdamW; the guard itself drives torch's own fused
kernels (`guard.fused`).
"""

from __future__ import annotations

import torch
from torch import Tensor


@torch.no_grad()
def adamw_foreach(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor],
                  exp_avg_sqs: list[Tensor], steps: list[Tensor], *, lr: Tensor, beta1: float,
                  beta2: float, eps: float, weight_decay: float, apply: Tensor,
                  momentum_scale: Tensor) -> None:
    """AdamW with torch's multi-tensor (`_foreach_*`) kernels; `lr`, `apply` (bool) and
    `momentum_scale` are 0-d tensors."""
    if not params:
        return
    a = apply.to(params[0].dtype)
    g = [torch.where(apply & torch.isfinite(x), x, torch.zeros_like(x)) for x in grads]
    torch._foreach_add_(steps, a.to(steps[0].dtype))
    torch._foreach_mul_(params, 1 - lr * weight_decay * a)
    torch._foreach_mul_(exp_avgs, torch.where(apply, momentum_scale,
                                              torch.ones_like(momentum_scale)).to(a.dtype))
    delta = torch._foreach_sub(g, exp_avgs)
    torch._foreach_mul_(delta, (1 - beta1) * a)
    torch._foreach_add_(exp_avgs, delta)
    torch._foreach_mul_(exp_avg_sqs, torch.where(apply, torch.full_like(a, beta2),
                                                 torch.ones_like(a)))
    sq = torch._foreach_mul(g, g)
    torch._foreach_mul_(sq, (1 - beta2) * a)
    torch._foreach_add_(exp_avg_sqs, sq)
    s = [torch.clamp(x, min=1.0) for x in steps]
    bias1 = torch._foreach_sub(torch._foreach_pow(beta1, s), 1.0)   # = -(1 - beta1**s)
    bias2 = torch._foreach_neg(torch._foreach_sub(torch._foreach_pow(beta2, s), 1.0))
    denom = torch._foreach_div(torch._foreach_sqrt(exp_avg_sqs), torch._foreach_sqrt(bias2))
    torch._foreach_add_(denom, eps)
    upd = torch._foreach_div(exp_avgs, denom)
    scale = torch._foreach_div([lr * a] * len(bias1), bias1)       # = -lr·a / (1 - beta1**s)
    torch._foreach_mul_(upd, scale)
    torch._foreach_add_(params, upd)


@torch.no_grad()
def adamw_step(optimizer: torch.optim.Optimizer, *, lr_scale: Tensor, apply: Tensor,
               momentum_scale: Tensor) -> None:
    """One controlled AdamW step over `optimizer`'s param groups and state (no host sync)."""
    for group in optimizer.param_groups:
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            continue
        beta1, beta2 = group["betas"]
        states = [optimizer.state[p] for p in params]
        for p, st in zip(params, states):
            if not st:
                st["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        dev = params[0].device
        base = group["lr"]
        lr = (base.to(dev, torch.float64) if torch.is_tensor(base) else
              torch.full((), float(base), dtype=torch.float64, device=dev)) * lr_scale.to(dev)
        adamw_foreach(params, [p.grad for p in params], [s["exp_avg"] for s in states],
                      [s["exp_avg_sq"] for s in states], [s["step"] for s in states],
                      lr=lr.to(params[0].dtype), beta1=beta1, beta2=beta2, eps=group["eps"],
                      weight_decay=group["weight_decay"], apply=apply.to(dev),
                      momentum_scale=momentum_scale.to(dev).to(params[0].dtype))
