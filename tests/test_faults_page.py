"""AppTest of the Faults page: a results folder (runs/ or the committed benchmarks/results/),
an uploaded summary.csv, and a bad upload."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]


def page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    return at.switch_page("pages/faults.py").run()


@pytest.fixture(scope="module")
def fault_runs(tmp_path_factory):
    """A runs folder holding one tiny finished fault grid, as `python -m lbw_sim faults`
    leaves it."""
    from lbw_sim.sim.fault_grid import build_fault_grid, run_fault_grid
    from lbw_sim.viz.faults import write_report as write_outputs

    root = tmp_path_factory.mktemp("runs")
    grid = build_fault_grid(seeds=1, steps=24, tasks=["mlp"], faults=["poison"],
                            arms=["adamw", "guard"])
    run_fault_grid(grid, root / "tiny", workers=1, progress=False)
    write_outputs(root / "tiny")
    return root


def _table(at: AppTest, column: str):
    return next(d.value for d in at.dataframe if column in d.value.columns)


def test_faults_page_shows_goals_tables_and_charts_from_a_folder(fault_runs, monkeypatch):
    monkeypatch.setenv("LBW_RUNS_DIR", str(fault_runs))
    at = page()
    assert not at.exception
    assert "runs/tiny" in at.selectbox(key="faults_folder").options
    at = at.selectbox(key="faults_folder").set_value("runs/tiny").run()
    assert not at.exception
    verdict = _table(at, "goal")
    assert len(verdict) == 5 and set(verdict["met"]) <= {"✔", "✘", "?"}
    ratios = _table(at, "fault")
    assert {"adamw", "guard"} <= set(ratios.columns) and "poison" in set(ratios["fault"])
    assert len(at.get("plotly_chart")) == 2  # loss curves per fault, guard regime bands


def test_faults_page_upload_and_bad_upload(fault_runs, monkeypatch):
    monkeypatch.setenv("LBW_RUNS_DIR", str(fault_runs))
    at = page()
    at = at.radio(key="faults_source").set_value("Upload a summary.csv").run()
    at.file_uploader(key="faults_upload").upload("summary.csv", os.urandom(2048), "text/csv")
    at = at.run()
    assert not at.exception and any("Could not read" in e.value for e in at.error)
    at.file_uploader(key="faults_upload").clear()
    at.file_uploader(key="faults_upload").upload(
        "summary.csv", (fault_runs / "tiny" / "summary.csv").read_bytes(), "text/csv")
    at = at.run()
    assert not at.exception and not at.error
    assert len(_table(at, "goal")) == 5
    assert any("No loss curves" in i.value for i in at.info)
