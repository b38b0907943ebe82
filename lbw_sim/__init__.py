"""LBW Studio's simulation core: guard specs, the guard engine, traces and the simulator.

`import lbw_sim` is cheap: it imports neither torch nor streamlit. The names below are
loaded on first use, so `lbw_sim.GuardedOptimizer` pulls in torch only when touched.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "GuardSpec": "lbw_sim.guard.spec",
    "replay": "lbw_sim.guard.engine",
    "replay_many": "lbw_sim.guard.engine",
    "OnlineGuard": "lbw_sim.guard.engine",
    "GuardedOptimizer": "lbw_sim.guard.optim",
    "score": "lbw_sim.guard.scoring",
    "sweep": "lbw_sim.guard.sweep",
    "load_trace": "lbw_sim.traces.readers",
    "LbwError": "lbw_sim.errors",
    "SpecError": "lbw_sim.errors",
    "TraceError": "lbw_sim.errors",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lbw_sim' has no attribute {name!r}")
