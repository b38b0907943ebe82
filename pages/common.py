"""Widgets and session state shared by the studio pages (not a page: app.py does not route here).

Per-browser-session state lives in `st.session_state`: the designer's spec (`spec`), the
spec it started from (`designer_base`), the designer's preview example and the log the
user uploaded on any page (`user_log`, kept in memory for the session, never on disk). Nothing of a
user's is cached in `st.cache_resource`; `st.cache_data` holds only pure results of the
project's own examples.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import streamlit as st

from lbw_sim.errors import SpecError, TraceError
from lbw_sim.guard.analysis import time_in_regime
from lbw_sim.guard.spec import GuardSpec
from lbw_sim.studio.uploads import MAX_UPLOAD_BYTES, UploadResult, read_upload
from lbw_sim.traces.synthetic import EXAMPLES, example

MAP_TARGETS = ("step", "loss", "grad_norm", "lr", "val_loss")
ROUTED, WANTED = "_lbw_routed", "_lbw_wanted_page"
USER_LOG = "user_log"            # this session's uploaded log (a UserLog)
UPLOAD = "Upload a log"
YOUR_LOG = "Your log"            # the designer preview's choice of the uploaded log
BAD_UPLOAD = "_lbw_bad_upload"   # (file id, error) of the last upload that did not read


def through_app(page_file: str) -> None:
    """Hand a page opened the legacy way over to app.py, which then opens it.

    Until app.py has run once in the server process, Streamlit serves a page URL straight
    from `pages/` (raw file names in the sidebar, no st.navigation menu). app.py marks every
    session it routes; an unmarked session is sent to app.py with the page it asked for.
    """
    if not st.session_state.get(ROUTED):
        st.session_state[WANTED] = Path(page_file).stem
        st.switch_page("app.py")


def verdict_table(verdict: pd.DataFrame, key: str) -> None:
    """Goals as a table that fits the page (goal, measured, target, met), then each goal's
    detail in full below it, so no text is cut off at the table's edge."""
    shown = verdict.drop(columns=["detail"], errors="ignore")
    st.dataframe(shown, hide_index=True, width="stretch", key=key, column_config={
        "goal": st.column_config.TextColumn("goal", width="large"),
        "measured": st.column_config.NumberColumn("measured", format="%.4g", width="small")
        if "measured" in shown and pd.api.types.is_numeric_dtype(shown["measured"])
        else st.column_config.TextColumn("measured", width="small")})
    details = [(g, d) for g, d in zip(verdict["goal"], verdict.get("detail", [])) if d]
    if details:
        st.markdown("\n".join(f"- *{g}*: {d}" for g, d in details))


def glossary_link() -> str:
    """A markdown pointer to the Glossary page (in the sidebar of every page)."""
    return ("Words such as *regime*, *transition*, *robust z*, *hysteresis* and *dwell* are "
            "explained on the **Glossary** page (sidebar).")


@st.cache_data(show_spinner=False, max_entries=8)
def load_example(label: str):
    """A built-in example trace (pure, so shared caching is safe)."""
    return example(label)[0]


def designer_spec() -> GuardSpec:
    """The designer's last valid spec for this browser session (the default until edited)."""
    return st.session_state.get("spec") or GuardSpec.default()


KEPT = "_kept_"          # prefix of the copies that outlive a page change


def kept(key: str, default):
    """The value to draw a widget with so that it survives leaving the page: Streamlit drops
    a widget's state when a run does not draw it, so its last value is copied under
    KEPT + key (`keep`) and handed back here as the widget's `value`/`default`. (Keyed
    widgets keep their identity when that value changes.)"""
    return st.session_state.get(KEPT + key, default)


def keep(key: str, value):
    """Remember a widget's value across page changes (see `kept`); returns the value."""
    st.session_state[KEPT + key] = value
    return value


def designer_origin() -> GuardSpec:
    """The spec this session's design started from (the default, an import or a reset):
    what the designer's diff and an export's description are against. A point adopted on
    Tune does not move it, so the adopted change stays in the diff."""
    ss = st.session_state
    return ss.get("designer_origin") or ss.get("designer_base") or designer_spec()


def adopt_spec(spec: GuardSpec) -> None:
    """Make `spec` the designer's (its tables restart from it); the origin stays."""
    st.session_state.update(designer_origin=designer_origin(), designer_base=spec, spec=spec,
                            import_error=None,
                            designer_ver=st.session_state.get("designer_ver", 0) + 1)
    st.session_state.pop("designer_name", None)


#: spec_choice's options, in order: the shipped default, the designer's, the v1 ratchet.
SPEC_CHOICES = ("Default spec", "Designer's spec", "v1 ratchet (lbw-v1)",
                "Active controller, a candidate (lbw-active)")
V1_CHOICE = SPEC_CHOICES.index("v1 ratchet (lbw-v1)")
#: the shipped spec behind each choice that names one
NAMED_CHOICES = {SPEC_CHOICES[2]: "lbw-v1", SPEC_CHOICES[3]: "lbw-active"}


def spec_choice(label: str, key: str, default: int = 0) -> GuardSpec:
    """Pick the shipped default, this session's designer spec, the v1 ratchet (the spec
    the committed figures and the edge-of-stability demos were measured with) or the
    candidate active controller."""
    choice = st.selectbox(label, SPEC_CHOICES, index=default, key=key)
    if choice == SPEC_CHOICES[0]:
        return GuardSpec.default()
    if choice == SPEC_CHOICES[1]:
        return designer_spec()
    return GuardSpec.named(NAMED_CHOICES[choice])


@st.fragment(run_every=0.5)
def job_progress(job, key: str) -> None:
    """Progress of this session's background grid run (a `bench.jobs.GridJob`) and its Stop
    button, redrawn alone every half second; a full rerun once the run ends."""
    snap = job.snapshot()
    if not snap["running"]:
        st.rerun()
    done, total = snap["done"], snap["total"]
    shown = f"{done:.0f}" if float(done).is_integer() else f"{done:.1f}"
    st.progress(min(1.0, done / max(total, 1)),
                text=f"{shown} / {total} cells · {snap['last'] or 'starting …'}")
    if st.button("Stop", icon=":material/stop:", key=key):
        job.stop()


def run_job(prefix: str, make_job: Callable[[], object], disabled: bool = False):
    """The miniature grid's Run button, its background job in session state
    (`<prefix>_job`) and, while it runs, its progress and Stop (`<prefix>_run`,
    `<prefix>_stop`). Returns the finished job, or None while there is none or it runs. A
    SpecError from `make_job` is shown and starts nothing."""
    job = st.session_state.get(f"{prefix}_job")
    busy = job is not None and job.snapshot()["running"]
    if st.button("Run the miniature grid", icon=":material/play_arrow:", type="primary",
                 key=f"{prefix}_run", disabled=busy or disabled):
        try:
            job = make_job()
        except SpecError as exc:
            st.error(f"Cannot run this grid: {exc}")
            return None
        st.session_state[f"{prefix}_job"] = job
        job.start()
        busy = True
    if busy:
        job_progress(job, key=f"{prefix}_stop")
    return None if job is None or busy else job


def uploaded_summary(command: str, key: str,
                     read: Callable[[bytes, str], pd.DataFrame]) -> pd.DataFrame | None:
    """A summary.csv the visitor uploads, checked by `read`; None when none is uploaded or
    it cannot be read (said on the page). A summary records no guard spec: said too."""
    up = st.file_uploader(f"A summary.csv written by `python -m lbw_sim {command}`",
                          type=["csv"], key=key)
    if up is None:
        return None
    try:
        summary = read(up.getvalue(), up.name)
    except TraceError as exc:
        st.error(f"Could not read the summary: {exc}")
        return None
    st.caption(f"Read **{up.name}**: {len(summary)} cells (no loss curves in a summary). "
               "A summary.csv does not record its guard spec.")
    return summary


def regime_time_table(out, key: str | None = None) -> None:
    """The table of time in each regime of an annotated trace, shares as bars."""
    st.dataframe(time_in_regime(out), hide_index=True, width="stretch", key=key,
                 column_config={  # narrow columns: the table fits a side column unclipped
                     "regime": st.column_config.TextColumn("regime", width="small"),
                     "steps": st.column_config.NumberColumn("steps", width="small"),
                     "share": st.column_config.ProgressColumn(
                         "share", min_value=0.0, max_value=1.0, format="percent",
                         width="small")})


@dataclass
class UserLog:
    """The log this browser session uploaded: its bytes (to re-read another run or a new
    mapping), the trace read from them, and which run of a multi-run file it is."""

    name: str
    data: bytes
    file_id: str
    result: UploadResult
    mapping: dict[str, str] = field(default_factory=dict)
    run: str | None = None

    @property
    def trace(self) -> pd.DataFrame | None:
        return self.result.trace

    @property
    def runs(self) -> list[str]:
        return list(self.trace.attrs.get("runs") or []) if self.trace is not None else []


def user_log() -> UserLog | None:
    """This session's uploaded log once it reads as a trace (on any page), else None."""
    log = st.session_state.get(USER_LOG)
    return log if log is not None and log.trace is not None else None


def _read(log: UserLog, show: bool = True) -> UserLog | str | None:
    """(Re-)read a log's bytes with its mapping and run. An error is shown and None returned,
    or (`show=False`) returned as text."""
    try:
        log.result = read_upload(log.name, log.data, log.mapping, run=log.run)
    except TraceError as exc:
        if not show:
            return str(exc)
        st.error(f"Could not read the upload: {exc}")
        return None
    return log


def upload_widget(key: str) -> UploadResult | None:
    """File upload → canonical trace, kept for the browser session (`user_log`).

    A log read on any page stays in `st.session_state` (never on disk; the size limit is
    `MAX_UPLOAD_BYTES`) until another one replaces it, so every page offers it. No
    extension filter: TensorBoard event files end in a host name; content decides. A file
    whose columns are unclear gets a mapping form; a multi-run file (W&B export) a run
    picker. Errors are one line with `st.error`; the page carries on without a trace.
    """
    up = st.file_uploader(f"Upload a training log (≤ {MAX_UPLOAD_BYTES // 1024**2} MB: CSV, "
                          "JSONL, Parquet, trainer_state.json, nanoGPT text …)",
                          key=key)
    log = st.session_state.get(USER_LOG)
    bad = st.session_state.get(BAD_UPLOAD)
    if up is not None and (log is None or log.file_id != up.file_id):
        if bad is None or bad[0] != up.file_id:
            fresh = _read(UserLog(up.name, up.getvalue(), up.file_id,
                                  UploadResult(up.name, None)), show=False)
            if isinstance(fresh, str):
                st.session_state[BAD_UPLOAD] = bad = (up.file_id, fresh)
            else:
                st.session_state[USER_LOG] = fresh
                st.session_state.pop(BAD_UPLOAD, None)
                st.rerun()    # redraw what was drawn before the upload ("Your log: …")
        kept = f" Still using your log **{log.name}**." if log and log.trace is not None else ""
        st.error(f"Could not read the upload: {bad[1]}{kept}")
        if not kept:
            return None
    if log is None:
        return None
    if log.result.needs_mapping:
        _mapping_form(key, log)
    if log.trace is None:
        return None
    runs = log.runs
    if len(runs) > 1:
        run = st.selectbox(f"{len(runs)} runs in this file — which one?", runs,
                           index=runs.index(log.trace.attrs.get("run", runs[0])),
                           key=f"{key}_run")
        if run != log.trace.attrs.get("run"):
            log.run = run
            if _read(log) is None or log.trace is None:
                return None
    result = log.result
    fmt = result.format or "?"
    which = f", run *{log.trace.attrs['run']}*" if len(runs) > 1 else ""
    st.caption(f"Your log: **{result.name}**, read as `{fmt}`{which}: {len(result.trace):,} "
               f"rows, columns {', '.join(map(str, result.trace.columns[:8]))}. It stays "
               "loaded for this browser session on every page (never written to disk).")
    return result


def _mapping_form(key: str, log: UserLog) -> None:
    result = log.result
    st.warning(f"{result.note or 'Which column is which?'} — pick the columns below.")
    guess = {t: next((c for c in result.columns if t in c.lower()), "") for t in MAP_TARGETS}
    with st.form(f"{key}_map_form"):
        cols = st.columns(len(MAP_TARGETS))
        chosen = {}
        for col, target in zip(cols, MAP_TARGETS):
            options = ["", *result.columns]
            chosen[target] = col.selectbox(target, options, key=f"{key}_map_{target}",
                                           index=options.index(guess[target]))
        if st.form_submit_button("Apply column mapping"):
            log.mapping = {k: v for k, v in chosen.items() if v}
            _read(log)
            st.rerun()


def no_trace_note(what: str) -> str:
    """What to do when a page has no trace yet (a pending column mapping says so)."""
    log = st.session_state.get(USER_LOG)
    if log is not None and log.trace is None and log.result.needs_mapping:
        return f"Map the columns of **{log.name}** above (Apply column mapping) to {what}."
    return f"Pick an example or upload a log to {what}."


def trace_source(key: str, allow_preview: bool = False):
    """Radio: a built-in example, your log, or the designer's preview trace → (label, trace).

    Once a log is loaded (on any page) the radio starts on it.
    """
    options = ["Built-in example", UPLOAD]
    if allow_preview:
        options.append("Designer's preview")
    loaded = user_log()
    # The options' labels never change: a radio whose labels change between runs (the file
    # name in "Your log: …") loses its selection in the browser, showing none selected.
    source = st.radio("Trace", options, horizontal=True, key=f"{key}_source",
                      index=1 if loaded else 0)
    if source == "Built-in example":
        label = st.selectbox("Example", list(EXAMPLES), key=f"{key}_example")
        return label, load_example(label)
    if source == UPLOAD:
        result = upload_widget(f"{key}_upload")
        return (result.name, result.trace) if result else (None, None)
    if loaded is not None:
        st.caption(f"Your log: {loaded.name} stays loaded (choose *{UPLOAD}* to use it).")
    return preview_trace()


def preview_trace() -> tuple[str, pd.DataFrame]:
    """The trace the designer's preview shows: your log or an example."""
    label = st.session_state.get("preview_choice") or st.session_state.get(
        "preview_example", next(iter(EXAMPLES)))
    loaded = user_log()
    if label == YOUR_LOG and loaded is not None:
        st.caption(f"The designer's preview trace: your log *{loaded.name}*.")
        return loaded.name, loaded.trace
    label = label if label in EXAMPLES else next(iter(EXAMPLES))
    st.caption(f"The designer's preview trace: *{label}*.")
    return label, load_example(label)
