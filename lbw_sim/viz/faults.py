"""Figures of the fault grid: loss curves per fault against the fault-free runs, and the
guard's regime bands per fault. Colours come from `lbw_sim.viz` (one table for all pages).

    fault_curves_figure(curves, task="gpt")     # panels fault x severity, a line per arm
    guard_regimes_figure(curves, task="gpt")    # one band row per fault and severity
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lbw_sim.bench.fault_grid import FAULT_NAMES, SMOOTH, smooth
from lbw_sim.bench.fault_report import OUTPUT_FILES, write_tables
from lbw_sim.guard.spec import GuardSpec
from lbw_sim.viz.common import color_lookup
from lbw_sim.viz.stress import arm_color


def _mean_curve(g: pd.DataFrame, col: str = "model_loss") -> pd.Series:
    """Per step, the mean over seeds of each seed's smoothed curve (non-finite stays inf)."""
    parts = [pd.Series(smooth(s[col].to_numpy(float)), index=s["step"].to_numpy())
             for _, s in g.groupby("seed")]
    return pd.concat(parts, axis=1).mean(axis=1) if parts else pd.Series(dtype=float)


def fault_curves_figure(curves: pd.DataFrame, task: str | None = None,
                        height_per_row: int = 230):
    """Training loss (a centred {SMOOTH}-step mean, mean over seeds) per fault (rows) and
    severity (columns): each arm solid, its own fault-free run dotted in the same colour;
    the fault's start is a grey line. The y range stops at twice the fault-free level. An
    arm whose curve went non-finite gets an × where it broke off (at the top edge when its
    last value is off the chart), so it is marked rather than missing."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if curves.empty:
        return go.Figure().update_layout(title="No loss curves (no trace files)")
    task = task or str(curves["task"].iloc[0])
    c = curves[curves["task"] == task]
    faults = [f for f in FAULT_NAMES if f in set(c["fault"])]
    sevs = {f: sorted(c.loc[c["fault"] == f, "severity"].unique()) for f in faults}
    rows = max(1, len(faults))
    cols = max([len(v) for v in sevs.values()] + [1])  # a grid may run one severity of each
    titles = [f"{f} {sevs[f][j]:g}" if j < len(sevs[f]) else "" for f in faults
              for j in range(cols)]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, shared_xaxes=True,
                        vertical_spacing=min(0.08, 0.5 / rows), horizontal_spacing=0.06)
    clean = {arm: _mean_curve(g) for arm, g in c[c["fault"] == "none"].groupby("arm")}
    level = [float(np.nanmedian(v[np.isfinite(v)])) for v in clean.values() if len(v)]
    low = [float(v[np.isfinite(v)].min()) for v in clean.values() if np.isfinite(v).any()]
    shown: set[str] = set()
    breaks: list[tuple[int, int, str, float, float]] = []  # row, col, arm, step, last value
    for i, f in enumerate(faults):
        for j, sev in enumerate(sevs[f]):
            g = c[(c["fault"] == f) & (c["severity"] == sev)]
            for arm, ga in g.groupby("arm", sort=False):
                y = _mean_curve(ga)
                raw = ga.loc[~np.isfinite(ga["model_loss"].to_numpy(float)), "step"]
                if len(raw):
                    before = y[(y.index < raw.min()) & np.isfinite(y.to_numpy(float))]
                    breaks.append((i + 1, j + 1, arm, float(raw.min()),
                                   float(before.iloc[-1]) if len(before) else np.nan))
                color = arm_color(arm)
                fig.add_scatter(x=y.index, y=y.to_numpy(), mode="lines", name=arm,
                                legendgroup=arm, showlegend=arm not in shown,
                                line={"color": color, "width": 1.5}, row=i + 1, col=j + 1)
                shown.add(arm)
                if arm in clean:
                    ref = clean[arm]
                    fig.add_scatter(x=ref.index, y=ref.to_numpy(), mode="lines",
                                    name=f"{arm} fault-free", legendgroup=arm,
                                    showlegend=False, hoverinfo="skip",
                                    line={"color": color, "width": 1, "dash": "dot"},
                                    row=i + 1, col=j + 1)
            if len(g) and "fault_start" in g:
                fig.add_vline(x=int(g["fault_start"].iloc[0]), row=i + 1, col=j + 1,
                              line={"color": "#999", "width": 1})
    top = 2.0 * max(level) if level else None
    if level and low:
        fig.update_yaxes(range=[0.95 * min(low), top])
    for row, col, arm, step, last in breaks:  # a non-finite arm is marked, not dropped
        y = top if top is not None and not (last <= top) else last
        fig.add_scatter(x=[step], y=[y if np.isfinite(y) else top], mode="markers",
                        name=f"{arm} non-finite", legendgroup=arm, showlegend=False,
                        marker={"symbol": "x", "size": 11, "color": arm_color(arm),
                                "line": {"width": 1, "color": "#000"}},
                        hovertemplate=f"{arm}: non-finite from step {step:g}<extra></extra>",
                        row=row, col=col)
    # The legend sits in the bottom margin (container coordinates): clear of the title,
    # the subplot titles and the data.
    fig.update_layout(height=height_per_row * rows + 120, title=f"{task}: training loss per "
                      "fault (solid) against each arm's fault-free run (dotted); × = went "
                      "non-finite",
                      margin={"t": 80, "l": 50, "r": 20, "b": 80},
                      legend={"orientation": "h", "yref": "container", "y": 0.0,
                              "yanchor": "bottom", "x": 0.0})
    return fig


def guard_regimes_figure(curves: pd.DataFrame, task: str | None = None, seed: int | None = None,
                         height: int | None = None, spec: GuardSpec | None = None):
    """The guard's regime per step, one band row per (fault, severity), first seed shown:
    where it left `nominal`, for how long, and through which regimes. Colours come from
    `spec` (the grid's guard: the shipped default unless given)."""
    import plotly.graph_objects as go

    regime_color = color_lookup(spec or GuardSpec.default())

    g = curves[curves["arm"] == "guard"] if len(curves) else curves
    if g.empty or "regime" not in g:
        return go.Figure().update_layout(title="No guard traces")
    task = task or str(g["task"].iloc[0])
    g = g[g["task"] == task]
    seed = int(g["seed"].min()) if seed is None else seed
    g = g[g["seed"] == seed]
    order = [("none", 0.0)] + [(f, s) for f in FAULT_NAMES
                               for s in sorted(g.loc[g["fault"] == f, "severity"].unique())]
    order = [k for k in order if ((g["fault"] == k[0]) & (g["severity"] == k[1])).any()]
    labels = ["fault-free" if f == "none" else f"{f} {s:g}" for f, s in order]
    fig = go.Figure()
    shown: set[str] = set()
    for label, (f, s) in zip(labels, order):
        t = g[(g["fault"] == f) & (g["severity"] == s)].sort_values("step")
        reg = t["regime"].astype(str).to_numpy()
        step = t["step"].to_numpy()
        cut = np.flatnonzero(reg[1:] != reg[:-1]) + 1
        starts, ends = np.r_[0, cut], np.r_[cut, len(reg)]
        for a, b in zip(starts, ends):
            name = reg[a]
            fig.add_bar(y=[label], x=[float(step[b - 1] - step[a] + 1)], base=[float(step[a])],
                        orientation="h", name=name, legendgroup=name,
                        showlegend=name not in shown, marker_color=regime_color(name),
                        hovertemplate=f"{label}: {name} steps {step[a]}–{step[b - 1]}"
                                      "<extra></extra>")
            shown.add(name)
    # The legend runs along the bottom margin: a side legend on a few band rows is cut
    # to two entries with a scroll bar.
    fig.update_layout(barmode="overlay", height=height or 150 + 28 * len(labels),
                      title=f"{task}: guard regimes per fault (seed {seed})",
                      xaxis_title="step", yaxis={"autorange": "reversed"},
                      margin={"t": 60, "l": 120, "r": 20, "b": 90}, bargap=0.15,
                      legend={"orientation": "h", "yref": "container", "y": 0.0,
                              "yanchor": "bottom", "x": 0.0})
    return fig


__all__ = ["fault_curves_figure", "guard_regimes_figure", "write_report", "SMOOTH"]


def write_report(out: str | Path, lrs: dict[str, float] | None = None) -> list[Path]:
    """The report folder: table.md and curves (`fault_report.write_tables`) and the two HTML
    figures, one figure per task each (plotly.js embedded once: the files work offline)."""
    out = Path(out)
    result = write_tables(out, lrs)
    for path, draw in ((out / OUTPUT_FILES[2], fault_curves_figure),
                       (out / OUTPUT_FILES[3], guard_regimes_figure)):
        curves = result.curves
        tasks = list(dict.fromkeys(curves["task"])) if len(curves) else [None]
        parts = [draw(curves, task).to_html(full_html=False, include_plotlyjs=i == 0)
                 for i, task in enumerate(tasks)]
        path.write_text("<html><head><meta charset='utf-8'></head><body>" + "".join(parts)
                        + "</body></html>", encoding="utf-8")
    return [out / f for f in OUTPUT_FILES if (out / f).is_file()]
