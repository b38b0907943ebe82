"""Figures of traces and regimes, shared by the studio pages and notebooks, split by what
they draw: `traces` (telemetry, signals against thresholds, controls), `trajectories`
(paths on 2-D landscapes, Home's demo), `live` (Vega-Lite live charts), `stress` (the LR
stress grid). `common` holds the downsampling, shapes and regime bands they share.

Colours come from the spec (`lbw_sim.guard.palette`); the analysis a figure draws
(`regime_segments`, `time_in_regime` …) from `lbw_sim.guard.analysis`. Every public name is
re-exported here, so `from lbw_sim import viz; viz.trace_figure(df, spec)` works.
"""

from lbw_sim.viz.common import (
    GUARDED_COLOR,
    MAX_BANDS,
    MAX_POINTS,
    UNGUARDED_COLOR,
    add_regime_bands,
    add_shapes,
    color_lookup,
    display_index,
    hline,
    hrect,
)
from lbw_sim.viz.live import LIVE_POINTS, PLAIN_COLOR, live_charts
from lbw_sim.viz.stress import (
    ARM_COLORS,
    arm_color,
    claim_figure,
    stress_curves_figure,
    stress_events_figure,
    stress_loss_figure,
    write_report,
)
from lbw_sim.viz.traces import controls_figure, signal_figure, signal_unit, trace_figure
from lbw_sim.viz.trajectories import demo_figure, trajectory_figure

__all__ = [
    "ARM_COLORS", "GUARDED_COLOR", "LIVE_POINTS", "MAX_BANDS", "MAX_POINTS", "PLAIN_COLOR",
    "UNGUARDED_COLOR", "add_regime_bands", "add_shapes", "arm_color", "claim_figure",
    "color_lookup", "controls_figure", "demo_figure", "display_index", "hline", "hrect",
    "live_charts", "signal_figure", "signal_unit", "stress_curves_figure", "stress_events_figure",
    "stress_loss_figure", "trace_figure", "trajectory_figure", "write_report",
]
