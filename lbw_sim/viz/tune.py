"""Figures of the Tune page: the trade-off of a sweep, a heat map, parallel coordinates and
the loss chart incidents are marked on. (Folded into the viz package at merge.)"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lbw_sim.studio.tune import AXES_COST, AXES_LABELLED, TITLES
from lbw_sim.viz.common import display_index

FRONT, POINT, CURRENT, INCIDENT = "#d62728", "#1f77b4", "#000000", "#ff7f0e"
#: Objectives that are shares in [0, 1].
BOUNDED = ("recall", "precision", "out_share", "mean_lr_scale")


def _short(path: str) -> str:
    return path.split(".", 1)[1] if path.startswith("thresholds.") else path


def _hover(table: pd.DataFrame, params: list[str], cols: list[str]) -> list[str]:
    parts = [table[p].map(lambda v, p=p: f"{_short(p)} = {v:.4g}") for p in params]
    parts += [table[c].map(lambda v, c=c: f"{TITLES.get(c, c)}: {v:.3g}") for c in cols]
    return ["<br>".join(row) for row in zip(*parts)]


def outcome_groups(table: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """One row per distinct outcome (equal `cols`, to 9 significant digits): the first table
    row holding it (`row`) and how many swept specs share it (`count`)."""
    key = table[cols].astype(float).round(12).map(lambda v: float(f"{v:.9g}"))
    first = key.reset_index(drop=True).drop_duplicates()
    counts = key.groupby(cols, dropna=False, sort=False).size()
    out = first.assign(row=first.index.to_numpy())
    out["count"] = [int(counts.get(tuple(r), 1)) for r in first.itertuples(index=False)] \
        if len(cols) > 1 else [int(counts.get(r, 1)) for r in first[cols[0]]]
    return out.reset_index(drop=True)


def axis_scale(values: pd.Series, bounded: bool = False) -> dict:
    """An axis fitted to the data: `log` where the values are positive and span more than
    two decades, else linear from the smallest to the largest value with a margin (a
    single value gets a small margin of its own; a 0..1 share never runs past its bounds
    by more than the margin)."""
    v = values.to_numpy(np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        return {"type": "linear"}
    lo, hi = float(v.min()), float(v.max())
    if lo > 0 and hi / lo > 100:
        return {"type": "log", "range": [np.log10(lo) - 0.15, np.log10(hi) + 0.15]}
    if hi == lo and lo == 0 and not bounded:        # one outcome at 0 (no false alarm …)
        return {"type": "linear", "range": [-0.05, 1.0]}
    single = 0.05 if bounded else abs(lo) * 0.05
    pad = single if hi == lo else 0.08 * (hi - lo)
    low, high = lo - pad, hi + pad
    if bounded:                 # a share never reads past its bounds (but the mark shows)
        low, high = max(low, -0.02), min(high, 1.02)
    elif lo >= 0:               # every objective is a count or a rate: no negative ticks
        low = max(low, -0.02 * (high or 1.0))
    return {"type": "linear", "range": [low, high]}


def tradeoff_figure(table: pd.DataFrame, params: list[str], labelled: bool,
                    current: int | None = None, height: int = 460):
    """Each distinct outcome of the sweep as a point (x: a cost, y: a benefit), sized by the
    number of swept specs that share it (the hover lists them); both axes fitted to the
    data (`axis_scale`); coloured by the third objective only where it varies. The Pareto
    front joined and ringed; the spec in use a black cross. `customdata` is a table row
    (the first of its group), for a click."""
    import plotly.graph_objects as go

    x, y, c = AXES_LABELLED if labelled else AXES_COST
    fig = go.Figure()
    groups = outcome_groups(table, [x, y, c])
    rows = groups["row"].to_numpy()
    cvals = table[c].to_numpy(np.float64)[rows]
    varies = _varies(cvals)
    hover = _hover(table.iloc[rows], params, [x, y, c])
    text = [f"{n} swept specs with this outcome, e.g.:<br>{h}" if n > 1 else h
            for n, h in zip(groups["count"], hover)]
    marker = {"size": 8 + 4 * np.sqrt(groups["count"].to_numpy() - 1), "line": {"width": 0.5,
              "color": "#fff"}, "opacity": 0.85}
    if varies:
        marker.update(color=np.nan_to_num(cvals, nan=np.nanmin(cvals)), colorscale="Viridis",
                      cmin=float(np.nanmin(cvals)), cmax=float(np.nanmax(cvals)),
                      showscale=True, colorbar={"title": {"text": TITLES[c], "side": "right"},
                                                "len": 0.8})
    else:
        marker["color"] = POINT
    name = "swept spec (size: how many share the outcome)"
    if not varies and np.isfinite(cvals).any():
        name += f"; {TITLES[c]} {cvals[np.isfinite(cvals)][0]:.4g} for all"
    fig.add_trace(go.Scatter(
        x=table[x].to_numpy()[rows], y=table[y].to_numpy()[rows], mode="markers", name=name,
        customdata=rows, text=text, hovertemplate="%{text}<extra></extra>", marker=marker))
    front = table[table["pareto"]].sort_values(x)
    if len(front):
        fig.add_trace(go.Scatter(
            x=front[x], y=front[y], mode="lines+markers", name="Pareto front",
            customdata=front.index.to_numpy(), hoverinfo="skip",
            line={"color": FRONT, "width": 1.5, "shape": "hv" if labelled else "linear"},
            marker={"size": 15, "color": "rgba(0,0,0,0)", "line": {"color": FRONT, "width": 2}}))
    if current is not None:
        fig.add_trace(go.Scatter(
            x=[table[x].iloc[current]], y=[table[y].iloc[current]], mode="markers",
            name="spec in use", customdata=[current], hoverinfo="skip",
            marker={"symbol": "x", "size": 14, "color": CURRENT}))
    fig.update_layout(
        height=height, margin={"l": 60, "r": 20, "t": 40, "b": 50},
        xaxis_title=TITLES[x], yaxis_title=TITLES[y], clickmode="event+select",
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0, "xanchor": "left"})
    fig.update_xaxes(**axis_scale(table[x], bounded=x in BOUNDED))
    fig.update_yaxes(**axis_scale(table[y], bounded=y in BOUNDED))
    return fig


def heatmap_figure(table: pd.DataFrame, px: str, py: str, metric: str, height: int = 460):
    """One metric over a two-parameter grid (missing cells: refused points)."""
    import plotly.graph_objects as go

    grid = table.pivot_table(index=py, columns=px, values=metric, aggfunc="first")
    z = grid.to_numpy(np.float64)
    varies = _varies(z)
    fig = go.Figure(go.Heatmap(
        x=grid.columns.to_numpy(), y=grid.index.to_numpy(), z=z,
        colorscale="Viridis", showscale=varies,
        colorbar={"title": {"text": TITLES.get(metric, metric), "side": "right"}},
        hovertemplate=f"{_short(px)} = %{{x:.4g}}<br>{_short(py)} = %{{y:.4g}}<br>"
                      f"{TITLES.get(metric, metric)}: %{{z:.3g}}<extra></extra>"))
    fig.update_layout(height=height, margin={"l": 60, "r": 20, "t": 40 if not varies else 20,
                                             "b": 50},
                      xaxis_title=_short(px), yaxis_title=_short(py),
                      title=None if varies else f"{TITLES.get(metric, metric)}: "
                      f"{_only(z)} at every point swept (no colour scale)")
    return fig


def _varies(values: np.ndarray) -> bool:
    """Whether the finite values take at least two distinct values (a colour scale has a
    real range); one value gets no colour bar."""
    v = np.asarray(values, np.float64)
    return len(np.unique(v[np.isfinite(v)])) > 1


def _only(values: np.ndarray) -> str:
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    return f"{v[0]:.4g}" if len(v) else "no value"


def parallel_figure(table: pd.DataFrame, params: list[str], labelled: bool,
                    height: int = 460):
    """Parallel coordinates: one axis per swept setting and per objective (HParams-style);
    lines coloured by the y objective of the trade-off chart."""
    import plotly.graph_objects as go

    _, y, _ = AXES_LABELLED if labelled else AXES_COST
    metrics = [m for m in (AXES_LABELLED if labelled else AXES_COST) if m in table]
    dims = [{"label": _short(p), "values": table[p]} for p in params]
    dims += [{"label": TITLES[m], "values": table[m].fillna(0.0)} for m in metrics]
    colour = table[y].fillna(0.0)
    line = ({"color": colour, "colorscale": "Viridis", "showscale": True}
            if _varies(colour.to_numpy()) else {"color": POINT})
    fig = go.Figure(go.Parcoords(line=line, dimensions=dims))
    fig.update_layout(height=height, margin={"l": 60, "r": 60, "t": 50, "b": 30})
    return fig


def label_figure(trace: pd.DataFrame, incidents: pd.DataFrame, height: int = 320):
    """The loss (drawn as points so a box selection picks steps) with incidents shaded."""
    import plotly.graph_objects as go

    steps = trace["step"].to_numpy(np.float64)
    loss = trace["loss"].to_numpy(np.float64) if "loss" in trace else np.zeros(len(steps))
    idx = display_index(steps, loss)
    fig = go.Figure(go.Scattergl(x=steps[idx], y=loss[idx], mode="lines+markers",
                                 name="loss", line={"width": 1, "color": POINT},
                                 marker={"size": 3, "color": POINT}))
    for _, r in incidents.iterrows():
        fig.add_vrect(x0=r["start"] - 0.5, x1=r["end"] + 0.5, fillcolor=INCIDENT, opacity=0.25,
                      line_width=0, annotation_text=str(r.get("kind") or "incident"),
                      annotation_position="top left", annotation_font_size=10)
    finite = loss[np.isfinite(loss)]
    if len(finite):
        lo, hi = np.percentile(finite, [0.5, 99.9])
        pad = 0.1 * (hi - lo or 1.0)
        fig.update_yaxes(range=[lo - pad, max(hi, finite.max() if len(finite) < 50 else hi)
                                + pad])
    fig.update_layout(height=height, margin={"l": 60, "r": 20, "t": 30, "b": 40},
                      xaxis_title="step", yaxis_title="loss", dragmode="select",
                      selectdirection="h", showlegend=False)
    return fig
