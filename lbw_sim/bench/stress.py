"""The LR stress suite: an LR grid x arms x seeds on `scenarios/lr_stress.yaml`, resumable.

    grid = build_grid(quick=True)                    # 500 steps, 50 warm-up, one seed
    result = run_stress(grid, out_dir="runs/stress_quick", workers=2)
    viz.stress.write_report(result, "runs/stress_quick")  # summary.csv, table.md, 2 figures

Arms: the scenario's arms (`adamw`, `clip`, `zclip`, `skipstep`, `guard`; `adamw:cosine` is
called `cosine` here) and the control `lr_matched`, added whenever `guard` is in the grid.

`lr_matched` is plain AdamW replaying the guard cell's realised LR (same lr, same seed): step
k runs at the scenario's LR for step k times the guard's *effective* LR scale at step k
(`effective_lr_scales`: the guard's `lr_scale` times the update cap's factor `update_scale`,
AdamW's update being proportional to its LR, or 0 where the update was not applied,
`skipped` or `safety_skip`). It has the guard's schedule and none of its rollbacks, skips
or timing, so it asks: is the guard only an LR schedule in disguise? Its cell runs once
the guard cell is done. `mean_lr_scale` (guard rows: the mean effective scale from the end
of warm-up) and `run_lr` (every row; lr_matched: the grid LR times that mean) are recorded
in the summary.

Fairness: every cell with the same seed starts from the same weights and sees the same
batches whichever worker process runs it (batch k is a pure function of (seed, k)).

Resume: `summary.csv` in the output folder is rewritten (atomically) after every cell; cells
already in it are skipped, and the partial trace of a cell killed mid-way is deleted and the
cell re-run. `grid.json` records what must match for results to be mixed (model, data,
steps, schedule, guard hash …); LRs and seeds may grow between runs.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from lbw_sim.bench.engine import (
    GRID_FILE,
    SUMMARY_FILE,
    atomic_write,
    open_results,
    run_ledger,
    write_summary,
)
from lbw_sim.bench.stress_grid import (
    CURVE_COLUMNS,
    STRESS_ARMS,
    Cell,
    StressGrid,
    StressResult,
    read_curves,
    read_summary,
    summary_frame,
)
from lbw_sim.checks import load_yaml
from lbw_sim.errors import SpecError
from lbw_sim.sim.arms import is_guard_arm
from lbw_sim.sim.scenarios import SCENARIO_DIR, ArmSpec, Scenario

STRESS_YAML = SCENARIO_DIR / "lr_stress.yaml"
#: --quick: a 2-layer GPT on 32-token windows, 500 steps, 50 warm-up, one seed, LRs up to
#: 1.0 so the grid reaches >= 30x AdamW's best LR (which sits near 1e-2 at this size).
QUICK = {"steps": 500, "seeds": [1], "schedule": {"warmup": 50}, "eval_every": 50,
         "model": {"kind": "gpt", "n_layer": 2, "n_head": 4, "n_embd": 64, "block_size": 32},
         "lrs": [3.16e-3, 1.0e-2, 3.16e-2, 1.0e-1, 3.16e-1, 1.0]}
#: The studio's miniature grid: seconds per cell on one CPU thread. An order-1 chain, which
#: a 2-layer width-32 GPT learns to within ~0.1 nats of its floor in 160 steps.
MINI = {"steps": 160, "seeds": [1], "schedule": {"warmup": 20}, "eval_every": 40,
        "eval_batches": 4, "batch_size": 16,
        "data": {"order": 1, "n_train": 100_000, "n_val": 10_000},
        "model": {"kind": "gpt", "n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32},
        "lrs": [1.0e-2, 1.0e-1, 1.0], "arms": ["adamw", "clip", "guard"]}


# --- building the grid ------------------------------------------------------------------------

def build_grid(*, quick: bool = False, mini: bool = False, text: str | Path | None = None,
               seeds: int | None = None, overrides: dict[str, Any] | None = None,
               arms: list[str] | None = None, path: Path = STRESS_YAML,
               replace: dict[str, Any] | None = None) -> StressGrid:
    """The grid of `lr_stress.yaml`, with the --quick (or studio `mini`) overrides, real
    text instead of the synthetic corpus, a seed count N (seeds 1..N: seed 0 is kept for
    tuning guard specs, so reported figures are not fitted to themselves), and `overrides`
    (merged key by key into the YAML before validation, so errors name the field)."""
    raw = load_yaml(Path(path).read_text(encoding="utf-8"))
    for extra in (QUICK if quick else None, MINI if mini else None, overrides):
        raw = _merge(raw, extra or {})
    raw.update(replace or {})  # whole top-level keys (the suite's model and data blocks)
    if text is not None:
        raw["data"] = {"kind": "text", "path": str(_text_path(text))}
    if seeds is not None:
        if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
            raise SpecError("--seeds", f"must be a whole number >= 1, got {seeds!r}")
        raw["seeds"] = list(range(1, seeds + 1))
    stress_arms = arms or [_stress_name(a) for a in raw.get("arms", [])]
    raw["arms"] = [_arm_label(a) for a in stress_arms if a != "lr_matched"]
    sc = Scenario.from_dict(raw, Path(path).parent)
    if arms is None and "guard" in stress_arms:
        stress_arms.append("lr_matched")
    if "lr_matched" in stress_arms and "guard" not in stress_arms:
        raise SpecError("arms", "lr_matched takes its LR from the guard cell: add guard")
    order = [a for a in STRESS_ARMS if a in stress_arms]
    return StressGrid(sc.replace(source=str(path)), tuple(order))


def _merge(base: dict, extra: dict) -> dict:
    """`base` with `extra` merged in, nested mappings key by key."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _text_path(text: str | Path) -> Path:
    p = Path(text).expanduser()
    if not p.is_file():
        raise SpecError("--text", f"{text}: no such file")
    return p.resolve()


def _stress_name(label: str) -> str:
    return {"adamw:cosine": "cosine", "plain": "adamw"}.get(str(label), str(label))


def _arm_label(name: str) -> str:
    if name not in STRESS_ARMS:
        raise SpecError("arms", f"unknown stress arm {name!r}; known: {', '.join(STRESS_ARMS)}")
    return "adamw:cosine" if name == "cosine" else name


def arm_spec(arm: str, lr: float, lr_scales: Sequence[float] | None = None) -> ArmSpec:
    """The runner's arm for a stress arm; `lr_matched` replays the guard cell's
    `lr_scales` (`effective_lr_scales`)."""
    if arm == "lr_matched":
        if not lr_scales or not all(math.isfinite(v) for v in lr_scales):
            raise SpecError("arms", "lr_matched needs the guard cell's per-step LR scales")
        return ArmSpec("adamw", "lr_matched", lr, tuple(float(v) for v in lr_scales))
    return ArmSpec.parse(_arm_label(arm), "arms")


def effective_lr_scales(trace: pd.DataFrame) -> list[float]:
    """The guard's effective LR scale at every step 0 … last (see the module doc); a step
    the trace lacks takes the step before it."""
    if trace.empty:
        return [1.0]
    applied = ~trace["skipped"].astype(bool)
    if "safety_skip" in trace:
        applied &= ~trace["safety_skip"].fillna(False).astype(bool)
    scale = trace["lr_scale"].astype(float)
    if "update_scale" in trace:
        scale = scale * trace["update_scale"].astype(float).fillna(1.0)
    scale = scale.where(applied, 0.0).fillna(1.0)
    by_step = pd.Series(scale.to_numpy(), index=trace["step"].astype(int).to_numpy())
    by_step = by_step[~by_step.index.duplicated(keep="last")]
    return by_step.reindex(range(int(by_step.index.max()) + 1)).ffill().fillna(1.0).tolist()


def mean_lr_scale(trace: pd.DataFrame, warmup: int) -> float:
    """The guard's mean effective LR scale from the end of warm-up (all steps when it
    stopped before)."""
    scales = effective_lr_scales(trace)
    after = scales[warmup:]
    return float(sum(after) / len(after) if after else sum(scales) / len(scales))


# --- one cell ---------------------------------------------------------------------------------

def run_cell(grid: StressGrid, cell: Cell, lr_scales: Sequence[float] | None = None,
             out_dir: Path | None = None, cache: dict | None = None,
             on_step: Callable[[int], None] | None = None,
             stop_event: threading.Event | None = None,
             ) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """Train one cell; return its summary row, its curve (CURVE_COLUMNS) and its trace (the
    trace file's columns). With `out_dir` the trace is also written there as it is recorded."""
    import torch

    from lbw_sim.sim.runner import run_cell as train

    spec = arm_spec(cell.arm, cell.lr, lr_scales)
    summary, trace, _ = train(grid.scenario, spec, cell.lr, cell.seed, torch.device("cpu"),
                              trace_path=out_dir / cell.trace_file if out_dir else None,
                              cache=cache, on_step=on_step, stop_event=stop_event,
                              label=cell.arm)
    return _finish_row(summary, trace, grid, cell, spec), _curve(trace), trace


def _finish_row(row: dict, trace: pd.DataFrame, grid: StressGrid, cell: Cell,
                spec: ArmSpec) -> dict:
    loss = row.get("final_val_loss", math.nan)
    row["final_val_ppl"] = math.exp(min(loss, 700.0)) if math.isfinite(loss) else math.nan
    row["run_lr"] = cell.lr
    if spec.lr_scales:
        warmup = grid.scenario.schedule.warmup
        after = spec.lr_scales[warmup:] or spec.lr_scales
        row["run_lr"] = cell.lr * sum(after) / len(after)
    if is_guard_arm(cell.arm):
        row["mean_lr_scale"] = mean_lr_scale(trace, grid.scenario.schedule.warmup)
    row.pop("best_loss", None)
    return row


def _curve(trace: pd.DataFrame) -> pd.DataFrame:
    if trace.empty:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    return trace[CURVE_COLUMNS].copy()


# --- the whole grid ---------------------------------------------------------------------------

def guard_free(arm: str) -> bool:
    """Whether a cell of `arm` is the same whatever the guard spec (not a guard arm, and not
    `lr_matched`, which replays the guard cell's LR)."""
    return not is_guard_arm(arm) and arm != "lr_matched"


def reuse_cells(grid: StressGrid, out: str | Path, source: str | Path) -> int:
    """Copy into `out` the finished cells of `source` that do not depend on the guard spec
    (`guard_free`), when `source` ran this grid with another guard: each cell is a pure
    function of its arm, LR, seed and the grid, so measuring AdamW again under a second spec
    would repeat the same numbers. Their rows and traces are copied as they are; the
    cells left are run as usual. Returns how many cells were taken."""
    out, source = Path(out), Path(source)
    mine = json.loads(json.dumps(grid.fingerprint(), default=str))
    try:
        theirs = json.loads((source / GRID_FILE).read_text(encoding="utf-8"))
        found = read_summary(source / SUMMARY_FILE)
    except (OSError, ValueError) as exc:
        raise SpecError("--reuse", f"{source} holds no readable grid results: {exc}") from None
    diff = sorted(k for k in mine if k != "guard" and theirs.get(k) != mine[k])
    if diff:
        raise SpecError("--reuse", f"{source} ran another grid (differs in {', '.join(diff)})")
    rows = open_results(out, grid.fingerprint(), read_summary)
    have = {Cell(r["arm"], float(r["lr"]), int(r["seed"])).key for r in rows}
    wanted = {c.key: c for c in grid.cells() if guard_free(c.arm) and c.key not in have}
    taken = [r for r in found.to_dict("records")
             if Cell(r["arm"], float(r["lr"]), int(r["seed"])).key in wanted]
    for r in taken:
        trace = source / wanted[Cell(r["arm"], float(r["lr"]), int(r["seed"])).key].trace_file
        if trace.exists():
            shutil.copyfile(trace, out / trace.name)
    if taken:
        write_summary(summary_frame(rows + taken), out / SUMMARY_FILE)
    return len(taken)


Callback = Callable[[float, int, "dict | None"], None]  # (cells done, total, finished row)


def run_stress(grid: StressGrid, out_dir: str | Path | None = None, *, workers: int = 1,
               progress: bool = True, callback: Callback | None = None,
               stop_event: threading.Event | None = None, backend: str = "local",
               address: str | None = None) -> StressResult:
    """Run the cells not yet in `out_dir`'s summary (`engine.run_ledger`); `workers` > 1 uses
    that many processes (one torch thread each), else this process (its torch threads as
    they are) with per-step progress; `backend="ray"` runs each cell as a Ray task (see
    `bench.executors`). Stops early (keeping what is done) when `stop_event` is set."""
    from lbw_sim.bench.executors import check_backend

    check_backend(backend, address)
    reference = reference_levels(grid.scenario)  # also: a text too short fails here, not later
    out = Path(out_dir) if out_dir is not None else None
    done_rows = open_results(out, grid.fingerprint(), read_summary) if out is not None else []
    ledger = StressLedger(grid, out, done_rows, callback, progress, reference)
    run_ledger(ledger, work=_worker_cell, workers=workers, backend=backend, address=address,
               stop_event=stop_event, initializer=_init_worker, initargs=(grid,))
    return ledger.result()


class StressLedger:
    """A stress grid run for the engine: what is done, what is left, what each cell needs
    (`lr_matched` its guard cell), summary writes, progress."""

    def __init__(self, grid: StressGrid, out: Path | None, rows: list[dict],
                 callback: Callback | None, progress: bool, reference: dict[str, float]):
        self.grid, self.out, self.rows, self.callback = grid, out, rows, callback
        self.reference = reference
        done = {Cell(r["arm"], float(r["lr"]), int(r["seed"])).key for r in rows}
        self.todo = [c for c in grid.cells() if c.key not in done]
        self.total, self.finished = len(self.todo), 0
        self.curves: list[pd.DataFrame] = []
        self.scales: dict[tuple, list[float]] = {}   # guard cells' effective_lr_scales
        self.bar = _bar(self.total, grid.scenario.steps) if progress and self.todo else None

    def needs(self, cell: Cell) -> tuple:
        return (Cell("guard", cell.lr, cell.seed).key,) if cell.arm == "lr_matched" else ()

    def has(self, key: tuple) -> bool:
        return self._row(key) is not None

    def _row(self, key: tuple) -> dict | None:
        return next((r for r in self.rows
                     if Cell(r["arm"], float(r["lr"]), int(r["seed"])).key == key), None)

    def guard_scales(self, cell: Cell) -> list[float] | None:
        """The guard cell's per-step effective LR scales for an lr_matched cell (None: not
        an lr_matched cell, or its guard cell not run yet)."""
        if cell.arm != "lr_matched":
            return None
        key = Cell("guard", cell.lr, cell.seed)
        if key.key not in self.scales and self.out is not None and self.has(key.key):
            path = self.out / key.trace_file   # a guard cell of an earlier, resumed run
            if path.exists():
                self.scales[key.key] = effective_lr_scales(pd.read_csv(path))
        return self.scales.get(key.key)

    def args(self, cell: Cell) -> tuple:
        keep = self.out is not None or cell.arm == "guard"
        return self.grid, cell, self.guard_scales(cell), keep

    def here(self, stop_event: threading.Event) -> Callable[[Cell], tuple | None]:
        """Run a cell in this process with per-step progress (None: interrupted). The data
        and first-call costs are paid once, before the first cell run here."""
        cache: dict = {}
        steps, prepared = self.grid.scenario.steps, []

        def run(cell: Cell) -> tuple | None:
            if not prepared:
                prepared.append(True)
                import torch

                from lbw_sim.sim.runner import prepare

                prepare(self.grid.scenario, [arm_spec(a, 1.0, [1.0]) for a in self.grid.arms],
                        torch.device("cpu"), cache)
            base = self.finished
            result = run_cell(self.grid, cell, self.guard_scales(cell), self.out, cache,
                              on_step=lambda n: self.tick(base + n / steps),
                              stop_event=stop_event)
            return None if stop_event.is_set() else result

        return run

    def add(self, cell: Cell, result: tuple) -> None:
        row, curve, trace = result
        if isinstance(trace, str) and self.out is not None:   # a worker's trace, as CSV text
            atomic_write(self.out / cell.trace_file, trace)
        if cell.arm == "guard" and trace is not None:
            frame = pd.read_csv(io.StringIO(trace)) if isinstance(trace, str) else trace
            self.scales[cell.key] = effective_lr_scales(frame)
        self.rows.append(row)
        self.curves.append(curve.assign(arm=cell.arm, lr=cell.lr, seed=cell.seed))
        self.finished += 1
        if self.out is not None:
            write_summary(summary_frame(self.rows), self.out / "summary.csv")
        if self.bar is not None:
            self.bar.set_postfix_str(f"{cell.arm} lr={cell.lr:g} seed={cell.seed}")
        self.tick(self.finished, row)

    def tick(self, done: float, row: dict | None = None) -> None:
        if self.bar is not None:
            self.bar.update(round(done * self.grid.scenario.steps) - self.bar.n)
        if self.callback is not None:
            self.callback(done, self.total, row)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def result(self) -> StressResult:
        curves = pd.concat(self.curves, ignore_index=True) if self.curves else pd.DataFrame()
        if self.out is not None:
            curves = read_curves(self.out, summary_frame(self.rows))
        return StressResult(self.grid, summary_frame(self.rows), curves, self.reference)


def _bar(cells: int, steps: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=cells * steps, desc=f"stress ({cells} cells)", unit="step",
                dynamic_ncols=True, disable=None)  # None: off when stderr is not a terminal


# --- worker processes -------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _init_worker(grid: StressGrid) -> None:
    """One torch thread per process; data and first-call costs paid before any timed cell."""
    import torch

    from lbw_sim.sim.runner import prepare

    torch.set_num_threads(1)
    _WORKER["cache"] = {}
    prepare(grid.scenario, [arm_spec(a, 1.0, [1.0]) for a in grid.arms], torch.device("cpu"),
            _WORKER["cache"])


def _worker_cell(grid: StressGrid, cell: Cell, lr_scales: list[float] | None,
                 keep_trace: bool) -> tuple[dict, pd.DataFrame, str | None]:
    """A cell in a worker, which may sit on another machine (Ray): it writes nothing; its
    trace comes back as CSV text for the driver to write, so --out needs no shared disk."""
    row, curve, trace = run_cell(grid, cell, lr_scales, None, _WORKER.get("cache"))
    return row, curve, trace.to_csv(index=False) if keep_trace else None


# --- files ------------------------------------------------------------------------------------

def reference_levels(sc: Scenario) -> dict[str, float]:
    """Loss levels drawn for reference: the entropy floor (synthetic data) and the unigram
    entropy (the loss of predicting token frequencies only). Reads a text source, so a text
    that cannot be read or is too short for the model's windows fails here."""
    from lbw_sim.sim.data import SyntheticSource, TextSource, ngram_entropy

    d = sc.data
    if d.kind == "synthetic":
        src = SyntheticSource(vocab_size=d.vocab_size, order=d.order, seed=d.seed)
        return {"entropy floor": src.entropy_rate, "unigram": src.unigram_entropy}
    if d.kind == "text":
        text = TextSource.from_file(d.path, d.val_fraction)
        need = int(sc.model.get("block_size", 64)) + 2
        if min(len(text.train), len(text.val)) < need:
            raise SpecError("--text", f"{Path(d.path).name}: {len(text.train) + len(text.val)} "
                                      f"characters is too short for windows of {need - 2}")
        return {"unigram": ngram_entropy(text.train.numpy(), 0, text.vocab_size)}
    return {}
