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
from lbw_sim.guard.spec import GuardSpec, named_specs
from lbw_sim.studio.results import (
    SpecRef,
    fault_takeaway,
    nonfinite_note,
    spec_of_folder,
    spec_of_spec,
)
from lbw_sim.viz.faults import fault_curves_figure, guard_regimes_figure
from pages.common import (
    glossary_link,
    run_job,
    spec_choice,
    through_app,
    uploaded_summary,
    verdict_table,
)

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
st.markdown("Does the guard ride out a short fault — a burst of bad data, an LR spike, "
            "overflowing gradients, one poisoned step — and end where it would have ended "
            "without it? Each optimizer arm is judged against its own fault-free run at the "
            "task's best LR. " + glossary_link())
source = st.radio("Results", SOURCES, horizontal=True, key="faults_source",
                  help="The full grid runs from the command line (`python -m lbw_sim faults "
                       "--quick`); a miniature one runs here.")
#: the spec of the result being shown, set by each section
shown_spec: dict[str, SpecRef] = {}


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
    shown_spec["ref"] = spec_of_folder(labels[choice])
    try:
        summary = labels[choice] / "summary.csv"
        return cached_results(str(summary.parent), summary.stat().st_mtime_ns)
    except (TraceError, OSError) as exc:
        st.error(f"Could not read {choice}: {exc}")
        return None


def upload_section() -> FaultResult | None:
    summary = uploaded_summary("faults", "faults_upload", read_fault_summary)
    if summary is None:
        return None
    shown_spec["ref"] = SpecRef(None)
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
    shown_spec["ref"] = spec_of_spec(job.spec)
    ran = f"{job.grid.describe()}; guard spec *{job.spec.name}* (`{job.spec.hash}`)"
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


def show(result: FaultResult, ref: SpecRef) -> None:
    summary = result.summary
    if summary.empty:
        st.info("No finished cell yet.")
        return
    st.info(fault_takeaway(summary, ref), icon=":material/lightbulb:")
    note = nonfinite_note(summary)
    if note:
        st.caption(note)
    marks = {True: "✔", False: "✘"}
    verdict = goals(summary).assign(met=lambda d: d["met"].map(marks).fillna("n/a"))
    st.markdown(f"**Goals** (guard arm: {ref.label}; means over seeds "
                f"{', '.join(map(str, sorted(summary['seed'].unique())))})")
    verdict_table(verdict, key="faults_goals")
    tasks = list(dict.fromkeys(summary["task"]))
    task = st.selectbox("Task", tasks, key="faults_task")
    st.markdown(f"**Final val loss ÷ the same arm's fault-free run** ({task}; guard arm: "
                f"{ref.label}; ∞ = the run ended non-finite)")
    st.dataframe(ratio_pivot(summary, task), hide_index=True, width="stretch",
                 key="faults_ratios")
    st.markdown(f"**The guard's reaction** ({ref.label})")
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
    spec = result.spec or (GuardSpec.named(ref.name) if ref.name in named_specs() else None)
    st.plotly_chart(guard_regimes_figure(curves, task, spec=spec), width="stretch",
                    key="faults_regimes_chart")


section = {SOURCES[0]: folder_section, SOURCES[1]: upload_section, SOURCES[2]: run_section}
result = section[source]()
if result is not None:
    show(result, shown_spec.get("ref", SpecRef(None)))
