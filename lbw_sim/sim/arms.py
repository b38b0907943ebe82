"""Every arm by name: the baselines (`baselines`) and the competitors (`competitors`).

    arm = make_arm("clip", model, lr=3e-3)       # adamw, clip, zclip, skipstep, guard,
                                                 # plateau, schedulefree, stableadamw, ...

Its own module so that the two arm modules need not know each other.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from lbw_sim.errors import SpecError
from lbw_sim.guard.fused import fused_twin
from lbw_sim.guard.optim import GuardedOptimizer
from lbw_sim.guard.spec import GuardSpec
from lbw_sim.sim.baselines import (
    ALIASES,
    ARMS,
    Arm,
    ClipArm,
    PlateauArm,
    SkipStepArm,
    ZClipArm,
    _skipstep_from,
    build_optimizer,
)
from lbw_sim.sim.competitors import COMPETITORS, GUARDED_COMPETITORS, make_competitor

#: Every arm name make_arm knows.
ALL_ARMS = ARMS + COMPETITORS
#: The arms make_arm builds around the scenario's guard spec (a `GuardedOptimizer`): their
#: traces carry the guard's columns (regime, cause, rollback, ...). Tested against the built
#: arm for every name in ALL_ARMS.
GUARD_ARMS = ("guard", *GUARDED_COMPETITORS)


def is_guard_arm(name: str) -> bool:
    """Whether arm `name` runs the guard (the one test of it: reports, traces, summaries)."""
    return ALIASES.get(name, name) in GUARD_ARMS


def make_arm(name: str, model: nn.Module, lr: float, spec: GuardSpec | None = None, *,
             optimizer: str = "adamw", betas: tuple[float, float] = (0.9, 0.95),
             weight_decay: float = 0.1, eps: float = 1e-8, momentum: float = 0.0,
             telemetry: bool = True, **opts: Any) -> torch.optim.Optimizer:
    """Build arm `name` over `model`'s parameters. `opts` go to the arm: clip `max_norm`,
    zclip's `ZClip(**opts)`, skipstep `window`/`sigma`/`min_history`, guard `track_norms`."""
    name = ALIASES.get(name, name)
    if name not in ARMS + COMPETITORS:
        raise SpecError("arms", f"unknown arm {name!r}; known: {', '.join(ARMS + COMPETITORS)}")
    inner = build_optimizer(model, lr, optimizer=optimizer, betas=betas,
                            weight_decay=weight_decay, eps=eps, momentum=momentum)
    try:
        if name in COMPETITORS:  # schedulefree, stableadamw, prodigy: lbw_sim/sim/competitors.py
            return make_competitor(name, inner, lr, spec, telemetry=telemetry, **opts)
        if name == "guard":
            if opts.get("decide_on") == "device":        # the device path drives torch's
                inner = fused_twin(inner)                 # fused kernel
            return GuardedOptimizer(inner, spec or GuardSpec.default(), **opts)
        if name == "clip":
            return ClipArm(inner, telemetry=telemetry, **opts)
        if name == "zclip":
            return ZClipArm(inner, model, telemetry=telemetry, **opts)
        if name == "skipstep":
            return SkipStepArm(_skipstep_from(inner, **opts), telemetry=telemetry)
        if name == "plateau":
            return PlateauArm(inner, telemetry=telemetry, **opts)
        return Arm(inner, telemetry=telemetry, **opts)
    except TypeError as exc:
        raise SpecError(f"arm_options.{name}", str(exc)) from None
