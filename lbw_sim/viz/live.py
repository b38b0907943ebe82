"""Vega-Lite specs of the live-training charts: loss and grad norm of both arms, the guard's
LR scale with skipped updates, regime bands (in the spec's colours) and spec edits.

Vega-Lite, not plotly: Streamlit 1.67 gives a plotly chart an element id derived from its
figure, so a chart redrawn every second is remounted every second (it flashes and loses
zoom; streamlit PR #16052). A Vega-Lite chart whose spec stays the same while its named
datasets change is updated in place. Canvas rendering: no WebGL context is used.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lbw_sim.guard.analysis import regime_segments, starting_regime
from lbw_sim.guard.palette import SKIP, regime_colors
from lbw_sim.guard.spec import GuardSpec
from lbw_sim.viz.common import GUARDED_COLOR, MAX_BANDS, UNGUARDED_COLOR, display_index

PLAIN_COLOR = "#d62728"
LIVE_POINTS = 2000  # per series drawn; MinMaxLTTB keeps the spikes
_ARM_SCALE = {"domain": ["guarded", "plain"], "range": [GUARDED_COLOR, UNGUARDED_COLOR]}
_AXIS = {"minExtent": 56, "maxExtent": 56}  # the same y-axis width: the panels line up
_LEGEND = {"orient": "top", "direction": "horizontal", "titleOrient": "left"}
_RUN_LEGEND = {"orient": "top-right", "fillColor": "rgba(255,255,255,0.7)", "padding": 4}


def live_charts(guarded: pd.DataFrame, plain: pd.DataFrame,
                spec: GuardSpec | None = None) -> list[dict]:
    """Three Vega-Lite specs for a live run: loss and grad norm of both arms (non-finite
    steps as strips along the top), and the guard's LR scale with skipped updates (×).
    Regime bands of the guarded run, in `spec`'s colours (Vega-Lite's own without a spec),
    sit behind every panel; a dashed rule marks each step from which an edited spec
    decided. Only the named datasets change between redraws."""
    both = pd.concat([_live_rows(guarded, "guarded"), _live_rows(plain, "plain")],
                     ignore_index=True)
    bands, edits = _live_bands(guarded), _spec_edits(guarded)
    colors = regime_colors(spec) if spec is not None else None
    return [
        _arm_panel("loss", "loss (nats)", both, bands, _nonfinite(guarded, plain, "loss"),
                   edits, colors, height=240, legend=True),
        _arm_panel("grad_norm", "grad norm (L2, log)", both, bands,
                   _nonfinite(guarded, plain, "grad_norm"), edits, colors, height=170,
                   log=True),
        _scale_panel(guarded, bands, edits, colors, height=150),
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


def _band_layer(colors: dict[str, str] | None, legend: bool = False) -> dict:
    scale = {"domain": list(colors), "range": list(colors.values())} if colors else None
    return {"data": {"name": "bands"}, "mark": {"type": "rect", "opacity": 0.2},
            "encoding": {"x": {"field": "start", "type": "quantitative"},
                         "x2": {"field": "end"},
                         "color": {"field": "regime", "type": "nominal", "title": "regime",
                                   "legend": _LEGEND if legend else None,
                                   **({"scale": scale} if scale else {})},
                         "tooltip": [{"field": "regime"}, {"field": "start", "title": "from"},
                                     {"field": "end", "title": "to"}]}}


def _x(title: str = "") -> dict:
    return {"field": "step", "type": "quantitative", "title": title or None,
            "scale": {"zero": False, "nice": False}}


def _arm_panel(col: str, title: str, rows: pd.DataFrame, bands: pd.DataFrame,
               bad: pd.DataFrame, edits: pd.DataFrame, colors: dict[str, str] | None, height: int,
               log: bool = False,
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
            "layer": [_band_layer(colors, legend), _edit_layer(), line, strips],
            "resolve": {"scale": {"color": "independent"}}}


def _scale_panel(guarded: pd.DataFrame, bands: pd.DataFrame, edits: pd.DataFrame,
                 colors: dict[str, str] | None, height: int) -> dict:
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
               "mark": {"type": "point", "shape": "cross", "color": SKIP,
                        "size": 60, "filled": True},
               "encoding": {"x": _x("step"), "y": {"field": "y", "type": "quantitative"},
                            "tooltip": [{"field": "step", "title": "skipped update"}]}}
    return {"height": height,
            "datasets": {"scale": g[["step", "lr_scale"]].astype(float), "skips": skips,
                         "bands": bands, "edits": edits},
            "layer": [_band_layer(colors), _edit_layer(), line, crosses]}
