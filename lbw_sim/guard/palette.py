"""Regime colours, read off each regime's controls, so any spec is drawn the same everywhere.

The initial regime is the calm green (training as configured); then, first match wins:
stop red, rollback dark red, skip orange, momentum damping purple, an LR cut a brown that
darkens with the depth of the cut (log scale down to the spec's `lr_scale_min`, so a ratchet
throttle_1..5 runs light to dark), and any other regime (a watch: no control yet) olive.
A regime's own `color` (a CSS hex colour in the spec) overrides all of this. Names a spec
does not hold (a trace replayed under another spec, `unguarded`) get a stable colour from
a fallback palette. No plotly here: the diagram, the figures and the pages all call this.
"""

from __future__ import annotations

import math

from lbw_sim.guard.spec import GuardSpec, RegimeSpec

INITIAL = "#2ca02c"
STOP = "#d62728"
ROLLBACK = "#8b0000"
SKIP = "#ff7f0e"
DAMP = "#9467bd"
WATCH = "#bcbd22"
#: An LR cut runs from CUT_LIGHT (a scale just below 1) to CUT_DARK (at lr_scale_min).
CUT_LIGHT, CUT_DARK = "#e3c29b", "#3d2412"
_FALLBACK = ["#17becf", "#e377c2", "#7f7f7f", "#aec7e8", "#ffbb78", "#98df8a", "#c5b0d5"]

#: The guarded run is blue and plain AdamW grey on every page.
GUARDED_COLOR = "#1f77b4"
UNGUARDED_COLOR = "#555555"
#: One colour per optimizer arm, the one table every figure reads: the guard family in
#: blues, AdamW's schedules in greys/teal, the clippers warm, the LR-free optimizers far
#: apart (Schedule-Free green, Prodigy magenta) and StableAdamW gold, clear of AdamW's grey.
ARM_COLORS = {"adamw": UNGUARDED_COLOR, "cosine": "#a6a6a6", "lr_matched": "#17becf",
              "clip": "#a0522d", "zclip": "#e377c2", "skipstep": "#9467bd",
              "guard": GUARDED_COLOR, "guard:schedulefree": "#6baed6",
              "schedulefree": "#2ca02c", "prodigy": "#c2185b", "stableadamw": "#e6a700",
              "plateau": "#006d5b"}


def regime_colors(spec: GuardSpec) -> dict[str, str]:
    """Every regime of `spec` and its colour, in the spec's order."""
    return {name: _color(spec, name, r) for name, r in spec.regimes.items()}


def regime_color(spec: GuardSpec, name: str) -> str:
    """The colour of one regime; a name the spec lacks gets `fallback_color(name)`."""
    r = spec.regimes.get(name)
    return _color(spec, name, r) if r is not None else fallback_color(name)


def fallback_color(name: str) -> str:
    """A stable colour for a name no spec describes (same name, same colour, every run)."""
    return _FALLBACK[sum(map(ord, name)) % len(_FALLBACK)]


def arm_color(arm: str) -> str:
    """An optimizer arm's colour (`ARM_COLORS`; an arm the table lacks: a stable fallback)."""
    return ARM_COLORS.get(arm) or fallback_color(arm)


def _color(spec: GuardSpec, name: str, r: RegimeSpec) -> str:
    if r.color:
        return r.color
    if name == spec.initial:
        return INITIAL
    if r.stop:
        return STOP
    if r.rollback:
        return ROLLBACK
    if r.skip:
        return SKIP
    if r.momentum_scale < 1:
        return DAMP
    if r.lr_scale < 1:
        return _blend(CUT_LIGHT, CUT_DARK, cut_depth(r.lr_scale, spec.bounds.lr_scale_min))
    return WATCH


def cut_depth(lr_scale: float, lr_scale_min: float) -> float:
    """How deep an LR cut is, 0 (no cut) to 1 (at or below the bound), on a log scale."""
    if lr_scale >= 1:
        return 0.0
    if lr_scale <= lr_scale_min or lr_scale <= 0:
        return 1.0
    return math.log(lr_scale) / math.log(lr_scale_min)


def _blend(a: str, b: str, t: float) -> str:
    ca, cb = (tuple(int(c[i:i + 2], 16) for i in (1, 3, 5)) for c in (a, b))
    return "#" + "".join(f"{round(x + (y - x) * t):02x}" for x, y in zip(ca, cb))
