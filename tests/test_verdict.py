"""One verdict for every benchmark: goal rows, ✔/✘, the loss over seeds, "acted", "a guard
arm", and the initial regime a stress report reads from the spec rather than assuming."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from lbw_sim.bench.fault_grid import own_metrics
from lbw_sim.bench.fault_report import COST_GOAL, DOMINANCE_GOAL, RECOVERY_GOAL
from lbw_sim.bench.stress_grid import Cell
from lbw_sim.bench.stress_report import initial_regime, nominal_fractions
from lbw_sim.bench.verdict import GoalRows, goals_markdown, mark, mean_or_inf
from lbw_sim.guard.analysis import acted, action_counts
from lbw_sim.guard.spec import GuardSpec
from lbw_sim.sim.runner import summarize
from lbw_sim.sim.scenarios import load_scenario


def test_goal_rows_keep_none_and_draw_three_marks():
    rows = GoalRows()
    rows.add("a", 1.0, "<= 2", True)
    rows.add("b", 3.0, "<= 2", False, "too high")
    rows.add("c", math.nan, "<= 2", None)
    v = rows.frame()
    assert list(v["met"]) == [True, False, None]
    assert [mark(m) for m in v["met"]] == ["✔", "✘", "?"]
    text = goals_markdown(v)
    assert "| b | 3 | <= 2 | ✘ (too high) |" in text and "| c | n/a | <= 2 | ? |" in text


def test_mean_over_seeds_is_inf_when_any_seed_blew_up():
    assert mean_or_inf(pd.Series([1.0, 3.0])) == 2.0
    assert mean_or_inf(pd.Series([1.0, np.inf])) == math.inf
    assert mean_or_inf(pd.Series([1.0, np.nan])) == math.inf
    assert mean_or_inf(pd.Series([np.nan, np.nan])) == math.inf
    assert math.isnan(mean_or_inf(pd.Series([], dtype=float)))


def test_fault_goal_labels_spell_the_thresholds_they_judge():
    assert "1.02×" in RECOVERY_GOAL and "> 2 %" in DOMINANCE_GOAL and "1.005×" in COST_GOAL


def _trace(**cols) -> pd.DataFrame:
    n = len(next(iter(cols.values())))
    base = {"step": list(range(n)), "skipped": [False] * n, "clipped": [False] * n,
            "lr_scale": [1.0] * n, "model_loss": [1.0] * n, "val_loss": [1.0] * n}
    return pd.DataFrame({**base, **cols})


def test_acted_is_one_definition_for_summaries_faults_and_analysis():
    t = _trace(update_scale=[1.0, 0.5, 1.0, 1.0], clipped=[False, False, True, False],
               transition=["", "", "", "watch"], regime=["nominal"] * 3 + ["watch"],
               momentum_scale=[1.0] * 4, rollback=[False] * 4)
    assert list(acted(t)) == [False, True, True, False]    # a cap binding and a clip act;
    assert action_counts(t)["acted"] == 2                  # a transition alone does not
    sc = load_scenario("quickstart")
    assert summarize(t.to_dict("records"), sc, arm="guard", lr=1e-3, seed=0,
                     wall_s=0.0)["interventions"] == 2
    # the fault grid's false interventions before the fault (step 3) count the cap too
    assert own_metrics(t, start=3)["false_interventions"] == 2


def test_nominal_fractions_read_the_specs_initial_regime(tmp_path):
    t = pd.DataFrame({"step": range(10), "regime": ["calm"] * 8 + ["alarm"] * 2})
    t.to_csv(tmp_path / Cell("guard", 0.01, 1).trace_file, index=False)
    summary = pd.DataFrame({"arm": ["guard"], "lr": [0.01], "seed": [1]})
    assert nominal_fractions(tmp_path, summary, 0, initial="calm") == {0.01: 0.8}
    assert nominal_fractions(tmp_path, summary, 0, initial="nominal") == {0.01: 0.0}


def test_a_results_folder_names_its_specs_initial_regime_by_hash(tmp_path):
    spec = GuardSpec.default()
    (tmp_path / "grid.json").write_text(json.dumps({"guard": spec.hash}))
    assert initial_regime(tmp_path) == spec.initial


@pytest.mark.parametrize("missing", [True, False])
def test_a_folder_without_a_known_spec_falls_back_to_the_default(tmp_path, missing):
    if not missing:
        (tmp_path / "grid.json").write_text(json.dumps({"guard": "0" * 12}))
    assert initial_regime(tmp_path) == GuardSpec.default().initial
