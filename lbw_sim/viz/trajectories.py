"""Plotly figures of optimizer paths on 2-D landscapes (the Trajectories page) and of Home's
one-click demo: each LR its own colour (plain dashed, guarded solid), the guard's regime on
the guarded path's markers, and every capped update marked.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lbw_sim.guard.spec import GuardSpec
from lbw_sim.viz.common import (
    GUARDED_COLOR,
    UNGUARDED_COLOR,
    add_regime_bands,
    color_lookup,
    hline,
)

#: One colour per peak LR, shared by its plain (dashed) and guarded (solid) path.
LR_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def trajectory_figure(paths: pd.DataFrame, land, spec: GuardSpec, frames: int = 60,
                      height: int = 620):
    """Contours of the landscape and every path, animated with play/pause and a step slider.

    Each peak LR has its own colour: its plain path dashed, its guarded path solid. The
    guarded path's markers carry the regime the guard was in (in `spec`'s colours), and a
    step where the update cap bound is a diamond. SVG traces: no WebGL.

    The landscape is a raster image in the layout; trace 0 only carries its colour bar.
    plotly.js drops contour and heatmap traces from the plot once an animation starts
    (plotly.js#4491), whatever the frames carry; a layout image is not a trace, so the
    landscape stays for the whole animation. Frames name only the path traces by index.
    """
    import plotly.graph_objects as go

    color_of = color_lookup(spec)
    X, Y, Z = land.mesh(120)
    logz = np.log10(Z - Z.min() + 1e-3)
    x0, x1, y0, y1 = land.window
    finite = logz[np.isfinite(logz)]
    fig = go.Figure(go.Scatter(x=[None], y=[None], mode="markers", name="landscape",
                               showlegend=False, hoverinfo="skip",
                               marker={"color": [finite.min(), finite.max()],
                                       "colorscale": LANDSCAPE_SCALE, "reversescale": True,
                                       "showscale": True, "colorbar": {
                                           "title": {"text": "log10 loss"}, "len": 0.8}}))
    fig.add_layout_image(source=_png_uri(logz[::-1]), xref="x", yref="y", x=x0, y=y1,
                         sizex=x1 - x0, sizey=y1 - y0, sizing="stretch", layer="below",
                         opacity=0.75)
    groups = list(paths.groupby(["arm", "lr"], sort=False))
    lr_color = {lr: LR_COLORS[i % len(LR_COLORS)]
                for i, lr in enumerate(sorted(paths["lr"].unique()))}
    n_steps = int(paths["step"].max())
    cuts = np.unique(np.linspace(0, n_steps, min(frames, n_steps + 1)).astype(int))
    for (arm, lr), g in groups:
        fig.add_trace(_path_trace(g, arm, lr, n_steps, color_of, lr_color[lr]))
    fig.add_trace(go.Scatter(x=[land.start[0]], y=[land.start[1]], mode="markers",
                             name="start", marker={"symbol": "star", "size": 14,
                                                   "color": "#000"}))
    for name in dict.fromkeys(paths.loc[paths["arm"] == "guarded", "regime"]):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=f"regime: {name}",
                                 marker={"size": 10, "color": color_of(name)}))
    if (paths.get("update_scale", pd.Series(1.0)) < 1).any():
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name="update capped",
                                 marker={"size": 9, "symbol": "diamond", "color": "#fff",
                                         "line": {"color": "#000", "width": 1}}))
    traces = list(range(1, len(groups) + 1))
    fig.frames = [go.Frame(name=str(c), traces=traces,
                           data=[_path_trace(g, arm, lr, c, color_of, lr_color[lr])
                                 for (arm, lr), g in groups])
                  for c in cuts]
    fig.update_xaxes(title_text="parameter x", range=[x0, x1], constrain="domain")
    fig.update_yaxes(title_text="parameter y", range=[y0, y1], scaleanchor="x")
    fig.update_layout(height=height, margin={"l": 60, "r": 20, "t": 60, "b": 120},
                      legend={"orientation": "h", "y": 1.02, "yanchor": "bottom"},
                      updatemenus=[_play_buttons()], sliders=[_step_slider(cuts)])
    return fig


LANDSCAPE_SCALE = "Blues"


def _png_uri(z: np.ndarray) -> str:
    """`z` (rows top to bottom) as a PNG data URI in LANDSCAPE_SCALE, reversed (low = dark).

    Written with zlib: no imaging library for one small picture."""
    import base64
    import struct
    import zlib

    from plotly.colors import hex_to_rgb, sample_colorscale

    lut = np.array([hex_to_rgb(c) if c.startswith("#") else
                    tuple(int(float(v)) for v in c[c.index("(") + 1:-1].split(","))
                    for c in sample_colorscale(LANDSCAPE_SCALE, np.linspace(1, 0, 256))],
                   dtype=np.uint8)
    finite = np.isfinite(z)
    lo, hi = (z[finite].min(), z[finite].max()) if finite.any() else (0.0, 1.0)
    idx = np.clip((np.where(finite, z, hi) - lo) / max(hi - lo, 1e-12) * 255, 0, 255)
    rgb = lut[idx.astype(np.int64)]
    h, w = z.shape
    raw = b"".join(b"\x00" + rgb[r].tobytes() for r in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _path_trace(g: pd.DataFrame, arm: str, lr: float, upto: int, color_of, color: str):
    import plotly.graph_objects as go

    part = g[g["step"] <= upto]
    guarded = arm == "guarded"
    if guarded:
        marker = {"size": 6, "color": [color_of(r) for r in part["regime"]],
                  "symbol": np.where(part.get("update_scale", 1.0) < 1, "diamond",
                                     "circle").tolist(),
                  "line": {"color": color, "width": 1}}
    else:
        marker = {"size": 3, "color": color}
    cause = part["cause"] if "cause" in part else pd.Series("", index=part.index)
    return go.Scatter(x=part["x"], y=part["y"], mode="lines+markers",
                      name=f"{'guarded' if guarded else 'plain'} lr={lr:g}",
                      line={"width": 2 if guarded else 1.5,
                            "dash": "solid" if guarded else "dash", "color": color},
                      marker=marker,
                      customdata=np.column_stack([part["step"].astype(str),
                                                  [f"{v:.3g}" for v in part["loss"]],
                                                  part["regime"].astype(str), cause]),
                      hovertemplate="step %{customdata[0]}<br>loss %{customdata[1]}"
                                    "<br>%{customdata[2]} %{customdata[3]}"
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


def demo_figure(runs: pd.DataFrame, spec: GuardSpec, height: int = 560):
    """Home's demo: the loss of the plain and the guarded run (log scale); the signal the guard
    acted on (‖Δθ‖/‖θ‖ of each update, before the cap) against the cap and the ratchet's
    threshold, capped steps marked; the controls it applied (LR scale, cap factor). Regime
    bands behind, legend below the plot, clear of the data."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, row_heights=[0.45, 0.33, 0.22],
                        vertical_spacing=0.04)
    for arm, color, dash in (("guarded", GUARDED_COLOR, "solid"),
                             ("plain", UNGUARDED_COLOR, "dash")):
        g = runs[runs["arm"] == arm]
        label = "unguarded" if arm == "plain" else "guarded"
        fig.add_trace(go.Scatter(x=g["step"], y=g["loss"].clip(lower=1e-12), mode="lines",
                                 name=f"{label} loss", legendgroup="loss",
                                 line={"color": color, "width": 2, "dash": dash}), row=1, col=1)
        if "update_ratio" in g:
            fig.add_trace(go.Scatter(x=g["step"], y=g["update_ratio"], mode="lines",
                                     name=f"{label} ‖Δθ‖/‖θ‖", legendgroup="ratio",
                                     line={"color": color, "width": 1.5, "dash": dash}),
                          row=2, col=1)
    guarded = runs[runs["arm"] == "guarded"]
    hit = guarded[guarded["update_scale"] < 1]
    fig.add_trace(go.Scatter(x=hit["step"], y=hit["update_ratio"], mode="markers",
                             name="update capped", marker={"symbol": "x", "size": 6,
                                                           "color": "#d62728"},
                             customdata=hit[["cause"]].to_numpy() if "cause" in hit else None,
                             hovertemplate="step %{x}<br>%{customdata[0]}<extra></extra>"),
                  row=2, col=1)
    fig.add_trace(go.Scatter(x=guarded["step"], y=guarded["lr_scale"], mode="lines",
                             name="guard LR scale", line={"color": "#000000", "shape": "hv"}),
                  row=3, col=1)
    fig.add_trace(go.Scatter(x=guarded["step"], y=guarded["update_scale"], mode="lines",
                             name="cap factor on the update", line={"color": "#d62728",
                                                                    "width": 1, "shape": "hv"}),
                  row=3, col=1)
    shapes, notes = [], []
    cap = spec.regimes[spec.initial].update_cap
    if cap is not None:
        s_, n_ = hline(2, cap, "#d62728", "dot", f"update cap {cap:g}", "bottom right")
        shapes.append(s_)
        notes.append(n_)
    high = spec.thresholds.get("ratio_high")
    if high is not None:
        s_, n_ = hline(2, high, "#9467bd", "dash", f"ratio_high {high:g} (EMA above it for "
                       "20 steps: LR ratchet)", "top right")
        shapes.append(s_)
        notes.append(n_)
    add_regime_bands(fig, guarded, spec, shapes, notes)
    fig.update_yaxes(type="log", title_text="loss (log)", exponentformat="power", row=1, col=1)
    fig.update_yaxes(type="log", title_text="‖Δθ‖/‖θ‖", exponentformat="power", row=2, col=1)
    fig.update_yaxes(title_text="scale (×)", range=[0, 1.1], row=3, col=1)
    fig.update_xaxes(title_text="step", row=3, col=1)
    fig.update_layout(height=height, margin={"l": 60, "r": 20, "t": 20, "b": 40},
                      legend={"orientation": "h", "y": -0.12, "yanchor": "top", "x": 0})
    return fig
