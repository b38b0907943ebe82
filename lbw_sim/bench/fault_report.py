"""What the fault grid reports: per-fault tables, the goals judged, files on disk.

    summary = read_fault_summary("runs/faults_quick/summary.csv")   # checked, typed
    verdict = goals(summary)            # recovery, dominance, no scar, quiet, cost
    write_tables("runs/faults_quick")   # table.md, curves.csv.gz (viz.faults.write_report: + HTML)
    result = load_fault_results(folder) # summary + curves, for the studio

Values are means over seeds (a cell whose final loss is not finite counts as inf). The
goals (for the shipped default spec):
- recovery: the guard ends within 1.02x its own fault-free run on every transient fault
  and severity;
- dominance: on every (task, fault, severity) where some arm ends more than 2 % above its
  fault-free run, the guard ends lowest of all arms;
- no scar: after every fault (and under the lasting shift) the guard's LR scale is back at 1;
- quiet: 0 guard interventions on the fault-free runs;
- cost: the guard's fault-free final val loss within 1.005x of AdamW's.
The lasting `shift` is not a fault: it is judged by no scar only (its ratio to the clean
run measures the harder data, not the arm).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lbw_sim.bench.fault_grid import (
    CURVE_COLUMNS,
    TRANSIENT,
    FaultCell,
    read_fault_summary,
)
from lbw_sim.bench.verdict import GoalRows, mean_or_inf, number
from lbw_sim.bench.verdict import goals_markdown as verdict_markdown
from lbw_sim.guard.spec import GuardSpec

#: recovery: the guard's ratio to its fault-free run; dominance is judged where some arm's
#: ratio exceeds DOMINANCE; cost: the guard's fault-free loss over AdamW's.
RECOVERY, DOMINANCE, COST = 1.02, 1.02, 1.005
RECOVERY_GOAL = f"recovery: guard ≤ {RECOVERY:g}× its fault-free run"
DOMINANCE_GOAL = f"dominance: guard lowest where some arm degrades > {100 * (DOMINANCE - 1):.3g} %"
NO_SCAR_GOAL = "no scar: LR scale back to 1 after each fault and the shift"
QUIET_GOAL = "quiet: 0 guard interventions on fault-free runs"
COST_GOAL = f"cost: guard fault-free ≤ {COST:g}× AdamW's"
OUTPUT_FILES = ("summary.csv", "table.md", "fault_curves.html", "guard_regimes.html",
                "curves.csv.gz")


@dataclass
class FaultResult:
    """A fault grid's summary and, where the traces are at hand, the per-step curves."""

    summary: pd.DataFrame
    curves: pd.DataFrame = field(default_factory=pd.DataFrame)
    spec: GuardSpec | None = None  # the guard arm's spec, where known (None: not recorded)


def mean_table(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, fault, severity, arm): means over seeds."""
    g = summary.groupby(["task", "fault", "severity", "arm"], sort=False)
    agg = {"final_val_loss": mean_or_inf, "clean_final_val_loss": mean_or_inf,
           "ratio": mean_or_inf, "interventions": "mean", "final_lr_scale": "min",
           "skips": "mean", "rollbacks": "mean"}
    tab = g.agg({k: v for k, v in agg.items() if k in summary}).reset_index()
    tab["seeds"] = g.size().to_numpy()
    # a run cut short (the guard's `stop`, or 50 non-finite steps) did not end the run: its
    # last val loss is from earlier, so it is judged as not recovered (inf), not compared
    full = summary.groupby("task")["steps_run"].transform("max") if "steps_run" in summary \
        else None
    short = summary.assign(short=(summary["steps_run"] < full) if full is not None else False)
    tab["completed"] = ~short.groupby(["task", "fault", "severity", "arm"], sort=False)[
        "short"].any().to_numpy()
    tab["judged_loss"] = tab["final_val_loss"].where(tab["completed"], np.inf)
    tab["judged_ratio"] = tab["ratio"].where(tab["completed"], np.inf)
    for col, how in (("steps_lost", _lost), ("detection_latency", _mean_nan),
                     ("lr_back_steps", _lost)):
        if col in summary:
            tab[col] = g[col].agg(how).to_numpy()
    return tab


def _lost(s: pd.Series) -> float:
    """Mean steps lost; inf when some seed never got back."""
    v = pd.to_numeric(s, errors="coerce").to_numpy(float)
    return math.inf if np.isnan(v).any() else float(v.mean()) if len(v) else math.nan


def _mean_nan(s: pd.Series) -> float:
    v = pd.to_numeric(s, errors="coerce").dropna()
    return float(v.mean()) if len(v) else math.nan


def goals(summary: pd.DataFrame) -> pd.DataFrame:
    """The five goals: one row each (goal, measured, target, met, detail); met None where the
    summary cannot tell (no guard cells, no fault-free AdamW …)."""
    tab = mean_table(summary)
    guard = tab[tab["arm"] == "guard"]
    faulted = guard[guard["fault"].isin(TRANSIENT)]
    rows = GoalRows()
    add = rows.add
    # recovery
    if len(faulted):
        worst = faulted.loc[faulted["judged_ratio"].fillna(np.inf).idxmax()]
        misses = faulted[~(faulted["judged_ratio"] <= RECOVERY)]
        add(RECOVERY_GOAL, float(worst["judged_ratio"]),
            f"≤ {RECOVERY} on all {len(faulted)}", misses.empty, _cases(misses, "ratio", ".3f"))
    else:
        add(RECOVERY_GOAL, math.nan, f"≤ {RECOVERY}", None)
    # dominance
    lost: list[str] = []
    judged = 0
    for (task, fault, sev), g in tab[tab["fault"].isin(TRANSIENT)].groupby(
            ["task", "fault", "severity"], sort=False):
        if "guard" not in set(g["arm"]) or not (g["judged_ratio"].fillna(np.inf) >
                                                DOMINANCE).any():
            continue
        judged += 1
        by = g.set_index("arm")["judged_loss"].fillna(np.inf)
        best = by.drop("guard").idxmin()
        if not by["guard"] <= by[best]:
            lost.append(f"{task}/{fault} {sev:g}: {best} {number(by[best], '.4f')} < guard "
                        f"{number(by['guard'], '.4f')}")
    add(DOMINANCE_GOAL, float(len(lost)),
        f"0 losses of {judged}", None if judged == 0 else not lost, "; ".join(lost))
    # no scar
    after = guard[guard["fault"] != "none"]
    scarred = after[~(after["final_lr_scale"] >= 0.999)]
    add(NO_SCAR_GOAL,
        float(after["final_lr_scale"].min()) if len(after) else math.nan,
        f"= 1 on all {len(after)}", None if after.empty else scarred.empty,
        _cases(scarred, "final_lr_scale", ".3g"))
    # quiet
    clean = guard[guard["fault"] == "none"]
    add(QUIET_GOAL,
        float(clean["interventions"].max()) if len(clean) else math.nan, "0",
        None if clean.empty else bool((clean["interventions"] == 0).all()),
        "; ".join(f"{r.task}: {r.interventions:g} steps" for r in clean.itertuples()
                  if r.interventions > 0))
    # cost
    adamw = tab[(tab["arm"] == "adamw") & (tab["fault"] == "none")].set_index("task")
    costs = {r.task: r.final_val_loss / adamw.loc[r.task, "final_val_loss"]
             for r in clean.itertuples() if r.task in adamw.index}
    worst_cost = max(costs.values()) if costs else math.nan
    add(COST_GOAL, worst_cost, f"≤ {COST}",
        None if not costs else worst_cost <= COST,
        "; ".join(f"{t}: {v:.4f}" for t, v in costs.items()))
    return rows.frame()


def _cases(df: pd.DataFrame, col: str, fmt: str) -> str:
    return "; ".join(f"{r.task}/{r.fault} {r.severity:g}: {number(getattr(r, col), fmt)}"
                     + ("" if getattr(r, "completed", True) else " (stopped early)")
                     for r in df.itertuples())


def ratio_pivot(summary: pd.DataFrame, task: str) -> pd.DataFrame:
    """Rows (fault, severity), columns arms: mean final/clean ratio over seeds."""
    tab = mean_table(summary)
    tab = tab[tab["task"] == task]
    pv = tab.pivot_table(index=["fault", "severity"], columns="arm", values="ratio",
                         aggfunc="first", sort=False)
    return pv.reset_index()


def stopped_cells(summary: pd.DataFrame, task: str) -> set[tuple[str, float, str]]:
    """(fault, severity, arm) of the task's cells cut short in some seed."""
    tab = mean_table(summary)
    tab = tab[(tab["task"] == task) & ~tab["completed"]]
    return {(r.fault, float(r.severity), r.arm) for r in tab.itertuples()}


def goals_markdown(verdict: pd.DataFrame) -> str:
    """The goals as a markdown table (✔ met, ✘ missed, ? the summary cannot tell)."""
    return verdict_markdown(verdict)


def table_markdown(summary: pd.DataFrame, title: str = "Fault benchmark",
                   lrs: dict[str, float] | None = None) -> str:
    """table.md: the goals, then per task the ratio table (arm columns) and the guard's
    reaction (steps lost, detection latency, skips, rollbacks, final LR scale)."""
    seeds = sorted(summary["seed"].unique())
    lines = [f"# {title}", "", f"Seeds {', '.join(map(str, seeds))}; values are means over "
             "seeds. ratio = final val loss / the same arm's fault-free final val loss "
             "(same seed); ∞: a seed ended non-finite.", "", "## Goals", "",
             goals_markdown(goals(summary))]
    tab = mean_table(summary)
    for task in dict.fromkeys(summary["task"]):
        lr = (lrs or {}).get(task)
        lines += [f"## {task}" + (f" (AdamW-best lr {lr:g})" if lr else ""), ""]
        pv = ratio_pivot(summary, task)
        arms = [c for c in pv.columns if c not in ("fault", "severity")]
        clean = tab[(tab["task"] == task) & (tab["fault"] == "none")].set_index("arm")
        lines += ["Fault-free final val loss: " + ", ".join(
            f"{a} {number(clean.loc[a, 'final_val_loss'], '.4f')}" for a in arms
            if a in clean.index) + ".", "",
            "| fault | severity | " + " | ".join(arms) + " |",
            "|---|---|" + "---|" * len(arms)]
        short = stopped_cells(summary, task)
        for r in pv.itertuples(index=False):
            if r.fault == "none":
                continue
            vals = dict(zip(pv.columns, r))
            lines.append(f"| {r.fault} | {r.severity:g} | " + " | ".join(
                number(vals[a], ".3f") + (" (stopped)" if (r.fault, float(r.severity), a)
                                        in short else "") for a in arms) + " |")
        if short:
            lines += ["", "(stopped): the run was cut short (the guard's `stop`, or 50 "
                      "non-finite steps); its last val loss is from that step and it counts "
                      "as not recovered."]
        g = tab[(tab["task"] == task) & (tab["arm"] == "guard") & (tab["fault"] != "none")]
        if len(g):
            lines += ["", "Guard: steps lost (to within 1 % of its fault-free curve), "
                      "detection latency, skips, rollbacks, final LR scale, steps until the "
                      "LR scale is back at 1 for good:", "",
                      "| fault | severity | steps lost | latency | skips | rollbacks | "
                      "final LR scale | LR back after |", "|---|---|---|---|---|---|---|---|"]
            for r in g.itertuples():
                lines.append(f"| {r.fault} | {r.severity:g} | {_steps(r.steps_lost)} | "
                             f"{number(r.detection_latency, '.0f')} | {r.skips:.0f} | "
                             f"{r.rollbacks:.0f} | {r.final_lr_scale:.3g} | "
                             f"{_steps(r.lr_back_steps)} |")
        lines.append("")
    return "\n".join(lines)


def _steps(x: float) -> str:
    return "never" if x is not None and math.isinf(x) else number(x, ".0f")


# --- files ------------------------------------------------------------------------------------

def read_fault_curves(out: str | Path, summary: pd.DataFrame) -> pd.DataFrame:
    """The per-step curves of the summary's cells from their trace files (missing: left out)."""
    parts = []
    for r in summary[["task", "fault", "severity", "arm", "seed", "fault_start"]].itertuples(
            index=False):
        cell = FaultCell(r.task, r.fault, float(r.severity), r.arm, int(r.seed))
        path = Path(out) / cell.trace_file
        if path.is_file():
            df = pd.read_csv(path, usecols=lambda c: c in CURVE_COLUMNS)
            parts.append(df.assign(task=r.task, fault=r.fault, severity=float(r.severity),
                                   arm=r.arm, seed=int(r.seed), fault_start=r.fault_start))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def load_fault_results(out: str | Path) -> FaultResult:
    """A folder's summary and curves: from the trace files, else from curves.csv.gz (what a
    committed results folder keeps instead of one trace per cell)."""
    out = Path(out)
    summary = read_fault_summary(out / "summary.csv")
    curves = read_fault_curves(out, summary)
    packed = out / OUTPUT_FILES[4]
    if curves.empty and packed.is_file():
        curves = pd.read_csv(packed)
        for col in ("task", "fault", "arm", "regime"):
            if col in curves:
                curves[col] = curves[col].astype(str)
    return FaultResult(summary, curves)


def is_fault_dir(path: Path) -> bool:
    """A folder written by the fault grid (its grid.json says so)."""
    import json

    try:
        return json.loads((path / "grid.json").read_text(encoding="utf-8")).get("kind") == \
            "faults"
    except (OSError, ValueError, AttributeError):
        return False


def list_fault_dirs(*roots: Path) -> list[Path]:
    """Fault-grid folders (up to two levels) under each root."""
    found: list[Path] = []
    for root in roots:
        if root.is_dir():
            for p in [*root.glob("*/summary.csv"), *root.glob("*/*/summary.csv")]:
                if is_fault_dir(p.parent):
                    found.append(p.parent)
    return sorted(set(found))


def write_tables(out: str | Path, lrs: dict[str, float] | None = None) -> FaultResult:
    """table.md and curves.csv.gz from the folder's summary.csv and traces (the HTML figures
    are drawn by `lbw_sim.viz.faults.write_report`, which calls this)."""
    out = Path(out)
    result = load_fault_results(out)
    (out / "table.md").write_text(table_markdown(result.summary, lrs=lrs), encoding="utf-8")
    if not result.curves.empty:
        keep = [c for c in result.curves.columns if c != "val_loss"]
        result.curves[keep].to_csv(out / OUTPUT_FILES[4], index=False, float_format="%.5g")
    return result
