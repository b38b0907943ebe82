"""The Stress page's suite view (AppTest): overall verdicts, a task's goals, its grid."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from lbw_sim.bench.suite import get_tasks, run_suite
from lbw_sim.bench.suite_report import GOAL_ORDER, list_suite_dirs, suite_root

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def suite_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    tasks = get_tasks(["mlp_digits", "noisy_quadratic"])
    run_suite(root / "tiny_suite", tasks=tasks, seeds=[1], steps=5, progress=False,
              lrs={t.name: [t.best_lr, 10 * t.best_lr] for t in tasks},
              arms=["adamw", "guard", "lr_matched", "prodigy"])
    return root


def test_suite_folders_are_listed_and_only_they_resolve(suite_runs, monkeypatch):
    monkeypatch.setenv("LBW_RUNS_DIR", str(suite_runs))
    assert "runs/tiny_suite" in list_suite_dirs()
    assert suite_root("runs/tiny_suite") == suite_runs / "tiny_suite"
    with pytest.raises(ValueError, match="not a suite folder"):
        suite_root("runs/../../etc")


def test_stress_page_shows_the_suite_verdicts_and_one_task(suite_runs, monkeypatch):
    monkeypatch.setenv("LBW_RUNS_DIR", str(suite_runs))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at = at.switch_page("pages/stress.py").run()
    at = at.radio(key="stress_source").set_value("Task suite").run()
    assert not at.exception
    at = at.selectbox(key="suite_folder").set_value("runs/tiny_suite").run()
    overall = _frame(at, "met_tasks")
    assert list(overall["goal"]) == list(GOAL_ORDER)
    assert set(_frame(at, "dominance").index) == {"mlp_digits", "noisy_quadratic"}
    at = at.selectbox(key="suite_task").set_value("noisy_quadratic").run()
    goals = [d.value for d in at.dataframe if "target" in d.value.columns
             and d.value["goal"].str.startswith("vs learning-rate-free").any()]
    assert len(goals) == 1 and len(goals[0]) == len(GOAL_ORDER)
    grid = _frame(at, "first_diverged_step")          # the task's own grid table
    assert set(grid["arm"]) == {"adamw", "guard", "lr_matched", "prodigy"}
    assert not at.exception


def _frame(at: AppTest, column: str):
    """The one dataframe on the page with this column (AppTest does not expose keys)."""
    found = [d.value for d in at.dataframe if column in d.value.columns]
    assert len(found) == 1, f"{len(found)} tables with column {column!r}"
    return found[0]
