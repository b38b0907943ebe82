"""Plotly figures of optimizer paths on 2-D landscapes (the Trajectories page) and of Home's
one-click demo: plain runs grey and dashed, guarded ones coloured by the guard's regime.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lbw_sim.guard.spec import GuardSpec
from lbw_sim.viz.common import GUARDED_COLOR, UNGUARDED_COLOR, add_regime_bands, color_lookup


def trajectory_figure(paths: pd.DataFrame, land, spec: GuardSpec, frames: int = 60,
                      height: int = 620):
    """Contours of the landscape and every path, animated with play/pause and a step slider.

    Plain paths are grey and dashed; guarded paths are drawn as markers coloured by the
    regime the guard was in at that step, in `spec`'s colours (SVG traces: no WebGL).
    """
    import plotly.graph_objects as go

    color_of = color_lookup(spec)
    X, Y, Z = land.mesh(120)
    fig = go.Figure(go.Contour(x=X[0], y=Y[:, 0], z=np.log10(Z - Z.min() + 1e-3),
                               colorscale="Blues", reversescale=True, showscale=True,
                               contours={"coloring": "heatmap"}, opacity=0.75, name="landscape",
                               colorbar={"title": {"text": "log10 loss"}, "len": 0.8},
                               hoverinfo="skip"))
    groups = list(paths.groupby(["arm", "lr"], sort=False))
    n_steps = int(paths["step"].max())
    cuts = np.unique(np.linspace(0, n_steps, min(frames, n_steps + 1)).astype(int))
    for (arm, lr), g in groups:
        fig.add_trace(_path_trace(g, arm, lr, n_steps, color_of))
    fig.add_trace(go.Scatter(x=[land.start[0]], y=[land.start[1]], mode="markers",
                             name="start", marker={"symbol": "star", "size": 14,
                                                   "color": "#000"}))
    for name in dict.fromkeys(paths.loc[paths["arm"] == "guarded", "regime"]):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=f"regime: {name}",
                                 marker={"size": 10, "color": color_of(name)}))
    traces = list(range(1, len(groups) + 1))
    fig.frames = [go.Frame(name=str(c), traces=traces,
                           data=[_path_trace(g, arm, lr, c, color_of) for (arm, lr), g in groups])
                  for c in cuts]
    x0, x1, y0, y1 = land.window
    fig.update_xaxes(title_text="parameter x", range=[x0, x1])
    fig.update_yaxes(title_text="parameter y", range=[y0, y1], scaleanchor="x")
    fig.update_layout(height=height, margin={"l": 60, "r": 20, "t": 60, "b": 120},
                      legend={"orientation": "h", "y": 1.02, "yanchor": "bottom"},
                      updatemenus=[_play_buttons()], sliders=[_step_slider(cuts)])
    return fig


def _path_trace(g: pd.DataFrame, arm: str, lr: float, upto: int, color_of):
    import plotly.graph_objects as go

    part = g[g["step"] <= upto]
    guarded = arm == "guarded"
    colors = [color_of(r) for r in part["regime"]] if guarded else UNGUARDED_COLOR
    return go.Scatter(x=part["x"], y=part["y"], mode="lines+markers",
                      name=f"{'guarded' if guarded else 'plain'} lr={lr:g}",
                      line={"width": 1.5, "dash": "solid" if guarded else "dash",
                            "color": GUARDED_COLOR if guarded else UNGUARDED_COLOR},
                      marker={"size": 5 if guarded else 3, "color": colors},
                      customdata=part[["step", "loss"]].to_numpy(),
                      hovertemplate="step %{customdata[0]}<br>loss %{customdata[1]:.3g}"
                                    "<extra>%{fullData.name}</extra>")


def _play_buttons() -> dict:
    return {"type": "buttons", "direction": "left", "x": 0.0, "y": -0.2, "xanchor": "left",
            "yanchor": "top",
            "buttons": [
                {"label": "▶ Play", "method": "animate",
                 "args": [None, {"frame": {"duration": 60, "redraw": False},
                                 "transition": {"duration": 0}, "fromcurrent": True}]},
                {"label": "⏸ Pause", "method": "animate",
                 "args": [[None], {"frame": {"duration": 0, "redraw": False},
                                   "mode": "immediate", "transition": {"duration": 0}}]}]}


def _step_slider(cuts: np.ndarray) -> dict:
    return {"active": len(cuts) - 1, "x": 0.2, "len": 0.8, "y": -0.14, "yanchor": "top",
            "currentvalue": {"prefix": "step "},
            "steps": [{"label": str(c), "method": "animate",
                       "args": [[str(c)], {"frame": {"duration": 0, "redraw": False},
                                           "mode": "immediate"}]} for c in cuts]}


def demo_figure(runs: pd.DataFrame, spec: GuardSpec, height: int = 420):
    """Home's demo: loss of the plain and guarded run (log scale), guard regimes behind."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.68, 0.32],
                        vertical_spacing=0.05)
    for arm, color, dash in (("guarded", GUARDED_COLOR, "solid"),
                             ("plain", UNGUARDED_COLOR, "dash")):
        g = runs[runs["arm"] == arm]
        label = "unguarded" if arm == "plain" else "guarded"
        fig.add_trace(go.Scatter(x=g["step"], y=g["loss"].clip(lower=1e-12), mode="lines",
                                 name=f"{label} loss",
                                 line={"color": color, "width": 2, "dash": dash}),
                      row=1, col=1)
    guarded = runs[runs["arm"] == "guarded"]
    fig.add_trace(go.Scatter(x=guarded["step"], y=guarded["lr_scale"], mode="lines",
                             name="guard LR scale", line={"color": GUARDED_COLOR, "shape": "hv"}),
                  row=2, col=1)
    add_regime_bands(fig, guarded, spec)
    fig.update_yaxes(type="log", title_text="loss (log)", exponentformat="power", row=1, col=1)
    fig.update_yaxes(title_text="LR scale (×)", range=[0, 1.1], row=2, col=1)
    fig.update_xaxes(title_text="step", row=2, col=1)
    fig.update_layout(height=height, margin={"l": 60, "r": 20, "t": 30, "b": 40},
                      legend={"orientation": "h", "y": 1.1})
    return fig

