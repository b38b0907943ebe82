"""Stress suite: the committed full LR x arm grid on arrival, a miniature one run here, or
earlier results (runs/, upload).

The miniature grid runs in a worker thread (`StressJob`, no Streamlit calls) held in this
browser session's state; a fragment polls its progress every half second, so the page
stays usable while it trains and another session can neither see nor stop it.
"""

from __future__ import annotations

import streamlit as st

from lbw_sim.bench.stress import MINI
from lbw_sim.bench.stress_grid import StressResult
from lbw_sim.bench.stress_job import StressJob, mini_grid
from lbw_sim.bench.stress_report import (
    COMMITTED,
    goals,
    list_result_dirs,
    load_results,
    measured_text,
    read_summary,
    report_table,
    runs_dir,
    worst_ratios,
)
from lbw_sim.bench.suite_report import (
    GOAL_ORDER,
    beside_guard,
    list_suite_dirs,
    load_suite,
    overall,
    suite_root,
    suite_tasks,
    suite_verdicts,
)
from lbw_sim.errors import TraceError
from lbw_sim.viz import stress_curves_figure, stress_events_figure, stress_loss_figure
from pages.common import run_job, through_app

through_app(__file__)

SOURCES = ("The committed full grid", "Run a miniature grid", "Earlier results (runs/)",
           "Upload a summary.csv", "Task suite")

st.title("Stress suite")
st.markdown("Final validation loss against the peak learning rate, each optimizer arm at "
            "every LR: does the guard keep a run healthy at LRs that break plain AdamW, "
            "without costing anything at the best LR? Shown first: the full grid committed "
            "with the project (run from the command line, `python -m lbw_sim stress`). The "
            f"miniature grid runs {', '.join(MINI['arms'])} here in about a minute; earlier "
            "results under runs/, an uploaded summary.csv, or the task suite (the LR grid "
            "over seven model families, `stress --suite`) can be loaded too.")
source = st.radio("Results", SOURCES, horizontal=True, key="stress_source")


def committed_section() -> StressResult | None:
    folder = COMMITTED
    summary = folder / "summary.csv"
    try:
        result = cached_results(str(folder), summary.stat().st_mtime_ns)
    except (TraceError, OSError) as exc:
        st.error(f"Could not read the committed results ({folder.name}): {exc}")
        return None
    s = result.summary
    lrs = ", ".join(f"{lr:g}" for lr in sorted(s["lr"].unique()))
    st.caption(f"`benchmarks/results/{folder.name}`: arms {', '.join(s['arm'].unique())} × "
               f"LRs {lrs}, {s['seed'].nunique()} seeds, {int(s['steps_run'].max())} steps on "
               "tiny Shakespeare (a character-level GPT). Only the summary is committed, so "
               "no loss curves are drawn.")
    return result


def run_section() -> StressResult | None:
    grid = mini_grid()
    sc = grid.scenario
    lrs = ", ".join(f"{lr:g}" for lr in sc.lrs)
    st.caption(f"Arms {', '.join(MINI['arms'])} × LRs {lrs}; a {MINI['model']['n_layer']}-"
               f"layer GPT (width {MINI['model']['n_embd']}) on an order-1 synthetic corpus, "
               f"{sc.steps} steps with {sc.schedule.warmup} warm-up, one seed.")
    job: StressJob | None = run_job("stress", lambda: StressJob(grid))
    if job is None:
        return None
    snap = job.snapshot()
    if snap["error"]:
        st.error(f"The run failed: {snap['error']}")
    elif job.stop_event.is_set():
        st.warning("Stopped: the cells finished before the stop are shown.")
    else:
        st.success(f"Miniature grid finished: {snap['total']} cells.")
    return snap["result"]


@st.cache_data(show_spinner=False, max_entries=4)
def cached_results(folder: str, summary_mtime_ns: int) -> StressResult:
    """A results folder, read once per version of its summary.csv (every cell rewrites it),
    not on every rerun: a full grid is 126 trace files."""
    return load_results(folder)


def folder_section() -> StressResult | None:
    folders = list_result_dirs()
    if not folders:
        st.info("No stress results under the project's runs/ folder yet: "
                "`python -m lbw_sim stress --quick` writes runs/stress_quick.")
        return None
    choice = st.selectbox("Results folder (under runs/)", folders, key="stress_folder")
    try:
        summary = runs_dir() / choice / "summary.csv"
        return cached_results(str(summary.parent), summary.stat().st_mtime_ns)
    except (TraceError, OSError) as exc:
        st.error(f"Could not read runs/{choice}: {exc}")
        return None


def upload_section() -> StressResult | None:
    up = st.file_uploader("A summary.csv written by `python -m lbw_sim stress`",
                          type=["csv"], key="stress_upload")
    if up is None:
        return None
    try:
        summary = read_summary(up.getvalue(), up.name)
    except TraceError as exc:
        st.error(f"Could not read the summary: {exc}")
        return None
    st.caption(f"Read **{up.name}**: {len(summary)} cells (no loss curves in a summary).")
    return StressResult(None, summary)


def show(result: StressResult) -> None:
    if result.summary.empty:
        st.info("No finished cell yet.")
        return
    rep = report_table(result.summary)
    worst = worst_ratios(rep)
    st.plotly_chart(stress_loss_figure(rep, result.reference), width="stretch",
                    key="stress_loss_chart")
    left, right = st.columns([3, 1])
    with left:
        st.markdown("**Per arm and LR** (mean over seeds; ratio = final val loss / AdamW's best)")
        st.dataframe(rep, hide_index=True, width="stretch", key="stress_table",
                     column_config={"lr": st.column_config.NumberColumn(format="%g")})
    with right:
        st.markdown("**Worst ratio per arm**")
        st.dataframe(worst, hide_index=True, width="stretch", key="stress_worst")
    marks = {True: "✔", False: "✘"}
    verdict = goals(rep, result.nominal or None).assign(
        met=lambda d: d["met"].map(marks).fillna("?"),
        measured=lambda d: [measured_text(g, m) for g, m in zip(d["goal"], d["measured"])])
    st.markdown("**Goals** (no harm at the best LR, rescue at 10×/30× the best LR, dominance "
                "from 3×; LRs matched within a factor 1.2)")
    st.dataframe(verdict, hide_index=True, width="stretch", key="stress_goals")
    st.plotly_chart(stress_events_figure(rep), width="stretch", key="stress_events_chart")
    if not result.curves.empty:
        st.plotly_chart(stress_curves_figure(result.curves, result.reference), width="stretch",
                        key="stress_curves_chart")
    if result.reference:
        unigram = "the unigram level (predicting token frequencies only)"
        st.caption(f"Dashed: the entropy floor of the synthetic corpus (the best possible "
                   f"loss); dotted: {unigram}." if "entropy floor" in result.reference else
                   f"Dotted: {unigram}.")


@st.cache_data(show_spinner=False, max_entries=16)
def cached_task(folder: str, task: str, summary_mtime_ns: int) -> StressResult:
    """One task of a suite folder, read once per version of its summary.csv."""
    return load_suite(folder, [task])[task]


def load_suite_with_progress(folder) -> dict[str, StressResult]:
    names = [n for n in suite_tasks(folder) if (folder / n / "summary.csv").is_file()]
    bar = st.progress(0.0, text="Loading the suite …")
    results = {}
    for i, name in enumerate(names, 1):
        mtime = (folder / name / "summary.csv").stat().st_mtime_ns
        results[name] = cached_task(str(folder), name, mtime)
        bar.progress(i / len(names), text=f"Loaded {name} ({i}/{len(names)})")
    bar.empty()
    return results


def suite_section() -> StressResult | None:
    """`stress --suite` folders: the overall verdicts, then one task's table and goals."""
    folders = list_suite_dirs()
    if not folders:
        st.info("No suite results yet: `python -m lbw_sim stress --suite --quick` writes "
                "runs/suite_quick (the committed quick run is in benchmarks/results/).")
        return None
    choice = st.selectbox("Suite folder", folders, key="suite_folder")
    try:
        results = load_suite_with_progress(suite_root(choice))
    except (TraceError, OSError, ValueError, KeyError) as exc:
        st.error(f"Could not read {choice}: {exc}")
        return None
    verdicts = suite_verdicts(results)
    marks = {True: "✔", False: "✘"}
    st.markdown("**Overall** (one guard spec on every task, the one the suite was run with; "
                "a goal is met when every task that can judge it meets it)")
    st.dataframe(overall(verdicts).assign(met=lambda d: d["met"].map(marks).fillna("?")),
                 hide_index=True, width="stretch", key="suite_overall")
    matrix = verdicts.assign(cell=[f"{measured_text(k, m)} {marks.get(ok, '?')}" for k, m, ok in
                                   zip(verdicts["key"], verdicts["measured"], verdicts["met"])])
    grid = matrix.pivot(index="task", columns="key", values="cell")
    st.dataframe(grid.reindex(index=list(results), columns=[k for k in GOAL_ORDER if k in grid]),
                 width="stretch", key="suite_matrix")
    task = st.selectbox("Task", list(results), key="suite_task")
    st.markdown(f"**{task}: goals**")
    st.dataframe(verdicts[verdicts["task"] == task].drop(columns=["task", "key"]).assign(
        met=lambda d: d["met"].map(marks).fillna("?"),
        measured=lambda d: [measured_text(g, m) for g, m in zip(d["goal"], d["measured"])]),
        hide_index=True, width="stretch", key="suite_task_goals")
    st.markdown("**Beside the guard** (ratio to AdamW's best)")
    st.dataframe(beside_guard(report_table(results[task].summary)), hide_index=True,
                 width="stretch", key="suite_beside")
    return results[task]


section = {SOURCES[0]: committed_section, SOURCES[1]: run_section,
           SOURCES[2]: folder_section, SOURCES[3]: upload_section, SOURCES[4]: suite_section}
result = section[source]()
if result is not None:
    show(result)
