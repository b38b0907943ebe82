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

PLAIN_COLOR = UNGUARDED_COLOR  # the plain arm: the grey it has on every page
LIVE_POINTS = 2000  # per series drawn; MinMaxLTTB keeps the spikes
_ARM_SCALE = {"domain": ["guarded", "plain"], "range": [GUARDED_COLOR, UNGUARDED_COLOR]}
_AXIS = {"minExtent": 56, "maxExtent": 56}  # the same y-axis width: the panels line up
#: Legends sit outside the plot area, never over the data: every regime of the spec below
#: it (wrapped in rows, so none is cut off at the right), the two runs above it.
_LEGEND = {"orient": "bottom", "direction": "horizontal", "titleOrient": "left",
           "columns": 6}
_RUN_LEGEND = {"orient": "top", "direction": "horizontal", "titleOrient": "left"}


def live_charts(guarded: pd.DataFrame, plain: pd.DataFrame, spec: GuardSpec | None = None,
                ended: dict[str, str] | None = None) -> list[dict]:
    """Three Vega-Lite specs for a live run: loss and grad norm of both arms (non-finite
    steps as strips along the top), and the guard's LR scale with skipped updates (×).
    Regime bands of the guarded run sit behind every panel, coloured by a scale fixed to
    every regime of `spec` (the default spec without one), so a regime keeps its colour;
    the legend lists the regimes that occurred; a dashed rule marks each step from which
    an edited spec decided.
    An arm that went non-finite for good, or whose run ended early (`ended`: arm -> why,
    as `Snapshot.ended`), gets a marker and "non-finite from step N" / "stopped at step N"
    where its line ends. Only the named datasets change between redraws."""
    both = pd.concat([_live_rows(guarded, "guarded"), _live_rows(plain, "plain")],
                     ignore_index=True)
    bands, edits = _live_bands(guarded), _spec_edits(guarded)
    colors = regime_colors(spec if spec is not None else GuardSpec.default())
    deaths = run_ends(guarded, plain, ended or {})
    return [
        _arm_panel("loss", "loss (nats)", both, bands, _nonfinite(guarded, plain, "loss"),
                   edits, colors, _death_rows(deaths, guarded, plain, "loss"), height=300,
                   legend=occurred_regimes(guarded, colors)),
        _arm_panel("grad_norm", "grad norm (L2, log)", both, bands,
                   _nonfinite(guarded, plain, "grad_norm"), edits, colors,
                   _death_rows(deaths, guarded, plain, "grad_norm"), height=170, log=True),
        _scale_panel(guarded, bands, edits, colors, height=150),
    ]


def occurred_regimes(guarded: pd.DataFrame, colors: dict[str, str]) -> list[str]:
    """The regimes the guarded run has been in so far, in the spec's order (its starting
    regime first): what the legend lists. The colour scale keeps every regime, so a
    regime's colour never changes; the chart is remounted only when a new regime occurs."""
    seen = set(guarded["regime"].astype(str)) if "regime" in guarded and len(guarded) else set()
    names = [n for n in colors if n in seen] + sorted(seen - set(colors))
    return names or list(colors)[:1]


def run_ends(guarded: pd.DataFrame, plain: pd.DataFrame,
             ended: dict[str, str]) -> pd.DataFrame:
    """Where each arm's curve stops meaning anything: arm, step, label, why.

    An arm whose loss or grad norm is non-finite on every step from some step N to its
    last row is "non-finite from step N" (its line would just vanish); one whose run ended
    early with finite values (a guard `stop`, a run stopped for a reason) is "stopped at
    step N", N its last step. Arms still healthy have no row."""
    rows = []
    for arm, df in (("guarded", guarded), ("plain", plain)):
        if not len(df):
            continue
        step = df["step"].to_numpy(np.float64)
        bad = np.zeros(len(df), bool)
        for col in ("loss", "grad_norm"):
            if col in df:
                bad |= ~np.isfinite(pd.to_numeric(df[col], errors="coerce")
                                    .to_numpy(np.float64))
        why = ended.get(arm, "")
        if bad[-1]:
            first = len(bad) - int(np.argmin(bad[::-1])) if not bad.all() else 0
            label = f"{arm}: non-finite from step {int(step[first])}"
            if why:
                label += f", stopped at step {int(step[-1])}"
            rows.append({"arm": arm, "step": step[first], "label": label, "why": why})
        elif why:
            rows.append({"arm": arm, "step": step[-1],
                         "label": f"{arm}: stopped at step {int(step[-1])}", "why": why})
    return pd.DataFrame(rows, columns=["arm", "step", "label", "why"])


def _death_rows(deaths: pd.DataFrame, guarded: pd.DataFrame, plain: pd.DataFrame,
                col: str) -> pd.DataFrame:
    """`run_ends` with `y`, the arm's last finite `col` before its end (the marker sits on
    the line; none without one), and `side`, where the label goes so it stays in the plot
    (left of the rule, over the data already drawn, unless the rule is near the start)."""
    ys = []
    for arm, at in zip(deaths["arm"], deaths["step"]):
        df = guarded if arm == "guarded" else plain
        v = pd.to_numeric(df.loc[df["step"] <= at, col], errors="coerce")
        v = v[np.isfinite(v.to_numpy(np.float64))]
        ys.append(float(v.iloc[-1]) if len(v) else np.nan)
    last = max((float(df["step"].max()) for df in (guarded, plain) if len(df)), default=0.0)
    side = np.where(deaths["step"].to_numpy(np.float64) < 0.4 * last, "left", "right")
    return deaths.assign(y=ys, side=side).astype({"step": float, "y": float})


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


def _band_layer(colors: dict[str, str], legend: list[str] | None = None) -> dict:
    scale = {"domain": list(colors), "range": list(colors.values())}
    return {"data": {"name": "bands"}, "mark": {"type": "rect", "opacity": 0.2},
            "encoding": {"x": {"field": "start", "type": "quantitative"},
                         "x2": {"field": "end"},
                         "color": {"field": "regime", "type": "nominal", "title": "regime",
                                   "legend": {**_LEGEND, "values": legend} if legend else None,
                                   "scale": scale},
                         "tooltip": [{"field": "regime"}, {"field": "start", "title": "from"},
                                     {"field": "end", "title": "to"}]}}


def _x(title: str = "") -> dict:
    return {"field": "step", "type": "quantitative", "title": title or None,
            "scale": {"zero": False, "nice": False}}


def _arm_panel(col: str, title: str, rows: pd.DataFrame, bands: pd.DataFrame,
               bad: pd.DataFrame, edits: pd.DataFrame, colors: dict[str, str],
               deaths: pd.DataFrame, height: int, log: bool = False,
               legend: list[str] | None = None) -> dict:
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
            "datasets": {"rows": rows, "bands": bands, "bad": bad, "edits": edits,
                         "ends": deaths},
            "layer": [_band_layer(colors, legend), _edit_layer(), line, strips,
                      *_end_layers(col)],
            "resolve": {"scale": {"color": "independent"}}}


def _end_layers(col: str) -> list[dict]:
    """Where an arm's run died: a rule in the arm's colour, a marker on its last finite
    value and the label ("plain: non-finite from step 81") along the top of the panel."""
    arm = {"field": "arm", "type": "nominal", "legend": None,
           "scale": {"domain": ["guarded", "plain"], "range": [GUARDED_COLOR, PLAIN_COLOR]}}
    tip = [{"field": "label", "title": "run"}, {"field": "why", "title": "why it ended"}]
    x = {"field": "step", "type": "quantitative"}
    return [
        {"data": {"name": "ends"}, "mark": {"type": "rule", "strokeWidth": 2},
         "encoding": {"x": x, "color": arm, "tooltip": tip}},
        {"data": {"name": "ends"},
         "mark": {"type": "point", "shape": "diamond", "size": 90, "filled": True},
         "encoding": {"x": x, "y": {"field": "y", "type": "quantitative"}, "color": arm,
                      "tooltip": tip}},
        *({"data": {"name": "ends"},
           "transform": [{"filter": f"datum.arm == '{a}' && datum.side == '{side}'"}],
           "mark": {"type": "text", "align": side, "baseline": "top",
                    "dx": -5 if side == "right" else 5, "fontWeight": "bold", "fontSize": 12,
                    **halo},
           "encoding": {"x": x, "y": {"value": 8 + 16 * i}, "text": {"field": "label"},
                        **({} if halo else {"color": arm, "tooltip": tip})}}
          for i, a in enumerate(("plain", "guarded")) for side in ("left", "right")
          for halo in ({"stroke": "white", "strokeWidth": 4, "strokeOpacity": 0.9}, {})),
    ]


def _scale_panel(guarded: pd.DataFrame, bands: pd.DataFrame, edits: pd.DataFrame,
                 colors: dict[str, str], height: int) -> dict:
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
