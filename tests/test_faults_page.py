"""AppTest of the Faults page: a results folder (runs/ or the committed benchmarks/results/),
an uploaded summary.csv, a bad upload, and a miniature grid run on the page."""

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
    from lbw_sim.bench.fault_grid import build_fault_grid, run_fault_grid
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


def test_faults_page_runs_a_miniature_grid_with_the_designers_spec():
    """Pick tiny settings, run, see the goals, tables and both charts of the finished grid.

    AppTest does not run `run_every` fragments: the test waits on the job, then reruns."""
    from lbw_sim.guard.spec import GuardSpec

    at = page()
    at = at.radio(key="faults_source").set_value("Run a miniature grid").run()
    assert not at.exception and not at.error
    assert at.selectbox(key="faults_mini_task").value == "gpt"
    assert at.multiselect(key="faults_mini_faults").value == ["lr_spike 100", "overflow 3",
                                                              "poison 10000"]
    assert any("12 cells" in c.value for c in at.caption)
    assert "faults_job" not in at.session_state and not at.dataframe
    adaptive = GuardSpec.named("lbw-adaptive")
    at.session_state["spec"] = adaptive  # as the Designer leaves an edited spec
    at.selectbox(key="faults_mini_spec").set_value("Designer's spec")
    at.selectbox(key="faults_mini_task").set_value("mlp")
    at.multiselect(key="faults_mini_faults").set_value(["poison 10000"])
    at.multiselect(key="faults_mini_arms").set_value(["adamw", "guard"])
    at.number_input(key="faults_mini_steps").set_value(40)
    at = at.run()
    assert not at.error and any("4 cells" in c.value for c in at.caption)
    at = at.button(key="faults_run").click().run()
    assert not at.exception
    job = at.session_state["faults_job"]
    job.join(300)
    at = at.run()  # in the browser the fragment sees the end and reruns the page
    assert not at.exception and not at.error
    assert any("4 cells" in s.value and "lbw-adaptive" in s.value for s in at.success)
    assert job.spec.hash == adaptive.hash and job.grid.steps("mlp") == 40
    verdict = _table(at, "goal")
    assert len(verdict) == 5 and set(verdict["met"]) <= {"✔", "✘", "?"}
    assert any("lbw-adaptive" in m.value for m in at.markdown if "Goals" in m.value)
    ratios = _table(at, "fault")
    assert list(ratios["fault"]) == ["none", "poison"] and {"adamw", "guard"} <= set(ratios)
    assert len(at.get("plotly_chart")) == 2  # loss curves per fault, guard regime bands
    assert len(at.get("download_button")) == 2


def test_faults_page_mini_grid_bad_choices_are_named_and_block_the_run():
    at = page()
    at = at.radio(key="faults_source").set_value("Run a miniature grid").run()
    at.multiselect(key="faults_mini_faults").set_value([])
    at = at.run()
    assert not at.exception and at.button(key="faults_run").disabled
    assert any("--faults" in e.value and "at least one" in e.value for e in at.error)
    at.multiselect(key="faults_mini_faults").set_value(["overflow 30"])
    at.number_input(key="faults_mini_steps").set_value(40)
    at = at.run()
    assert at.button(key="faults_run").disabled
    assert any("--steps" in e.value and "overflow 30" in e.value for e in at.error)
    at.number_input(key="faults_mini_steps").set_value(80)
    at = at.run()
    assert not at.error and not at.button(key="faults_run").disabled
