"""Trajectories: optimizer paths on 2-D landscapes, plain vs guarded, coloured by regime."""

from __future__ import annotations

import dataclasses

import streamlit as st

from lbw_sim.guard.spec import GuardSpec
from lbw_sim.sim.landscapes import get_landscape
from lbw_sim.sim.trajectories import (
    OPTIMIZERS,
    PRESETS,
    PathConfig,
    describe,
    run_paths,
    summarize,
)
from lbw_sim.viz import trajectory_figure
from pages.common import V1_CHOICE, glossary_link, spec_choice, through_app

through_app(__file__)


@st.cache_data(show_spinner="Running the optimizers…", max_entries=16)
def paths_for(cfg: PathConfig, spec_yaml: str):
    """Deterministic runs of the project's own landscapes: safe to share between sessions."""
    paths = run_paths(cfg, GuardSpec.from_yaml(spec_yaml))
    return paths, summarize(paths, cfg)


st.title("Trajectories")
st.markdown("Optimizer paths on 2-D loss landscapes, from the same start point at several "
            "learning rates, one colour per LR: the plain optimizer (dashed) and the same "
            "optimizer wrapped in `GuardedOptimizer` (solid; dots coloured by the guard's "
            "regime, ◆ where the update cap bounded the step). Press ▶ to animate. "
            + glossary_link())
c1, c2, c3, c4 = st.columns([2, 1, 2, 1])
name = c1.selectbox("Landscape", list(PRESETS), key="traj_landscape")
preset = PRESETS[name]
optimizer = c2.radio("Optimizer", OPTIMIZERS, index=OPTIMIZERS.index(preset.optimizer),
                     key=f"traj_opt_{name}")
lrs = c3.multiselect("Peak learning rates", sorted({*preset.lrs, 0.01, 0.05, 0.1, 0.2, 0.3, 1.0}),
                     default=list(preset.lrs), key=f"traj_lrs_{name}")
steps = c4.number_input("Steps", 20, 600, preset.steps, step=10, key=f"traj_steps_{name}")
spec = spec_choice("Guard spec", key="traj_spec", default=V1_CHOICE)
if spec.hash == GuardSpec.named("lbw-v1").hash:
    st.caption("Guarded by the v1 ratchet (`lbw-v1`), tuned for this model family: its update "
               "cap bounds a step past the edge of stability. The shipped default "
               f"(`{GuardSpec.default().name}`) carries no update cap; pick it to compare.")
cfg = dataclasses.replace(preset, optimizer=optimizer, lrs=tuple(sorted(lrs)) or preset.lrs,
                          steps=int(steps))
land = get_landscape(cfg.landscape)
paths, summary = paths_for(cfg, spec.to_yaml())
st.plotly_chart(trajectory_figure(paths, land, spec), width="stretch", key="traj_chart")
st.caption(f"Background: log10 of the loss of **{name}** (darker = lower); ★ start. LR warm-up: "
           f"{cfg.warmup} steps. A path that stops short left the plot (|p| > {cfg.escape:g}).")
st.info(describe(summary, cfg, getattr(land, "lr_threshold", None)))
st.dataframe(summary, hide_index=True, width="stretch", key="traj_summary", column_config={
    "lr": st.column_config.NumberColumn("LR", format="%g"),
    "final loss": st.column_config.NumberColumn("final loss", format="%.3g")})
