"""The runner: train one (arm, lr, seed) cell of a scenario, trace each step, summarise.

    for row in iter_run(load_scenario("loss_spike"), "guard", 3e-3, seed=0):
        ...                                                      # one dict per step, live
    summarize(rows, sc, arm="guard", lr=3e-3, seed=0, wall_s=t)  # the cell's summary row

A whole scenario (every arm x lr x seed, traces, summary.csv) is `bench.scenario`.

Fairness: in every arm the same seed gives the same initial weights and the same batches
(batch `k` is `Batches.get(k)`, a pure function of (seed, k)) and the same faults. Faults
carried by data (corrupt batches, NaN/inf, overflow, gradient noise) are keyed to the batch
index, LR spikes to the optimizer step, so a rollback's `take_skip_batches()` jumps past bad
batches (the PaLM recipe) but not past a bad schedule.

Divergence: the first step whose model loss (the forward loss before any injected
perturbation) is non-finite or, after the warm-up, exceeds `divergence.factor` (default 2)
times the loss of step 0. A run whose model loss stays non-finite for
`divergence.stop_after_nonfinite` steps is cut short: its weights never recover.

Each step's row is read back to the host after the arm's `step()` (`arm.last_row()`, with
`take_skip_batches()` and `should_stop`): a few small reads per step on a GPU, outside the
guarded step itself (which adds no sync), cheap for these small models and what a live
chart needs anyway. On CUDA the guard arm decides on the device (`decide_on="auto"`);
`decide_on="device"` forces the torch backend on the CPU too (how the tests exercise it).
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from lbw_sim.guard.analysis import acted, control_masks
from lbw_sim.guard.spec import GuardSpec
from lbw_sim.sim.arms import is_guard_arm, make_arm
from lbw_sim.sim.competitors import eval_mode
from lbw_sim.sim.data import (
    _step_generator,
)
from lbw_sim.sim.device import pick_device
from lbw_sim.sim.faults import FaultSchedule, LRSpike
from lbw_sim.sim.scenarios import ArmSpec, Scenario, load_scenario
from lbw_sim.sim.tasks import Task, build_task, digits_data, token_data
from lbw_sim.traces.recorder import TraceRecorder
from lbw_sim.traces.schema import GUARD_RUN_COLUMNS, RUN_COLUMNS

#: Columns of every cell's trace; a guard arm adds GUARD_TRACE_COLUMNS (see traces.schema).
TRACE_COLUMNS = list(RUN_COLUMNS)
GUARD_TRACE_COLUMNS = list(GUARD_RUN_COLUMNS)


def trace_columns(arm: str) -> list[str]:
    """The trace columns of arm `arm`: a guard arm's (`arms.is_guard_arm`) add the guard's."""
    return TRACE_COLUMNS + (GUARD_TRACE_COLUMNS if is_guard_arm(arm) else [])
FAULT_SEED = 7919  # fault randomness: a pure function of (seed, batch), the same in every arm


# --- what a cell trains (sim/tasks.py) -------------------------------------------------------

def prepare(sc: Scenario, arms: Sequence[ArmSpec], device: torch.device, cache: dict) -> None:
    """Build the data into `cache` and take one untimed step per kind of arm, so that neither
    the data nor first-call costs (lazy kernel set-up, loading the guard's compiled walk)
    land in the wall time of whichever cell runs first."""
    if sc.model_kind == "gpt":
        token_data(sc, cache)
    elif sc.model_kind == "mlp":
        digits_data(sc, cache)
    for name in dict.fromkeys(a.name for a in arms):
        for _ in Run(sc, name, sc.lrs[0], sc.seeds[0], device, steps=1, cache=cache):
            pass


def fault_label(sched: FaultSchedule, step: int, batch: int) -> str:
    """Kinds active at this step: LR spikes by optimizer step, the rest by batch index."""
    kinds = [f.kind for f in sched.active(step) if isinstance(f, LRSpike)]
    kinds += [f.kind for f in sched.active(batch) if not isinstance(f, LRSpike)]
    return ",".join(kinds)


# --- one run, step by step --------------------------------------------------------------------

class Run:
    """One (arm, lr, seed) cell as an iterator of per-step rows, for scripts and live pages.

    Thread-safe controls: `stop()` (or setting the `stop_event` it was given) ends the
    iteration after the current step; `set_spec(spec)` swaps the guard spec before the next
    step. After iteration, `arm`, `task` and `stop_reason` stay available. `decide_on`
    (auto, host, device) says where the guard arm decides; None keeps the scenario's
    `arm_options.guard.decide_on` (default auto: the torch backend on a GPU).
    """

    def __init__(self, scenario: Scenario, arm: str | ArmSpec, lr: float, seed: int = 0,
                 device: str | torch.device = "auto", *, steps: int | None = None,
                 stop_event: threading.Event | None = None, cache: dict | None = None,
                 decide_on: str | None = None):
        if decide_on is not None:
            guard = {**scenario.arm_options.get("guard", {}), "decide_on": decide_on}
            scenario = scenario.replace(arm_options={**scenario.arm_options, "guard": guard})
        self.scenario = scenario
        self.arm_spec = arm if isinstance(arm, ArmSpec) else ArmSpec.parse(arm, "arm")
        self.lr, self.seed = float(lr), int(seed)
        self.device = pick_device(device)
        self.steps = int(steps or scenario.steps)
        self.stop_event = stop_event or threading.Event()
        self.cache = cache
        self.stop_reason = ""
        self.arm: torch.optim.Optimizer | None = None
        self.task: Task | None = None
        self._pending: GuardSpec | None = None
        self._lock = threading.Lock()

    def stop(self) -> None:
        self.stop_event.set()

    def set_spec(self, spec: GuardSpec) -> None:
        with self._lock:
            self._pending = spec

    def base_lr(self, step: int) -> float:
        """The schedule's LR at `step` (before faults and the guard)."""
        a, sc = self.arm_spec, self.scenario
        lr = a.lr if a.schedule == "lr_matched" else self.lr
        sched = sc.schedule
        if a.schedule in ("constant", "cosine"):
            sched = type(sched)(sched.warmup, a.schedule, sched.min_lr_ratio)
        elif a.schedule == "lr_matched" and a.lr_scales:   # the scenario's, replayed
            return lr * sched.factor(step, self.steps) * a.lr_scales[
                min(step, len(a.lr_scales) - 1)]
        elif a.schedule == "lr_matched":
            sched = type(sched)(sched.warmup, "constant", sched.min_lr_ratio)
        return lr * sched.factor(step, self.steps)

    def _setup(self) -> tuple[torch.optim.Optimizer, Task, FaultSchedule]:
        sc, o = self.scenario, self.scenario.optimizer
        task = build_task(sc, self.seed, self.device, self.cache)
        arm = make_arm(self.arm_spec.name, task.module, self.lr, sc.guard, optimizer=o.kind,
                       betas=o.betas, weight_decay=o.weight_decay, eps=o.eps,
                       momentum=o.momentum, **sc.arm_options.get(self.arm_spec.name, {}))
        self.arm, self.task = arm, task
        return arm, task, sc.fault_schedule(task.n_classes)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        arm, task, faults = self._setup()
        params = [p for p in task.module.parameters() if p.requires_grad]
        sc, offset, bad_run, t0 = self.scenario, 0, 0, time.perf_counter()
        for step in range(self.steps):
            if self.stop_event.is_set():
                self.stop_reason = "stopped by request"
                return
            self._apply_pending(arm)
            batch_idx = step + offset
            lr = self.base_lr(step) * faults.lr_factor(step)
            for g in arm.param_groups:
                g["lr"] = lr
            label = fault_label(faults, step, batch_idx)
            gen = _step_generator(self.seed + FAULT_SEED, batch_idx) if label else None
            batch = task.batches.get(batch_idx) if task.batches is not None else None
            if batch is not None and label:
                batch = faults.corrupt_batch(*batch, batch_idx, gen)
            model_loss = task.loss(batch, batch_idx)
            loss = faults.perturb_loss(model_loss, batch_idx)
            arm.zero_grad(set_to_none=True)
            loss.backward()
            faults.perturb_grads(params, batch_idx, gen)
            arm.step(loss=loss.detach())
            offset += arm.take_skip_batches()
            row = self._row(arm)
            row.update(step=step, batch=batch_idx, model_loss=float(model_loss.detach()),
                       fault=label, wall_time=time.perf_counter() - t0, val_loss=math.nan)
            bad_run = 0 if math.isfinite(row["model_loss"]) else bad_run + 1
            if arm.should_stop:
                self.stop_reason = arm.stop_reason
            elif bad_run >= sc.stop_after_nonfinite:
                self.stop_reason = f"model loss non-finite for {bad_run} steps"
            last = step == self.steps - 1 or bool(self.stop_reason)
            if last or step % sc.eval_every == 0:
                with eval_mode(arm):  # Schedule-Free evaluates at its average, then resumes
                    row["val_loss"] = task.evaluate()
            yield row
            if self.stop_reason:
                return

    def _row(self, arm: torch.optim.Optimizer) -> dict[str, Any]:
        """The arm's latest step, restricted to the runner's columns."""
        full = arm.last_row()
        return {c: full[c] for c in trace_columns(self.arm_spec.name) if c in full}

    def _apply_pending(self, arm: torch.optim.Optimizer) -> None:
        with self._lock:
            spec, self._pending = self._pending, None
        if spec is not None:
            arm.set_spec(spec)


def iter_run(scenario: Scenario | str, arm: str | ArmSpec, lr: float | None = None,
             seed: int = 0, device: str | torch.device = "auto", *,
             stop_event: threading.Event | None = None, steps: int | None = None,
             decide_on: str | None = None) -> Run:
    """A `Run` to iterate: one dict per step (see TRACE_COLUMNS); `run.set_spec` between steps."""
    sc = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    return Run(sc, arm, sc.lrs[0] if lr is None else lr, seed, device, steps=steps,
               stop_event=stop_event, decide_on=decide_on)


# --- one whole cell ---------------------------------------------------------------------------

def run_cell(sc: Scenario, arm: ArmSpec, lr: float, seed: int, device: torch.device, *,
             steps: int | None = None, trace_path: Path | None = None,
             cache: dict | None = None, on_step: Callable[[int], None] | None = None,
             stop_event: threading.Event | None = None, label: str | None = None,
             ) -> tuple[dict[str, Any], pd.DataFrame, Run]:
    """Train one cell to the end (or until stopped): its summary row (`summarize`, the arm
    named `label`, default its label), its trace (the arm's `trace_columns`) and the finished
    `Run`. With `trace_path` the trace is also written there as it is recorded (crash-safe;
    a file already there is replaced). `on_step(n)` is called after each of the n steps.
    Every grid cell is trained here."""
    run = Run(sc, arm, lr, seed, device, steps=steps, stop_event=stop_event, cache=cache)
    columns = trace_columns(arm.name)
    rec = None
    if trace_path is not None:
        trace_path.unlink(missing_ok=True)  # a killed run's partial trace, or an old run's
        rec = TraceRecorder(trace_path, columns=columns, flush_every=100)
    rows, t0 = [], time.perf_counter()
    try:
        for row in run:
            rows.append(row)
            if rec is not None:
                rec.record(**{c: row.get(c) for c in columns})
            if on_step is not None:
                on_step(len(rows))
    finally:
        if rec is not None:
            rec.close()
    best = run.task.best_loss if run.task is not None else None
    summary = summarize(rows, sc, arm=label or arm.label, lr=lr, seed=seed,
                        wall_s=time.perf_counter() - t0, best_loss=best, stopped=run.stop_reason)
    if run.task is not None and run.task.start_loss is not None:   # a fine-tune's start
        summary["start_val_loss"] = run.task.start_loss
    return summary, pd.DataFrame(rows, columns=columns), run


# --- summaries --------------------------------------------------------------------------------

def summarize(rows: Sequence[dict[str, Any]], sc: Scenario, *, arm: str, lr: float, seed: int,
              wall_s: float, best_loss: float | None = None, stopped: str = "") -> dict:
    """One summary row for a cell from its per-step rows."""
    df = pd.DataFrame(rows)
    out: dict[str, Any] = {"arm": arm, "lr": lr, "seed": seed, "steps_run": len(df),
                           "wall_s": wall_s, "best_loss": best_loss, "stopped": stopped}
    if df.empty:
        return out
    ml = df["model_loss"].to_numpy(float)
    out["final_train_loss"] = float(ml[-max(1, len(ml) // 10):].mean())
    val = df["val_loss"].dropna() if "val_loss" in df else pd.Series(dtype=float)
    out["final_val_loss"] = float(df["val_loss"].iloc[-1]) if len(val) else math.nan
    out["diverged_step"] = diverged_step(ml, sc.schedule.warmup, sc.divergence_factor)
    controls = control_masks(df)
    if "regime" in df:
        for regime, frac in df["regime"].astype(str).value_counts(normalize=True).items():
            out[f"time_{regime}"] = float(frac)
    out["interventions"] = int(acted(df).sum())
    out["skips"] = int(controls["skipped"].sum())
    out["rollbacks"] = int(controls["rolled back"].sum())
    return out


def diverged_step(model_loss: np.ndarray, warmup: int, factor: float) -> int | None:
    """First step with a non-finite loss, or one above factor x the first loss after warm-up."""
    if len(model_loss) == 0:
        return None
    bad = ~np.isfinite(model_loss)
    steps = np.arange(len(model_loss))
    if math.isfinite(model_loss[0]):
        bad |= (steps >= warmup) & (model_loss > factor * model_loss[0])
    hits = np.flatnonzero(bad)
    return int(hits[0]) if len(hits) else None


def trace_name(arm: str, lr: float, seed: int) -> str:
    """File name of a cell's trace, e.g. `adamw-cosine_lr0.003_seed0.csv`."""
    return f"{re.sub(r'[^A-Za-z0-9.=_-]+', '-', arm)}_lr{lr:g}_seed{seed}.csv"
