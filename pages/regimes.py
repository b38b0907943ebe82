"""Regimes: each signal against its entry/exit thresholds, the controls, transitions, dwell."""

from __future__ import annotations

import streamlit as st

from lbw_sim.errors import TraceError
from lbw_sim.guard.analysis import held_not_fired, transitions_table
from lbw_sim.guard.engine import replay
from lbw_sim.viz import controls_figure, signal_figure
from pages.common import (
    glossary_link,
    no_trace_note,
    regime_time_table,
    spec_choice,
    through_app,
    trace_source,
)

through_app(__file__)

st.title("Regimes")
st.markdown("Why the guard is in the regime it is in: every signal with the thresholds that "
            "move it between regimes, the controls it applied, and each transition's cause. "
            + glossary_link())
left, right = st.columns([3, 1])
with left:
    label, trace = trace_source("regimes", allow_preview=True)
with right:
    spec = spec_choice("Guard spec", key="regimes_spec", default=1)
    st.caption(f"`{spec.name}` · hash `{spec.hash}`")

if trace is None:
    st.info(no_trace_note("see the guard's regimes"))
    st.stop()
try:
    out = replay(trace, spec, signals=True)
except TraceError as exc:
    st.error(f"Cannot replay this trace: {exc}")
    st.stop()
if out.attrs.get("missing"):
    st.info(f"The trace has no {', '.join(out.attrs['missing'])}: the signals that read it "
            "are left out below and their transitions never fire. (Training logs rarely record "
            "`update_ratio`; `GuardedOptimizer` traces do.)")

st.subheader("Signals against their thresholds")
held = held_not_fired(out, spec)
st.plotly_chart(signal_figure(out, spec, held=held), width="stretch", key="regimes_signals")
st.caption("Each panel is one signal. The shaded strip between the dashed **entry** line and "
           "the dotted **exit** line is the hysteresis band, in the colour of the regime it "
           "guards: crossing the entry line enters the regime, only falling below the exit line "
           "leaves it, so noise inside the band cannot make the guard chatter. Vertical bands "
           "are the regimes the guard was in. Grey marks along the top: a condition held but "
           "its `for N` (or `min_dwell`) did not complete, so the crossing did not fire.")
if len(held):
    with st.expander(f"Conditions that held but did not fire ({len(held)})"):
        st.dataframe(held, hide_index=True, width="stretch", key="regimes_held")
st.subheader("Control outputs")
st.plotly_chart(controls_figure(out, spec), width="stretch", key="regimes_controls")
st.caption("LR scale and momentum scale are multipliers on the optimizer's settings (1 = "
           "untouched), moved within the spec's bounds and slew limits; × marks a skipped update.")
left, right = st.columns([3, 1])
with left:
    st.markdown("**Transitions and their causes**")
    st.dataframe(transitions_table(out), hide_index=True, width="stretch", key="regimes_fired")
with right:
    st.markdown("**Time in each regime**")
    regime_time_table(out, key="regimes_time")
