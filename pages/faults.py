"""Faults: the transient-fault benchmark from a results folder or an uploaded summary.csv.

Per fault the loss curves of every arm against their fault-free runs, the guard's regime
bands, and the goals judged. The grid itself runs from the command line
(`python -m lbw_sim faults --quick`); everything shown is computed by `lbw_sim`.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from lbw_sim.errors import TraceError
from lbw_sim.sim.fault_report import (
    FaultResult,
    goals,
    list_fault_dirs,
    load_fault_results,
    mean_table,
    ratio_pivot,
    read_fault_summary,
)
from lbw_sim.sim.stress_report import ROOT, runs_dir
from lbw_sim.viz.faults import fault_curves_figure, guard_regimes_figure
from pages.common import through_app

through_app(__file__)

SOURCES = ("Results folder", "Upload a summary.csv")
COMMITTED = ROOT / "benchmarks" / "results"

st.title("Faults")
st.markdown("Transient faults at each task's AdamW-best LR — bad-data bursts, LR spikes, "
            "overflow storms, heavy-tailed gradient noise, one poisoned step — and a lasting "
            "shift to harder data. Each arm is judged against its own fault-free run. "
            "Run the grid with `python -m lbw_sim faults --quick`.")
source = st.radio("Results", SOURCES, horizontal=True, key="faults_source")


@st.cache_data(show_spinner=False, max_entries=4)
def cached_results(folder: str, summary_mtime_ns: int) -> FaultResult:
    """A results folder, read once per version of its summary.csv (rewritten per cell)."""
    return load_fault_results(folder)


def _label(path: Path) -> str:
    for root, name in ((runs_dir(), "runs"), (COMMITTED, "benchmarks/results")):
        if path.is_relative_to(root):
            return f"{name}/{path.relative_to(root)}"
    return str(path)


def folder_section() -> FaultResult | None:
    folders = list_fault_dirs(runs_dir(), COMMITTED)
    if not folders:
        st.info("No fault-grid results under runs/ or benchmarks/results/ yet: "
                "`python -m lbw_sim faults --quick` writes runs/faults_quick.")
        return None
    labels = {_label(p): p for p in folders}
    choice = st.selectbox("Results folder", list(labels), key="faults_folder")
    try:
        summary = labels[choice] / "summary.csv"
        return cached_results(str(summary.parent), summary.stat().st_mtime_ns)
    except (TraceError, OSError) as exc:
        st.error(f"Could not read {choice}: {exc}")
        return None


def upload_section() -> FaultResult | None:
    up = st.file_uploader("A summary.csv written by `python -m lbw_sim faults`", type=["csv"],
                          key="faults_upload")
    if up is None:
        return None
    try:
        summary = read_fault_summary(up.getvalue(), up.name)
    except TraceError as exc:
        st.error(f"Could not read the summary: {exc}")
        return None
    st.caption(f"Read **{up.name}**: {len(summary)} cells (no loss curves in a summary).")
    return FaultResult(summary)


def show(result: FaultResult) -> None:
    summary = result.summary
    marks = {True: "✔", False: "✘"}
    verdict = goals(summary).assign(met=lambda d: d["met"].map(marks).fillna("?"))
    st.markdown("**Goals** (the guard arm's spec the grid was run with; means over seeds "
                f"{', '.join(map(str, sorted(summary['seed'].unique())))})")
    st.dataframe(verdict, hide_index=True, width="stretch", key="faults_goals",
                 column_config={"measured": st.column_config.NumberColumn(format="%.4g")})
    tasks = list(dict.fromkeys(summary["task"]))
    task = st.selectbox("Task", tasks, key="faults_task")
    left, right = st.columns([3, 2])
    with left:
        st.markdown("**Final val loss ÷ the same arm's fault-free run**")
        st.dataframe(ratio_pivot(summary, task), hide_index=True, width="stretch",
                     key="faults_ratios")
    with right:
        st.markdown("**The guard's reaction**")
        tab = mean_table(summary)
        cols = ["fault", "severity", "steps_lost", "detection_latency", "skips", "rollbacks",
                "final_lr_scale", "lr_back_steps"]
        guard = tab[(tab["task"] == task) & (tab["arm"] == "guard") & (tab["fault"] != "none")]
        st.dataframe(guard[[c for c in cols if c in guard]], hide_index=True, width="stretch",
                     key="faults_guard")
        st.caption("steps lost / LR back after: inf = never within the run.")
    if result.curves.empty:
        st.info("No loss curves: an uploaded summary.csv holds one row per cell only.")
        return
    curves = result.curves
    st.plotly_chart(fault_curves_figure(curves, task), width="stretch",
                    key="faults_curves_chart")
    st.plotly_chart(guard_regimes_figure(curves, task), width="stretch",
                    key="faults_regimes_chart")


section = {SOURCES[0]: folder_section, SOURCES[1]: upload_section}
result = section[source]()
if result is not None:
    show(result)
