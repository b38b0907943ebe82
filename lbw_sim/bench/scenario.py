"""A whole scenario on the grid engine: every (arm, lr, seed) cell on one device, in this
process, each cell's trace written crash-safely and summary.csv after every cell.

    summary = run_scenario("quickstart", out_dir="runs/qs")     # one CSV trace per cell

What `python -m lbw_sim run` does. Unlike the stress and fault grids it has no grid.json and
no resume (a rerun starts over), and it runs on the scenario's device (`sim.device`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from lbw_sim.bench.engine import run_grid
from lbw_sim.sim.device import pick_device
from lbw_sim.sim.runner import prepare, run_cell, trace_name
from lbw_sim.sim.scenarios import ArmSpec, Scenario, load_scenario

SUMMARY_COLUMNS = ["arm", "lr", "seed", "final_train_loss", "final_val_loss", "diverged_step",
                   "interventions", "skips", "rollbacks", "wall_s", "steps_run", "best_loss",
                   "stopped"]
Callback = Callable[[dict, int, int], None]  # (summary row, cells done, total)


def run_scenario(scenario: Scenario | str, out_dir: str | Path | None = None,
                 device: str | torch.device = "auto", steps: int | None = None,
                 progress: bool = True, callback: Callback | None = None,
                 stop_event: threading.Event | None = None, lrs: Sequence[float] | None = None,
                 seeds: int | Sequence[int] | None = None,
                 arms: Sequence[str | ArmSpec] | None = None) -> pd.DataFrame:
    """Run every (arm, lr, seed) cell; one summary row per cell (SUMMARY_COLUMNS + time_*).

    With `out_dir`, each cell's per-step trace is written crash-safely as CSV and
    `summary.csv` is rewritten after every cell. `callback(summary_row, done, total)` runs
    after each cell; setting `stop_event` ends the current cell after its step and returns
    what is done (that cell included).
    """
    sc = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    arm_specs = [a if isinstance(a, ArmSpec) else ArmSpec.parse(a, f"arms[{i}]")
                 for i, a in enumerate(arms)] if arms else list(sc.arms)
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds or sc.seeds)
    cells = [(a, lr, s) for lr in (lrs or sc.lrs) for s in seed_list for a in arm_specs]
    ledger = ScenarioLedger(sc, cells, int(steps or sc.steps), pick_device(device),
                            Path(out_dir) if out_dir is not None else None, callback)
    stop_event = stop_event or threading.Event()
    prepare(sc, arm_specs, ledger.device, ledger.cache)
    ledger.bar = _progress(len(cells) * ledger.steps, progress, sc.name)
    try:
        run_grid(ledger, here=lambda cell: ledger.run(cell, stop_event), work=_in_process_only)
    finally:
        if ledger.bar is not None:
            ledger.bar.close()
    return summary_frame(ledger.rows)


class ScenarioLedger:
    """A scenario's cells for the engine: no needs, rows kept in run order."""

    def __init__(self, sc: Scenario, cells: list[tuple[ArmSpec, float, int]], steps: int,
                 device: torch.device, out: Path | None, callback: Callback | None):
        self.sc, self.todo, self.steps, self.device = sc, cells, steps, device
        self.out, self.callback = out, callback
        self.rows: list[dict[str, Any]] = []
        self.cache: dict = {}
        self.bar: Any = None

    def needs(self, cell: tuple) -> tuple:
        return ()

    def has(self, key: Any) -> bool:
        return True

    def args(self, cell: tuple) -> tuple:
        return (cell,)

    def run(self, cell: tuple[ArmSpec, float, int], stop_event: threading.Event) -> dict:
        """Train one cell here; its summary row (a stopped cell's too: it is recorded)."""
        arm, lr, seed = cell
        if self.bar is not None:
            self.bar.set_postfix_str(f"{arm.label} lr={lr:g} seed={seed}")
        done = [0]

        def step(n: int) -> None:
            done[0] = n
            if self.bar is not None:
                self.bar.update(1)

        summary, _, _ = run_cell(self.sc, arm, lr, seed, self.device, steps=self.steps,
                                 trace_path=(self.out / trace_name(arm.label, lr, seed)
                                             if self.out else None),
                                 cache=self.cache, on_step=step, stop_event=stop_event)
        if self.bar is not None and done[0] < self.steps:
            self.bar.update(self.steps - done[0])
        return summary

    def add(self, cell: tuple, row: dict) -> None:
        self.rows.append(row)
        if self.out is not None:
            summary_frame(self.rows).to_csv(self.out / "summary.csv", index=False)
        if self.callback is not None:
            self.callback(row, len(self.rows), len(self.todo))


def _in_process_only(*_: Any) -> None:
    raise RuntimeError("a scenario runs in this process, on its device")


def summary_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Summary rows with SUMMARY_COLUMNS first (missing ones empty), extras sorted after."""
    df = pd.DataFrame(rows)
    for col in SUMMARY_COLUMNS:
        if col not in df:
            df[col] = None
    df["diverged_step"] = df["diverged_step"].astype("Int64")
    df["best_loss"] = pd.to_numeric(df["best_loss"]).astype(float)
    extra = sorted(c for c in df.columns if c not in SUMMARY_COLUMNS)
    return df[SUMMARY_COLUMNS + extra]


def _progress(total: int, enabled: bool, name: str) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=name, unit="step", dynamic_ncols=True,
                disable=None)  # None: off when stderr is not a terminal (logs, CI)
