"""Home: what the guard is, the default spec, a demo past the edge of stability (under the
v1 ratchet, whose update cap holds it) and a replay of the built-in example trace."""

import streamlit as st

from lbw_sim.guard.analysis import transitions_table
from lbw_sim.guard.diagram import to_dot
from lbw_sim.guard.engine import replay
from lbw_sim.guard.spec import GuardSpec
from lbw_sim.traces.synthetic import demo_trace
from lbw_sim.viz import demo_figure, trace_figure
from pages.common import glossary_link, regime_time_table, through_app

through_app(__file__)


def loss_text(value: float) -> str:
    """A loss as the chart can show it: below 1e-12 (the chart's floor) it reads as such."""
    return "below 1e-12 (converged)" if 0 <= value < 1e-12 else f"{value:.3g}"


@st.cache_data(show_spinner=False)
def example_replay():
    trace, incidents = demo_trace()
    return replay(trace, GuardSpec.default()), incidents


st.title("LBW Studio")
st.markdown(
    "A **Learn-by-Wire guard** sits above an optimizer such as AdamW. Each step it reads "
    "training telemetry (loss, gradient norm, non-finite values, the update/weight ratio), "
    "decides which **regime** training is in, and applies **bounded control** — an LR scale "
    "within hard limits and a slew rate, an update cap, skipped updates, momentum damping, "
    "rollback — with **hysteresis**, so it does not chatter. The default spec "
    f"(`{GuardSpec.default().name}`) reads the loss and the gradient norm in units of their "
    "own noise, so no threshold is a per-model constant. The v1 spec (`lbw-v1`) adds an "
    "update cap and a one-way **LR ratchet**: while the updates stay above 3 % of the "
    "weights, the LR is halved for the rest of the run. Everything the guard does is "
    "written into the trace with its cause. " + glossary_link()
)
st.subheader("One-click demo: the same run, unguarded and guarded by the v1 ratchet")
spec = GuardSpec.default()
if st.button("Run the demo", icon=":material/play_arrow:", type="primary", key="home_demo"):
    from lbw_sim.sim.trajectories import demo_runs  # torch: imported on first use

    with st.spinner("Training twice on CPU…"):
        st.session_state["home_demo_runs"] = demo_runs()    # under the v1 ratchet
demo = st.session_state.get("home_demo_runs")
if demo is not None:
    from lbw_sim.sim.trajectories import DEMO_SPEC, guard_actions, verdict

    demo_spec = GuardSpec.named(DEMO_SPEC)

    runs, summary = demo
    plain, guarded = (runs[runs["arm"] == a] for a in ("plain", "guarded"))
    held = verdict(summary)
    left, right = st.columns(2)
    left.metric("Unguarded", f"diverged at step {held.plain_steps}"
                if held.plain_lost else "stable")
    left.caption(f"last loss {loss_text(plain['loss'].iloc[-1])}")
    right.metric("Guarded", "not held" if held.guarded_lost else "held stable")
    right.caption(f"final loss {loss_text(guarded['loss'].iloc[-1])}")
    st.plotly_chart(demo_figure(runs, demo_spec), width="stretch", key="home_demo_chart")
    acts = transitions_table(guarded.iloc[1:])
    first_cap = acts.loc[acts["transition"] == "update cap", "step"]
    fired = acts.loc[acts["transition"] != "update cap"]
    st.caption(
        "Gradient descent on a quadratic with curvature 10 (minimum at (10, 10)), the LR warming "
        "up to 0.35 — past the edge of stability 2/λ = 0.2 from step 17 on. While the LR is "
        "below the edge both runs fall alike. Past it, the unguarded run's oscillation grows "
        "×2.5 per step until it leaves the plot. Middle panel: the signal the guard read, the "
        "update/weight ratio ‖Δθ‖/‖θ‖ of each update. Above the cap (red dotted line) the "
        "update is scaled back (× marks"
        + (f", first at step {int(first_cap.iloc[0])}" if len(first_cap) else "")
        + "), which bounds the oscillation; while its moving average stays above 3 % (the "
        "threshold `ratio_high`) for 20 steps the ratchet halves the LR"
        + (f" (the transition `{fired['transition'].iloc[0]}` at step "
           f"{int(fired['step'].iloc[0])})" if len(fired) else "")
        + ", below the edge, and the run converges. "
        f"In all, the guard (the v1 ratchet `lbw-v1`, tuned for this model family) "
        f"{guard_actions(guarded)}. Same start, same schedule. The shipped default "
        f"(`{spec.name}`) carries no update cap.")
    st.dataframe(acts, hide_index=True, width="stretch", key="home_demo_actions")
else:
    st.caption("Trains the same tiny problem twice (about a second on CPU): once plain, once "
               "with the guard above the optimizer — the v1 ratchet (`lbw-v1`), tuned for "
               "this model family: its update cap bounds a step past the edge of stability.")

out, incidents = example_replay()
st.subheader("The default guard replayed over an example run")
st.caption(
    "A synthetic training run with a loss spike at step "
    f"{incidents[0].step} and a NaN storm at step {incidents[1].step}. Coloured bands show "
    "the regime the guard was in; the bottom panel is the LR scale it applied (× = skipped)."
)
st.plotly_chart(trace_figure(out, spec), width="stretch")
left, right = st.columns([3, 2])
with left:
    st.markdown("**Transitions and their causes**")
    st.dataframe(transitions_table(out), hide_index=True, width="stretch")
with right:
    st.markdown("**Time in each regime**")
    regime_time_table(out)

st.subheader(f"Default spec `{spec.name}` · hash `{spec.hash}`")
st.graphviz_chart(to_dot(spec), width="stretch")
with st.expander("Spec as YAML"):
    st.code(spec.to_yaml(), language="yaml")
    st.download_button("Download spec YAML", spec.to_yaml(), file_name="lbw_default.yaml",
                       mime="application/x-yaml")
