"""The stress grid's shapes and files, shared by the runner (`stress.py`) and the report
(`stress_report.py`): cells, the grid, a result, and summary.csv / trace files on disk.

Its own module so the two import it and not each other.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lbw_sim.errors import TraceError
from lbw_sim.sim.scenarios import Scenario

MAX_SUMMARY_BYTES = 20 * 2**20
#: Arms in report order; `cosine`, `plateau` (ReduceLROnPlateau) and `lr_matched` are the
#: AdamW controls.
STRESS_ARMS = ("adamw", "clip", "zclip", "skipstep", "schedulefree", "stableadamw", "guard",
               "guard:schedulefree", "cosine", "plateau", "lr_matched", "prodigy")
#: Learning-rate-free arms run once per seed at their own default LR, not over the grid.
LR_FREE = {"prodigy": 1.0}
#: summary.csv starts with these columns (one row per cell); extras follow.
SUMMARY_COLUMNS = ["arm", "lr", "seed", "final_train_loss", "final_val_loss", "diverged_step",
                   "interventions", "skips", "wall_s"]
EXTRA_COLUMNS = ["final_val_ppl", "run_lr", "mean_lr_scale", "rollbacks", "steps_run",
                 "stopped"]
CURVE_COLUMNS = ["step", "model_loss", "val_loss", "lr_scale", "skipped"]


@dataclass(frozen=True)
class Cell:
    """One (arm, lr, seed) of the grid; `lr` is the grid LR, also for `lr_matched`."""

    arm: str
    lr: float
    seed: int

    @property
    def key(self) -> tuple[str, str, int]:
        return self.arm, f"{self.lr:.6g}", int(self.seed)

    @property
    def trace_file(self) -> str:
        return f"{self.arm.replace(':', '-')}_lr{self.lr:g}_seed{self.seed}.csv"


@dataclass(frozen=True)
class StressGrid:
    """A validated scenario plus the stress arms to run over its LRs and seeds."""

    scenario: Scenario
    arms: tuple[str, ...]

    def cells(self) -> list[Cell]:
        """Every cell, LR-major; `lr_matched` after `guard` of the same LR; then the LR-free
        arms, once per seed at their default LR (which their rows carry as `lr`)."""
        sc = self.scenario
        return ([Cell(a, lr, s) for lr in sc.lrs for s in sc.seeds for a in self.arms
                 if a not in LR_FREE] +
                [Cell(a, LR_FREE[a], s) for s in sc.seeds for a in self.arms if a in LR_FREE])

    def fingerprint(self) -> dict[str, Any]:
        """What two runs must share for their cells to sit in one summary."""
        sc = self.scenario
        model = dict(sc.model)
        if model.get("init"):   # the cached checkpoint, by its name (which holds its hash)
            model["init"] = Path(model["init"]).name
        return {"model": model, "data": _data_id(sc), "optimizer": repr(sc.optimizer),
                "schedule": repr(sc.schedule), "steps": sc.steps, "batch_size": sc.batch_size,
                "guard": sc.guard.hash, "eval": [sc.eval_every, sc.eval_batches],
                "divergence": [sc.divergence_factor, sc.stop_after_nonfinite]}


def _data_id(sc: Scenario) -> str:
    d = sc.data
    if d.kind != "text":   # `shift` came later: at 0 it is the data grids recorded before it
        return repr(d).replace(", shift=0.0)", ")")
    stat = Path(d.path).stat()
    return f"text:{Path(d.path).name}:{stat.st_size}:{d.val_fraction}"


@dataclass
class StressResult:
    """A grid's summary (one row per cell) and, where known, the per-step curves."""

    grid: StressGrid | None
    summary: pd.DataFrame
    curves: pd.DataFrame = field(default_factory=lambda: pd.DataFrame())
    reference: dict[str, float] = field(default_factory=dict)
    #: per LR, the guard's smallest fraction of steps in `nominal` after warm-up (from traces)
    nominal: dict[float, float] = field(default_factory=dict)


# --- files ------------------------------------------------------------------------------------

def summary_frame(rows: list[dict]) -> pd.DataFrame:
    """Rows in a stable order (arm order, lr, seed), SUMMARY_COLUMNS first."""
    df = pd.DataFrame(rows)
    for col in SUMMARY_COLUMNS + EXTRA_COLUMNS:
        if col not in df:
            df[col] = np.nan
    if df.empty:
        return df[SUMMARY_COLUMNS + EXTRA_COLUMNS]
    df["diverged_step"] = pd.to_numeric(df["diverged_step"]).astype("Int64")
    order = {a: i for i, a in enumerate(STRESS_ARMS)}
    df = df.assign(_o=df["arm"].map(order)).sort_values(["lr", "_o", "seed"], kind="stable")
    extra = sorted(c for c in df.columns if c not in SUMMARY_COLUMNS + EXTRA_COLUMNS + ["_o"])
    return df[SUMMARY_COLUMNS + EXTRA_COLUMNS + extra].reset_index(drop=True)


def read_curves(out: Path, summary: pd.DataFrame) -> pd.DataFrame:
    """The per-step curves of the summary's cells from their trace files (missing: skipped)."""
    from lbw_sim.traces.io import read_table

    parts = []
    for r in summary[["arm", "lr", "seed"]].itertuples(index=False):
        path = out / Cell(r.arm, float(r.lr), int(r.seed)).trace_file
        if path.is_file():
            df = read_table(path)
            keep = [c for c in CURVE_COLUMNS if c in df]
            parts.append(df[keep].assign(arm=r.arm, lr=float(r.lr), seed=int(r.seed)))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


# --- reading a summary ------------------------------------------------------------------------

def read_csv_table(source: str | Path | bytes, name: str, required: list[str],
                   what: str) -> pd.DataFrame:
    """A results table from disk or an upload, checked before use: its size, that it is a
    CSV, that it has the `required` columns and rows (`what` names the table in errors)."""
    if isinstance(source, (str, Path)):
        name, source = Path(source).name, Path(source).read_bytes()
    if len(source) > MAX_SUMMARY_BYTES:
        raise TraceError(f"{name}: {len(source) / 2**20:.1f} MiB is too large for a summary")
    try:
        df = pd.read_csv(io.BytesIO(source), nrows=200_000)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TraceError(f"{name}: not a CSV table ({first})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise TraceError(f"{name}: not a {what}; missing column(s) {', '.join(missing)}")
    if df.empty:
        raise TraceError(f"{name}: no rows")
    return df


def read_summary(source: str | Path | bytes, name: str = "summary.csv") -> pd.DataFrame:
    """A summary.csv from disk or an upload, checked: the columns, numeric LRs and seeds."""
    if isinstance(source, (str, Path)):
        name, source = Path(source).name, Path(source).read_bytes()
    df = read_csv_table(source, name, SUMMARY_COLUMNS, "stress summary")
    return _typed(df, name)


def _typed(df: pd.DataFrame, name: str) -> pd.DataFrame:
    df = df.copy()
    df["arm"] = df["arm"].astype(str)
    for col in SUMMARY_COLUMNS[1:]:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    bad_lr = ~(np.isfinite(df["lr"]) & (df["lr"] > 0))
    if bad_lr.any():
        raise TraceError(f"{name}: row {int(np.flatnonzero(bad_lr)[0]) + 2}: lr must be a "
                         "positive number")
    if df["seed"].isna().any():
        raise TraceError(f"{name}: row {int(np.flatnonzero(df['seed'].isna())[0]) + 2}: "
                         "seed must be a whole number")
    df["seed"] = df["seed"].astype(int)
    return summary_frame(df.to_dict("records"))
