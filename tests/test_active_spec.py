"""The candidate active controller `lbw-active.yaml` (not the default): it leaves a run that
is still improving alone, halves the LR on a plateau, quarters it when the loss climbs back
up from its low, and rolls back when the loss climbs above where the run started."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lbw_sim import GuardSpec, replay
from lbw_sim.guard.signals import KIND_CODE

ACTIVE = GuardSpec.named("lbw-active")


def run(loss: np.ndarray) -> pd.DataFrame:
    n = len(loss)
    trace = pd.DataFrame({"step": np.arange(n), "loss": loss, "grad_norm": np.ones(n)})
    return replay(trace, ACTIVE)


def noisy(level: np.ndarray, seed: int = 0) -> np.ndarray:
    return level * np.exp(0.03 * np.random.default_rng(seed).standard_normal(len(level)))


def first(mask: pd.Series) -> int:
    hits = np.flatnonzero(mask.to_numpy())
    return int(hits[0]) if len(hits) else -1


def test_the_candidate_is_shipped_by_name_and_is_not_the_default():
    assert {s.kind for s in ACTIVE.signals.values()} <= set(KIND_CODE) | {"nonfinite"}
    assert GuardSpec.default().name != ACTIVE.name and not ACTIVE.warnings()


def test_a_run_that_is_still_improving_is_left_alone():
    for seed in range(3):
        out = run(noisy(2.5 * np.exp(-np.arange(300) / 60), seed))
        assert (out["lr_scale"] == 1.0).all() and not out["rollback"].astype(bool).any()


def test_a_plateau_halves_the_lr_in_bounded_steps():
    steps = np.arange(400)
    out = run(noisy(np.where(steps < 100, 2.5 - 0.01 * steps, 1.5)))
    cut = first(out["lr_scale"] < 1.0)
    assert 100 < cut < 200 and out["lr_scale"].iloc[cut] >= 0.5 * (1 - 1e-9)
    scale = out["lr_scale"].to_numpy()
    assert (np.diff(scale) <= 1e-12).all() and scale.min() >= ACTIVE.bounds.lr_scale_min
    assert not out["rollback"].astype(bool).any()             # a plateau is not damage


def test_a_loss_climbing_back_up_from_its_low_cuts_the_lr_without_a_rollback():
    steps = np.arange(300)
    level = np.where(steps < 60, 2.5 - 0.02 * steps, np.minimum(1.3 + 0.04 * (steps - 60), 2.4))
    for seed in range(3):                                     # stays below its start, 2.5
        out = run(noisy(level, seed))
        assert 60 < first(out["lr_scale"] < 1.0) < 100
        assert out["transition"].str.startswith("climbed").any()
        assert out["lr_scale"].iloc[100] <= 0.25 and not out["rollback"].astype(bool).any()


def test_a_run_climbing_above_its_start_is_rolled_back_and_cut():
    steps = np.arange(300)
    level = np.where(steps < 40, 2.5 - 0.01 * steps, 2.1 + 0.05 * (steps - 40))  # damaged at 40
    out = run(noisy(level))
    back = first(out["rollback"].astype(bool))
    assert back > 40 and out["lr_scale"].iloc[back + 1] <= 0.25
    assert out["rollback"].astype(bool).sum() <= ACTIVE.bounds.max_rollbacks
    assert (np.diff(out["lr_scale"].to_numpy()) <= 1e-12).all()   # never climbs back


def test_non_finite_losses_roll_back_too():
    loss = noisy(np.full(100, 2.0))
    loss[50:] = np.nan
    out = run(loss)
    assert out["rollback"].astype(bool).iloc[50:56].any()
