"""The task suite: its definition, its goal judging and a tiny end-to-end run."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from lbw_sim.bench.stress_grid import LR_FREE, STRESS_ARMS, StressResult
from lbw_sim.bench.stress_report import report_table
from lbw_sim.bench.suite import (
    FULL_FACTORS,
    QUICK_FACTORS,
    SWEEP_LRS,
    TASKS,
    get_tasks,
    plain_adamw,
    run_suite,
    tune_best_lr,
)
from lbw_sim.bench.suite_report import (
    GOAL_ORDER,
    load_suite,
    overall,
    suite_markdown,
    suite_verdicts,
    task_goals,
)
from lbw_sim.cli import main

torch.set_num_threads(1)


def test_suite_has_five_families_each_with_a_grid_around_its_own_best_lr():
    assert len({t.family for t in TASKS}) >= 5 and len({t.name for t in TASKS}) == len(TASKS)
    assert {"gpt_synthetic", "gpt_prose"} <= {t.name for t in TASKS}  # GPT on corpus and text
    for t in TASKS:
        for quick in (True, False):
            lrs = t.lrs(quick)
            assert min(lrs) <= 0.35 * t.best_lr and max(lrs) >= 30 * t.best_lr, t.name
            assert t.best_lr in lrs
        sc = t.grid(quick=True).scenario       # validates: model, data, arms
        assert sc.seeds == (1,) and 0 not in t.grid().scenario.seeds   # seed 0 tunes only
        assert set(t.grid().arms) == set(STRESS_ARMS)
    assert QUICK_FACTORS[0] <= 0.35 and QUICK_FACTORS[-1] >= 30 and len(FULL_FACTORS) == 7


def test_unknown_task_is_refused_with_the_known_names(capsys):
    assert main(["stress", "--suite", "--tasks", "bogus"]) == 2
    err = capsys.readouterr().err
    assert "unknown task 'bogus'" in err and "gpt_prose" in err
    assert [t.name for t in get_tasks(["noisy_quadratic", "mlp_digits"])] == [
        "mlp_digits", "noisy_quadratic"]


# --- judging on synthetic summaries ------------------------------------------------------------

LRS = [0.00316, 0.01, 0.0316, 0.1, 0.316]
ADAMW = [1.1, 1.0, 1.3, 2.0, 3.0]
GUARD = [1.1, 1.005, 1.02, 1.05, 1.08]


def _summary(changes: dict[tuple[str, float], float] | None = None) -> pd.DataFrame:
    loss = {("adamw", lr): v for lr, v in zip(LRS, ADAMW)}
    loss |= {("guard", lr): v for lr, v in zip(LRS, GUARD)}
    for arm in ("clip", "zclip", "skipstep", "schedulefree", "stableadamw"):
        loss |= {(arm, lr): v + 0.05 for lr, v in zip(LRS, ADAMW)}
    loss |= {("lr_matched", lr): v - 0.01 for lr, v in zip(LRS, GUARD)}
    loss[("prodigy", 1.0)] = 1.05
    loss |= changes or {}
    rows = [{"arm": a, "lr": lr, "seed": 1, "final_train_loss": v, "final_val_loss": v,
             "diverged_step": None, "interventions": 0, "skips": 0, "wall_s": 1.0}
            for (a, lr), v in loss.items()]
    return pd.DataFrame(rows)


QUIET = {0.00316: 1.0, 0.01: 0.99}


def _missed(summary: pd.DataFrame, nominal=QUIET) -> set[str]:
    g = task_goals(report_table(summary), nominal)
    keys = g["goal"].map(lambda s: next(k for k in GOAL_ORDER if s.startswith(k)))
    assert sorted(keys) == sorted(GOAL_ORDER)        # every goal is judged
    assert g["met"].map(lambda m: m is not None).all()
    return set(keys[~g["met"].astype(bool)])


def test_every_goal_met_on_a_good_guard():
    assert _missed(_summary()) == set()


@pytest.mark.parametrize("changes, nominal, missed", [
    ({("guard", 0.01): 1.02}, QUIET, {"no harm"}),
    ({}, {0.00316: 1.0, 0.01: 0.9}, {"quiet"}),
    ({("guard", 0.1): 1.15}, QUIET, {"rescue at 10x", "vs learning-rate-free"}),
    ({("guard", 0.316): 1.2}, QUIET, {"rescue at 30x", "vs learning-rate-free"}),
    ({("stableadamw", 0.0316): 1.0}, QUIET, {"dominance"}),   # the new rivals count
    ({("schedulefree", 0.316): 1.08}, QUIET, {"dominance"}),  # a tie is not dominance
    ({("prodigy", 1.0): 1.0}, QUIET, {"vs learning-rate-free"}),
])
def test_each_goal_can_fail(changes, nominal, missed):
    assert _missed(_summary(changes), nominal) == missed


def test_the_report_prints_dominance_as_a_count_of_losses():
    s = _summary({("stableadamw", 0.0316): 1.0, ("schedulefree", 0.316): 1.08})
    md = suite_markdown({"a": StressResult(None, s, nominal=QUIET)}, [])
    goals = md.split("## Goals per task")[1]
    row = next(line for line in goals.splitlines() if line.startswith("| a | "))
    assert "| 2 ✘ |" in row and "2.000" not in row
    assert "1.005 ✔" in row                       # ratios keep three decimals


def test_overall_needs_every_task_and_names_the_ones_that_missed():
    good = StressResult(None, _summary(), nominal=QUIET)
    bad = StressResult(None, _summary({("prodigy", 1.0): 0.9}), nominal=QUIET)
    ov = overall(suite_verdicts({"a": good, "b": bad})).set_index("goal")
    assert ov.loc["vs learning-rate-free", "met"] is False or not ov.loc[
        "vs learning-rate-free", "met"]
    assert ov.loc["vs learning-rate-free", "missed_on"] == "b"
    assert ov.loc["no harm", "met"] and ov.loc["no harm", "met_tasks"] == 2


def test_without_prodigy_the_lr_free_goal_cannot_be_judged():
    s = _summary()
    g = task_goals(report_table(s[s["arm"] != "prodigy"]), QUIET).set_index("goal")
    row = g.loc[[i for i in g.index if i.startswith("vs learning-rate-free")][0]]
    assert row["met"] is None and math.isnan(row["measured"])


# --- a tiny suite, end to end ------------------------------------------------------------------

ARMS = ["adamw", "schedulefree", "guard", "lr_matched", "prodigy"]


def test_tiny_suite_run_writes_a_folder_per_task_and_resumes(tmp_path):
    tasks = get_tasks(["mlp_digits", "noisy_quadratic"])
    lrs = {t.name: [t.best_lr, t.best_lr * 10] for t in tasks}
    results = run_suite(tmp_path, tasks=tasks, seeds=[1], steps=6, lrs=lrs, arms=ARMS,
                        progress=False)
    assert set(results) == {"mlp_digits", "noisy_quadratic"}
    for t in tasks:
        s = pd.read_csv(tmp_path / t.name / "summary.csv")
        assert len(s) == 4 * 2 + 1                        # 4 grid arms x 2 LRs, one Prodigy
        assert s.loc[s["arm"] == "prodigy", "lr"].tolist() == [LR_FREE["prodigy"]]
        assert (s["steps_run"] == 6).all() and s["final_val_loss"].notna().all()
        assert (tmp_path / t.name / "table.md").is_file()
    table = (tmp_path / "table.md").read_text()
    assert "| mlp_digits |" in table and "## Overall" in table and "vs learning-rate-free" in table
    loaded = load_suite(tmp_path)
    assert list(loaded) == ["mlp_digits", "noisy_quadratic"]
    assert len(suite_verdicts(loaded)) == 2 * len(GOAL_ORDER)
    before = (tmp_path / "mlp_digits" / "summary.csv").read_text()
    again = run_suite(tmp_path, tasks=tasks, seeds=[1], steps=6, lrs=lrs, arms=ARMS,
                      progress=False)
    assert (tmp_path / "mlp_digits" / "summary.csv").read_text() == before   # nothing re-run
    assert len(again["mlp_digits"].summary) == 9


def test_plain_adamw_is_the_suite_adamw_arm_step_by_step(tmp_path):
    """The benchmarks' in-run measurements train exactly what the suite's adamw arm trains."""
    from lbw_sim.bench.stress import run_stress

    task = get_tasks(["mlp_digits"])[0]
    built, steps = plain_adamw(task, 1.0, seed=1)
    assert [s for s, _ in steps] == list(range(300))
    arm = run_stress(task.grid(seeds=[1], lrs=[task.best_lr], arms=["adamw"]), tmp_path,
                     workers=1, progress=False).summary["final_val_loss"].iloc[0]
    assert built.evaluate() == arm
    frozen, steps = plain_adamw(task, 1.0, seed=1, lr_scale=lambda step: 0.0)
    for _ in steps:
        pass
    assert frozen.evaluate() > 2 * arm                  # lr_scale reaches every group


def test_tune_best_lr_reproduces_the_recorded_sweep_and_best_lr(tmp_path):
    """The seed-0 sweep behind `best_lr`, on the cheapest task at three of its LRs: the same
    final val losses as the sweep recorded in suite.py's docstring, and the task's best_lr."""
    import lbw_sim.bench.suite as suite

    task = get_tasks(["noisy_quadratic"])[0]
    line = next(ln for ln in suite.__doc__.splitlines() if ln.startswith("- noisy_quadratic"))
    recorded = [float(v.strip("[]")) for v in line.split()[2:]]
    assert len(recorded) == len(SWEEP_LRS)
    lrs = (SWEEP_LRS[0], task.best_lr, SWEEP_LRS[-1])
    best, losses = tune_best_lr(task, tmp_path, lrs=lrs)
    assert best == task.best_lr
    for lr in lrs:
        assert losses[lr] == pytest.approx(recorded[SWEEP_LRS.index(lr)], abs=6e-4), lr
