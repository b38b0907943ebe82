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
from lbw_sim.viz.tune import (
    heatmap_figure,
    label_figure,
    outcome_groups,
    parallel_figure,
    tradeoff_figure,
)
from pages.common import (
    KEPT,
    adopt_spec,
    designer_origin,
    designer_spec,
    glossary_link,
    keep,
    kept,
    no_trace_note,
    through_app,
    trace_source,
)

through_app(__file__)
ss = st.session_state

st.title("Tune")
st.markdown("Sweep settings of the designer's spec over a log — every value at once, on the "
            "batched engine — and pick the trade-off you want: **click a point**, or tick a "
            "row of the table of swept specs, to make it the designer's spec. Mark incidents "
            "on the loss chart (box-select a step range) to score every swept spec by "
            "recall, lead time and false alarms. " + glossary_link())
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
kind = keep("tune_kind", kind_col.text_input("Kind of the new incident", key="tune_kind",
                                             value=kept("tune_kind", "incident")))
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
horizon = int(keep("tune_horizon", h_col.number_input(
    "Horizon (steps before an incident that count as early)", 0, 100_000,
    kept("tune_horizon", 20), key="tune_horizon")))
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
first = [p for p in ("thresholds.watch_z",) if p in settings][:1] or list(settings)[:1]
if [p for p in st.session_state.get(KEPT + "tune_params", []) if p not in settings]:
    st.session_state.pop(KEPT + "tune_params")      # a setting the spec in use lacks
params = keep("tune_params", st.multiselect(
    "Settings to sweep (one or two for a chart and a heat map; three or more add parallel "
    "coordinates)", list(settings), default=kept("tune_params", first), key="tune_params",
    format_func=T.setting_label))
if not params:
    st.info("Pick at least one setting to sweep.")
    st.stop()
grid, asked, n_default = {}, [], {1: 50, 2: 12}.get(len(params), 5)
for path in params:
    lo0, hi0 = T.default_range(base, path)
    whole = T.is_whole(base, path)
    c1, c2, c3, c4 = st.columns([3, 2, 2, 1])
    c1.markdown(f"{T.setting_label(path).rsplit(' (', 1)[0]} (`{path}`) — now "
                f"**{settings[path]:g}**")
    lo_key, hi_key, n_key = (f"tune_lo_{path}", f"tune_hi_{path}",
                             f"tune_n_{path}_{len(params)}")
    lo = keep(lo_key, c2.number_input("from", value=kept(lo_key, float(lo0)), key=lo_key,
                                      format="%g"))
    hi = keep(hi_key, c3.number_input("to", value=kept(hi_key, float(hi0)), key=hi_key,
                                      format="%g"))
    n = int(keep(n_key, c4.number_input("values", 1, 500, kept(n_key, n_default), key=n_key)))
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
st.caption(f"{len(result) + len(skipped):,} points swept"
           + (f"; {len(skipped)} refused by the validator and left out (first: "
              f"{skipped[0]['error']})." if skipped else "."))
if not len(result):
    st.warning("Every point of this grid was refused; widen or move the range.")
    st.stop()
labelled = incidents is not None
objectives = list(T.AXES_LABELLED if labelled else T.AXES_COST)
distinct = len(outcome_groups(result, objectives))
if distinct < len(result):
    st.caption(f"{len(result)} specs, {distinct} distinct outcome(s) on this trace: specs with "
               "the same scores are drawn as one point, larger the more specs share it (hover "
               "for how many and their settings; the table below lists each).")
current = T.current_row(result, base, params)
chart = st.plotly_chart(tradeoff_figure(result, params, labelled, current), key="tune_tradeoff",
                        on_select="rerun", selection_mode="points", width="stretch")
st.caption(("Each point is one spec. With incidents: recall against false alarms per 1,000 "
            "steps, coloured by lead time; " if labelled else
            "Without incidents only the cost is known: share of steps out of nominal against "
            "the mean LR scale, coloured by skipped steps (where they vary); ")
           + "both axes are fitted to the values swept. Ringed points joined by the red line "
             "are the Pareto front (no other spec is at least as good on every objective); × "
             "is the spec in use. Click a point, or tick a row of the table below, to use it.")
if len(params) == 2:
    metrics = [c for c in ("recall", "false_alarms_per_1k", "lead_time", "precision",
                           "out_share", "skipped", "mean_lr_scale") if c in result]
    if ss.get(KEPT + "tune_heat_metric") not in metrics:
        ss.pop(KEPT + "tune_heat_metric", None)
    metric = keep("tune_heat_metric", st.selectbox(
        "Heat map of", metrics, index=metrics.index(kept("tune_heat_metric", metrics[0])),
        key="tune_heat_metric"))
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


cols = [*params, *[c for c in (*T.AXES_LABELLED, "precision", *T.AXES_COST) if c in result],
        "pareto"]
#: the table's column titles, short enough that every column fits 1400 px (hover: in full)
SHORT = {"false_alarms_per_1k": "false alarms/1k", "lead_time": "lead (steps)",
         "mean_lr_scale": "mean LR scale", "out_share": "out of nominal",
         "skipped": "skipped"}
st.markdown("**Swept specs** — sort by any column (click its header); tick a row to make "
            "that spec the designer's.")
picked_rows = st.dataframe(
    result[cols], hide_index=True, width="stretch", key="tune_table", height=280,
    on_select="rerun", selection_mode="single-row",
    column_config={c: st.column_config.NumberColumn(SHORT.get(c, c.split(".")[-1]),
                                                    format="%.4g", help=T.TITLES.get(c, c))
                   for c in cols if c != "pareto"} | {
        "pareto": st.column_config.CheckboxColumn("Pareto")})


def table_row() -> int | None:
    rows = (selection_of(picked_rows) or {}).get("rows") or []
    return int(rows[0]) if rows and 0 <= int(rows[0]) < len(result) else None


# A click on the chart or a tick in the table adopts that point; only a selection that
# changed since the last run counts, so an old selection in the other one does not win.
seen = ss.get("tune_seen", (None, None))
now = (clicked_row(), table_row())
ss["tune_seen"] = now
row = now[1] if now[1] is not None and now[1] != seen[1] else (
    now[0] if now[0] is not None and now[0] != seen[0] else None)
if row is not None:
    point = T.point_of(result, row, params)
    if ss.get("tune_adopted") != (asked, point):
        origin = designer_origin()
        picked = T.pick(base, point, origin=origin)
        ss["tune_adopted"] = (asked, point)
        ss["tune_diff"] = T.diff_table(base, picked)
        adopt_spec(picked)
        st.rerun()
if ss.get("tune_adopted") and ss["tune_adopted"][0] == asked:
    st.success(f"The designer's spec is now `{base.name}` (hash `{base.hash}`), the picked "
               "point. Regimes, Replay and the designer use it; the designer's diff and its "
               "export show the change.")
    st.dataframe(ss["tune_diff"], hide_index=True, width="stretch", key="tune_diff_table")
