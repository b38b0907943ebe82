"""What every figure shares: display downsampling, lines and rectangles as plain dicts, and
the regime bands behind a trace, coloured from the spec (`lbw_sim.guard.palette`).

Computation is never downsampled; only what is drawn is (MinMaxLTTB keeps the extremes,
so a one-step spike survives in a 1,000,000-step trace drawn with 4,000 points).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lbw_sim.guard.analysis import regime_segments, starting_regime
from lbw_sim.guard.palette import (  # the arm greys, re-exported for every figure
    GUARDED_COLOR,  # noqa: F401
    UNGUARDED_COLOR,  # noqa: F401
    fallback_color,
    regime_colors,
)
from lbw_sim.guard.spec import GuardSpec

MAX_POINTS = 4000
MAX_BANDS = 400


def color_lookup(spec: GuardSpec):
    """name -> colour for `spec`'s regimes, with the stable fallback for other names."""
    colors = regime_colors(spec)
    return lambda name: colors.get(name) or fallback_color(name)


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
    """A translucent horizontal strip across subplot `row` (a hysteresis band)."""
    xa, ya = _axes(row)
    return {"type": "rect", "xref": f"{xa} domain", "x0": 0, "x1": 1, "yref": ya, "y0": low,
            "y1": high, "fillcolor": color, "opacity": 0.13, "line": {"width": 0},
            "layer": "below"}


def add_shapes(fig, shapes: list[dict], notes: list[dict | None] = ()) -> None:
    """Append shapes and annotations in one layout update."""
    fig.update_layout(shapes=[*fig.layout.shapes, *shapes],
                      annotations=[*fig.layout.annotations, *(n for n in notes if n)])


def add_regime_bands(fig, df: pd.DataFrame, spec: GuardSpec, shapes: list[dict] | None = None,
                     notes: list[dict | None] = ()) -> None:
    """Regime bands behind every row (the starting regime unshaded), plus `shapes`.

    One paper-high rectangle per run covers all rows (the x axes are shared), and every
    shape is set in a single layout update: plotly validates each shape it is given.
    """
    import plotly.graph_objects as go

    color = color_lookup(spec)
    seg = regime_segments(df)
    quiet = seg["regime"] == starting_regime(df)
    loud = seg[~quiet]
    if len(loud) > MAX_BANDS:
        loud = loud.loc[(loud["end"] - loud["start"]).nlargest(MAX_BANDS).index]
    bands = [{"type": "rect", "xref": "x", "x0": r.start, "x1": r.end, "yref": "paper",
              "y0": 0, "y1": 1, "layer": "below", "fillcolor": color(r.regime),
              "opacity": 0.18, "line": {"width": 0}} for r in loud.itertuples()]
    add_shapes(fig, [*bands, *(shapes or [])], notes)
    for name in dict.fromkeys(seg["regime"]):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=f"regime: {name}",
                                 marker={"size": 10, "symbol": "square", "color": color(name)}))
