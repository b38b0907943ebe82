"""The honest competitors: Schedule-Free AdamW, StableAdamW and Prodigy, from their packages.

    arm = make_competitor("schedulefree", adamw, lr=3e-3)   # adamw: the scenario's AdamW
    with eval_mode(arm):                                    # SF evaluates at its average x
        val = evaluate()

Each arm is a `baselines.Arm` (so it has the surface of every arm: `step(loss=…)`,
`zero_grad()`, `param_groups`, `trace()`, `take_skip_batches()`, `should_stop`) over the
package's optimizer, used as shipped. `guard:schedulefree` is the shipped `GuardedOptimizer`
over `AdamWScheduleFree`.

Fairness: every competitor gets the AdamW arm's parameter groups (no weight decay on biases
and norms), betas, eps and decoupled weight-decay coefficient, and the runner's schedule
(the same linear warm-up, then the grid LR). For Schedule-Free the runner's warm-up is its
own `warmup_steps` by construction: it scales `group['lr']` by `(k + 1) / warmup`, the
formula of the runner's schedule, and tracks `lr_max` over the scaled LR either way, so
`warmup_steps` stays 0 here rather than warming up twice. Prodigy runs at its default
`lr = 1.0` (a multiplier of its own step-size estimate d) with `safeguard_warmup=True`, the
setting its README asks for when a warm-up is used; the stress grid runs it once per seed.

Schedule-Free trains at y and evaluates at x (the average); `eval_mode` switches the
optimizer to x around an evaluation and back. The suite's models have no BatchNorm, so the
package's caveat (recompute BN statistics at x before evaluating) does not arise.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from typing import Any

import torch

from lbw_sim.errors import SpecError
from lbw_sim.guard.optim import GuardedOptimizer
from lbw_sim.guard.spec import GuardSpec
from lbw_sim.sim.baselines import Arm

COMPETITORS = ("schedulefree", "stableadamw", "prodigy", "guard:schedulefree")
#: The competitors built around the scenario's guard spec (a `GuardedOptimizer`).
GUARDED_COMPETITORS = ("guard:schedulefree",)
#: Prodigy's default: its LR multiplies the step size it estimates, so the grid LR is unused.
PRODIGY_LR = 1.0


def _groups(opt: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """The AdamW arm's parameter groups (params and weight decay; the rest from the arm)."""
    if not isinstance(opt, torch.optim.AdamW):
        raise SpecError("arms", "the competitors are AdamW variants; the scenario's optimizer "
                                f"is {type(opt).__name__}")
    return [{k: g[k] for k in ("params", "weight_decay", "betas", "eps")}
            for g in opt.param_groups]


def _hyper(opt: torch.optim.AdamW) -> dict[str, Any]:
    """Betas and eps as the scenario set them (on the groups: `defaults` may predate them)."""
    g = opt.param_groups[0]
    return {"betas": tuple(g["betas"]), "eps": g["eps"]}


def schedulefree(opt: torch.optim.AdamW, lr: float, **kw: Any) -> torch.optim.Optimizer:
    from schedulefree import AdamWScheduleFree

    sf = AdamWScheduleFree(_groups(opt), lr=lr, **_hyper(opt), **{"warmup_steps": 0, **kw})
    sf.train()
    return sf


def stableadamw(opt: torch.optim.AdamW, lr: float, **kw: Any) -> torch.optim.Optimizer:
    from optimi import StableAdamW

    return StableAdamW(_groups(opt), lr=lr, **_hyper(opt), **kw)


def prodigy(opt: torch.optim.AdamW, lr: float = PRODIGY_LR, **kw: Any) -> torch.optim.Optimizer:
    from prodigyopt import Prodigy

    with contextlib.redirect_stdout(io.StringIO()):  # it prints a line about weight decay
        return Prodigy(_groups(opt), lr=lr, **_hyper(opt), **{"safeguard_warmup": True, **kw})


class CompetitorArm(Arm):
    """A package optimizer's plain step, with the telemetry of every arm."""

    def __init__(self, optimizer: torch.optim.Optimizer, name: str, **kw: Any):
        super().__init__(optimizer, **kw)
        self.name = name


def make_competitor(name: str, inner: torch.optim.Optimizer, lr: float,
                    spec: GuardSpec | None = None, *, telemetry: bool = True,
                    **opts: Any) -> torch.optim.Optimizer:
    """Arm `name` (one of COMPETITORS) over the parameter groups of the AdamW `inner`."""
    if name in GUARDED_COMPETITORS:
        return GuardedOptimizer(schedulefree(inner, lr), spec or GuardSpec.default(), **opts)
    build = {"schedulefree": schedulefree, "stableadamw": stableadamw, "prodigy": prodigy}
    if name not in build:
        raise SpecError("arms", f"unknown competitor {name!r}; known: {', '.join(COMPETITORS)}")
    return CompetitorArm(build[name](inner, lr, **opts), name, telemetry=telemetry)


def _switchable(arm: torch.optim.Optimizer) -> Any:
    """The optimizer inside `arm` (through wrappers) that has train/eval modes, or None."""
    opt: Any = arm
    while opt is not None:
        if callable(getattr(opt, "eval", None)) and callable(getattr(opt, "train", None)):
            return opt
        opt = getattr(opt, "optimizer", None)
    return None


@contextlib.contextmanager
def eval_mode(arm: torch.optim.Optimizer) -> Iterator[None]:
    """Evaluate at the weights the optimizer means to be evaluated (Schedule-Free: x), then
    return to its training point; a no-op for optimizers without modes."""
    opt = _switchable(arm)
    if opt is None:
        yield
        return
    opt.eval()
    try:
        yield
    finally:
        opt.train()


def in_train_mode(arm: torch.optim.Optimizer) -> bool:
    """Whether `arm` is in its training mode (always True for optimizers without modes)."""
    opt = _switchable(arm)
    return opt is None or all(g.get("train_mode", True) for g in opt.param_groups)
