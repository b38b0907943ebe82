"""Telemetry traces: the canonical per-step schema, readers and the crash-safe writer.

This wing knows nothing of the guard or the simulator and never imports torch.
"""

from lbw_sim.traces.io import read_table, write_table
from lbw_sim.traces.readers import detect_format, list_runs, load_trace
from lbw_sim.traces.recorder import TraceRecorder
from lbw_sim.traces.schema import (
    GUARD_COLUMNS,
    TELEMETRY_COLUMNS,
    canonicalize,
)

__all__ = ["GUARD_COLUMNS", "TELEMETRY_COLUMNS", "TraceRecorder", "canonicalize",
           "detect_format", "list_runs", "load_trace", "read_table", "write_table"]
