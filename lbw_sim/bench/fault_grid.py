"""The transient-fault benchmark: fault x severity x task x arm x seed at a good LR, resumable.

    grid = build_fault_grid(quick=True)               # seed 1 only; seeds 1..N with seeds=N
    grid = build_fault_grid(mini=True)                # the studio's: MINI, well under a minute
    summary = run_fault_grid(grid, "runs/faults_quick", workers=2)   # or backend="ray"
    viz.faults.write_report("runs/faults_quick")         # table.md, HTML figures

Every task trains at its AdamW-best LR (found on seed 0, see TASKS), so a constant-LR
control (`lr_matched`) is AdamW itself: what is left to win is riding out a *transient*
fault. Each (task, arm, seed) also runs without a fault (`fault = none`): that run is the
reference of every faulted run of the same arm and seed (`clean_final_val_loss`, `ratio`,
`steps_lost`). Faults start at mid-run (`fault_start`), two severities each (FAULTS).

Metrics per cell (summary.csv, one row per cell; see SUMMARY_COLUMNS):
- `ratio` = final val loss / the same arm's fault-free final val loss (same seed);
- `steps_lost`: steps from the fault's start until the training loss (a centred 21-step
  mean) is back within 1 % of the fault-free curve and stays there to the end; empty with
  `recovered = False` when it never is (or the run stopped early);
- `detection_latency`: first step out of the spec's initial regime (`nominal`) at or after
  the fault's start, minus the start (baselines: their first clip or skip); empty: never;
- `false_interventions`: steps with any intervention before the fault starts (the whole
  run for `none` cells); `skips`, `rollbacks` over the run;
- `final_lr_scale` (last applied step), `lr_recovered` (it is 1), `lr_back_steps` (steps from
  the fault's start until the LR scale is 1 for the rest of the run).

Resume like the stress grid: summary.csv is rewritten atomically after every cell, cells in
it are skipped, grid.json holds what must match (tasks, LRs, steps, faults, guard hash).
Cells return their trace to this process, which writes the trace files, so a Ray cluster's
workers need no shared disk.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lbw_sim.bench.engine import atomic_write, open_results, run_ledger, write_summary
from lbw_sim.bench.stress_grid import read_csv_table
from lbw_sim.errors import SpecError, TraceError
from lbw_sim.guard.analysis import acted
from lbw_sim.guard.spec import GuardSpec
from lbw_sim.sim.scenarios import ArmSpec, Scenario

#: Arms in report order; `stableadamw` (torch-optimi, an optional arm: see `fault_arms`) runs
#: wherever `sim.arms` knows it.
FAULT_ARMS = ("adamw", "clip", "zclip", "skipstep", "guard")
OPTIONAL_ARMS = ("stableadamw",)
#: Fault kinds in report order; `none` is the fault-free reference, `shift` is not a fault.
FAULT_NAMES = ("corrupt", "lr_spike", "overflow", "grad_noise", "poison", "shift")
SEVERITIES: dict[str, tuple[float, float]] = {
    "corrupt": (5, 50),            # batches of random tokens / flipped labels in a row
    "lr_spike": (10, 100),         # LR x factor for 20 steps (a scheduler bug)
    "overflow": (3, 30),           # steps of +inf gradients (fp16 loss-scale overflow storm)
    "grad_noise": (10, 100),       # heavy-tailed noise, x the gradient norm, for 10 steps
    "poison": (1e2, 1e4),          # one step with the gradient multiplied by this
    "shift": (0.1, 0.3),           # for good: this fraction of every batch is noise
}
LR_SPIKE_STEPS, NOISE_STEPS, NOISE_DOF = 20, 10, 3
TRANSIENT = tuple(f for f in FAULT_NAMES if f != "shift")

SUMMARY_COLUMNS = ["task", "fault", "severity", "arm", "seed", "final_val_loss",
                   "clean_final_val_loss", "ratio", "interventions", "final_lr_scale",
                   "lr_recovered", "lr_back_steps", "steps_lost", "recovered",
                   "detection_latency", "false_interventions", "skips", "rollbacks",
                   "diverged_step", "steps_run", "stopped", "wall_s", "lr", "fault_start"]
#: per-step columns kept for figures and the steps-lost metric
CURVE_COLUMNS = ["step", "model_loss", "val_loss", "lr_scale", "skipped", "regime"]
RECOVERY_TOL, SMOOTH = 0.01, 21

#: The tasks, each a scenario (validated by Scenario.from_dict) plus its AdamW-best LR.
#: How the LRs were found: `python -m lbw_sim faults --find-lr` (plain AdamW, no fault,
#: seed 0 only, never a report seed; each task's `find_lrs`, in half-decades) printed the
#: final val loss (nats) per LR:
#:   gpt: 1e-3 1.0402 · 3.16e-3 1.0257 · 1e-2 1.0201 · 3.16e-2 1.0345 · 1e-1 1.0760
#:   mlp: 1e-3 0.0875 · 3.16e-3 0.0681 · 1e-2 0.0446 · 3.16e-2 0.2857
#: so both tasks train at 1e-2.
TASKS: dict[str, dict[str, Any]] = {
    "gpt": {"about": "a char GPT (2 layers, width 32) on an order-1 Markov corpus",
            "lr": 1.0e-2, "find_lrs": [1.0e-3, 3.16e-3, 1.0e-2, 3.16e-2, 1.0e-1],
            "scenario": {
                "name": "faults_gpt",
                "model": {"kind": "gpt", "n_layer": 2, "n_head": 2, "n_embd": 32,
                          "block_size": 32},
                "data": {"kind": "synthetic", "vocab_size": 32, "order": 1, "seed": 0,
                         "n_train": 100_000, "n_val": 10_000},
                "optimizer": {"kind": "adamw", "betas": [0.9, 0.95], "weight_decay": 0.1},
                "schedule": {"warmup": 30, "decay": "constant"},
                "steps": 600, "batch_size": 16, "eval_every": 50, "eval_batches": 4}},
    # (scikit-learn ships the digits: no download)
    "mlp": {"about": "an MLP (2 x 128) on scikit-learn's digits",
            "lr": 1.0e-2, "find_lrs": [1.0e-3, 3.16e-3, 1.0e-2, 3.16e-2],
            "scenario": {
                "name": "faults_mlp",
                "model": {"kind": "mlp", "hidden": [128, 128]},
                "data": {"kind": "digits", "seed": 0, "val_fraction": 0.2},
                "optimizer": {"kind": "adamw", "betas": [0.9, 0.999], "weight_decay": 0.01},
                "schedule": {"warmup": 20, "decay": "constant"},
                "steps": 1000, "batch_size": 64, "eval_every": 50}},
}


#: The studio's miniature grid: the char GPT, one severity of three faults, three arms, seed
#: 1, 240 steps (the fault at step 120): ~25 s on one CPU thread. Every key can be overridden.
MINI: dict[str, Any] = {"tasks": ["gpt"], "severities": {"lr_spike": [100], "overflow": [3],
                                                          "poison": [1e4]},
                        "arms": ["adamw", "skipstep", "guard"], "steps": 240, "seeds": 1}


def fault_arms() -> tuple[str, ...]:
    """FAULT_ARMS plus any optional arm (stableadamw) the baselines know by now."""
    from lbw_sim.sim.arms import ALL_ARMS

    return FAULT_ARMS + tuple(a for a in OPTIONAL_ARMS if a in ALL_ARMS)


@dataclass(frozen=True)
class FaultCell:
    """One (task, fault, severity, arm, seed); `fault = none` (severity 0) is the reference."""

    task: str
    fault: str
    severity: float
    arm: str
    seed: int

    @property
    def key(self) -> tuple[str, str, str, str, int]:
        return self.task, self.fault, f"{float(self.severity):.6g}", self.arm, int(self.seed)

    @property
    def clean(self) -> FaultCell:
        return FaultCell(self.task, "none", 0.0, self.arm, self.seed)

    @property
    def trace_file(self) -> str:
        sev = "" if self.fault == "none" else f"{float(self.severity):g}"
        return f"{self.task}_{self.fault}{sev}_{self.arm}_seed{self.seed}.csv"


@dataclass(frozen=True)
class FaultGrid:
    """Tasks (scenario dicts + LR), faults with their severities, arms and seeds."""

    tasks: dict[str, dict[str, Any]]
    faults: tuple[str, ...]
    arms: tuple[str, ...]
    seeds: tuple[int, ...]
    guard: str = "default"
    #: per fault the severities run (a subset of SEVERITIES'); None: all of them
    severities: dict[str, tuple[float, ...]] | None = None

    def levels(self, fault: str) -> tuple[float, ...]:
        return (self.severities or SEVERITIES).get(fault, SEVERITIES[fault])

    def cells(self) -> list[FaultCell]:
        """Fault-free cells first (every faulted cell's reference), then task-major."""
        clean = [FaultCell(t, "none", 0.0, a, s) for t in self.tasks for s in self.seeds
                 for a in self.arms]
        faulted = [FaultCell(t, f, float(v), a, s) for t in self.tasks for f in self.faults
                   for v in self.levels(f) for s in self.seeds for a in self.arms]
        return clean + faulted

    def describe(self) -> str:
        """One line: tasks; faults and severities; arms; steps (seeds when more than one)."""
        steps = sorted({self.steps(t) for t in self.tasks})
        seeds = f"; seeds 1–{len(self.seeds)}" if len(self.seeds) > 1 else ""
        return (f"{', '.join(self.tasks)}; "
                + ", ".join(f"{f} {v:g}" for f in self.faults for v in self.levels(f))
                + f"; arms {', '.join(self.arms)}; {'/'.join(map(str, steps))} steps{seeds}")

    def steps(self, task: str) -> int:
        return int(self.tasks[task]["scenario"]["steps"])

    def fault_start(self, task: str) -> int:
        return self.steps(task) // 2

    def fault_window(self, cell: FaultCell) -> tuple[int, int | None]:
        """[start, end) of the fault in steps; end None for the lasting shift."""
        start = self.fault_start(cell.task)
        duration = {"corrupt": int(cell.severity), "lr_spike": LR_SPIKE_STEPS,
                    "overflow": int(cell.severity), "grad_noise": NOISE_STEPS,
                    "poison": 1}.get(cell.fault)
        return start, None if duration is None else start + duration

    def fault_items(self, cell: FaultCell) -> list[dict[str, Any]]:
        """The scenario's `faults:` list for a cell (see `sim.faults`)."""
        if cell.fault == "none":
            return []
        at, sev = self.fault_start(cell.task), cell.severity
        mode = "flip_labels" if self.tasks[cell.task]["scenario"]["model"]["kind"] == "mlp" \
            else "random_tokens"
        return [{
            "corrupt": {"kind": "corrupt_batch", "mode": mode, "at": at, "duration": int(sev)},
            "lr_spike": {"kind": "lr_spike", "factor": sev, "at": at, "duration": LR_SPIKE_STEPS},
            "overflow": {"kind": "loss_scale_overflow", "at": at, "duration": int(sev)},
            "grad_noise": {"kind": "grad_noise", "scale": sev, "tail_dof": NOISE_DOF, "at": at,
                           "duration": NOISE_STEPS},
            "poison": {"kind": "poison", "factor": sev, "at": at},
            # batch indices run past the step count after a rollback's skip: 2x covers them
            "shift": {"kind": "shift", "mode": mode, "fraction": sev, "at": at,
                      "duration": 2 * self.steps(cell.task)},
        }[cell.fault]]

    def scenario(self, cell: FaultCell) -> Scenario:
        t = self.tasks[cell.task]
        raw = {**t["scenario"], "lrs": [t["lr"]], "seeds": list(self.seeds),
               "arms": list(self.arms), "guard": self.guard, "faults": self.fault_items(cell)}
        return Scenario.from_dict(raw)

    def fingerprint(self) -> dict[str, Any]:
        """What two runs must share for their cells to sit in one summary (seeds, arms and
        faults may grow)."""
        spec = GuardSpec.resolve(self.guard)
        return {"tasks": {k: {"lr": v["lr"], "scenario": v["scenario"]}
                          for k, v in self.tasks.items()},
                "severities": {f: list(SEVERITIES[f]) for f in FAULT_NAMES},
                "fault_shape": [LR_SPIKE_STEPS, NOISE_STEPS, NOISE_DOF],
                "guard": spec.hash, "metrics": [RECOVERY_TOL, SMOOTH]}


def build_fault_grid(*, quick: bool = False, mini: bool = False, seeds: int | None = None,
                     tasks: list[str] | None = None, faults: list[str] | None = None,
                     severities: dict[str, list[float]] | None = None,
                     arms: list[str] | None = None, steps: int | None = None,
                     guard: str = "default") -> FaultGrid:
    """The fault grid: every task, fault and arm; seeds 1..N (default 3, or 1 with `quick`:
    seed 0 is kept for finding LRs). `mini`: the studio's miniature grid (MINI), whose keys
    the other arguments override. `severities` picks, per fault, some of its SEVERITIES (and
    implies `faults`). `steps` shortens every task (each fault must end within it); `guard`
    is the guard arm's spec (`default`, a shipped name or an absolute path)."""
    if mini:
        seeds = MINI["seeds"] if seeds is None else seeds
        tasks, arms = tasks or MINI["tasks"], MINI["arms"] if arms is None else arms
        steps = MINI["steps"] if steps is None else steps
        if faults is None and severities is None:
            severities = MINI["severities"]
    if seeds is None:
        seeds = 1 if quick else 3
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise SpecError("--seeds", f"must be a whole number >= 1, got {seeds!r}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int)
                              or steps < 2):
        raise SpecError("--steps", f"must be a whole number >= 2, got {steps!r}")
    picked = {}
    for name in tasks or list(TASKS):
        if name not in TASKS:
            raise SpecError("--tasks", f"unknown task {name!r}; known: {', '.join(TASKS)}")
        t = json.loads(json.dumps(TASKS[name]))
        if steps is not None:
            t["scenario"]["steps"] = int(steps)
        picked[name] = t
    levels = _severities(severities)
    if levels is not None and faults is None:
        faults = list(levels)  # a fault in `faults` without `severities` runs all of its
    for f in faults or []:
        if f not in FAULT_NAMES:
            raise SpecError("--faults", f"unknown fault {f!r}; known: {', '.join(FAULT_NAMES)}")
    if faults is not None and not faults:
        raise SpecError("--faults", "pick at least one fault")
    known = fault_arms()
    for a in arms or []:
        if a not in known:
            raise SpecError("--arms", f"unknown arm {a!r}; known: {', '.join(known)}")
    if arms is not None and not arms:
        raise SpecError("--arms", "pick at least one arm")
    GuardSpec.resolve(guard)  # a bad --spec fails here, naming what is wrong
    grid = FaultGrid(picked, tuple(f for f in FAULT_NAMES if f in (faults or FAULT_NAMES)),
                     tuple(a for a in known if a in (arms or known)),
                     tuple(range(1, seeds + 1)), guard, levels)
    if steps is not None:
        _check_windows(grid)
    return grid


def _severities(value: dict[str, list[float]] | None) -> dict[str, tuple[float, ...]] | None:
    """A `severities` choice checked against SEVERITIES (errors name the fault)."""
    if value is None:
        return None
    if not isinstance(value, dict) or not value:
        raise SpecError("--faults", "pick at least one fault and severity")
    out = {}
    for fault, vals in value.items():
        if fault not in FAULT_NAMES:
            raise SpecError("--faults", f"unknown fault {fault!r}; known: "
                                        f"{', '.join(FAULT_NAMES)}")
        known = ", ".join(f"{v:g}" for v in SEVERITIES[fault])
        try:
            got = sorted({float(v) for v in vals})
        except (TypeError, ValueError):
            raise SpecError(f"severities.{fault}", f"must be numbers among {known}, got "
                                                   f"{vals!r}") from None
        bad = [v for v in got if v not in SEVERITIES[fault]]
        if bad or not got:
            raise SpecError(f"severities.{fault}", f"unknown severity {bad[0]:g}; known: "
                            f"{known}" if bad else f"pick at least one of {known}")
        out[fault] = tuple(got)
    return out


def _check_windows(grid: FaultGrid) -> None:
    """Each fault must be over before a shortened run ends (else nothing is left to judge)."""
    for task in grid.tasks:
        steps = grid.steps(task)
        for f in grid.faults:
            for sev in grid.levels(f):
                start, end = grid.fault_window(FaultCell(task, f, sev, grid.arms[0], 1))
                if end is not None and end > steps:
                    raise SpecError("--steps", f"{steps} steps: the {f} {sev:g} fault runs "
                                    f"from step {start} to {end}, past the end; use at least "
                                    f"{2 * (end - start)} steps")


# --- metrics on curves (pure numpy, no torch) ------------------------------------------------

def smooth(loss: np.ndarray, window: int = SMOOTH) -> np.ndarray:
    """Centred rolling mean; a non-finite step makes its whole window inf (never 'back')."""
    x = np.asarray(loss, float)
    bad = ~np.isfinite(x)
    s = pd.Series(np.where(bad, 0.0, x)).rolling(window, center=True, min_periods=1).mean()
    hit = pd.Series(bad.astype(float)).rolling(window, center=True, min_periods=1).max()
    return np.where(hit.to_numpy() > 0, np.inf, s.to_numpy())


def steps_lost(loss: np.ndarray, clean: np.ndarray, start: int, tol: float = RECOVERY_TOL,
               window: int = SMOOTH) -> float:
    """Steps from `start` until the smoothed loss is within `tol` of the smoothed clean loss
    and stays there to the end; nan (never) when it is not within at the end or the run
    stopped before the clean one did."""
    a, b = smooth(loss, window), smooth(clean, window)
    if len(a) < len(b) or len(b) <= start:
        return math.nan
    ok = a[: len(b)] <= (1.0 + tol) * b
    if not ok[-1]:
        return math.nan
    bad = np.flatnonzero(~ok[start:])
    return float(bad[-1] + 1) if len(bad) else 0.0


def first_at_or_after(flags: np.ndarray, steps: np.ndarray, start: int) -> float:
    """Steps from `start` to the first flagged step at or after it; nan when none."""
    hit = np.flatnonzero(np.asarray(flags, bool) & (np.asarray(steps) >= start))
    return float(steps[hit[0]] - start) if len(hit) else math.nan


def settled_after(flags_ok: np.ndarray, steps: np.ndarray, start: int) -> float:
    """Steps from `start` until `flags_ok` holds on every later step; nan when not at the end."""
    ok = np.asarray(flags_ok, bool)
    if not len(ok) or not ok[-1]:
        return math.nan
    after = np.asarray(steps) >= start
    bad = np.flatnonzero(after & ~ok)
    return float(steps[bad[-1]] + 1 - start) if len(bad) else 0.0


def own_metrics(trace: pd.DataFrame, start: int, initial: str = "nominal") -> dict[str, Any]:
    """What a cell says about itself (no reference needed); `start` = fault start."""
    if trace.empty:
        return {"final_lr_scale": math.nan, "lr_recovered": False, "lr_back_steps": math.nan,
                "detection_latency": math.nan, "false_interventions": 0}
    steps = trace["step"].to_numpy()
    act = acted(trace)
    applied = ~trace["skipped"].astype(bool).to_numpy()
    scale = trace["lr_scale"].astype(float).where(applied).ffill().fillna(1.0).to_numpy()
    # the guard: out of its initial regime; a baseline: its first clip or skip
    alarm = trace["regime"].astype(str).to_numpy() != initial if "regime" in trace else act
    return {"final_lr_scale": float(scale[-1]), "lr_recovered": bool(scale[-1] >= 0.999),
            "lr_back_steps": settled_after(scale >= 0.999, steps, start),
            "detection_latency": first_at_or_after(alarm, steps, start),
            "false_interventions": int(act[steps < start].sum())}


# --- one cell (runs in a worker) --------------------------------------------------------------

def run_cell(grid: FaultGrid, cell: FaultCell,
             cache: dict | None = None) -> tuple[dict[str, Any], pd.DataFrame]:
    """Train one cell on the CPU; its summary row (no reference columns yet) and its trace."""
    import torch

    from lbw_sim.sim.runner import run_cell as train

    sc = grid.scenario(cell)
    summary, trace, _ = train(sc, ArmSpec.parse(cell.arm, "arms"), sc.lrs[0], cell.seed,
                              torch.device("cpu"), cache=cache)
    start = grid.fault_start(cell.task) if cell.fault != "none" else len(trace)
    row = {"task": cell.task, "fault": cell.fault, "severity": float(cell.severity),
           "arm": cell.arm, "seed": cell.seed, "fault_start": grid.fault_start(cell.task),
           **{k: summary.get(k) for k in ("final_val_loss", "interventions", "skips",
                                          "rollbacks", "diverged_step", "steps_run",
                                          "stopped", "wall_s", "lr")},
           **own_metrics(trace, start, sc.guard.initial)}
    if cell.fault == "none":
        row.update(lr_back_steps=math.nan, detection_latency=math.nan)
    return row, trace


def with_reference(row: dict[str, Any], clean_row: dict[str, Any] | None,
                   curve: pd.DataFrame | None, clean_curve: pd.DataFrame | None) -> dict:
    """`row` with the columns that need the same arm's fault-free run (nan until it ran)."""
    out = dict(row)
    if row["fault"] == "none":
        out.update(clean_final_val_loss=row["final_val_loss"], ratio=1.0, steps_lost=0.0,
                   recovered=True)
        return out
    ref = math.nan if clean_row is None else float(clean_row["final_val_loss"])
    val = float(row["final_val_loss"]) if row["final_val_loss"] is not None else math.nan
    out["clean_final_val_loss"] = ref
    out["ratio"] = val / ref if math.isfinite(val) and ref > 0 else (
        math.inf if ref > 0 else math.nan)
    lost = math.nan
    if curve is not None and clean_curve is not None and len(curve):
        lost = steps_lost(curve["model_loss"].to_numpy(float),
                          clean_curve["model_loss"].to_numpy(float), int(row["fault_start"]))
    out["steps_lost"], out["recovered"] = lost, bool(math.isfinite(lost))
    return out


# --- the whole grid ---------------------------------------------------------------------------

Callback = Callable[[int, int, "dict | None"], None]  # (cells done, total, finished row)
_WORKER: dict[str, Any] = {}


def _init_worker(grid: FaultGrid) -> None:
    """One torch thread per process; data and first-call costs paid before any timed cell."""
    import torch

    from lbw_sim.sim.runner import prepare

    torch.set_num_threads(1)
    _WORKER["cache"] = cache = {}
    for task in grid.tasks:
        sc = grid.scenario(FaultCell(task, "none", 0.0, grid.arms[0], grid.seeds[0]))
        prepare(sc, [ArmSpec.parse(a, "arms") for a in grid.arms], torch.device("cpu"), cache)


def _worker_cell(grid: FaultGrid, cell: FaultCell) -> tuple[dict, pd.DataFrame]:
    return run_cell(grid, cell, _WORKER.get("cache"))


class FaultLedger:
    """A fault grid run for the engine: what is done, what is left; writes traces and
    summary.csv as cells come in. Cells run in any order: a faulted row's reference columns
    are filled once its fault-free cell is in (`_refresh`)."""

    def __init__(self, grid: FaultGrid, out: Path | None, callback: Callback | None,
                 progress: bool):
        self.grid, self.out, self.callback = grid, out, callback
        self.rows: dict[tuple, dict] = {}
        self.curves: dict[tuple, pd.DataFrame] = {}
        if out is not None:
            for r in open_results(out, {"kind": "faults", **grid.fingerprint()},
                                  read_fault_summary):
                self.rows[FaultCell(r["task"], r["fault"], r["severity"], r["arm"],
                                    int(r["seed"])).key] = r
        self.todo = [c for c in grid.cells() if c.key not in self.rows]
        self.total, self.finished = len(self.todo), 0
        self.bar = None
        if progress and self.todo:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, desc=f"faults ({self.total} cells)", unit="cell",
                            dynamic_ncols=True)

    def needs(self, cell: FaultCell) -> tuple:
        return ()

    def has(self, key: tuple) -> bool:
        return key in self.rows

    def args(self, cell: FaultCell) -> tuple:
        return self.grid, cell

    def here(self, stop_event: threading.Event) -> Callable[[FaultCell], tuple | None]:
        """Run a cell in this process (workers set up on the first), None once stopped."""
        prepared: list[bool] = []

        def run(cell: FaultCell) -> tuple | None:
            if stop_event.is_set():
                return None
            if not prepared:
                prepared.append(True)
                _init_worker(self.grid)
            return _worker_cell(self.grid, cell)

        return run

    def curve(self, cell: FaultCell) -> pd.DataFrame | None:
        if cell.key not in self.curves and self.out is not None:
            path = self.out / cell.trace_file
            if path.is_file():
                self.curves[cell.key] = pd.read_csv(path, usecols=lambda c: c in CURVE_COLUMNS)
        return self.curves.get(cell.key)

    def add(self, cell: FaultCell, result: tuple[dict, pd.DataFrame]) -> None:
        row, trace = result
        if self.out is not None:
            atomic_write(self.out / cell.trace_file, trace.to_csv(index=False))
        self.curves[cell.key] = trace[[c for c in CURVE_COLUMNS if c in trace]]
        self.rows[cell.key] = row
        self._refresh()
        self.finished += 1
        if self.out is not None:
            write_summary(self.frame(), self.out / "summary.csv")
        if self.bar is not None:
            self.bar.set_postfix_str(f"{cell.task} {cell.fault} {cell.arm}")
            self.bar.update(1)
        if self.callback is not None:
            self.callback(self.finished, self.total, row)

    def _refresh(self) -> None:
        """Fill the reference columns of every row whose fault-free cell is in but was not
        when the row was written (a pool finishes cells in any order)."""
        for key, r in self.rows.items():
            if r["fault"] != "none" and pd.notna(r.get("clean_final_val_loss", math.nan)):
                continue
            cell = FaultCell(r["task"], r["fault"], r["severity"], r["arm"], int(r["seed"]))
            clean = self.rows.get(cell.clean.key)
            if clean is None and r["fault"] != "none":
                continue
            self.rows[key] = with_reference(r, clean, self.curve(cell), self.curve(cell.clean))

    def frame(self) -> pd.DataFrame:
        return summary_frame(list(self.rows.values()))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_fault_grid(grid: FaultGrid, out_dir: str | Path | None = None, *, workers: int = 1,
                   backend: str = "local", address: str | None = None, progress: bool = True,
                   callback: Callback | None = None,
                   stop_event: threading.Event | None = None) -> pd.DataFrame:
    """Run the cells not yet in `out_dir`'s summary.csv (`engine.run_ledger`); return the whole
    summary. workers > 1 (or backend="ray") runs cells in worker processes (one torch thread
    each); else in this process. `stop_event` ends the run after the cells in flight."""
    from lbw_sim.bench.executors import check_backend

    check_backend(backend, address)
    out = Path(out_dir) if out_dir is not None else None
    ledger = FaultLedger(grid, out, callback, progress)
    run_ledger(ledger, work=_worker_cell, workers=workers, backend=backend, address=address,
               stop_event=stop_event, initializer=_init_worker, initargs=(grid,))
    return ledger.frame()


# --- files ------------------------------------------------------------------------------------

def summary_frame(rows: list[dict]) -> pd.DataFrame:
    """Rows in a stable order (task, fault, severity, arm, seed), SUMMARY_COLUMNS first."""
    df = pd.DataFrame(rows)
    for col in SUMMARY_COLUMNS:
        if col not in df:
            df[col] = np.nan
    if df.empty:
        return df[SUMMARY_COLUMNS]
    for col in ("diverged_step", "detection_latency", "steps_lost", "lr_back_steps"):
        df[col] = pd.to_numeric(df[col]).astype("Int64")
    df["stopped"] = [s if isinstance(s, str) else "" for s in df["stopped"]]  # NaN read back
    fault_o = {f: i for i, f in enumerate(("none", *FAULT_NAMES))}
    arm_o = {a: i for i, a in enumerate(FAULT_ARMS + OPTIONAL_ARMS)}
    df = df.assign(_f=df["fault"].map(fault_o).fillna(99), _a=df["arm"].map(arm_o).fillna(99))
    df = df.sort_values(["task", "_f", "severity", "seed", "_a"], kind="stable")
    extra = sorted(c for c in df.columns if c not in SUMMARY_COLUMNS + ["_f", "_a"])
    return df[SUMMARY_COLUMNS + extra].reset_index(drop=True)


# --- finding each task's LR -------------------------------------------------------------------

def find_lr(task: str, lrs: list[float] | None = None, seed: int = 0,
            steps: int | None = None) -> pd.DataFrame:
    """Plain AdamW without a fault at each LR on `seed` (0: never a report seed): the final
    val loss per LR, best first. This is how TASKS' LRs were chosen."""
    import torch

    from lbw_sim.sim.runner import Run

    grid = build_fault_grid(tasks=[task], seeds=1, arms=["adamw"], steps=steps)
    sc = grid.scenario(FaultCell(task, "none", 0.0, "adamw", seed))
    rows, cache = [], {}
    for lr in lrs or TASKS[task]["find_lrs"]:
        trace = list(Run(sc, ArmSpec("adamw"), lr, seed, torch.device("cpu"), cache=cache))
        rows.append({"task": task, "lr": lr, "final_val_loss": float(trace[-1]["val_loss"])})
    return pd.DataFrame(rows).sort_values("final_val_loss", na_position="last")


# --- the summary file -----------------------------------------------------------------------

REQUIRED = ["task", "fault", "severity", "arm", "seed", "final_val_loss",
            "clean_final_val_loss", "interventions", "final_lr_scale"]
NUMERIC = ["severity", "seed", "final_val_loss", "clean_final_val_loss", "interventions",
           "final_lr_scale", "ratio", "steps_lost", "detection_latency", "false_interventions",
           "skips", "rollbacks", "lr_back_steps", "wall_s"]


def read_fault_summary(source: str | Path | bytes, name: str = "summary.csv") -> pd.DataFrame:
    """A fault summary.csv from disk or an upload, checked: its columns and numbers."""
    if isinstance(source, (str, Path)):
        name, source = Path(source).name, Path(source).read_bytes()
    df = read_csv_table(source, name, REQUIRED, "fault-grid summary")
    for col in ("task", "fault", "arm"):
        df[col] = df[col].astype(str)
    unknown = sorted(set(df["fault"]) - {"none", *FAULT_NAMES})
    if unknown:
        raise TraceError(f"{name}: unknown fault(s) {', '.join(unknown)}; known: none, "
                         f"{', '.join(FAULT_NAMES)}")
    for col in NUMERIC:
        if col in df:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    for col in ("seed", "severity"):
        if df[col].isna().any():
            row = int(np.flatnonzero(df[col].isna())[0]) + 2
            raise TraceError(f"{name}: row {row}: {col} must be a number")
    df["seed"] = df["seed"].astype(int)
    for col in ("lr_recovered", "recovered"):
        if col in df:
            df[col] = df[col].map(lambda v: str(v).strip().lower() in ("true", "1", "1.0"))
    return summary_frame(df.to_dict("records"))
