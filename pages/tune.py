"""Tune: sweep one or more settings of the designer's spec over a log, see the trade-off,
click a point to make it the designer's spec; mark incidents on the loss chart to score by.

The sweep is `lbw_sim.guard.sweep.sweep` (the batched engine) through
`lbw_sim.studio.tune`; labels are `lbw_sim.studio.labels`. Everything of the user's stays
in `st.session_state` (the sweep is memoised there, never in a shared cache).
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from lbw_sim.errors import SpecError, TraceError
from lbw_sim.guard.scoring import score
from lbw_sim.studio import labels as L
from lbw_sim.studio import tune as T
from lbw_sim.traces.synthetic import EXAMPLES, example
from lbw_sim.traces.synthetic import labels as example_labels
from lbw_sim.viz.tune import heatmap_figure, label_figure, parallel_figure, tradeoff_figure
from pages.common import adopt_spec, designer_spec, no_trace_note, through_app, trace_source

through_app(__file__)
ss = st.session_state

st.title("Tune")
st.markdown("Sweep settings of the designer's spec over a log — every value at once, on the "
            "batched engine — and pick the trade-off you want: **click a point** to make it "
            "the designer's spec. Mark incidents on the loss chart (box-select a step range) "
            "to score every swept spec by recall, lead time and false alarms.")
label, trace = trace_source("tune")
if trace is None:
    st.info(no_trace_note("tune the guard on it"))
    st.stop()
base = designer_spec()
# Examples come out of st.cache_data as fresh copies: key by what the trace is, not id().
trace_key = f"{label}|{len(trace)}|{trace.attrs.get('run', '')}"
st.caption(f"Sweeping around the designer's spec `{base.name}` · hash `{base.hash}`.")


# --- labels -----------------------------------------------------------------------------------

def selection_of(event) -> dict:
    """The `selection` of a plotly chart event (a PlotlyState, or a plain dict in tests)."""
    if not event:
        return {}
    try:
        return dict(event["selection"] or {})
    except (KeyError, TypeError):
        return dict(getattr(event, "selection", None) or {})


def label_table() -> pd.DataFrame:
    """This trace's incident table (the example's own incidents to start with)."""
    store = ss.setdefault("tune_labels", {})
    if trace_key not in store:
        start = L.empty()
        if label in EXAMPLES:
            start = L.clean(example_labels(example(label)[1]))
        store[trace_key] = (start, 0)
    return store[trace_key][0]


def set_label_table(table: pd.DataFrame) -> None:
    _, ver = ss["tune_labels"][trace_key]
    ss["tune_labels"][trace_key] = (table, ver + 1)   # a new editor key: the editor restarts


st.subheader("Incidents")
table = label_table()
sel = st.plotly_chart(label_figure(trace, table), key="tune_loss",
                      on_select="rerun", selection_mode="box", width="stretch")
span = L.from_box(selection_of(sel), trace["step"].to_numpy())
add_col, kind_col, _ = st.columns([2, 2, 3])
kind = kind_col.text_input("Kind of the new incident", value="incident", key="tune_kind")
if span is None:
    add_col.caption("Drag across the loss chart (box select) to mark a step range.")
elif add_col.button(f"Add steps {span[0]:,}–{span[1]:,} as an incident", key="tune_add",
                    type="primary"):
    set_label_table(L.add(table, *span, kind.strip()))
    st.rerun()
ver = ss["tune_labels"][trace_key][1]
edited = st.data_editor(table, key=f"tune_labels_{trace_key}_{ver}", num_rows="dynamic",
                        hide_index=True, width="stretch",
                        column_config={"start": st.column_config.NumberColumn("start", step=1),
                                       "end": st.column_config.NumberColumn("end", step=1),
                                       "kind": st.column_config.TextColumn("kind")})
up = st.file_uploader("…or load a label table (CSV: start,end[,kind])", key="tune_label_upload")
if up is not None and ss.get("tune_label_file") != up.file_id:
    from lbw_sim.guard.scoring import labels_from_bytes

    try:
        loaded = labels_from_bytes(up.name, up.getvalue()).table
        ss["tune_label_file"] = up.file_id
        set_label_table(L.clean(loaded))
        st.rerun()
    except TraceError as exc:
        st.error(str(exc))
incidents = None
try:
    incidents = L.to_labels(edited) if len(L.clean(edited)) else None
except TraceError as exc:
    st.error(f"The label table is not valid: {exc}")
h_col, dl_col = st.columns([1, 3])
horizon = int(h_col.number_input("Horizon (steps before an incident that count as early)",
                                 0, 100_000, 20, key="tune_horizon"))
if incidents is not None:
    dl_col.download_button("Download labels (CSV: start,end,kind)", data=L.to_csv(edited),
                           file_name=f"{label}_labels.csv", mime="text/csv",
                           key="tune_labels_csv", on_click="ignore")
    now = score(trace, base, incidents, horizon)
    shown = {"incidents": ("Incidents", "{:.0f}"), "recall": ("Recall", "{:.0%}"),
             "precision": ("Precision", "{:.0%}"), "lead_time": ("Lead time (steps)", "{:.1f}"),
             "false_alarms_per_1k": ("False alarms / 1k steps", "{:.2f}")}
    for col, (k, (name, fmt)) in zip(st.columns(len(shown)), shown.items()):
        col.metric(name, "–" if pd.isna(now[k]) else fmt.format(now[k]))
    st.caption(f"`{base.name}`, the designer's spec, against these incidents. Recall: "
               "incidents with an alarm (a step leaving the initial regime) within the horizon "
               "before them or inside; lead time: how many steps early the first alarm was.")
else:
    st.caption("No incidents marked: the sweep below reports cost only (time out of nominal, "
               "skipped steps, LR given up).")


# --- sweep ------------------------------------------------------------------------------------

st.subheader("Sweep")
settings = T.numeric_settings(base)
params = st.multiselect("Settings to sweep (one or two for a chart and a heat map; three or "
                        "more add parallel coordinates)", list(settings),
                        default=[p for p in ("thresholds.watch_z",) if p in settings][:1]
                        or list(settings)[:1],
                        key="tune_params")
if not params:
    st.info("Pick at least one setting to sweep.")
    st.stop()
grid, asked, n_default = {}, [], {1: 50, 2: 12}.get(len(params), 5)
for path in params:
    lo0, hi0 = T.default_range(base, path)
    whole = T.is_whole(base, path)
    c1, c2, c3, c4 = st.columns([3, 2, 2, 1])
    c1.markdown(f"`{path}` — now **{settings[path]:g}**")
    lo = c2.number_input("from", value=float(lo0), key=f"tune_lo_{path}", format="%g")
    hi = c3.number_input("to", value=float(hi0), key=f"tune_hi_{path}", format="%g")
    n = int(c4.number_input("values", 1, 500, n_default, key=f"tune_n_{path}_{len(params)}"))
    asked.append((path, lo, hi, n))
    try:
        grid[path] = T.with_current(T.grid_values(lo, hi, n, whole), settings[path])
    except SpecError as exc:
        st.error(f"{path}: {exc.problem}")
        st.stop()

memo_key = (trace_key, tuple((k, str(v)) for k, v in sorted(base.flat().items())
                             if k not in params and k != "name"),
            tuple((k, tuple(v)) for k, v in grid.items()),
            None if incidents is None else incidents.table.to_json(), horizon)
if ss.get("tune_memo", (None,))[0] != memo_key:
    try:
        with st.spinner("Sweeping…"):
            ss["tune_memo"] = (memo_key, T.tune(trace, base, grid, incidents, horizon))
    except (SpecError, TraceError) as exc:
        st.error(f"Cannot sweep: {exc}")
        st.stop()
result = ss["tune_memo"][1]
skipped = result.attrs.get("skipped", [])
if skipped:
    st.caption(f"{len(skipped)} of {len(result) + len(skipped)} points were refused by the "
               f"validator and left out (first: {skipped[0]['error']}).")
if not len(result):
    st.warning("Every point of this grid was refused; widen or move the range.")
    st.stop()
labelled = incidents is not None
objectives = list(T.AXES_LABELLED if labelled else T.AXES_COST)
distinct = len(result[objectives].round(9).drop_duplicates())
if distinct < len(result):
    st.caption(f"{len(result)} specs, {distinct} distinct outcome(s) on this trace: points with "
               "the same scores are drawn on top of each other (hover for the settings).")
current = T.current_row(result, base, params)
chart = st.plotly_chart(tradeoff_figure(result, params, labelled, current), key="tune_tradeoff",
                        on_select="rerun", selection_mode="points", width="stretch")
st.caption(("Each point is one spec. With incidents: recall against false alarms per 1,000 "
            "steps, coloured by lead time; " if labelled else
            "Without incidents only the cost is known: share of steps out of nominal against "
            "the mean LR scale, coloured by skipped steps; ")
           + "ringed points joined by the red line are the Pareto front (no other spec is at "
             "least as good on every objective); × is the spec in use. Click a point to use it.")
if len(params) == 2:
    metric = st.selectbox("Heat map of", [c for c in ("recall", "false_alarms_per_1k",
                                                      "lead_time", "precision", "out_share",
                                                      "skipped", "mean_lr_scale")
                                          if c in result], key="tune_heat_metric")
    st.plotly_chart(heatmap_figure(result, params[0], params[1], metric), key="tune_heat",
                    width="stretch")
if len(params) >= 3:
    st.plotly_chart(parallel_figure(result, params, labelled), key="tune_parallel",
                    width="stretch")
    st.caption("One line per spec through its settings and its objectives; drag along an "
               "axis to filter.")


# --- pick -------------------------------------------------------------------------------------

def clicked_row() -> int | None:
    points = selection_of(chart).get("points") or []
    for p in points:
        row = p.get("customdata")
        row = row[0] if isinstance(row, list) else row
        if row is None and p.get("curve_number") == 0:
            row = p.get("point_index")
        if row is not None and 0 <= int(row) < len(result):
            return int(row)
    return None


row = clicked_row()
if row is not None:
    point = T.point_of(result, row, params)
    if ss.get("tune_adopted") != (asked, point):
        before = base
        picked = T.pick(base, point)
        ss["tune_adopted"] = (asked, point)
        ss["tune_diff"] = T.diff_table(before, picked)
        adopt_spec(picked)
        st.rerun()
if ss.get("tune_adopted") and ss["tune_adopted"][0] == asked:
    st.success(f"The designer's spec is now `{base.name}` (hash `{base.hash}`), the clicked "
               "point. Regimes, Replay and the designer use it.")
    st.dataframe(ss["tune_diff"], hide_index=True, width="stretch", key="tune_diff_table")
cols = [*params, *[c for c in (*T.AXES_LABELLED, "precision", *T.AXES_COST) if c in result],
        "pareto"]
with st.expander("All swept specs"):
    st.dataframe(result[cols], hide_index=True, width="stretch", key="tune_table")
