"""One grid engine: every benchmark grid's cells run here or on an executor, each once the
cells it needs are in, every result streamed to the grid's ledger; stoppable, resumable.

    run_grid(ledger, here=run_in_this_process, work=run_in_a_worker, workers=2,
             backend="local", initializer=warm_worker, initargs=(grid,))

A grid says what is left and what to do with a result through its ledger (`Ledger`):

- `todo`: the cells not yet in the output folder's summary.csv, in run order (resume);
- `needs(cell)`: keys of the cells whose results this cell takes (`lr_matched` takes its
  guard cell's per-step LR scales); it runs once `has(key)` holds for each;
- `args(cell)`: what `work(*args)` gets in a worker process (which may sit on another
  machine: it writes nothing, the ledger does);
- `add(cell, result)`: record a finished cell (the ledger rewrites summary.csv after each).

In this process (`workers` <= 1 and a local backend) `here(cell)` runs a cell, returning
None when it was interrupted (not recorded: a resume re-runs it). Otherwise the cells go to
`executors.cell_executor` (a local process pool or Ray), dependent cells first once ready.
A ledger that brings its own `here` and a progress bar to close (the stress and fault
grids) runs through `run_ledger`.

A grid's output folder: `open_results` (grid.json must match; the summary rows already
done) and `write_summary` (summary.csv rewritten atomically after every cell), so a killed
run resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from lbw_sim.errors import SpecError

SUMMARY_FILE, GRID_FILE = "summary.csv", "grid.json"


class Ledger(Protocol):
    """What the engine asks of a grid (see the module doc)."""

    todo: list[Any]

    def needs(self, cell: Any) -> tuple[Hashable, ...]: ...

    def has(self, key: Hashable) -> bool: ...

    def args(self, cell: Any) -> tuple: ...

    def add(self, cell: Any, result: Any) -> None: ...


def run_grid(ledger: Ledger, *, here: Callable[[Any], Any], work: Callable[..., Any],
             workers: int = 1, backend: str = "local", address: str | None = None,
             stop_event: threading.Event | None = None, initializer: Callable | None = None,
             initargs: tuple = ()) -> None:
    """Run `ledger.todo`: in this process, or on `backend` when asked to (Ray, or more than
    one local worker for more than one cell). Returns when every cell that can run has, or
    after the cells in flight once `stop_event` is set."""
    stop_event = stop_event or threading.Event()
    if backend == "ray" or (workers > 1 and len(ledger.todo) > 1):
        _run_pool(ledger, work, workers, backend, address, stop_event, initializer, initargs)
    else:
        _run_here(ledger, here, stop_event)


class RunningLedger(Ledger, Protocol):
    """A ledger that runs its cells in this process itself and holds a progress bar."""

    def here(self, stop_event: threading.Event) -> Callable[[Any], Any]: ...

    def close(self) -> None: ...


def run_ledger(ledger: RunningLedger, *, work: Callable[..., Any], workers: int = 1,
               backend: str = "local", address: str | None = None,
               stop_event: threading.Event | None = None, initializer: Callable | None = None,
               initargs: tuple = ()) -> None:
    """`run_grid` with the ledger's own in-process runner (`ledger.here`); the ledger is
    closed (its progress bar ended) however the run ends."""
    stop_event = stop_event or threading.Event()
    try:
        run_grid(ledger, here=ledger.here(stop_event), work=work, workers=workers,
                 backend=backend, address=address, stop_event=stop_event,
                 initializer=initializer, initargs=initargs)
    finally:
        ledger.close()


def ready(ledger: Ledger, cell: Any) -> bool:
    """Whether every cell `cell` needs is in."""
    return all(ledger.has(key) for key in ledger.needs(cell))


def _run_here(ledger: Ledger, here: Callable[[Any], Any], stop_event: threading.Event) -> None:
    queue = list(ledger.todo)
    while queue and not stop_event.is_set():
        cell = next((c for c in queue if ready(ledger, c)), None)
        if cell is None:
            return  # what is left needs a cell that is not in this grid
        queue.remove(cell)
        result = here(cell)
        if result is None:
            return  # interrupted mid-cell: not recorded, a resume re-runs it
        ledger.add(cell, result)


def _run_pool(ledger: Ledger, work: Callable[..., Any], workers: int, backend: str,
              address: str | None, stop_event: threading.Event,
              initializer: Callable | None, initargs: tuple) -> None:
    from lbw_sim.bench.executors import cell_executor

    queue = list(ledger.todo)
    running: dict[Future, Any] = {}
    with cell_executor(backend, workers=workers, address=address, initializer=initializer,
                       initargs=initargs) as pool:
        while queue or running:
            # cells that waited for another go first, once it is in
            startable = sorted((c for c in queue if ready(ledger, c)),
                               key=lambda c: not ledger.needs(c))
            for cell in startable:
                if len(running) >= pool.slots or stop_event.is_set():
                    break
                queue.remove(cell)
                running[pool.submit(work, *ledger.args(cell))] = cell
            if not running:
                break
            finished, _ = wait(running, timeout=0.5, return_when=FIRST_COMPLETED)
            for fut in finished:
                ledger.add(running.pop(fut), fut.result())


# --- the output folder ------------------------------------------------------------------------

def open_results(out: Path, fingerprint: dict[str, Any],
                 read: Callable[[Path], pd.DataFrame]) -> list[dict]:
    """Create `out`, or check that its grid.json records this grid (`fingerprint`); the rows
    its summary.csv already holds (`read` checks and types them): the cells a resume skips."""
    check_results_dir(out, json.loads(json.dumps(fingerprint, default=str)))
    summary = out / SUMMARY_FILE
    return read(summary).to_dict("records") if summary.exists() else []


def check_results_dir(out: Path, fingerprint: dict[str, Any]) -> None:
    """Create `out`, or refuse it when its grid.json records another grid (resuming must
    never mix results of two grids in one summary)."""
    out.mkdir(parents=True, exist_ok=True)
    meta = out / GRID_FILE
    if meta.exists():
        old = json.loads(meta.read_text(encoding="utf-8"))
        if old != fingerprint:
            diff = sorted(k for k in fingerprint if old.get(k) != fingerprint[k])
            raise SpecError("--out", f"{out} holds results of another grid (differs in "
                                     f"{', '.join(diff) or 'format'}); pick another folder")
    else:
        atomic_write(meta, json.dumps(fingerprint, indent=1))


def write_summary(df: pd.DataFrame, path: Path) -> None:
    """summary.csv (or any table) replaced in one step: a reader never sees half a file."""
    atomic_write(path, df.to_csv(index=False))


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
