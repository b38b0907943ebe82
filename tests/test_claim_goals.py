"""The paper's claim judged (`bench.claim`): each goal from a small synthetic fine-tune grid,
and claim.md with two specs side by side."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from lbw_sim.bench.claim import claim_goals, claim_markdown, write_claim
from lbw_sim.bench.stress_grid import StressResult
from lbw_sim.guard.spec import GuardSpec

LRS = [0.001, 0.00316, 0.01, 0.0316, 0.1]          # best at 0.001; 10x = 0.01; 100x = 0.1
START = 2.5


def summary(guard: list[float], matched: list[float], *, scale: float = 0.5,
            cosine: float = 1.05, free: float = 1.0) -> pd.DataFrame:
    loss = {("adamw", lr): v for lr, v in zip(LRS, [1.0, 1.2, 1.6, 2.0, 3.0])}
    loss |= {("cosine", lr): v * cosine for (_, lr), v in list(loss.items())}
    loss |= {("schedulefree", lr): free for lr in LRS}
    loss |= {("guard", lr): v for lr, v in zip(LRS, guard)}
    loss |= {("lr_matched", lr): v for lr, v in zip(LRS, matched)}
    loss[("prodigy", 1.0)] = free
    rows = []
    for seed in (1, 2):
        for (arm, lr), v in loss.items():
            rows.append({"arm": arm, "lr": lr, "seed": seed, "final_train_loss": v,
                         "final_val_loss": v, "diverged_step": None, "interventions": 0,
                         "skips": 0, "wall_s": 1.0, "start_val_loss": START,
                         "mean_lr_scale": (1.0 if lr == LRS[0] else scale)
                         if arm == "guard" else math.nan, "rollbacks": 0})
    return pd.DataFrame(rows)


def verdict(s: pd.DataFrame) -> pd.Series:
    v = claim_goals(StressResult(None, s))
    return v.set_index("goal")


def test_each_goal_is_judged_from_the_grid():
    v = verdict(summary([0.99, 1.0, 1.05, 1.08, 1.2], [1.0, 1.1, 1.1, 1.0, 1.3]))
    assert v.loc["at best LR", "measured"] == pytest.approx(0.99) and v.loc["at best LR", "met"]
    assert v.loc["rescue at 10x", "met"] and v.loc["rescue at 10x", "measured"] == 1.05
    assert v.loc["rescue at 30x", "met"] and not v.loc["rescue at 100x", "met"]
    assert v.loc["never above start", "measured"] == 0 and v.loc["never above start", "met"]
    # Schedule-Free and Prodigy end at 1.0: the guard's worst over [best, 30x] is 1.08
    assert v.loc["vs Schedule-Free", "measured"] == pytest.approx(1.08)
    assert v.loc["vs Schedule-Free", "met"] is False and v.loc["vs Prodigy", "met"] is False
    # acted at the four LRs above the best; lower than its own schedule at 0.00316, 0.01, 0.1
    b = v.loc["beats lr_matched"]
    assert b["measured"] == 3 and b["target"].startswith("of 4") and b["met"] is None


def test_a_worse_guard_misses_and_a_cell_above_the_start_is_counted():
    v = verdict(summary([1.06, 1.3, 1.5, 2.6, 2.4], [1.0, 1.0, 1.0, 1.0, 1.0], cosine=0.9))
    assert not v.loc["at best LR", "met"]                 # cosine 0.9 beats 1.06
    assert v.loc["at best LR", "measured"] == pytest.approx(1.06 / 0.9)
    assert not v.loc["rescue at 10x", "met"]
    assert v.loc["never above start", "measured"] == 2 and not v.loc["never above start", "met"]
    assert v.loc["beats lr_matched", "measured"] == 0     # its own schedule did better


def test_from_scratch_has_no_start_goal_and_no_100x():
    s = summary([0.99, 1.0, 1.05, 1.08, 1.2], [1.0] * 5).drop(columns="start_val_loss")
    v = verdict(s)
    assert "never above start" not in v.index and "rescue at 100x" not in v.index


def test_claim_markdown_names_each_spec_and_puts_them_side_by_side(tmp_path):
    for folder, spec, guard in (("finetune", "lbw-adaptive", [1.0, 1.2, 1.6, 2.0, 3.0]),
                                ("finetune_active", "lbw-active", [0.99, 1.0, 1.05, 1.08, 1.2])):
        task = tmp_path / folder / "t1"
        task.mkdir(parents=True)
        summary(guard, [1.0] * 5).to_csv(task / "summary.csv", index=False)
        (task / "grid.json").write_text(json.dumps({"guard": GuardSpec.named(spec).hash}))
        (tmp_path / folder / "suite.json").write_text(json.dumps({"tasks": [{"name": "t1"}]}))
    text = write_claim(tmp_path).read_text()
    active, adaptive = GuardSpec.named("lbw-active").hash, GuardSpec.named("lbw-adaptive").hash
    assert f"lbw-adaptive ({adaptive}) | lbw-active ({active})" in text
    assert "| t1 | rescue at 10x | 1.600 ✘ | 1.050 ✔ |" in text
    assert "No results yet" in claim_markdown(pd.DataFrame())
