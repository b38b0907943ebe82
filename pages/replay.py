"""Replay: run one guard spec, or two side by side, over a recorded log; export the result."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from lbw_sim.errors import TraceError
from lbw_sim.guard.analysis import compare_summary
from lbw_sim.guard.diagram import to_dot
from lbw_sim.guard.engine import replay_many
from lbw_sim.guard.scoring import labels_from_bytes, read_labels, score_replayed
from lbw_sim.guard.spec import GuardSpec
from lbw_sim.studio.uploads import to_csv_bytes
from lbw_sim.studio.watch import moment, transition_steps
from lbw_sim.traces.synthetic import EXAMPLES, example
from lbw_sim.traces.synthetic import labels as example_labels
from lbw_sim.viz import trace_figure
from pages.common import (
    V1_CHOICE,
    designer_spec,
    glossary_link,
    no_trace_note,
    spec_choice,
    through_app,
    trace_source,
)

through_app(__file__)
ss = st.session_state

st.title("Replay")
st.markdown("Run the guard offline over a recorded training log — yours (HF Trainer, "
            "Lightning, W&B, TensorBoard, nanoGPT text, CSV/JSONL/Parquet) or a built-in "
            "example — and compare two guard designs on the same trace.")
label, trace = trace_source("replay")
a_col, b_col = st.columns(2)
with a_col:
    spec_a = spec_choice("Spec A", key="replay_spec_a", default=0)
with b_col:
    compare = st.checkbox("Compare with a second spec (A/B)", value=True, key="replay_compare")
    # B starts on the designer's spec when it differs from the default, else on v1: two
    # identical specs compare nothing
    edited = designer_spec().hash != GuardSpec.default().hash
    spec_b = spec_choice("Spec B", key="replay_spec_b", default=1 if edited else V1_CHOICE) \
        if compare else None

if trace is None:
    st.info(no_trace_note("replay the guard over it"))
    st.stop()
if trace.attrs.get("shadow"):
    st.info(trace.attrs["shadow"])
specs = [spec_a] + ([spec_b] if spec_b is not None else [])
try:
    outs = replay_many(trace, specs)
except TraceError as exc:
    st.error(f"Cannot replay this trace: {exc}")
    st.stop()

names = ["A", "B"][: len(outs)]
steps_a = outs[0]["step"]
fired_a = transition_steps(outs[0])
if ss.get("replay_trace_key") != (label, len(trace)):   # a new trace: start on its first event
    ss["replay_trace_key"] = (label, len(trace))
    ss["replay_step"] = fired_a[0] if fired_a else int(steps_a.iloc[-1])
at_step = int(np.clip(ss.get("replay_step", int(steps_a.iloc[0])), int(steps_a.iloc[0]),
                      int(steps_a.iloc[-1])))
summary = compare_summary(outs, names)
regime_cols = [c for c in summary.columns if c.startswith("steps ")]
idle = [c for c in regime_cols if not summary[c].astype(float).any()]
summary = summary.drop(columns=idle)         # regimes neither spec entered: no column
st.dataframe(summary, hide_index=True, width="stretch", key="replay_summary", column_config={
    c: st.column_config.NumberColumn(c.removeprefix("steps "), help=f"{c} (in this regime)")
    for c in regime_cols if c not in idle})
st.caption("Per spec: transitions fired, skipped updates, the lowest LR scale applied and the "
           "steps spent in each regime either spec entered — the same trace, so every "
           "difference comes from the spec.")
figs = []
for col, name, spec, out in zip(st.columns(len(outs)), names, specs, outs):
    with col:
        st.markdown(f"**{name}: `{spec.name}`** · hash `{spec.hash}`")
        fig = trace_figure(out, spec, height=520)
        fig.add_vline(x=at_step, line_color="#000", line_width=1)
        # the same plot area on both sides, however many legend rows each has: the x axes
        # of A and B line up
        fig.update_layout(margin={"autoexpand": False, "b": 150, "l": 60, "r": 20, "t": 40})
        figs.append(fig)
        st.plotly_chart(fig, width="stretch", key=f"replay_chart_{name}")
st.caption("Loss (nats) and gradient norm (L2) of the log, with the regime each spec was in "
           "behind them; bottom: the LR scale it applied (× = skipped update).")


st.subheader("Watch the state machine")
st.caption("Scrub through the log: the diagram outlines the regime spec A is in at that step "
           "and draws the transition it last took thick, with its cause beside it (the black "
           "line on the charts above is the same step). " + glossary_link())


def jump(to: int | None) -> None:
    if to is not None:
        ss["replay_step"] = to


back, scrub, ahead = st.columns([1, 8, 1])
back.button("◀ event", key="replay_prev", help="the previous transition",
            on_click=jump, args=(max((s for s in fired_a if s < at_step), default=None),))
ahead.button("event ▶", key="replay_next", help="the next transition",
             on_click=jump, args=(min((s for s in fired_a if s > at_step), default=None),))
scrub.slider("Step", int(steps_a.iloc[0]), int(steps_a.iloc[-1]), key="replay_step",
             label_visibility="collapsed")
now = moment(outs[0], at_step)
diagram, words = st.columns([3, 2])
with diagram:
    st.graphviz_chart(to_dot(spec_a, active=now.regime, taken=now.taken), width="stretch")
with words:
    st.markdown(f"**A: `{spec_a.name}`**")
    st.markdown(now.sentence())
    if len(outs) > 1:
        other = moment(outs[1], at_step)
        st.markdown(f"**B: `{spec_b.name}`**")
        st.markdown(other.sentence())
    st.caption(f"{len(fired_a)} transitions in spec A's replay; ◀ event and event ▶ jump "
               "between them.")


def annotated_csv() -> bytes:
    """Spec A's annotated trace; B's guard columns follow with a `b_` prefix."""
    out = outs[0]
    if len(outs) > 1:
        guard_cols = [c for c in outs[1].columns if c not in trace.columns]
        out = pd.concat([out, outs[1][guard_cols].add_prefix("b_")], axis=1)
    return to_csv_bytes(out)


def chart_html() -> str:
    """One self-contained HTML page (plotly.js inlined once) with every chart."""
    divs = "\n".join(f.to_html(full_html=False, include_plotlyjs=i == 0)
                     for i, f in enumerate(figs))
    return f"<!doctype html><html><head><meta charset='utf-8'><title>LBW replay</title>" \
           f"</head><body>{divs}</body></html>"


st.subheader("Detection quality against labelled incidents")
st.caption("An *alarm* is each step where a spec leaves its initial regime. Precision: alarms "
           "that fall in an incident (or up to the horizon before it); recall: incidents with "
           "an alarm; lead time: incident start minus its first alarm (positive = early).")
lab_col, hor_col = st.columns([3, 1])
with lab_col:
    upload = st.file_uploader("Incident labels (CSV: start,end[,kind])", key="replay_labels")
with hor_col:
    horizon = int(st.number_input("Horizon (steps)", 0, 100_000, 20, key="replay_horizon"))
incidents = None
try:
    if upload is not None:
        incidents = labels_from_bytes(upload.name, upload.getvalue())
    elif label in EXAMPLES:
        incidents = read_labels(example_labels(example(label)[1]))
        st.caption(f"Using the incidents built into the example *{label}*.")
except TraceError as exc:
    st.error(str(exc))
if incidents is not None and len(incidents.start):
    scores = pd.DataFrame([{"spec": f"{n}: {s.name}",
                            **score_replayed(o, incidents, horizon, s.initial)}
                           for n, s, o in zip(names, specs, outs)])
    st.dataframe(scores, hide_index=True, width="stretch", key="replay_scores")
elif incidents is not None:
    st.info("The label table is empty.")
else:
    st.info("Upload a label table (or pick a built-in example, whose incidents are known) to "
            "score the specs.")

left, right = st.columns(2)
made = (label, int(pd.util.hash_pandas_object(trace, index=False).sum()),
        tuple(s.hash for s in specs))                 # same trace and specs, same bytes
if st.session_state.get("replay_files", (None,))[0] != made:
    st.session_state["replay_files"] = (made, annotated_csv(), chart_html())
_, csv_bytes, html_text = st.session_state["replay_files"]
# Bytes made when the inputs change, not deferred callables, and no rerun on click: a rerun gives a
# deferred button a new file id, so a second click on the old one found nothing.
left.download_button("Download annotated trace (CSV)", data=csv_bytes,
                     file_name="annotated_trace.csv", mime="text/csv", key="replay_csv",
                     on_click="ignore")
right.download_button("Download chart (HTML)", data=html_text,
                      file_name="replay_chart.html", mime="text/html", key="replay_html",
                      on_click="ignore")
