"""The stress grid in a background thread, for the studio (`bench.jobs.GridJob`).

    job = StressJob(mini_grid()); job.start()       # the page keeps `job` in session_state
    job.snapshot()    # {'running', 'done', 'total', 'last', 'result', 'error'}, lock-protected
    job.stop()        # ends the current cell after its step; finished cells are kept
"""

from __future__ import annotations

import os

from lbw_sim.bench.jobs import GridJob
from lbw_sim.bench.stress import MINI, build_grid, run_stress
from lbw_sim.bench.stress_grid import StressGrid, StressResult
from lbw_sim.errors import SpecError


def mini_grid() -> StressGrid:
    """The studio's miniature grid: adamw, clip and the guard at 3 LRs, ~160 steps each.

    `LBW_STRESS_MINI_STEPS` (a whole number) and `LBW_STRESS_MINI_LRS` (comma-separated)
    shrink it, e.g. for a browser test on a loaded machine; the product default is MINI."""
    overrides: dict = {}
    steps, lrs = os.environ.get("LBW_STRESS_MINI_STEPS"), os.environ.get("LBW_STRESS_MINI_LRS")
    try:
        if steps:
            overrides["steps"] = int(steps)
            overrides["schedule"] = {"warmup": min(MINI["schedule"]["warmup"], int(steps) // 4)}
            overrides["eval_every"] = max(1, int(steps) // 4)
        if lrs:
            overrides["lrs"] = [float(v) for v in lrs.split(",")]
    except ValueError as exc:
        raise SpecError("LBW_STRESS_MINI_STEPS/LBW_STRESS_MINI_LRS", str(exc)) from exc
    return build_grid(mini=True, arms=list(MINI["arms"]), overrides=overrides)


class StressJob(GridJob):
    """The stress grid in a background thread (see `bench.jobs`); per-step progress."""

    name = "stress-grid"

    def __init__(self, grid: StressGrid):
        self.grid = grid
        super().__init__(len(grid.cells()))

    def work(self) -> StressResult:
        return run_stress(self.grid, None, workers=1, progress=False, callback=self.progress,
                          stop_event=self.stop_event)

    def describe(self, row: dict) -> str:
        return f"{row['arm']} lr={row['lr']:g}"
