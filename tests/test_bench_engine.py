"""The one grid engine (`bench.engine.run_grid`) in this process: a cell runs once what it
needs is in, an interrupted cell is not recorded, a stop ends the run, and a cell whose
need is not in the grid is left for a later run. (The process pool and Ray paths are run by
tests/test_stress.py and tests/test_fault_grid.py on real grids.)"""

from __future__ import annotations

import threading

import pytest

from lbw_sim.bench.engine import run_grid, run_ledger


class Ledger:
    def __init__(self, todo, needs=None, done=()):
        self.todo, self.deps = list(todo), needs or {}
        self.rows, self.order = dict.fromkeys(done), []

    def needs(self, cell):
        return self.deps.get(cell, ())

    def has(self, key):
        return key in self.rows

    def args(self, cell):
        return (cell,)

    def add(self, cell, result):
        self.rows[cell] = result
        self.order.append(cell)


def _never(*_):
    raise AssertionError("no worker should run in this process's path")


def test_a_cell_runs_after_the_cells_it_needs():
    ledger = Ledger(["matched", "guard", "adamw"], needs={"matched": ("guard",)})
    run_grid(ledger, here=lambda c: c.upper(), work=_never)
    assert ledger.order == ["guard", "matched", "adamw"]
    assert ledger.rows["matched"] == "MATCHED"


def test_an_interrupted_cell_is_not_recorded_and_ends_the_run():
    ledger = Ledger(["a", "b", "c"])
    run_grid(ledger, here=lambda c: None if c == "b" else c, work=_never)
    assert ledger.order == ["a"]


def test_a_stop_ends_the_run_before_the_next_cell():
    stop = threading.Event()
    ledger = Ledger(["a", "b"])

    def here(cell):
        stop.set()
        return cell

    run_grid(ledger, here=here, work=_never, stop_event=stop)
    assert ledger.order == ["a"]


def test_a_need_outside_the_grid_leaves_the_cell_for_later():
    ledger = Ledger(["matched", "adamw"], needs={"matched": ("guard",)})
    run_grid(ledger, here=lambda c: c, work=_never)
    assert ledger.order == ["adamw"]


def test_a_need_met_by_an_earlier_run_counts():
    ledger = Ledger(["matched"], needs={"matched": ("guard",)}, done=["guard"])
    run_grid(ledger, here=lambda c: c, work=_never)
    assert ledger.order == ["matched"]


class RunningLedger(Ledger):
    """A ledger that runs its own cells (`here`) and must be closed (its progress bar)."""

    def __init__(self, todo, fail_on=None):
        super().__init__(todo)
        self.fail_on, self.closed, self.stop = fail_on, False, None

    def here(self, stop_event):
        self.stop = stop_event

        def run(cell):
            if cell == self.fail_on:
                raise RuntimeError(f"cell {cell} failed")
            return cell
        return run

    def close(self):
        self.closed = True


def test_run_ledger_runs_the_ledgers_cells_with_one_stop_event_and_closes_it():
    stop = threading.Event()
    ledger = RunningLedger(["a", "b"])
    run_ledger(ledger, work=_never, stop_event=stop)
    assert ledger.order == ["a", "b"] and ledger.closed and ledger.stop is stop


def test_run_ledger_closes_the_ledger_when_a_cell_fails():
    ledger = RunningLedger(["a", "b", "c"], fail_on="b")
    with pytest.raises(RuntimeError, match="cell b failed"):
        run_ledger(ledger, work=_never)
    assert ledger.order == ["a"] and ledger.closed
    assert isinstance(ledger.stop, threading.Event)


def test_a_results_folder_resumes_its_own_grid_and_refuses_another(tmp_path):
    import pandas as pd

    from lbw_sim.bench.engine import open_results, write_summary
    from lbw_sim.errors import SpecError

    out = tmp_path / "grid"
    assert open_results(out, {"steps": 10}, pd.read_csv) == []          # a new folder
    write_summary(pd.DataFrame({"cell": ["a"], "loss": [1.5]}), out / "summary.csv")
    assert open_results(out, {"steps": 10}, pd.read_csv) == [{"cell": "a", "loss": 1.5}]
    with pytest.raises(SpecError, match="differs in steps"):
        open_results(out, {"steps": 20}, pd.read_csv)
    assert not list(out.glob("*.tmp"))
