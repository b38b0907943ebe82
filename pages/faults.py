"""Faults: the transient-fault benchmark from a results folder, an uploaded summary.csv, or
a miniature grid run here.

Per fault the loss curves of every arm against their fault-free runs, the guard's regime
bands, and the goals judged. The full grid runs from the command line
(`python -m lbw_sim faults --quick`). The miniature grid runs in a worker thread
(`FaultJob`, no Streamlit calls) held in this browser session's state, writing into a
temporary folder, so its views are those of a results folder; everything shown is
computed by `lbw_sim`.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from lbw_sim.bench.fault_grid import (
    FAULT_NAMES,
    MINI,
    SEVERITIES,
    SMOOTH,
    TASKS,
    build_fault_grid,
    fault_arms,
)
from lbw_sim.bench.fault_job import FaultJob
from lbw_sim.bench.fault_report import (
    FaultResult,
    goals,
    list_fault_dirs,
    load_fault_results,
    mean_table,
    ratio_pivot,
    read_fault_summary,
)
from lbw_sim.bench.stress_report import ROOT, runs_dir
from lbw_sim.errors import SpecError, TraceError
from lbw_sim.viz.faults import fault_curves_figure, guard_regimes_figure
from pages.common import run_job, spec_choice, through_app

through_app(__file__)

SOURCES = ("Results folder", "Upload a summary.csv", "Run a miniature grid")
COMMITTED = ROOT / "benchmarks" / "results"
#: the miniature grid's fault choices: "lr_spike 100" -> ("lr_spike", 100.0)
LEVELS = {f"{f} {v:g}": (f, float(v)) for f in FAULT_NAMES for v in SEVERITIES[f]}
FAULT_HELP = ("corrupt N: N batches of random tokens (flipped labels); lr_spike x: the LR "
              "times x for 20 steps; overflow N: N steps of +inf gradients; grad_noise x: "
              "heavy-tailed noise of x times the gradient norm for 10 steps; poison x: one "
              "step's gradient times x; shift f: from then on a fraction f of every batch is "
              "noise (not a fault: judged by the LR scale only).")

st.title("Faults")
st.markdown("Transient faults at each task's AdamW-best LR — bad-data bursts, LR spikes, "
            "overflow storms, heavy-tailed gradient noise, one poisoned step — and a lasting "
            "shift to harder data. Each arm is judged against its own fault-free run. "
            "Run the full grid with `python -m lbw_sim faults --quick`, or a miniature one "
            "here.")
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


def run_section() -> FaultResult | None:
    """The miniature grid's controls, its run in this session and, once done, its result."""
    default_levels = [f"{f} {v:g}" for f, vals in MINI["severities"].items() for v in vals]
    left, right = st.columns(2)
    with left:
        task = st.selectbox("Task", list(TASKS), key="faults_mini_task",
                            format_func=lambda t: f"{t}: {TASKS[t]['about']}")
        picked = st.multiselect("Faults and severities", list(LEVELS), default=default_levels,
                                key="faults_mini_faults", help=FAULT_HELP)
    with right:
        arms = st.multiselect("Arms", list(fault_arms()), default=MINI["arms"],
                              key="faults_mini_arms")
        steps = st.number_input("Steps per run (the fault starts halfway)", min_value=40,
                                max_value=1000, value=MINI["steps"], step=40,
                                key="faults_mini_steps")
    spec = spec_choice("Guard spec of the guard arm", key="faults_mini_spec")
    severities: dict[str, list[float]] = {}
    for label in picked:
        f, v = LEVELS[label]
        severities.setdefault(f, []).append(v)
    choice = {"task": task, "severities": severities or {}, "arms": arms, "steps": int(steps)}
    try:
        grid = build_fault_grid(mini=True, tasks=[task], severities=choice["severities"],
                                arms=arms, steps=int(steps))
    except SpecError as exc:
        st.error(f"Cannot run this grid: {exc}")
        grid = None
    if grid is not None:
        n_faulted = sum(len(grid.levels(f)) for f in grid.faults)
        st.caption(f"{len(grid.cells())} cells: {len(arms)} arm(s) × ({n_faulted} fault(s) + "
                   f"the fault-free reference), seed 1, {steps} steps each, the fault at step "
                   f"{grid.fault_start(task)}. The default choice takes about 35 s on an "
                   "idle CPU core (longer on a busy one). Short runs: a smoke test of the "
                   "spec, not the benchmark's verdict.")
    job: FaultJob | None = run_job("faults", lambda: FaultJob(**choice, spec=spec),
                                   disabled=grid is None)
    if job is None:
        return None
    snap = job.snapshot()
    ran = f"{job.grid.describe()}; guard spec *{job.spec.name}*"
    if snap["error"]:
        st.error(f"The run failed: {snap['error']}")
    elif job.stop_event.is_set():
        st.warning(f"Stopped ({ran}): the cells finished before the stop are shown.")
    else:
        st.success(f"Miniature grid finished: {snap['total']} cells in "
                   f"{snap['elapsed_s']:.0f} s ({ran}).")
    result = snap["result"]
    if result is not None and (job.out / "table.md").is_file():
        cols = st.columns(4)
        for col, name, mime in ((cols[0], "summary.csv", "text/csv"),
                                (cols[1], "table.md", "text/markdown")):
            col.download_button(f"Download {name}", (job.out / name).read_bytes(),
                                file_name=f"faults_mini_{name}", mime=mime,
                                key=f"faults_dl_{name}", icon=":material/download:")
    return result


def show(result: FaultResult) -> None:
    summary = result.summary
    if summary.empty:
        st.info("No finished cell yet.")
        return
    marks = {True: "✔", False: "✘"}
    verdict = goals(summary).assign(met=lambda d: d["met"].map(marks).fillna("?"))
    which = (f"guard spec *{result.spec.name}*" if result.spec
             else "the guard arm's spec the grid was run with")
    st.markdown(f"**Goals** ({which}; means over seeds "
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
    st.caption(f"Each curve is a centred {SMOOTH}-step mean, so a jump shows up to "
               f"{SMOOTH // 2} steps before the fault's start (grey line); a curve that breaks "
               "off went non-finite (or its run stopped). The y axis stops at twice the fault-free "
               "level.")
    st.plotly_chart(guard_regimes_figure(curves, task, spec=result.spec), width="stretch",
                    key="faults_regimes_chart")


section = {SOURCES[0]: folder_section, SOURCES[1]: upload_section, SOURCES[2]: run_section}
result = section[source]()
if result is not None:
    show(result)
