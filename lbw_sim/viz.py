"""Plotly figures of traces and regimes, shared by the studio pages and notebooks.

Computation is never downsampled; only what is drawn is (MinMaxLTTB keeps the extremes,
so a one-step spike survives in a 1,000,000-step trace drawn with 4,000 points).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: One colour per regime, the same on every page.
REGIME_COLORS = {
    "nominal": "#2ca02c", "watch": "#bcbd22", "intervene": "#ff7f0e", "recover": "#1f77b4",
    "skip": "#9467bd", "rollback": "#d62728", "stop": "#000000",
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
    bad = np.flatnonzero(~finite)
    return np.union1d(idx, bad[:: max(1, len(bad) // 200)]) if len(bad) else idx


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
    for i, col in enumerate(panels, start=1):
        y = pd.to_numeric(df[col], errors="coerce").to_numpy(np.float64)
        idx = display_index(step, y)
        fig.add_trace(go.Scattergl(x=step[idx], y=y[idx], mode="lines", name=col,
                                   line={"width": 1.2}), row=i, col=1)
        fig.update_yaxes(title_text=_UNITS.get(col, col), row=i, col=1)
        for label, value in (thresholds or {}).get(col, {}).items():
            fig.add_hline(y=value, line_dash="dot", line_color="#555", row=i, col=1,
                          annotation_text=label, annotation_position="top left")
    if "regime" in df.columns:
        _add_bands(fig, df)
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


def _add_bands(fig, df: pd.DataFrame) -> None:
    import plotly.graph_objects as go

    seg = regime_segments(df)
    quiet = seg["regime"] == df["regime"].astype(str).mode().iloc[0]
    loud = seg[~quiet]
    if len(loud) > MAX_BANDS:
        loud = loud.loc[(loud["end"] - loud["start"]).nlargest(MAX_BANDS).index]
    for row in loud.itertuples():
        fig.add_vrect(x0=row.start, x1=row.end, fillcolor=regime_color(row.regime),
                      opacity=0.18, line_width=0, layer="below")
    for name in dict.fromkeys(seg["regime"]):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=f"regime: {name}",
                                 marker={"size": 10, "symbol": "square",
                                         "color": regime_color(name)}))


_UNITS = {"loss": "loss (nats)", "grad_norm": "grad norm (L2)", "lr_scale": "LR scale (×)",
          "lr": "learning rate", "val_loss": "val loss (nats)", "update_norm": "update norm"}
