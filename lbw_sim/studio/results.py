"""What the result pages say about a benchmark result: which spec produced it, which verdicts
apply to it, and the two or three plain sentences a visitor can repeat.

Every results folder written by a grid records its guard's hash in grid.json (`"guard"`);
`spec_of_folder` reads it back and names it when it is a shipped spec. A verdict of
"rescue" applies only where plain AdamW needed one: where AdamW itself ended within the
rescue bound of its best, there was nothing to rescue and the verdict is "n/a".
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lbw_sim.bench.fault_grid import TRANSIENT
from lbw_sim.bench.stress_report import RESCUE, adamw_best, lr_at
from lbw_sim.guard.spec import DEFAULT_SPEC, GuardSpec, named_specs

#: Shipped specs kept for comparison only, and what each one is.
RETIRED = {"lbw-v1": "the retired v1 ratchet spec, kept for comparison (not the default)"}
#: The active controller shipped beside the quiet default (it may act on a healthy run).
ACTIVE_SPEC = "lbw-active"
#: What each shipped spec other than the default is.
ROLES = {ACTIVE_SPEC: "the active controller shipped beside the default (not the default)",
         **RETIRED}


@dataclass(frozen=True)
class SpecRef:
    """The spec a result was measured with: its hash (None: not recorded) and, when the
    hash is a shipped spec's, that spec's name."""

    hash: str | None
    name: str | None = None

    @property
    def role(self) -> str:
        if self.name is None:
            return "not a shipped spec" if self.hash else ""
        if self.name == DEFAULT_SPEC:
            return "the shipped default"
        return ROLES.get(self.name, "a shipped spec")

    @property
    def retired(self) -> bool:
        return self.name in RETIRED

    @property
    def label(self) -> str:
        """`lbw-v1` (e4f928a1441c), the retired v1 ratchet spec …"""
        if not self.hash:
            return "a guard spec this result does not record"
        who = f"**{self.name}** (`{self.hash}`)" if self.name else f"spec `{self.hash}`"
        return f"{who}, {self.role}"


def shipped_hashes() -> dict[str, str]:
    """hash -> name of every shipped spec."""
    return {GuardSpec.named(n).hash: n for n in named_specs()}


def spec_ref(spec_hash: str | None) -> SpecRef:
    """The SpecRef of a recorded hash, named when a shipped spec has it."""
    if not spec_hash:
        return SpecRef(None)
    return SpecRef(str(spec_hash), shipped_hashes().get(str(spec_hash)))


def spec_of_spec(spec: GuardSpec) -> SpecRef:
    """The SpecRef of a spec at hand (a miniature grid's): named if a shipped spec has its
    hash, else its own name beside the hash."""
    ref = spec_ref(spec.hash)
    return ref if ref.name else SpecRef(spec.hash, f"{spec.name} (not shipped)")


def spec_of_folder(folder: str | Path) -> SpecRef:
    """The guard spec recorded in a results folder's grid.json (SpecRef(None) if none)."""
    try:
        grid = json.loads((Path(folder) / "grid.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return SpecRef(None)
    return spec_ref(grid.get("guard") if isinstance(grid, dict) else None)


def specs_of_suite(folder: str | Path, tasks: list[str]) -> dict[str, SpecRef]:
    """task -> the spec its grid was run with (a suite folder holds one grid per task)."""
    return {t: spec_of_folder(Path(folder) / t) for t in tasks}


def suite_spec_text(refs: dict[str, SpecRef]) -> str:
    """One line naming the suite's spec, or each task's where they differ."""
    labels = {r.label for r in refs.values()}
    if len(labels) == 1:
        return f"Every task was run with {labels.pop()}."
    return "Tasks were run with different specs: " + "; ".join(
        f"{t}: {r.label}" for t, r in refs.items()) + "."


# --- stress-grid verdicts that apply --------------------------------------------------------

def adamw_ratio(rep: pd.DataFrame, lr: float | None) -> float:
    """AdamW's final val loss at `lr` over its best (nan where the grid has no cell)."""
    if lr is None:
        return math.nan
    _, best = adamw_best(rep)
    a = rep[(rep["arm"] == "adamw") & (rep["lr"] == lr)]["val_loss"]
    return float(a.iloc[0]) / best if len(a) else math.nan


def applicable_goals(verdict: pd.DataFrame, rep: pd.DataFrame) -> pd.DataFrame:
    """The goals with "rescue at kx" judged only where AdamW needed a rescue there (it ended
    above RESCUE x its best); elsewhere met is None and the detail says why."""
    out = verdict.copy()
    out["met"] = pd.Series(list(out["met"]), dtype=object, index=out.index)
    for i, goal in out["goal"].items():
        if not str(goal).startswith("rescue at"):
            continue
        k = float(str(goal).split("rescue at ", 1)[1].split("x", 1)[0])
        a = adamw_ratio(rep, lr_at(rep, k))
        if a == a and a <= RESCUE:
            out.at[i, "met"] = None
            out.at[i, "detail"] = (f"n/a: AdamW ended at {a:.3f}x its best here, within "
                                   f"{RESCUE}x: there was nothing to rescue")
    return out


def stress_takeaway(rep: pd.DataFrame, ref: SpecRef) -> str:
    """Two or three plain sentences on a stress grid: which spec, what happened at AdamW's
    best LR, and what happened at the highest LR where AdamW needed a rescue."""
    best_lr, best = adamw_best(rep)
    first = f"These results were measured with {ref.label}."
    if not math.isfinite(best) or "guard" not in set(rep["arm"]):
        return first + " The grid has no AdamW or no guard arm to compare."
    by = rep.set_index(["arm", "lr"])["val_loss"]
    at_best = float(by.get(("guard", best_lr), math.nan)) / best
    second = (f"At AdamW's best LR ({best_lr:g}) the guard ended at {at_best:.3f}x AdamW's "
              "loss" + (" (no harm)." if at_best <= 1.01 else " (it cost something there)."))
    needed = [lr for lr in sorted(rep["lr"].unique()) if lr > best_lr
              and adamw_ratio(rep, lr) > RESCUE and ("guard", lr) in by]
    if not needed:
        return f"{first} {second} AdamW needed no rescue at any LR of this grid, so the " \
               "guard had nothing to rescue."
    lr = needed[-1]
    g, a = float(by[("guard", lr)]) / best, adamw_ratio(rep, lr)
    word = "kept the run healthy" if g <= RESCUE else "did not rescue it"
    return (f"{first} {second} At {lr / best_lr:.3g}x that LR ({lr:g}) AdamW ended at "
            f"{_x(a)} its best loss; the guard {word} ({_x(g)}).")


def _x(v: float) -> str:
    return "a non-finite loss (diverged)" if not np.isfinite(v) else f"{v:.2f}x"


# --- fault-grid takeaway ----------------------------------------------------------------------

def fault_takeaway(summary: pd.DataFrame, ref: SpecRef, recovery: float = 1.02) -> str:
    """Two or three plain sentences on a fault grid: which spec, how often each arm ended
    within `recovery` of its own fault-free run, and whether the guard acted on clean runs."""
    first = f"These results were measured with {ref.label}."
    s = summary[summary["fault"].isin(TRANSIENT)]
    if s.empty:
        return first + " The grid has no faulted run yet."
    ok = (s.assign(ok=s["ratio"].fillna(np.inf) <= recovery)
          .groupby(["task", "fault", "severity", "arm"])["ok"].all().groupby("arm").agg(
              ["sum", "size"]))
    cases = int(ok["size"].max())
    parts = [f"{a} {int(r['sum'])}" for a, r in ok.sort_values("sum", ascending=False)
             .iterrows()]
    second = (f"Of {cases} transient faults (kind x severity x task), each arm ended within "
              f"{recovery}x of its own fault-free run after: {', '.join(parts)}.")
    clean = summary[(summary["fault"] == "none") & (summary["arm"] == "guard")]
    if clean.empty:
        return f"{first} {second}"
    acted = float(clean["interventions"].max())
    third = ("On fault-free runs the guard never acted." if acted == 0 else
             f"On fault-free runs the guard acted on up to {acted:g} steps.")
    return f"{first} {second} {third}"


def nonfinite_note(summary: pd.DataFrame) -> str:
    """Which arms ended non-finite somewhere (their curves break off in the charts)."""
    bad = summary[~np.isfinite(pd.to_numeric(summary["final_val_loss"], errors="coerce"))]
    if bad.empty:
        return ""
    arms = bad.groupby("arm").size()
    return "Ended non-finite (∞ in the tables; an × where its curve breaks off): " + ", ".join(
        f"{a} in {n} run(s)" for a, n in arms.items()) + "."


def suite_takeaway(overall_table: pd.DataFrame, refs: dict[str, SpecRef]) -> str:
    """Plain sentences on a task suite: its spec(s), and per headline goal how many of the
    tasks that can judge it met it."""
    by = overall_table.set_index("goal")
    parts = []
    for key, words in (("no harm", "did no harm at AdamW's best LR"),
                       ("rescue at 10x", "rescued a run at 10x the best LR"),
                       ("rescue at 30x", "at 30x")):
        if key in by.index and by.loc[key, "judged_tasks"]:
            r = by.loc[key]
            parts.append(f"{words} on {int(r['met_tasks'])} of {int(r['judged_tasks'])}")
        elif key.startswith("rescue"):
            parts.append(f"{words}: AdamW needed no rescue on any task")
    return (suite_spec_text(refs) + " The guard " + "; ".join(parts)
            + " (of the tasks where the goal applies).")
