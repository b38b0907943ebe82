"""Plotly figures of an LR stress grid (final loss vs LR, loss curves per LR, divergence and
interventions per arm) and the report folder with its two HTML figures (`write_report`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from lbw_sim.bench.stress_grid import StressResult
from lbw_sim.bench.stress_report import OUTPUT_FILES, report_table, write_tables
from lbw_sim.guard.palette import ARM_COLORS, arm_color

_REF_DASH = {"entropy floor": "dash", "unigram": "dot"}
__all__ = ["ARM_COLORS", "arm_color"]


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
    breaks: list[tuple[int, str, float, float]] = []   # panel, arm, step, last finite value
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
            bad = ~np.isfinite(g["model_loss"].to_numpy(float))
            if bad.any():                 # a run that went non-finite: marked, not dropped
                at = float(g.loc[bad, "step"].min())
                before = finite[finite.index < at]
                breaks.append((i, arm, at, float(before.iloc[-1]) if len(before) else np.nan))
    _reference_lines(fig, reference or {}, rows, cols)
    ref = reference or {}
    hi = 2 * ref.get("unigram", 0) or None
    levels = [v for v in (*ref.values(), lowest) if math.isfinite(v)]
    lo = 0.9 * min(levels) if levels else None
    fig.update_yaxes(range=[lo, hi] if hi else None)
    for i, arm, at, last in breaks:
        y = hi if hi and not last <= hi else last
        fig.add_trace(go.Scatter(
            x=[at], y=[y if np.isfinite(y) else (hi or 0.0)], mode="markers",
            name=f"{arm} non-finite", legendgroup=arm, showlegend=False,
            marker={"symbol": "x", "size": 10, "color": arm_color(arm),
                    "line": {"width": 1, "color": "#000"}},
            hovertemplate=f"{arm}: non-finite from step {at:g}<extra></extra>"),
            row=i // cols + 1, col=i % cols + 1)
    fig.update_xaxes(title_text="step", row=rows)
    height = height_per_row * rows + 130
    fig.update_layout(height=height, title="Training loss per LR (× = went non-finite)",
                      margin={"l": 50, "r": 20, "t": 70, "b": 90},
                      legend={"orientation": "h", "yanchor": "top",
                              "y": -50 / (height - 160)})
    return fig


def stress_events_figure(report: pd.DataFrame, height: int = 360):
    """Per arm against the LR: the first divergence step and the mean number of steps the
    arm intervened on (clip, skip, LR cut, capped update …). Where no cell diverged there is
    no divergence panel, and the title says so."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    diverged = bool(np.isfinite(report["first_diverged_step"].astype(float)).any())
    if diverged:
        fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                            subplot_titles=["first divergence step",
                                            "steps with an intervention"])
    else:       # no empty panel: the title says it
        fig = make_subplots(rows=1, cols=1, subplot_titles=[
            "steps with an intervention (no cell diverged in this grid)"])
    col = 2 if diverged else 1
    for arm, g in report.groupby("arm", sort=False):
        style = {"color": arm_color(arm)}
        if diverged:
            fig.add_trace(go.Scatter(x=g["lr"], y=g["first_diverged_step"].astype(float),
                                     mode="markers", name=arm, legendgroup=arm,
                                     marker=style, showlegend=False), row=1, col=1)
        fig.add_trace(go.Scatter(x=g["lr"], y=g["interventions"], mode="lines+markers",
                                 name=arm, legendgroup=arm, line=style), row=1, col=col)
    fig.update_xaxes(type="log", title_text="peak learning rate", exponentformat="power")
    if diverged:
        fig.update_yaxes(title_text="step", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="steps", rangemode="tozero", row=1, col=col)
    fig.update_layout(height=height, margin={"l": 60, "r": 20, "t": 40, "b": 50},
                      legend={"orientation": "h", "y": -0.25})
    return fig


def claim_figure(cells: pd.DataFrame, start: float, height: int = 420):
    """Final validation loss against the LR factor (x AdamW's best, log axis), one line per
    column of the claim table (`studio.claim.claim_cells`): the active controller solid and
    thick, the quiet default dashed in the same colour; Prodigy (no LR to set) a dotted level;
    the loss the fine-tune started from a dashed grey line. The y axis stops at 1.5x the start:
    a cell above it (or non-finite) is an × on the top edge, its value in the hover."""
    import plotly.graph_objects as go

    finite = cells["val_loss"][np.isfinite(cells["val_loss"])]
    cap = 1.5 * start if math.isfinite(start) else (float(finite.max()) if len(finite) else 1.0)
    cap = min(cap, float(finite.max()) * 1.05) if len(finite) and finite.max() < cap else cap
    guards = list(dict.fromkeys(cells.loc[cells["arm"] == "guard", "column"]))
    fig = go.Figure()
    for column, g in cells.groupby("column", sort=False):
        arm = str(g["arm"].iloc[0])
        v = g["val_loss"].to_numpy(float)
        out = ~np.isfinite(v) | (v > cap)
        active = arm == "guard" and column == guards[-1]
        line = {"color": arm_color(arm), "width": 3 if active else 1.5,
                "dash": "dash" if arm == "guard" and not active else
                ("dot" if arm == "prodigy" else "solid")}
        fig.add_trace(go.Scatter(
            x=g["factor"], y=np.where(out, cap, v), name=column, line=line,
            mode="lines" if arm == "prodigy" else "lines+markers",
            marker={"symbol": np.where(out, "x", "circle"), "size": np.where(out, 11, 7)},
            customdata=v, hovertemplate="%{x:g}× best LR<br>val loss %{customdata:.4g}"
                                        "<extra>" + str(column) + "</extra>"))
    if math.isfinite(start):
        fig.add_hline(y=start, line={"color": "#555", "dash": "dash", "width": 1.2},
                      annotation_text=f"started from {start:.3f}",
                      annotation_position="top left", annotation_font_size=11)
    ticks = sorted(cells.loc[cells["arm"] != "prodigy", "factor"].unique())
    fig.update_xaxes(type="log", title_text="LR ÷ AdamW's best LR", tickvals=ticks,
                     ticktext=[f"{f:g}×" for f in ticks])
    fig.update_yaxes(title_text="final validation loss", range=[None, cap * 1.03])
    fig.update_layout(height=height, margin={"l": 60, "r": 20, "t": 40, "b": 50},
                      title="Final validation loss vs LR (× = off the top or non-finite)",
                      legend={"orientation": "h", "y": -0.2})
    return fig


def write_report(result: StressResult, out: str | Path) -> list[Path]:
    """The report folder: summary.csv, table.md, reference.json (`write_tables`) and the two
    HTML figures (final loss vs LR, loss curves), plotly.js inlined so each opens offline."""
    out = Path(out)
    write_tables(result, out)
    stress_loss_figure(report_table(result.summary), result.reference).write_html(
        out / OUTPUT_FILES[2], include_plotlyjs=True)
    stress_curves_figure(result.curves, result.reference).write_html(
        out / OUTPUT_FILES[3], include_plotlyjs=True)
    return [out / f for f in OUTPUT_FILES]
