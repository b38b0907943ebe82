"""What the result pages say (`lbw_sim.studio.results`): the spec of every committed result,
verdicts only where they apply, plain takeaways."""

from __future__ import annotations

import json

import pandas as pd

from lbw_sim.bench.stress_report import COMMITTED, ROOT, goals, load_results, report_table
from lbw_sim.guard.spec import GuardSpec
from lbw_sim.studio.results import (
    applicable_goals,
    fault_takeaway,
    nonfinite_note,
    spec_of_folder,
    spec_ref,
    specs_of_suite,
    stress_takeaway,
)

RESULTS = ROOT / "benchmarks" / "results"


def test_committed_results_name_the_spec_recorded_in_their_grid():
    v1, default = GuardSpec.named("lbw-v1"), GuardSpec.default()
    shakespeare = spec_of_folder(COMMITTED)
    assert (shakespeare.name, shakespeare.hash) == ("lbw-v1", v1.hash) and shakespeare.retired
    assert "retired" in shakespeare.label and v1.hash in shakespeare.label
    faults = spec_of_folder(RESULTS / "faults")
    assert faults.hash == json.loads((RESULTS / "faults" / "grid.json").read_text())["guard"]
    if faults.hash == default.hash:
        assert faults.name == default.name and "default" in faults.label
    suite = specs_of_suite(RESULTS / "suite", ["gpt_prose", "mlp_digits"])
    assert all(r.hash for r in suite.values())
    assert spec_ref("0123456789ab").name is None
    assert "0123456789ab" in spec_ref("0123456789ab").label
    assert spec_of_folder(RESULTS).hash is None  # no grid.json: said, not guessed


def _rep(adamw_at_10x: float, guard_at_10x: float) -> pd.DataFrame:
    rows = [("adamw", 0.01, 1.0), ("adamw", 0.1, adamw_at_10x), ("adamw", 0.316, 3.0),
            ("guard", 0.01, 1.0), ("guard", 0.1, guard_at_10x), ("guard", 0.316, 1.05)]
    rep = pd.DataFrame(rows, columns=["arm", "lr", "val_loss"])
    return rep.assign(ratio=rep["val_loss"], val_std=0.0, diverged=0,
                      first_diverged_step=float("nan"), interventions=0.0, skips=0.0)


def test_rescue_is_judged_only_where_adamw_needed_one():
    quiet = _rep(adamw_at_10x=1.02, guard_at_10x=1.0)   # AdamW fine at 10x
    v = applicable_goals(goals(quiet), quiet).set_index("goal")
    at10 = v.loc[[g for g in v.index if g.startswith("rescue at 10x")][0]]
    assert at10["met"] is None and "nothing to rescue" in at10["detail"]
    at30 = v.loc[[g for g in v.index if g.startswith("rescue at 30x")][0]]
    assert at30["met"] is True                           # AdamW 3.0 there: a real rescue
    broken = _rep(adamw_at_10x=2.0, guard_at_10x=1.5)
    v = applicable_goals(goals(broken), broken).set_index("goal")
    assert v.loc[[g for g in v.index if g.startswith("rescue at 10x")][0], "met"] is False


def test_takeaways_say_what_happened_in_plain_words():
    result = load_results(COMMITTED)
    rep = report_table(result.summary)
    text = stress_takeaway(rep, spec_of_folder(COMMITTED))
    assert "lbw-v1" in text and "AdamW's best LR" in text and text.count(".") >= 3
    quiet = _rep(adamw_at_10x=1.02, guard_at_10x=1.0).query("lr < 0.3")
    assert "needed no rescue" in stress_takeaway(quiet, spec_ref(None))
    summary = pd.read_csv(RESULTS / "faults" / "summary.csv")
    text = fault_takeaway(summary, spec_of_folder(RESULTS / "faults"))
    assert "guard" in text and "fault-free" in text
    assert "adamw" in nonfinite_note(summary)


def test_small_charts_mark_an_arm_that_went_non_finite():
    import numpy as np

    from lbw_sim.viz.stress import stress_curves_figure

    rows = [{"arm": arm, "lr": 0.1, "seed": 1, "step": s,
             "model_loss": np.nan if arm == "adamw" and s > 30 else 2 - 0.01 * s}
            for arm in ("adamw", "guard") for s in range(50)]
    fig = stress_curves_figure(pd.DataFrame(rows), {"unigram": 3.0})
    marks = [t for t in fig.data if t.name.endswith("non-finite")]
    assert [(t.name, t.x[0]) for t in marks] == [("adamw non-finite", 31.0)]
    summary = pd.read_csv(RESULTS / "faults" / "summary.csv")
    from lbw_sim.bench.fault_report import load_fault_results
    from lbw_sim.viz.faults import fault_curves_figure

    curves = load_fault_results(RESULTS / "faults").curves
    fig = fault_curves_figure(curves, "gpt")
    dead = {t.name.split()[0] for t in fig.data if t.name.endswith("non-finite")}
    gone = set(summary.loc[(summary["task"] == "gpt")
                           & ~np.isfinite(summary["final_val_loss"]), "arm"])
    assert dead == gone and dead                     # every arm that died has its ×
