"""Plotly figures of one annotated trace: stacked telemetry panels, each signal against its
entry and exit thresholds with the hysteresis band shaded, and the guard's control outputs;
the regime the guard was in runs behind every panel, in the spec's colours.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lbw_sim.guard.palette import SKIP
from lbw_sim.guard.spec import GuardSpec
from lbw_sim.viz.common import (
    add_regime_bands,
    add_shapes,
    color_lookup,
    display_index,
    hline,
    hrect,
)


def trace_figure(df: pd.DataFrame, spec: GuardSpec,
                 panels: tuple[str, ...] = ("loss", "grad_norm", "lr_scale"),
                 title: str = "", height: int = 560, thresholds: dict | None = None):
    """Stacked panels sharing the step axis, regime bands in `spec`'s colours behind them.

    `thresholds` maps a panel name to {label: value} lines (e.g. entry and exit of a band).
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    panels = tuple(p for p in panels if p in df.columns)
    fig = make_subplots(rows=len(panels), cols=1, shared_xaxes=True, vertical_spacing=0.04)
    step = df["step"].to_numpy()
    shapes, notes = [], []
    marked = False
    for i, col in enumerate(panels, start=1):
        y = pd.to_numeric(df[col], errors="coerce").to_numpy(np.float64)
        idx = display_index(step, y)
        fig.add_trace(go.Scattergl(x=step[idx], y=y[idx], mode="lines", name=_LABELS.get(col, col),
                                   line={"width": 1.2, "color": _COLORS.get(col)}), row=i, col=1)
        bad = ~np.isfinite(y)
        if bad.any() and col != "lr_scale" and np.isfinite(y).any():
            top = float(np.nanmax(np.where(bad, np.nan, y)))   # a NaN step, however short,
            fig.add_trace(go.Scattergl(                          # is a mark on the top edge
                x=step[bad], y=np.full(int(bad.sum()), top), mode="markers",
                name="non-finite (NaN/inf)", legendgroup="nonfinite", showlegend=not marked,
                marker={"symbol": "x", "size": 8, "color": NONFINITE},
                hovertemplate=f"{col} non-finite at step %{{x}}<extra></extra>"), row=i, col=1)
            marked = True
        fig.update_yaxes(title_text=_UNITS.get(col, col), row=i, col=1)
        for label, v in (thresholds or {}).get(col, {}).items():
            line, note = hline(i, v, "#555", "dot", label)
            shapes.append(line)
            notes.append(note)
    if "regime" in df.columns:
        add_regime_bands(fig, df, spec, shapes, notes)
    else:
        add_shapes(fig, shapes, notes)
    if "skipped" in df.columns and "lr_scale" in panels and df["skipped"].any():
        sk = df[df["skipped"].astype(bool)]
        fig.add_trace(go.Scattergl(x=sk["step"], y=sk["lr_scale"], mode="markers",
                                   name="skipped", marker={"symbol": "x", "size": 7,
                                                           "color": SKIP}),
                      row=panels.index("lr_scale") + 1, col=1)
    fig.update_xaxes(title_text="step", row=len(panels), col=1)
    fig.update_layout(height=height, title=title or None,
                      margin={"l": 60, "r": 20, "t": 40, "b": 130}, legend=LEGEND_BELOW,
                      hovermode="x unified")
    return fig


#: Legends sit at the bottom of the figure, below the x-axis title (container units, so the
#: gap does not depend on the plot's height): clear of the data and of the axis.
LEGEND_BELOW = {"orientation": "h", "yref": "container", "y": 0.0, "yanchor": "bottom",
                "x": 0}


#: Each panel's line has its own colour (the legend tells them apart); non-finite steps red.
_COLORS = {"loss": "#1f3b73", "grad_norm": "#2a9d8f", "lr_scale": "#000000"}
_LABELS = {"loss": "loss", "grad_norm": "gradient norm", "lr_scale": "LR scale applied"}
NONFINITE = "#d62728"

_UNITS = {"loss": "loss (nats)", "grad_norm": "grad norm (L2)", "lr_scale": "LR scale (×)",
          "lr": "learning rate", "val_loss": "val loss (nats)", "update_norm": "update norm"}


# --- signals against thresholds, controls, comparisons ------------------------------------

_SIGNAL_UNITS = {"ema_z": "σ (z-score)", "ratio": "× its EMA", "slope": "per step",
                 "nonfinite": "flag (0/1)", "ema": "EMA"}


def signal_unit(spec: GuardSpec, name: str) -> str:
    """Axis title for a signal: its name and what its numbers mean."""
    kind = spec.signals[name].kind if name in spec.signals else ""
    return f"{name} ({_SIGNAL_UNITS.get(kind, kind)})"


def _y_range(y: np.ndarray, levels: list[float]) -> list[float] | None:
    """A range that keeps the thresholds readable when a spike is 50× above them."""
    finite = y[np.isfinite(y)]
    if not levels or not len(finite):
        return None
    top = min(max(max(levels) * 2.0, float(np.quantile(finite, 0.995))), float(finite.max()))
    top = max(top, max(levels))                       # every entry and exit line stays in view
    bottom = min(min(levels), float(np.quantile(finite, 0.005)))
    pad = 0.08 * (top - bottom or 1.0)
    return [bottom - pad, top + pad]


def signal_figure(df: pd.DataFrame, spec: GuardSpec, signals: list[str] | None = None,
                  height_per_panel: int = 190, held: pd.DataFrame | None = None):
    """Each signal against its entry and exit thresholds; the hysteresis band is shaded.

    The band between exit and entry is filled in the colour of the regime it guards; a
    dashed line marks entry, a dotted line exit; regime bands run behind every panel. The
    raw loss comes first; a `nonfinite` flag is drawn as marks where it is 1; every entry
    and exit line is inside its panel's range. `held` (`analysis.held_not_fired`) greys the
    top strip where a condition held but its `for N` / `min_dwell` did not complete. The
    legend sits below the plot, clear of the data.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from lbw_sim.studio.bands import bands, thresholds

    names = [s for s in (signals or list(spec.signals)) if s in df.columns
             and np.isfinite(pd.to_numeric(df[s], errors="coerce")).any()]   # no empty panels
    raw = [c for c in ("loss",) if c in df.columns]
    rows = raw + names
    fig = make_subplots(rows=max(len(rows), 1), cols=1, shared_xaxes=True,
                        vertical_spacing=0.03)
    step = df["step"].to_numpy()
    all_bands, leaves, color = bands(spec), thresholds(spec), color_lookup(spec)
    shapes, notes = [], []
    for i, name in enumerate(rows, start=1):
        y = pd.to_numeric(df[name], errors="coerce").to_numpy(np.float64)
        if name in spec.signals and spec.signals[name].kind == "nonfinite":
            hit = np.flatnonzero(y > 0)           # a 0/1 flag: markers where it is 1
            fig.add_trace(go.Scattergl(x=step[hit], y=y[hit], mode="markers", name=name,
                                       marker={"symbol": "line-ns-open", "size": 10,
                                               "color": "#d62728"}, showlegend=False),
                          row=i, col=1)
            fig.update_yaxes(title_text=signal_unit(spec, name), range=[-0.2, 1.4],
                             tickvals=[0, 1], row=i, col=1)
            continue
        idx = display_index(step, y)
        fig.add_trace(go.Scattergl(x=step[idx], y=y[idx], mode="lines", name=name,
                                   line={"width": 1.1, "color": "#333"}, showlegend=False),
                      row=i, col=1)
        if name in raw:
            fig.update_yaxes(title_text=_UNITS.get(name, name), row=i, col=1)
            continue
        more, more_notes, drawn = _signal_levels(i, name, all_bands, leaves, color)
        shapes += more
        notes += more_notes
        rng = _y_range(y, [v for v, _ in drawn])
        fig.update_yaxes(title_text=signal_unit(spec, name), range=rng, row=i, col=1)
    if held is not None and len(held) and rows:
        shapes += [{"type": "rect", "xref": "x", "x0": r.start - 0.5, "x1": r.end + 0.5,
                    "yref": "y domain", "y0": 0.88, "y1": 1.0, "fillcolor": "#888",
                    "opacity": 0.55, "line": {"width": 0}} for r in held.itertuples()]
        fig.add_trace(go.Scatter(
            x=((held["start"] + held["end"]) / 2).to_numpy(), y=np.full(len(held), np.nan),
            mode="markers", name="condition held, did not fire (for / min_dwell)",
            marker={"symbol": "square", "size": 10, "color": "#888"}))
    if "regime" in df.columns:
        add_regime_bands(fig, df, spec, shapes, notes)
    else:
        add_shapes(fig, shapes, notes)
    fig.update_xaxes(title_text="step", row=max(len(rows), 1), col=1)
    fig.update_layout(height=max(height_per_panel * len(rows), 240) + 90,
                      margin={"l": 70, "r": 20, "t": 20, "b": 130}, legend=LEGEND_BELOW,
                      hovermode="x unified")
    return fig


def _signal_levels(row: int, name: str, all_bands: list, leaves: list, color_of
                   ) -> tuple[list[dict], list[dict | None], set[tuple[float, str]]]:
    """Band fills, entry (dashed) and exit (dotted) lines, and other thresholds of a signal."""
    shapes, notes, drawn = [], [], set()
    for k, b in enumerate(b for b in all_bands if b.signal == name):
        color = color_of(b.regime)
        shapes.append(hrect(row, b.low, b.high, color))
        sign_in, sign_out = (">", "<") if b.rising else ("<", ">")
        for value, dash, text, pos in (
                (b.entry, "dash", f"enter {b.regime}: {sign_in} {b.entry:g}", "top left"),
                (b.exit, "dot", f"exit ({b.leave}): {sign_out} {b.exit:g}", "bottom left")):
            if (value, dash) not in drawn:
                drawn.add((value, dash))
                line, note = hline(row, value, color, dash, text, pos)
                note["x"] = 0.01 + 0.22 * (k % 4)     # bands on one signal: labels side by side
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


def controls_figure(df: pd.DataFrame, spec: GuardSpec, height: int = 300):
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
                                                                  "color": SKIP}))
    if "regime" in df.columns:
        add_regime_bands(fig, df, spec)
    fig.update_yaxes(title_text="scale (×)", range=[-0.05, 1.1])
    fig.update_xaxes(title_text="step")
    fig.update_layout(height=height, margin={"l": 70, "r": 20, "t": 70, "b": 40},
                      legend={"orientation": "h", "y": 1.02, "yanchor": "bottom"},
                      hovermode="x unified")
    return fig

