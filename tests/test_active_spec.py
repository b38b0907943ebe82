"""The candidate active controller `lbw-active.yaml`: existing signal kinds only, not the
default, and it acts exactly when a run's loss climbs above where it started."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lbw_sim import GuardSpec, replay
from lbw_sim.guard.signals import KIND_CODE

ACTIVE = Path(__file__).resolve().parents[1] / "lbw_sim" / "guard" / "specs" / "lbw-active.yaml"


def run(loss: np.ndarray) -> pd.DataFrame:
    n = len(loss)
    trace = pd.DataFrame({"step": np.arange(n), "loss": loss, "grad_norm": np.ones(n)})
    return replay(trace, GuardSpec.load(ACTIVE))


def noisy(level: np.ndarray, seed: int = 0) -> np.ndarray:
    return level * np.exp(0.03 * np.random.default_rng(seed).standard_normal(len(level)))


def test_the_candidate_uses_existing_signal_kinds_and_is_not_the_default():
    spec = GuardSpec.load(ACTIVE)
    assert {s.kind for s in spec.signals.values()} <= set(KIND_CODE) | {"nonfinite"}
    assert GuardSpec.default().name != spec.name and not spec.warnings()


def test_a_healthy_run_is_left_alone():
    out = run(noisy(2.5 * np.exp(-np.arange(300) / 100)))
    assert (out["regime"] == "nominal").all() and (out["lr_scale"] == 1.0).all()


def test_a_run_climbing_above_its_start_is_rolled_back_and_cut_once_per_climb():
    steps = np.arange(300)
    level = np.where(steps < 40, 2.5 - 0.01 * steps, 2.1 + 0.05 * (steps - 40))  # damaged at 40
    out = run(noisy(level))
    first = int(np.flatnonzero(out["rollback"].astype(bool))[0])
    # the level passes 1.1x its start (~2.48) at step 53; the EMA lags ~5 steps, then 5 more
    assert 55 < first < 70
    assert out["regime"].iloc[first + 1] == "cut_1" and out["lr_scale"].iloc[first + 1] == 0.25
    assert out["rollback"].astype(bool).sum() <= 3             # the rollback budget
    assert (np.diff(out["lr_scale"].to_numpy()[first:]) <= 1e-12).all()   # never climbs back


def test_non_finite_losses_roll_back_too():
    loss = noisy(np.full(100, 2.0))
    loss[50:] = np.nan
    out = run(loss)
    assert out["rollback"].astype(bool).iloc[50:56].any()
