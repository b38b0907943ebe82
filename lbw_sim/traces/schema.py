"""The canonical per-step trace schema.

One row per optimizer step that was logged (sparse logs keep their gaps: `step` is the
optimizer step, not the row number). Telemetry columns are float64 with NaN for "not
logged"; guard columns are written by the engine.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lbw_sim.errors import TraceError

#: Telemetry columns: name -> (dtype, unit / meaning).
TELEMETRY_COLUMNS: dict[str, tuple[str, str]] = {
    "step": ("int64", "optimizer step index (monotone; gaps = sparse logging)"),
    "loss": ("float64", "training loss, nats per token (or the task's own unit)"),
    "grad_norm": ("float64", "global L2 norm of the gradient before any clipping"),
    "lr": ("float64", "base learning rate the schedule asked for (before the guard)"),
    "update_norm": ("float64", "global L2 norm of the parameter update actually applied"),
    "param_norm": ("float64", "global L2 norm of the parameters after the step"),
    "update_ratio": ("float64", "update norm / param norm of the last applied update, before "
                     "any cap (known to the guard before it decides the next step)"),
    "nonfinite": ("float64", "count of non-finite gradient elements (0 = healthy)"),
    "val_loss": ("float64", "validation loss where evaluated (NaN elsewhere)"),
    "wall_time": ("float64", "seconds since the run started"),
}

#: Columns the guard engine adds to a trace: name -> (dtype, meaning).
GUARD_COLUMNS: dict[str, tuple[str, str]] = {
    "regime": ("category", "regime the guard is in after this step's decision"),
    "lr_scale": ("float64", "multiplier applied to the schedule's LR (within the spec's bounds)"),
    "skipped": ("bool", "the update of this step was skipped (params and state untouched)"),
    "momentum_scale": ("float64", "multiplier on the optimizer's first moment (1 = undamped)"),
    "update_cap": ("float64", "cap on the update norm relative to param norm (inf = none)"),
    "update_scale": ("float64", "factor the update cap applied to this step's update (1 = none)"),
    "rollback": ("bool", "restore the last known-good snapshot at this step"),
    "stop": ("bool", "the guard asks the run to stop"),
    "transition": ("string", "name of the transition that fired at this step ('' if none)"),
    "cause": ("string", "signal values and thresholds that made the transition fire"),
    "safety_skip": ("bool", "the actuator withheld an update that the guard did not skip: "
                    "a non-finite gradient, or the step that carries out a rollback"),
    "restored": ("bool", "the known-good snapshot was put back before this step (the device "
                 "path carries out a rollback one step after deciding it)"),
    "shadow": ("bool", "shadow mode: the guard decided and recorded, nothing was applied"),
    "spec_hash": ("string", "content hash of the spec that decided this step"),
}

#: Telemetry a guard signal may read: numeric and known before the step is decided.
SIGNAL_SOURCES: tuple[str, ...] = ("loss", "grad_norm", "lr", "update_norm", "param_norm",
                                   "update_ratio", "val_loss")
#: What the regime walk decides per row, in trace order (written by `engine.annotate`).
DECISION_COLUMNS: tuple[str, ...] = ("regime", "lr_scale", "skipped", "momentum_scale",
                                     "update_cap", "rollback", "stop", "transition", "cause")
#: What `GuardedOptimizer` adds per step: how the decision was applied.
ACTUATOR_COLUMNS: tuple[str, ...] = ("safety_skip", "param_norm", "wall_time", "update_norm",
                                     "update_scale", "restored")
#: The runner's row for every arm (`batch`: batch index after rollbacks' skips, `model_loss`:
#: loss before injected faults, `clipped`: the arm clipped the gradient, `fault`: active
#: fault kinds) ...
RUN_COLUMNS: tuple[str, ...] = ("step", "batch", "loss", "model_loss", "grad_norm", "lr",
                                "lr_scale", "skipped", "clipped", "val_loss", "fault",
                                "wall_time")
#: ... and what the guard arm adds to it.
GUARD_RUN_COLUMNS: tuple[str, ...] = ("regime", "momentum_scale", "update_scale",
                                      "update_ratio", "rollback", "stop", "safety_skip",
                                      "transition", "cause")


def canonicalize(df: pd.DataFrame) -> pd.DataFrame:
    """Return `df` in canonical form: known columns typed, sorted by step, duplicates resolved.

    A duplicated step keeps its last record (a resumed run overwrites what it repeated).
    Unknown columns are kept as they are, after the canonical ones.
    """
    if "step" not in df.columns:
        if len(df) == 0:
            raise TraceError("trace is empty")
        df = df.copy()
        df.insert(0, "step", np.arange(len(df), dtype=np.int64))
    steps = pd.to_numeric(df["step"], errors="coerce")
    if steps.isna().any():
        bad = int(steps.isna().sum())
        raise TraceError(f"column 'step': {bad} value(s) are not numbers")
    # Column by column (no whole-frame copy): a 10M-row trace must not be held four times.
    cols = {"step": steps.astype(np.int64)}
    for col in df.columns:
        if col in TELEMETRY_COLUMNS and col != "step":
            cols[col] = pd.to_numeric(df[col], errors="coerce").astype(TELEMETRY_COLUMNS[col][0])
        elif col != "step":
            cols[col] = df[col]
    out = pd.DataFrame(cols, copy=False)
    step = out["step"].to_numpy()
    if len(step) > 1 and not (step[1:] > step[:-1]).all():
        out = out.drop_duplicates("step", keep="last")
        out = out.sort_values("step", kind="stable")
    out = out.reset_index(drop=True)
    known = [c for c in TELEMETRY_COLUMNS if c in out.columns]
    return out[known + [c for c in out.columns if c not in known]]
