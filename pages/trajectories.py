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
    run_paths,
    summarize,
    verdict,
)
from lbw_sim.viz import trajectory_figure
from pages.common import spec_choice, through_app

through_app(__file__)


@st.cache_data(show_spinner="Running the optimizers…", max_entries=16)
def paths_for(cfg: PathConfig, spec_yaml: str):
    """Deterministic runs of the project's own landscapes: safe to share between sessions."""
    paths = run_paths(cfg, GuardSpec.from_yaml(spec_yaml))
    return paths, summarize(paths, cfg)


st.title("Trajectories")
st.markdown("Optimizer paths on 2-D loss landscapes, from the same start point at several "
            "learning rates: the plain optimizer (grey, dashed) and the same optimizer wrapped "
            "in `GuardedOptimizer` (dots coloured by the guard's regime). Press ▶ to animate.")
c1, c2, c3, c4 = st.columns([2, 1, 2, 1])
name = c1.selectbox("Landscape", list(PRESETS), key="traj_landscape")
preset = PRESETS[name]
optimizer = c2.radio("Optimizer", OPTIMIZERS, index=OPTIMIZERS.index(preset.optimizer),
                     key=f"traj_opt_{name}")
lrs = c3.multiselect("Peak learning rates", sorted({*preset.lrs, 0.01, 0.05, 0.1, 0.2, 0.3, 1.0}),
                     default=list(preset.lrs), key=f"traj_lrs_{name}")
steps = c4.number_input("Steps", 20, 600, preset.steps, step=10, key=f"traj_steps_{name}")
spec = spec_choice("Guard spec", key="traj_spec")
cfg = dataclasses.replace(preset, optimizer=optimizer, lrs=tuple(sorted(lrs)) or preset.lrs,
                          steps=int(steps))
land = get_landscape(cfg.landscape)
paths, summary = paths_for(cfg, spec.to_yaml())
st.plotly_chart(trajectory_figure(paths, land, spec), width="stretch", key="traj_chart")
st.caption(f"Contours: log10 of the loss of **{name}** (darker = lower); ★ start. LR warm-up: "
           f"{cfg.warmup} steps. A path that stops short left the plot (|p| > {cfg.escape:g}).")
if name == "edge_of_stability":
    words = ("the guard, with the spec above, holds every run the plain optimizer loses"
             if verdict(summary, land.lr_threshold).guard_holds
             else "the guard does not hold every such run with this spec and optimizer")
    st.info(f"Gradient descent on this quadratic diverges once the LR passes 2/λ_max = "
            f"{land.lr_threshold:g}. Here {words}. AdamW divides each step by √v, so its step "
            "stays near the LR and it hovers inside the basin at any constant LR (0.05–3 tried) "
            "instead of leaving it — which is why this preset uses plain gradient descent (SGD); "
            "switch to AdamW to see that.")
st.dataframe(summary, hide_index=True, width="stretch", key="traj_summary")
