"""A stress grid in a background thread, for the studio: the thread makes no Streamlit calls.

    job = StressJob(mini_grid()); job.start()       # the page keeps `job` in session_state
    job.snapshot()    # {'running', 'done', 'total', 'last', 'result', 'error'}, lock-protected
    job.stop()        # ends the current cell after its step; finished cells are kept

The run sets torch to one intra-op thread for the process (see `_run`).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from lbw_sim.errors import LbwError, SpecError
from lbw_sim.sim.stress import MINI, build_grid, run_stress
from lbw_sim.sim.stress_grid import StressGrid, StressResult


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


class StressJob:
    """One grid run in a daemon thread; progress and result read through `snapshot()`."""

    def __init__(self, grid: StressGrid):
        self.grid = grid
        self.stop_event = threading.Event()
        self._lock = threading.Lock()
        self._state: dict[str, Any] = {"running": False, "done": 0.0,
                                       "total": len(grid.cells()), "last": "",
                                       "result": None, "error": None}
        self._thread = threading.Thread(target=self._run, name="stress-grid", daemon=True)

    def start(self) -> None:
        with self._lock:
            self._state["running"] = True
        self._thread.start()

    def stop(self) -> None:
        self.stop_event.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._state)

    def _progress(self, done: float, total: int, row: dict | None) -> None:
        with self._lock:
            self._state.update(done=done, total=total)
            if row is not None:
                self._state["last"] = f"{row['arm']} lr={row['lr']:g}"

    def _run(self) -> None:
        import torch

        # One intra-op thread for the whole (server) process: with these tiny models, two
        # threads on a busy 2-core machine made the miniature grid 7x slower (196 s vs 28 s).
        torch.set_num_threads(1)
        result: StressResult | None = None
        error = None
        try:
            result = run_stress(self.grid, None, workers=1, progress=False,
                                callback=self._progress, stop_event=self.stop_event)
        except LbwError as exc:
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 (reported on the page, not lost in a thread)
            error = f"{type(exc).__name__}: {exc}"
        with self._lock:
            self._state.update(running=False, result=result, error=error)
