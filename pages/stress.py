"""Stress suite: on arrival the committed suites' goal verdicts for the quiet default and the
active controller side by side; the paper's claim tested in miniature on the fine-tune
suite (`lbw_sim.studio.claim`); one suite folder in detail; the committed Tiny Shakespeare
grid (measured with the retired v1 spec, and said so); a miniature grid run here, or
earlier results (runs/, upload). Every result names the spec that produced it (name and
hash) and opens with plain sentences computed from it (`lbw_sim.studio.results`).

The miniature grid runs in a worker thread (`StressJob`, no Streamlit calls) held in this
browser session's state; a fragment polls its progress every half second, so the page
stays usable while it trains and another session can neither see nor stop it.
"""

from __future__ import annotations

import pandas as pd
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
    load_suite_summaries,
    overall,
    results_dir,
    suite_root,
    suite_tasks,
)
from lbw_sim.errors import TraceError
from lbw_sim.studio.claim import (
    PAPER_CLAIM,
    SuiteFolder,
    absent_text,
    claim_cells,
    claim_grid,
    claim_summary,
    committed_suites,
    control_lines,
    goals_side_by_side,
    grid_factors,
    judged_verdicts,
    load_claim,
    missed_lines,
    overall_of,
    spec_mismatch,
    spec_name,
    start_loss,
    task_sentence,
)
from lbw_sim.studio.results import (
    SpecRef,
    applicable_goals,
    spec_of_folder,
    spec_of_spec,
    specs_of_suite,
    stress_takeaway,
    suite_takeaway,
)
from lbw_sim.viz import (
    claim_figure,
    stress_curves_figure,
    stress_events_figure,
    stress_loss_figure,
)
from pages.common import glossary_link, run_job, through_app, uploaded_summary, verdict_table

through_app(__file__)

SOURCES = ("Default and active controller", "The paper's claim", "Task suite",
           "The committed Tiny Shakespeare grid", "Run a miniature grid",
           "Earlier results (runs/)", "Upload a summary.csv")

st.title("Stress suite")
st.markdown("Does the guard keep a run healthy at learning rates that break plain AdamW, "
            "without costing anything at AdamW's best LR? Each optimizer arm is trained at "
            "every LR of a grid and judged by its final validation loss. "
            + glossary_link())
source = st.radio("Results", SOURCES, horizontal=True, key="stress_source",
                  help="Default and active controller: the committed suites (from scratch "
                       "and fine-tune) judged for the quiet default and the active controller "
                       "side by side. The paper's claim: the fine-tune suite read as a test of "
                       "the paper's headline. Task suite: any one suite folder in detail. Tiny "
                       "Shakespeare: the older full grid, measured with the retired v1 spec. "
                       f"The miniature grid runs {', '.join(MINI['arms'])} here in about a "
                       "minute.")
#: the spec of the result being shown (`ref`), set by each section; `suite`: from the suite
shown_spec: dict = {}


def committed_section() -> StressResult | None:
    folder = COMMITTED
    summary = folder / "summary.csv"
    try:
        result = cached_results(str(folder), summary.stat().st_mtime_ns)
    except (TraceError, OSError) as exc:
        st.error(f"Could not read the committed results ({folder.name}): {exc}")
        return None
    shown_spec["ref"] = spec_of_folder(folder)
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
    shown_spec["ref"] = spec_of_spec(job.grid.scenario.guard)
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
    shown_spec["ref"] = spec_of_folder(runs_dir() / choice)
    try:
        summary = runs_dir() / choice / "summary.csv"
        return cached_results(str(summary.parent), summary.stat().st_mtime_ns)
    except (TraceError, OSError) as exc:
        st.error(f"Could not read runs/{choice}: {exc}")
        return None


def upload_section() -> StressResult | None:
    summary = uploaded_summary("stress", "stress_upload", read_summary)
    if summary is None:
        return None
    shown_spec["ref"] = SpecRef(None)
    return StressResult(None, summary)


#: Report columns narrow enough that the table fits 1400 px without a cut-off column.
REPORT_FORMAT = {
    "lr": st.column_config.NumberColumn("LR", format="%g"),
    "val_loss": st.column_config.NumberColumn("val loss", format="%.4f"),
    "val_std": st.column_config.NumberColumn("± std", format="%.4f"),
    "ratio": st.column_config.NumberColumn("÷ AdamW best", format="%.3f"),
    "diverged": st.column_config.NumberColumn("diverged seeds", format="%d"),
    "first_diverged_step": st.column_config.NumberColumn("first diverged", format="%d"),
    "interventions": st.column_config.NumberColumn("steps acted", format="%.0f"),
    "skips": st.column_config.NumberColumn("skips", format="%.0f"),
    "ppl": st.column_config.NumberColumn("ppl", format="%.4g"),
    "worst_ratio": st.column_config.NumberColumn("worst ratio", format="%.3f"),
    "at_lr": st.column_config.NumberColumn("at LR", format="%g"),
    "best_ratio": st.column_config.NumberColumn("best ratio", format="%.3f"),
}


def show(result: StressResult, ref: SpecRef) -> None:
    if result.summary.empty:
        st.info("No finished cell yet.")
        return
    rep = report_table(result.summary)
    worst = worst_ratios(rep)
    st.info(stress_takeaway(rep, ref), icon=":material/lightbulb:")
    guard = f"guard arm: {ref.label}"
    st.plotly_chart(stress_loss_figure(rep, result.reference), width="stretch",
                    key="stress_loss_chart")
    if not shown_spec.get("suite"):      # the suite view shows the task's goals above
        marks = {True: "✔", False: "✘"}
        verdict = applicable_goals(goals(rep, result.nominal or None), rep).assign(
            met=lambda d: d["met"].map(marks).fillna("n/a"),
            measured=lambda d: [measured_text(g, m) for g, m in zip(d["goal"], d["measured"])])
        st.markdown(f"**Goals** ({guard}; no harm at the best LR, rescue at 10×/30× the best "
                    "LR where AdamW needed one, dominance from 3×; LRs matched within a "
                    "factor 1.2)")
        verdict_table(verdict, key="stress_goals")
    st.markdown(f"**Per arm and LR** (mean over seeds; {guard})")
    st.dataframe(rep, hide_index=True, width="stretch", key="stress_table",
                 column_config=REPORT_FORMAT)
    st.markdown("**Worst ratio per arm** (final val loss ÷ AdamW's best, over the grid)")
    st.dataframe(worst, hide_index=True, width="stretch", key="stress_worst",
                 column_config=REPORT_FORMAT)
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
    verdicts = judged_verdicts(results)
    refs = specs_of_suite(suite_root(choice), list(results))
    shown_spec["ref"] = next(iter(refs.values()), SpecRef(None))
    table = overall(verdicts)
    st.info(suite_takeaway(table, refs), icon=":material/lightbulb:")
    marks = {True: "✔", False: "✘"}
    st.markdown("**Overall** (a goal is met when every task where it applies meets it; "
                "rescue applies only where AdamW needed one)")
    st.dataframe(table.assign(met=lambda d: d["met"].map(marks).fillna("n/a")),
                 hide_index=True, width="stretch", key="suite_overall", column_config={
                     "met_tasks": st.column_config.NumberColumn("tasks met", width="small"),
                     "judged_tasks": st.column_config.NumberColumn("of tasks judged",
                                                                   width="small"),
                     "met": st.column_config.TextColumn("met", width="small"),
                     "missed_on": st.column_config.TextColumn("missed on", width="large")})
    matrix = verdicts.assign(cell=[f"{measured_text(k, m)} {marks.get(ok, 'n/a')}" for k, m, ok in
                                   zip(verdicts["key"], verdicts["measured"], verdicts["met"])])
    grid = matrix.pivot(index="task", columns="key", values="cell")
    st.dataframe(grid.reindex(index=list(results), columns=[k for k in GOAL_ORDER if k in grid]),
                 width="stretch", key="suite_matrix")
    task = st.selectbox("Task", list(results), key="suite_task")
    st.markdown(f"**{task}: goals**")
    verdict_table(verdicts[verdicts["task"] == task].drop(columns=["task", "key"]).assign(
        met=lambda d: d["met"].map(marks).fillna("n/a"),
        measured=lambda d: [measured_text(g, m) for g, m in zip(d["goal"], d["measured"])]),
        key="suite_task_goals")
    st.markdown("**Beside the guard** (ratio to AdamW's best)")
    st.dataframe(beside_guard(report_table(results[task].summary)), hide_index=True,
                 width="stretch", key="suite_beside")
    shown_spec.update(ref=refs[task], suite=True)
    st.markdown(f"#### {task}: the grid")
    return results[task]


@st.cache_data(show_spinner=False, max_entries=8)
def cached_summaries(folder: str, stamp: tuple) -> dict[str, StressResult]:
    """A suite folder's summaries and guard fractions, read once per version of its
    summaries (`stamp`: their modification times)."""
    return load_suite_summaries(folder)


def stamp(folder) -> tuple:
    return tuple(sorted((p.parent.name, p.stat().st_mtime_ns)
                        for p in folder.glob("*/summary.csv")))


def specs_section() -> None:
    """The committed suites, the quiet default's and the active controller's goal verdicts
    side by side, from scratch and fine-tune; the folders that are absent said so."""
    folders = committed_suites()
    st.markdown("The committed suites, each run with the shipped default and with the active "
                "controller; a goal is met when every task where it applies meets it "
                "(rescue applies only where AdamW needed one).")
    missing = absent_text(folders)
    if missing:
        st.info(missing, icon=":material/folder_off:")
    for kind in dict.fromkeys(f.kind for f in folders):
        present = [f for f in folders if f.kind == kind and f.present]
        st.markdown(f"#### {kind.capitalize()}")
        if not present:
            st.caption(f"No {kind} suite folder is here yet.")
            continue
        overalls, notes = {}, []
        for f in present:
            try:
                results = cached_summaries(str(f.path), stamp(f.path))
            except (TraceError, OSError, ValueError, KeyError) as exc:
                st.error(f"Could not read {f.root.name}/{f.name}: {exc}")
                continue
            refs = specs_of_suite(f.path, list(results))
            table = overall_of(results)
            label = spec_name(refs)
            overalls[label if label not in overalls else f"{label} [{f.name}]"] = table
            notes.append(suite_folder_note(f, refs, table, results))
        if overalls:
            st.dataframe(goals_side_by_side(overalls), hide_index=True, width="stretch",
                         key=f"specs_{kind}")
        st.markdown("\n".join(notes))
        missed = missed_lines(overalls)
        if missed:
            with st.expander(f"Which {kind} tasks missed each goal"):
                st.markdown("\n".join(f"- {line}" for line in missed))


def suite_folder_note(f: SuiteFolder, refs: dict[str, SpecRef], table: pd.DataFrame,
                      results: dict[str, StressResult]) -> str:
    seeds = sorted({int(x) for r in results.values() for x in r.summary["seed"].unique()})
    warn = spec_mismatch(f, refs)
    return (f"- `{f.shown}` ({len(results)} tasks, seeds "
            f"{', '.join(map(str, seeds))}): {suite_takeaway(table, refs)}"
            + (f" **{warn}**" if warn else ""))


@st.cache_data(show_spinner=False, max_entries=4)
def cached_claim(default: str, active: str, stamps: tuple) -> dict:
    """The fine-tune folders' summaries, read once per version of them."""
    from pathlib import Path

    return load_claim(Path(default), Path(active))


def claim_section() -> None:
    """The paper's claim, the miniature measurement on the fine-tune suite, and the
    LR-matched control, every number read from the committed fine-tune folders."""
    st.markdown("#### The paper's claim")
    st.markdown(PAPER_CLAIM)
    folders = [f for f in committed_suites() if f.kind == "fine-tune"]
    default, active = folders
    missing = absent_text(folders)
    if missing:
        st.info(missing, icon=":material/folder_off:")
    if not (default.present or active.present):
        st.warning("Without the fine-tune results there is nothing to test the claim "
                   "against here.")
        return
    try:
        tasks = cached_claim(str(default.path), str(active.path),
                             (stamp(default.path), stamp(active.path)))
    except (TraceError, OSError, ValueError) as exc:
        st.error(f"Could not read the fine-tune results: {exc}")
        return
    if not tasks:
        st.warning("The fine-tune folders hold no finished task yet.")
        return
    st.markdown("#### Measured here, in miniature")
    st.info("\n".join(f"- {line}" for line in claim_summary(tasks)),
            icon=":material/lightbulb:")
    for ct in tasks.values():
        cells = claim_cells(ct)
        st.markdown(task_sentence(ct, cells))
        st.dataframe(claim_grid(cells), hide_index=True, width="stretch",
                     key=f"claim_{ct.task}")
    d, a = (default.path.name, active.path.name)
    st.caption(f"Mean final validation loss over seeds ÷ AdamW's best, at multiples of "
               f"AdamW's best LR; ▲: ended above the loss the fine-tune started from. The "
               f"baselines and the default guard come from `{d}`, the active controller and "
               f"lr_matched (AdamW replaying its realised LR step by step) from `{a}`. "
               "Prodigy sets its own LR: one value per task.")
    st.markdown("#### The LR-matched control")
    st.markdown("\n".join(f"- {line}" for line in control_lines(tasks)))
    claim_goals_section()
    task = st.selectbox("Chart a task", list(tasks), key="claim_task")
    ct = tasks[task]
    st.plotly_chart(claim_figure(claim_cells(ct, grid_factors(ct)),
                                 start_loss(ct.default if ct.default is not None
                                            else ct.active)),
                    width="stretch", key="claim_chart")


@st.cache_data(show_spinner=False, max_entries=4)
def cached_claim_frame(root: str, stamps: tuple) -> pd.DataFrame:
    from lbw_sim.bench.claim import claim_frame

    return claim_frame(root)


def claim_goals_section() -> None:
    """The goals the active controller is held to, every committed spec side by side."""
    from lbw_sim.bench.claim import FOLDERS, claim_table

    root = results_dir()
    frame = cached_claim_frame(str(root), tuple(stamp(root / f) for f in FOLDERS
                                                if (root / f).is_dir()))
    st.markdown("#### The claim's goals, spec by spec")
    st.caption("Ratios of mean final validation loss over seeds 1–3. At best LR: the guard "
               "over the better of AdamW-constant and AdamW-cosine there (≤ 1). Rescue: over "
               "AdamW's best (≤ 1.10). Never above start: fine-tune cells that ended above "
               "the loss they started from. vs Schedule-Free / Prodigy: the worst ratio over "
               "[best, 30×] (≤ 1.03). Beats lr_matched: at how many of the LRs where the guard "
               "acted it ends below AdamW replaying its own LR (reported, not judged). "
               "`python -m lbw_sim claim` writes the same as benchmarks/results/claim.md.")
    for kind in dict.fromkeys(FOLDERS.values()):
        table = claim_table(frame, kind)
        if not table.empty:
            st.markdown(f"**{kind[0].upper() + kind[1:]}**")
            st.dataframe(table, hide_index=True, width="stretch", key=f"claim_goals_{kind}")


section = {SOURCES[0]: specs_section, SOURCES[1]: claim_section, SOURCES[2]: suite_section,
           SOURCES[3]: committed_section, SOURCES[4]: run_section, SOURCES[5]: folder_section,
           SOURCES[6]: upload_section}
result = section[source]()
if result is not None:
    show(result, shown_spec.get("ref", SpecRef(None)))
