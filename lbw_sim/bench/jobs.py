"""A grid run in a background thread, for the studio: the thread makes no Streamlit calls.

    job = StressJob(mini_grid()); job.start()       # the page keeps `job` in session_state
    job.snapshot()    # {'running', 'done', 'total', 'last', 'result', 'error', 'elapsed_s'}
    job.stop()        # ends the run at the next point its grid runner checks; done cells kept

A subclass says how to run its grid (`work`) and how to name a finished cell (`describe`).
The run sets torch to one intra-op thread for the process (see `_run`).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from lbw_sim.errors import LbwError


class GridJob:
    """One grid run in a daemon thread; progress and result read through `snapshot()`."""

    name = "grid"

    def __init__(self, total: int):
        self.stop_event = threading.Event()
        self._lock = threading.Lock()
        self._state: dict[str, Any] = {"running": False, "done": 0.0, "total": total,
                                       "last": "", "result": None, "error": None,
                                       "elapsed_s": None}
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    def work(self) -> Any:
        """Run the grid, calling `self.progress` and honouring `self.stop_event`."""
        raise NotImplementedError

    def describe(self, row: dict) -> str:
        """A finished cell, for the progress text."""
        raise NotImplementedError

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

    def progress(self, done: float, total: int, row: dict | None) -> None:
        with self._lock:
            self._state.update(done=done, total=total)
            if row is not None:
                self._state["last"] = self.describe(row)

    def _run(self) -> None:
        import torch

        # One intra-op thread for the whole (server) process: with these tiny models, two
        # threads on a busy 2-core machine made the miniature grid 7x slower (196 s vs 28 s).
        torch.set_num_threads(1)
        result, error, t0 = None, None, time.perf_counter()
        try:
            result = self.work()
        except LbwError as exc:
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 (reported on the page, not lost in a thread)
            error = f"{type(exc).__name__}: {exc}"
        with self._lock:
            self._state.update(running=False, result=result, error=error,
                               elapsed_s=time.perf_counter() - t0)
