"""The studio's miniature fault grid in a background thread (`bench.jobs.GridJob`).

    job = FaultJob(task="gpt", severities={"poison": [1e4]}, arms=["adamw", "guard"],
                   steps=240, spec=designer_spec)      # errors here name the bad field
    job.start(); job.snapshot()["result"]               # a FaultResult once done

The grid is written into a temporary folder, as `python -m lbw_sim faults` writes runs/:
summary.csv, one trace per cell, table.md and curves.csv.gz (`fault_report.write_tables`;
the page draws the figures itself), so the readers of a results folder serve it unchanged.
The folder is removed when the job is garbage collected (its browser session ends) or the
process exits.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from lbw_sim.bench.fault_grid import FaultGrid, build_fault_grid, run_fault_grid, summary_frame
from lbw_sim.bench.fault_report import FaultResult, write_tables
from lbw_sim.bench.jobs import GridJob
from lbw_sim.guard.spec import GuardSpec


class FaultJob(GridJob):
    """A miniature fault grid (`build_fault_grid(mini=True, ...)`) run into a temp folder."""

    name = "fault-grid"

    def __init__(self, *, task: str | None = None, severities: dict[str, list[float]] | None
                 = None, arms: list[str] | None = None, steps: int | None = None,
                 spec: GuardSpec | None = None):
        self._tmp = tempfile.TemporaryDirectory(prefix="lbw_faults_mini_")
        root = Path(self._tmp.name)
        guard = "default"
        if spec is not None:  # the designer's spec: a file, as `--spec FILE` passes one
            (root / "guard.yaml").write_text(spec.to_yaml(), encoding="utf-8")
            guard = str(root / "guard.yaml")
        self.spec = spec or GuardSpec.default()
        self.out = root / "grid"
        self.grid: FaultGrid = build_fault_grid(mini=True, tasks=[task] if task else None,
                                                severities=severities, arms=arms, steps=steps,
                                                guard=guard)
        super().__init__(len(self.grid.cells()))

    def work(self) -> FaultResult:
        summary = run_fault_grid(self.grid, self.out, workers=1, progress=False,
                                 callback=self.progress, stop_event=self.stop_event)
        if summary.empty:  # stopped before the first cell finished
            return FaultResult(summary_frame([]), spec=self.spec)
        result = write_tables(self.out, {t: v["lr"] for t, v in self.grid.tasks.items()})
        result.spec = self.spec
        return result

    def describe(self, row: dict) -> str:
        what = "fault-free" if row["fault"] == "none" else f"{row['fault']} {row['severity']:g}"
        return f"{what} · {row['arm']}"
