"""Plotly figures of traces and regimes, shared by the studio pages and notebooks, and the
Vega-Lite specs of the live-training charts (see "live training" below for why).

Computation is never downsampled; only what is drawn is (MinMaxLTTB keeps the extremes,
so a one-step spike survives in a 1,000,000-step trace drawn with 4,000 points).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

#: One colour per regime, the same on every page.
REGIME_COLORS = {
    "nominal": "#2ca02c", "watch": "#bcbd22", "intervene": "#ff7f0e", "recover": "#1f77b4",
    "skip": "#9467bd", "rollback": "#d62728", "stop": "#000000",
    # the default spec's LR ratchet: darker = a deeper cut
    "throttle_1": "#d4a373", "throttle_2": "#b5835a", "throttle_3": "#8c564b",
    "throttle_4": "#6b4226", "throttle_5": "#4a2c17",
}
_PALETTE = ["#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#aec7e8", "#ffbb78", "#98df8a"]
MAX_POINTS = 4000
MAX_BANDS = 400


def regime_color(name: str) -> str:
    """The regime's colour; unknown names get a stable colour from a palette."""
    if name in REGIME_COLORS:
        return REGIME_COLORS[name]
    return _PALETTE[sum(map(ord, name)) % len(_PALETTE)]


def display_index(x: np.ndarray, y: np.ndarray, n_out: int = MAX_POINTS) -> np.ndarray:
    """Row indices to draw for one series: all of them if few, else MinMaxLTTB's choice."""
    if len(y) <= n_out:
        return np.arange(len(y))
    finite = np.isfinite(y)
    if not finite.all():
        y = np.where(finite, y, np.nanmax(np.where(finite, y, -np.inf)) if finite.any() else 0)
    from tsdownsample import MinMaxLTTBDownsampler

    idx = MinMaxLTTBDownsampler().downsample(x.astype(np.float64), y.astype(np.float64),
                                             n_out=n_out)
    idx = idx.astype(np.int64)
    bad = np.flatnonzero(~finite)
    return np.union1d(idx, bad[:: max(1, len(bad) // 200)]) if len(bad) else idx


def starting_regime(df: pd.DataFrame) -> str:
    """The regime drawn unshaded: where the run started (the spec's initial regime, as a
    rule), not the most common one, which a run that spends most steps throttled would hide."""
    return str(df["regime"].iloc[0])


def regime_segments(df: pd.DataFrame) -> pd.DataFrame:
    """Runs of one regime: start step, end step (exclusive of the next run), regime."""
    regime = df["regime"].astype(str).to_numpy()
    step = df["step"].to_numpy()
    change = np.flatnonzero(regime[1:] != regime[:-1]) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [len(regime)]])
    end_step = np.append(step[1:], step[-1] + 1)[ends - 1]
    return pd.DataFrame({"start": step[starts], "end": end_step, "regime": regime[starts]})


def time_in_regime(df: pd.DataFrame) -> pd.DataFrame:
    """Rows and share of the trace spent in each regime."""
    counts = df["regime"].astype(str).value_counts()
    return pd.DataFrame({"regime": counts.index, "steps": counts.to_numpy(),
                         "share": counts.to_numpy() / max(len(df), 1)})


def trace_figure(df: pd.DataFrame, panels: tuple[str, ...] = ("loss", "grad_norm", "lr_scale"),
                 title: str = "", height: int = 560, thresholds: dict | None = None):
    """Stacked panels sharing the step axis, regime bands in colour behind every panel.

    `thresholds` maps a panel name to {label: value} lines (e.g. entry and exit of a band).
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    panels = tuple(p for p in panels if p in df.columns)
    fig = make_subplots(rows=len(panels), cols=1, shared_xaxes=True, vertical_spacing=0.04)
    step = df["step"].to_numpy()
    shapes, notes = [], []
    for i, col in enumerate(panels, start=1):
        y = pd.to_numeric(df[col], errors="coerce").to_numpy(np.float64)
        idx = display_index(step, y)
        fig.add_trace(go.Scattergl(x=step[idx], y=y[idx], mode="lines", name=col,
                                   line={"width": 1.2}), row=i, col=1)
        fig.update_yaxes(title_text=_UNITS.get(col, col), row=i, col=1)
        for label, v in (thresholds or {}).get(col, {}).items():
            line, note = hline(i, v, "#555", "dot", label)
            shapes.append(line)
            notes.append(note)
    if "regime" in df.columns:
        _add_bands(fig, df, shapes, notes)
    else:
        add_shapes(fig, shapes, notes)
    if "skipped" in df.columns and "lr_scale" in panels and df["skipped"].any():
        sk = df[df["skipped"].astype(bool)]
        fig.add_trace(go.Scattergl(x=sk["step"], y=sk["lr_scale"], mode="markers",
                                   name="skipped", marker={"symbol": "x", "size": 7,
                                                           "color": regime_color("skip")}),
                      row=panels.index("lr_scale") + 1, col=1)
    fig.update_xaxes(title_text="step", row=len(panels), col=1)
    fig.update_layout(height=height, title=title or None, margin={"l": 60, "r": 20, "t": 40,
                      "b": 40}, legend={"orientation": "h", "y": 1.06}, hovermode="x unified")
    return fig


def _axes(row: int) -> tuple[str, str]:
    """Plotly's axis names of subplot row `row` (1-based) in a one-column figure."""
    return ("x", "y") if row == 1 else (f"x{row}", f"y{row}")


def hline(row: int, value: float, color: str, dash: str, text: str = "",
          position: str = "top left") -> tuple[dict, dict | None]:
    """A horizontal line across subplot `row` and its label, as plain dicts.

    Plain dicts added in one `update_layout` call are ~100× faster than `fig.add_hline`,
    which re-validates the whole layout per call; the latency budget depends on it.
    """
    xa, ya = _axes(row)
    shape = {"type": "line", "xref": f"{xa} domain", "x0": 0, "x1": 1, "yref": ya,
             "y0": value, "y1": value, "line": {"color": color, "dash": dash, "width": 1.2}}
    if not text:
        return shape, None
    right = position.endswith("right")
    note = {"xref": f"{xa} domain", "x": 1 if right else 0, "yref": ya, "y": value,
            "text": text, "showarrow": False, "font": {"size": 10, "color": color},
            "xanchor": "right" if right else "left",
            "yanchor": "bottom" if position.startswith("top") else "top"}
    return shape, note


def hrect(row: int, low: float, high: float, color: str) -> dict:
    xa, ya = _axes(row)
    return {"type": "rect", "xref": f"{xa} domain", "x0": 0, "x1": 1, "yref": ya, "y0": low,
            "y1": high, "fillcolor": color, "opacity": 0.13, "line": {"width": 0},
            "layer": "below"}


def add_shapes(fig, shapes: list[dict], notes: list[dict | None] = ()) -> None:
    """Append shapes and annotations in one layout update."""
    fig.update_layout(shapes=[*fig.layout.shapes, *shapes],
                      annotations=[*fig.layout.annotations, *(n for n in notes if n)])


def _add_bands(fig, df: pd.DataFrame, shapes: list[dict] | None = None,
               notes: list[dict | None] = ()) -> None:
    """Regime bands behind every row (the starting regime unshaded), plus `shapes`.

    One paper-high rectangle per run covers all rows (the x axes are shared), and every
    shape is set in a single layout update: plotly validates each shape it is given.
    """
    import plotly.graph_objects as go

    seg = regime_segments(df)
    quiet = seg["regime"] == starting_regime(df)
    loud = seg[~quiet]
    if len(loud) > MAX_BANDS:
        loud = loud.loc[(loud["end"] - loud["start"]).nlargest(MAX_BANDS).index]
    bands = [{"type": "rect", "xref": "x", "x0": r.start, "x1": r.end, "yref": "paper",
              "y0": 0, "y1": 1, "layer": "below", "fillcolor": regime_color(r.regime),
              "opacity": 0.18, "line": {"width": 0}} for r in loud.itertuples()]
    add_shapes(fig, [*bands, *(shapes or [])], notes)
    for name in dict.fromkeys(seg["regime"]):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=f"regime: {name}",
                                 marker={"size": 10, "symbol": "square",
                                         "color": regime_color(name)}))


_UNITS = {"loss": "loss (nats)", "grad_norm": "grad norm (L2)", "lr_scale": "LR scale (×)",
          "lr": "learning rate", "val_loss": "val loss (nats)", "update_norm": "update norm"}


# --- signals against thresholds, controls, comparisons ------------------------------------

_SIGNAL_UNITS = {"ema_z": "σ (z-score)", "ratio": "× its EMA", "slope": "per step",
                 "nonfinite": "flag (0/1)", "ema": "EMA"}


def signal_unit(spec, name: str) -> str:
    """Axis title for a signal: its name and what its numbers mean."""
    kind = spec.signals[name].kind if name in spec.signals else ""
    return f"{name} ({_SIGNAL_UNITS.get(kind, kind)})"


def _y_range(y: np.ndarray, levels: list[float]) -> list[float] | None:
    """A range that keeps the thresholds readable when a spike is 50× above them."""
    finite = y[np.isfinite(y)]
    if not levels or not len(finite):
        return None
    top = max(max(levels) * 2.0, float(np.quantile(finite, 0.995)))
    bottom = min(min(levels), float(np.quantile(finite, 0.005)))
    pad = 0.05 * (top - bottom or 1.0)
    return [bottom - pad, min(top, float(finite.max())) + pad]


def signal_figure(df: pd.DataFrame, spec, signals: list[str] | None = None,
                  height_per_panel: int = 190):
    """Each signal against its entry and exit thresholds; the hysteresis band is shaded.

    The band between exit and entry is filled in the colour of the regime it guards; a
    dashed line marks entry, a dotted line exit; regime bands run behind every panel.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from lbw_sim.guard.bands import bands, thresholds

    names = [s for s in (signals or list(spec.signals)) if s in df.columns
             and np.isfinite(pd.to_numeric(df[s], errors="coerce")).any()]   # no empty panels
    fig = make_subplots(rows=max(len(names), 1), cols=1, shared_xaxes=True,
                        vertical_spacing=0.03)
    step = df["step"].to_numpy()
    all_bands, leaves = bands(spec), thresholds(spec)
    shapes, notes = [], []
    for i, name in enumerate(names, start=1):
        y = pd.to_numeric(df[name], errors="coerce").to_numpy(np.float64)
        idx = display_index(step, y)
        fig.add_trace(go.Scattergl(x=step[idx], y=y[idx], mode="lines", name=name,
                                   line={"width": 1.1, "color": "#333"}, showlegend=False),
                      row=i, col=1)
        more, more_notes, drawn = _signal_levels(i, name, all_bands, leaves)
        shapes += more
        notes += more_notes
        rng = _y_range(y, [v for v, _ in drawn])
        fig.update_yaxes(title_text=signal_unit(spec, name), range=rng, row=i, col=1)
    if "regime" in df.columns:
        _add_bands(fig, df, shapes, notes)
    else:
        add_shapes(fig, shapes, notes)
    fig.update_xaxes(title_text="step", row=max(len(names), 1), col=1)
    fig.update_layout(height=max(height_per_panel * len(names), 240) + 60,
                      margin={"l": 70, "r": 20, "t": 30, "b": 40},
                      legend={"orientation": "h", "y": 1.04}, hovermode="x unified")
    return fig


def _signal_levels(row: int, name: str, all_bands: list, leaves: list
                   ) -> tuple[list[dict], list[dict | None], set[tuple[float, str]]]:
    """Band fills, entry (dashed) and exit (dotted) lines, and other thresholds of a signal."""
    shapes, notes, drawn = [], [], set()
    for b in (b for b in all_bands if b.signal == name):
        color = regime_color(b.regime)
        shapes.append(hrect(row, b.low, b.high, color))
        sign_in, sign_out = (">", "<") if b.rising else ("<", ">")
        for value, dash, text, pos in (
                (b.entry, "dash", f"enter {b.regime}: {sign_in} {b.entry:g}", "top left"),
                (b.exit, "dot", f"exit ({b.leave}): {sign_out} {b.exit:g}", "bottom left")):
            if (value, dash) not in drawn:
                drawn.add((value, dash))
                line, note = hline(row, value, color, dash, text, pos)
                shapes.append(line)
                notes.append(note)
    for leaf in leaves:
        if leaf.signal == name and not any(v == leaf.value for v, _ in drawn):
            drawn.add((leaf.value, "dashdot"))
            line, note = hline(row, leaf.value, "#777", "dashdot",
                               f"{leaf.transition}: {leaf.op} {leaf.value:g}", "top right")
            shapes.append(line)
            notes.append(note)
    return shapes, notes, drawn


def controls_figure(df: pd.DataFrame, height: int = 300):
    """The guard's outputs: LR scale and momentum scale (×), skipped steps as crosses."""
    import plotly.graph_objects as go

    fig = go.Figure()
    step = df["step"].to_numpy()
    for col, color in (("lr_scale", "#1f77b4"), ("momentum_scale", "#8c564b")):
        if col in df.columns:
            y = df[col].to_numpy(np.float64)
            idx = display_index(step, y)
            fig.add_trace(go.Scattergl(x=step[idx], y=y[idx], mode="lines", name=col,
                                       line={"width": 1.5, "color": color}))
    if "skipped" in df.columns and df["skipped"].any():
        sk = df[df["skipped"].astype(bool)]
        fig.add_trace(go.Scattergl(x=sk["step"], y=np.zeros(len(sk)), mode="markers",
                                   name="skipped update", marker={"symbol": "x", "size": 7,
                                                                  "color": regime_color("skip")}))
    if "regime" in df.columns:
        _add_bands(fig, df)
    fig.update_yaxes(title_text="scale (×)", range=[-0.05, 1.1])
    fig.update_xaxes(title_text="step")
    fig.update_layout(height=height, margin={"l": 70, "r": 20, "t": 70, "b": 40},
                      legend={"orientation": "h", "y": 1.02, "yanchor": "bottom"},
                      hovermode="x unified")
    return fig


def transitions_table(df: pd.DataFrame) -> pd.DataFrame:
    """Rows where a transition fired: step, transition, the regime it led to, and why."""
    fired = df.loc[df["transition"].astype(str) != "", ["step", "transition", "regime", "cause"]]
    return fired.astype({"transition": str, "regime": str, "cause": str}).reset_index(drop=True)


# --- trajectories on 2-D landscapes -------------------------------------------------------

UNGUARDED_COLOR = "#555555"


def trajectory_figure(paths: pd.DataFrame, land, frames: int = 60, height: int = 620):
    """Contours of the landscape and every path, animated with play/pause and a step slider.

    Plain paths are grey and dashed; guarded paths are drawn as markers coloured by the
    regime the guard was in at that step (SVG traces: no WebGL context is used).
    """
    import plotly.graph_objects as go

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
        fig.add_trace(_path_trace(g, arm, lr, n_steps))
    fig.add_trace(go.Scatter(x=[land.start[0]], y=[land.start[1]], mode="markers",
                             name="start", marker={"symbol": "star", "size": 14,
                                                   "color": "#000"}))
    for name in dict.fromkeys(paths.loc[paths["arm"] == "guarded", "regime"]):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=f"regime: {name}",
                                 marker={"size": 10, "color": regime_color(name)}))
    traces = list(range(1, len(groups) + 1))
    fig.frames = [go.Frame(name=str(c), traces=traces,
                           data=[_path_trace(g, arm, lr, c) for (arm, lr), g in groups])
                  for c in cuts]
    x0, x1, y0, y1 = land.window
    fig.update_xaxes(title_text="parameter x", range=[x0, x1])
    fig.update_yaxes(title_text="parameter y", range=[y0, y1], scaleanchor="x")
    fig.update_layout(height=height, margin={"l": 60, "r": 20, "t": 60, "b": 120},
                      legend={"orientation": "h", "y": 1.02, "yanchor": "bottom"},
                      updatemenus=[_play_buttons()], sliders=[_step_slider(cuts)])
    return fig


def _path_trace(g: pd.DataFrame, arm: str, lr: float, upto: int):
    import plotly.graph_objects as go

    part = g[g["step"] <= upto]
    guarded = arm == "guarded"
    colors = [regime_color(r) for r in part["regime"]] if guarded else UNGUARDED_COLOR
    return go.Scatter(x=part["x"], y=part["y"], mode="lines+markers",
                      name=f"{'guarded' if guarded else 'plain'} lr={lr:g}",
                      line={"width": 1.5, "dash": "solid" if guarded else "dash",
                            "color": "#1f77b4" if guarded else UNGUARDED_COLOR},
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


def demo_figure(runs: pd.DataFrame, height: int = 420):
    """Home's demo: loss of the plain and guarded run (log scale), guard regimes behind."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.68, 0.32],
                        vertical_spacing=0.05)
    for arm, color, dash in (("guarded", "#1f77b4", "solid"),
                             ("plain", UNGUARDED_COLOR, "dash")):
        g = runs[runs["arm"] == arm]
        label = "unguarded" if arm == "plain" else "guarded"
        fig.add_trace(go.Scatter(x=g["step"], y=g["loss"].clip(lower=1e-12), mode="lines",
                                 name=f"{label} loss",
                                 line={"color": color, "width": 2, "dash": dash}),
                      row=1, col=1)
    guarded = runs[runs["arm"] == "guarded"]
    fig.add_trace(go.Scatter(x=guarded["step"], y=guarded["lr_scale"], mode="lines",
                             name="guard LR scale", line={"color": "#1f77b4", "shape": "hv"}),
                  row=2, col=1)
    _add_bands(fig, guarded)
    fig.update_yaxes(type="log", title_text="loss (log)", exponentformat="power", row=1, col=1)
    fig.update_yaxes(title_text="LR scale (×)", range=[0, 1.1], row=2, col=1)
    fig.update_xaxes(title_text="step", row=2, col=1)
    fig.update_layout(height=height, margin={"l": 60, "r": 20, "t": 30, "b": 40},
                      legend={"orientation": "h", "y": 1.1})
    return fig


def regime_at(df: pd.DataFrame, step: int) -> str:
    """The regime of the last logged row at or before `step` (the first row's if none)."""
    i = int(np.searchsorted(df["step"].to_numpy(), step, side="right")) - 1
    return str(df["regime"].iloc[max(i, 0)])


def compare_summary(outs: list[pd.DataFrame], names: list[str]) -> pd.DataFrame:
    """One row per replayed spec: steps per regime, transitions, skips, lowest LR scale."""
    rows = []
    for name, out in zip(names, outs):
        counts = out["regime"].astype(str).value_counts()
        rows.append({"spec": f"{name}: {out.attrs.get('spec', '')}",
                     "transitions": int((out["transition"].astype(str) != "").sum()),
                     "skipped": int(out["skipped"].sum()),
                     "min LR scale": float(out["lr_scale"].min()),
                     **{f"steps {r}": int(counts.get(r, 0)) for r in out["regime"].cat.categories}})
    return pd.DataFrame(rows).fillna(0)


# --- live training ------------------------------------------------------------------------
# Vega-Lite, not plotly: Streamlit 1.67 gives a plotly chart an element id derived from its
# figure, so a chart redrawn every second is remounted every second (it flashes and loses
# zoom; streamlit PR #16052). A Vega-Lite chart whose spec stays the same while its named
# datasets change is updated in place. Canvas rendering: no WebGL context is used.

GUARDED_COLOR = "#1f77b4"
PLAIN_COLOR = "#d62728"
LIVE_POINTS = 2000  # per series drawn; MinMaxLTTB keeps the spikes
_ARM_SCALE = {"domain": ["guarded", "plain"], "range": [GUARDED_COLOR, UNGUARDED_COLOR]}
_AXIS = {"minExtent": 56, "maxExtent": 56}  # the same y-axis width: the panels line up
_LEGEND = {"orient": "top", "direction": "horizontal", "titleOrient": "left"}
_RUN_LEGEND = {"orient": "top-right", "fillColor": "rgba(255,255,255,0.7)", "padding": 4}


def live_charts(guarded: pd.DataFrame, plain: pd.DataFrame) -> list[dict]:
    """Three Vega-Lite specs for a live run: loss and grad norm of both arms (non-finite
    steps as strips along the top), and the guard's LR scale with skipped updates (×).
    Regime bands of the guarded run sit behind every panel; a dashed rule marks each step
    from which an edited spec decided. Only the named datasets change between redraws."""
    both = pd.concat([_live_rows(guarded, "guarded"), _live_rows(plain, "plain")],
                     ignore_index=True)
    bands, edits = _live_bands(guarded), _spec_edits(guarded)
    return [
        _arm_panel("loss", "loss (nats)", both, bands, _nonfinite(guarded, plain, "loss"),
                   edits, height=240, legend=True),
        _arm_panel("grad_norm", "grad norm (L2, log)", both, bands,
                   _nonfinite(guarded, plain, "grad_norm"), edits, height=170, log=True),
        _scale_panel(guarded, bands, edits, height=150),
    ]


def _spec_edits(guarded: pd.DataFrame) -> pd.DataFrame:
    """Guarded steps decided by a different spec than the step before (live edits)."""
    if "spec_hash" not in guarded or not len(guarded):
        return pd.DataFrame(columns=["step", "spec"])
    h = guarded["spec_hash"].astype(str)
    changed = guarded.loc[h.ne(h.shift()) & h.shift().notna(), ["step"]]
    return changed.assign(spec=h[changed.index]).astype({"step": float})


def _edit_layer() -> dict:
    return {"data": {"name": "edits"},
            "mark": {"type": "rule", "color": "#000", "strokeDash": [4, 3]},
            "encoding": {"x": {"field": "step", "type": "quantitative"},
                         "tooltip": [{"field": "step", "title": "spec edited at step"},
                                     {"field": "spec", "title": "new spec hash"}]}}


def _live_rows(df: pd.DataFrame, arm: str) -> pd.DataFrame:
    """step, arm, loss, grad_norm, downsampled for display (the union of both columns)."""
    cols = ["step", "loss", "grad_norm"]
    if not len(df):
        return pd.DataFrame(columns=[*cols, "arm"])
    step = df["step"].to_numpy(np.float64)
    keep = np.union1d(*(display_index(step, pd.to_numeric(df[c], errors="coerce")
                                      .to_numpy(np.float64), LIVE_POINTS)
                        for c in ("loss", "grad_norm")))
    out = df.iloc[keep][cols].astype(float)
    out[["loss", "grad_norm"]] = out[["loss", "grad_norm"]].where(
        np.isfinite(out[["loss", "grad_norm"]]))
    return out.assign(arm=arm)


def _live_bands(guarded: pd.DataFrame) -> pd.DataFrame:
    """Runs of the guarded run's regimes other than its starting one."""
    if not len(guarded):
        return pd.DataFrame(columns=["start", "end", "regime"])
    seg = regime_segments(guarded.astype({"regime": str}))
    return seg[seg["regime"] != starting_regime(guarded)].tail(MAX_BANDS).reset_index(drop=True)


def _nonfinite(guarded: pd.DataFrame, plain: pd.DataFrame, col: str) -> pd.DataFrame:
    """Runs of non-finite `col` per arm: start, end, arm."""
    rows = []
    for arm, df in (("guarded", guarded), ("plain", plain)):
        if not len(df):
            continue
        step = df["step"].to_numpy()
        bad = ~np.isfinite(pd.to_numeric(df[col], errors="coerce").to_numpy(np.float64))
        edges = np.diff(np.concatenate([[0], bad.astype(np.int8), [0]]))
        for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1):
            rows.append({"start": step[a] - 0.5, "end": step[b] + 0.5, "arm": arm})
    return pd.DataFrame(rows[-MAX_BANDS:], columns=["start", "end", "arm"])


def _band_layer(legend: bool = False) -> dict:
    names = list(REGIME_COLORS)
    return {"data": {"name": "bands"}, "mark": {"type": "rect", "opacity": 0.2},
            "encoding": {"x": {"field": "start", "type": "quantitative"},
                         "x2": {"field": "end"},
                         "color": {"field": "regime", "type": "nominal", "title": "regime",
                                   "legend": _LEGEND if legend else None,
                                   "scale": {"domain": names,
                                             "range": [REGIME_COLORS[n] for n in names]}},
                         "tooltip": [{"field": "regime"}, {"field": "start", "title": "from"},
                                     {"field": "end", "title": "to"}]}}


def _x(title: str = "") -> dict:
    return {"field": "step", "type": "quantitative", "title": title or None,
            "scale": {"zero": False, "nice": False}}


def _arm_panel(col: str, title: str, rows: pd.DataFrame, bands: pd.DataFrame,
               bad: pd.DataFrame, edits: pd.DataFrame, height: int, log: bool = False,
               legend: bool = False) -> dict:
    y = {"field": col, "type": "quantitative", "title": title, "axis": _AXIS,
         "scale": {"type": "log"} if log else {"zero": False}}
    line = {"data": {"name": "rows"},
            "mark": {"type": "line", "strokeWidth": 1.5, "invalid": "break-paths-show-domains"},
            "encoding": {"x": _x(), "y": y,
                         "color": {"field": "arm", "type": "nominal", "title": "run",
                                   "scale": _ARM_SCALE,
                                   "legend": _RUN_LEGEND if legend else None},
                         "strokeDash": {"field": "arm", "type": "nominal", "legend": None,
                                        "scale": {"domain": ["guarded", "plain"],
                                                  "range": [[1, 0], [5, 3]]}},
                         "tooltip": [{"field": "arm"}, {"field": "step"},
                                     {"field": col, "format": ".4g"}]}}
    strips = {"data": {"name": "bad"},
              "mark": {"type": "rect", "opacity": 0.85},
              "encoding": {"x": {"field": "start", "type": "quantitative"},
                           "x2": {"field": "end"}, "y": {"value": 0},
                           "color": {"field": "arm", "type": "nominal", "legend": None,
                                     "scale": {"domain": ["guarded", "plain"],
                                               "range": [GUARDED_COLOR, PLAIN_COLOR]}},
                           "y2": {"value": 5},
                           "tooltip": [{"field": "arm", "title": f"non-finite {col}"},
                                       {"field": "start", "title": "from"},
                                       {"field": "end", "title": "to"}]}}
    return {"height": height,
            "datasets": {"rows": rows, "bands": bands, "bad": bad, "edits": edits},
            "layer": [_band_layer(legend), _edit_layer(), line, strips],
            "resolve": {"scale": {"color": "independent"}}}


def _scale_panel(guarded: pd.DataFrame, bands: pd.DataFrame, edits: pd.DataFrame,
                 height: int) -> dict:
    cols = ["step", "lr_scale", "skipped"]
    g = guarded[cols].copy() if len(guarded) else pd.DataFrame(columns=cols)
    if len(g):
        g = g.iloc[display_index(g["step"].to_numpy(np.float64),
                                 g["lr_scale"].to_numpy(np.float64), LIVE_POINTS)]
    skips = g.loc[g["skipped"].astype(bool), ["step"]].assign(y=0.0)
    line = {"data": {"name": "scale"},
            "mark": {"type": "line", "interpolate": "step-after", "color": GUARDED_COLOR},
            "encoding": {"x": _x("step"),
                         "y": {"field": "lr_scale", "type": "quantitative",
                               "title": "guard LR scale (×)", "axis": _AXIS,
                               "scale": {"domain": [0, 1.05]}},
                         "tooltip": [{"field": "step"}, {"field": "lr_scale", "format": ".3g"}]}}
    crosses = {"data": {"name": "skips"},
               "mark": {"type": "point", "shape": "cross", "color": regime_color("skip"),
                        "size": 60, "filled": True},
               "encoding": {"x": _x("step"), "y": {"field": "y", "type": "quantitative"},
                            "tooltip": [{"field": "step", "title": "skipped update"}]}}
    return {"height": height,
            "datasets": {"scale": g[["step", "lr_scale"]].astype(float), "skips": skips,
                         "bands": bands, "edits": edits},
            "layer": [_band_layer(), _edit_layer(), line, crosses]}
# --- LR stress suite ------------------------------------------------------------------------

#: One colour per stress arm; the guard keeps the guarded blue, plain AdamW the unguarded grey.
ARM_COLORS = {"adamw": UNGUARDED_COLOR, "clip": "#8c564b", "zclip": "#e377c2",
              "skipstep": "#9467bd", "guard": "#1f77b4", "cosine": "#bcbd22",
              "lr_matched": "#17becf"}
_REF_DASH = {"entropy floor": "dash", "unigram": "dot"}


def arm_color(arm: str) -> str:
    return ARM_COLORS.get(arm, regime_color(arm))


def _reference_lines(fig, reference: dict[str, float], rows: int = 1, cols: int = 1) -> None:
    shapes, notes = [], []
    for label, value in reference.items():
        for i in range(rows * cols):
            xa, ya = ("x", "y") if i == 0 else (f"x{i + 1}", f"y{i + 1}")
            shapes.append({"type": "line", "xref": f"{xa} domain", "x0": 0, "x1": 1,
                           "yref": ya, "y0": value, "y1": value,
                           "line": {"color": "#333", "dash": _REF_DASH.get(label, "dot"),
                                    "width": 1}})
        notes.append({"xref": "x domain", "x": 1, "yref": "y", "y": value, "yanchor": "bottom",
                      "xanchor": "right", "showarrow": False, "font": {"size": 10},
                      "text": f"{label} {value:.3f}"})
    fig.update_layout(shapes=shapes, annotations=list(fig.layout.annotations) + notes)


def stress_loss_figure(report: pd.DataFrame, reference: dict[str, float] | None = None,
                       height: int = 460):
    """Final validation loss against the LR per arm (mean ± std over seeds). The y axis stops
    at 1.5x the unigram level: a cell above it (or non-finite: its weights blew up) is an ×
    on the top edge, its value in the hover."""
    import plotly.graph_objects as go

    ref = reference or {}
    finite = report["val_loss"][np.isfinite(report["val_loss"])]
    cap = 1.5 * ref.get("unigram", float(finite.median()) if len(finite) else 1.0)
    cap = min(cap, float(finite.max()) * 1.05) if len(finite) and finite.max() < cap else cap
    fig = go.Figure()
    for arm, g in report.groupby("arm", sort=False):
        v = g["val_loss"].to_numpy(float)
        out = ~np.isfinite(v) | (v > cap)
        fig.add_trace(go.Scatter(
            x=g["lr"], y=np.where(out, cap, v), mode="lines+markers", name=arm,
            line={"color": arm_color(arm), "width": 2.5 if arm == "guard" else 1.5},
            marker={"symbol": np.where(out, "x", "circle"), "size": np.where(out, 11, 7)},
            error_y={"type": "data", "array": g["val_std"].where(~out).fillna(0), "width": 3},
            customdata=v, hovertemplate="lr %{x:g}<br>val loss %{customdata:.4g}<extra>"
                                        + arm + "</extra>"))
    _reference_lines(fig, ref)
    fig.update_xaxes(type="log", title_text="peak learning rate", exponentformat="power")
    fig.update_yaxes(title_text="final validation loss (nats)", range=[None, cap * 1.03])
    fig.update_layout(height=height, margin={"l": 60, "r": 20, "t": 40, "b": 50},
                      title="Final validation loss vs LR (× = off the top or non-finite)",
                      legend={"orientation": "h", "y": -0.18})
    return fig


def stress_curves_figure(curves: pd.DataFrame, reference: dict[str, float] | None = None,
                         cols: int = 3, smooth: int = 10, height_per_row: int = 260):
    """Training loss curves, one panel per LR, one line per arm (mean over seeds of a
    `smooth`-step rolling mean); the y range runs from just below the lowest curve or
    reference level to twice the unigram level."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    lrs = sorted(curves["lr"].unique()) if len(curves) else []
    rows = max(1, -(-len(lrs) // cols))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[f"lr {lr:g}" for lr in lrs],
                        shared_xaxes=True, vertical_spacing=0.1, horizontal_spacing=0.05)
    shown: set[str] = set()
    lowest = math.inf
    for i, lr in enumerate(lrs):
        for arm, g in curves[curves["lr"] == lr].groupby("arm", sort=False):
            y = (g.assign(v=g.groupby("seed")["model_loss"].transform(
                lambda s: s.rolling(smooth, min_periods=1).mean()))
                 .groupby("step")["v"].mean())
            finite = y[np.isfinite(y)]
            lowest = min(lowest, float(finite.min()) if len(finite) else math.inf)
            fig.add_trace(go.Scatter(x=y.index, y=y.to_numpy(), mode="lines", name=arm,
                                     legendgroup=arm, showlegend=arm not in shown,
                                     line={"color": arm_color(arm), "width": 1.3}),
                          row=i // cols + 1, col=i % cols + 1)
            shown.add(arm)
    _reference_lines(fig, reference or {}, rows, cols)
    ref = reference or {}
    hi = 2 * ref.get("unigram", 0) or None
    levels = [v for v in (*ref.values(), lowest) if math.isfinite(v)]
    lo = 0.9 * min(levels) if levels else None
    fig.update_yaxes(range=[lo, hi] if hi else None)
    fig.update_xaxes(title_text="step", row=rows)
    height = height_per_row * rows + 130
    fig.update_layout(height=height, title="Training loss per LR",
                      margin={"l": 50, "r": 20, "t": 70, "b": 90},
                      legend={"orientation": "h", "yanchor": "top",
                              "y": -50 / (height - 160)})
    return fig


def stress_events_figure(report: pd.DataFrame, height: int = 360):
    """Per arm against the LR: the first divergence step (none drawn = never diverged) and
    the mean number of steps the arm intervened on (clip, skip, LR cut …)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=["first divergence step", "steps with an intervention"])
    for arm, g in report.groupby("arm", sort=False):
        style = {"color": arm_color(arm)}
        fig.add_trace(go.Scatter(x=g["lr"], y=g["first_diverged_step"].astype(float),
                                 mode="markers", name=arm, legendgroup=arm, marker=style),
                      row=1, col=1)
        fig.add_trace(go.Scatter(x=g["lr"], y=g["interventions"], mode="lines+markers",
                                 name=arm, legendgroup=arm, showlegend=False, line=style),
                      row=1, col=2)
    fig.update_xaxes(type="log", title_text="peak learning rate", exponentformat="power")
    fig.update_yaxes(title_text="step", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="steps", rangemode="tozero", row=1, col=2)
    if not np.isfinite(report["first_diverged_step"].astype(float)).any():
        fig.add_annotation(text="no cell diverged in this grid", xref="x domain",
                           yref="y domain", x=0.5, y=0.5, showarrow=False,
                           font={"size": 14, "color": "#666"})
    fig.update_layout(height=height, margin={"l": 60, "r": 20, "t": 40, "b": 50},
                      legend={"orientation": "h", "y": -0.25})
    return fig
