"""What the Stress page says about the two shipped specs side by side and about the paper's
claim, read from the committed suite folders (`suite_report.results_dir()`).

Four folders, each written by `python -m lbw_sim stress --suite [--finetune] [--spec NAME]`:
the task suite and the fine-tune suite, each run once with the quiet default and once with
the active controller (`COMMITTED_SUITES`). Every number and every sentence here is computed
from those folders; only the paper's own figures (`PAPER_CLAIM`) are written down.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lbw_sim.bench.stress_grid import StressResult, read_summary
from lbw_sim.bench.stress_report import RESCUE, ROOT, adamw_best, lr_at, report_table
from lbw_sim.bench.suite_report import (
    GOAL_ORDER,
    overall,
    results_dir,
    suite_tasks,
    suite_verdicts,
)
from lbw_sim.guard.spec import DEFAULT_SPEC
from lbw_sim.studio.results import ACTIVE_SPEC, SpecRef, applicable_goals, spec_of_folder

#: The paper's own figures (not measured here): what the claim view tests in miniature.
PAPER_CLAIM = (
    "The paper (Learn-by-Wire Guard, arXiv 2605.19008) reports that a bounded control layer "
    "over AdamW makes a healthy Qwen2.5-7B fine-tune better (−18.7 % perplexity at the normal "
    "LR) and rescues one at 50–150× the normal LR (perplexity 11.57 where AdamW ends at "
    "1,885). It never compares against an LR schedule, an LR-free optimizer or an LR-matched "
    "run; the miniature below does.")

#: LR factors (x AdamW's best measured LR) the claim table shows; matched within 1.2x.
CLAIM_FACTORS = (1.0, 10.0, 31.6, 100.0)
#: The rescue factors among them (the issue's goal: <= RESCUE x AdamW's best at each).
RESCUE_FACTORS = (10.0, 31.6, 100.0)


@dataclass(frozen=True)
class SuiteFolder:
    """One committed suite folder: what it measures and which spec it is meant to hold."""

    kind: str          # "from scratch" or "fine-tune"
    name: str          # folder name under the results folder
    spec: str          # the shipped spec it is meant to be run with
    root: Path

    @property
    def path(self) -> Path:
        return self.root / self.name

    @property
    def present(self) -> bool:
        return (self.path / "suite.json").is_file()

    @property
    def shown(self) -> str:
        """The folder as a visitor reads it: relative to the project when inside it."""
        try:
            return str(self.path.relative_to(ROOT))
        except ValueError:
            return str(self.path)

    @property
    def command(self) -> str:
        """The command that writes this folder."""
        return ("python -m lbw_sim stress --suite" + (" --finetune" if self.kind == "fine-tune"
                                                     else "")
                + (f" --spec {self.spec}" if self.spec != DEFAULT_SPEC else "")
                + f" --out {self.shown}")


#: (kind, folder of the default's run, folder of the active controller's run).
COMMITTED_SUITES = (("from scratch", "suite", "suite_active"),
                    ("fine-tune", "finetune", "finetune_active"))


def committed_suites(root: Path | None = None) -> list[SuiteFolder]:
    """The four committed suite folders, present or not, in display order."""
    root = root or results_dir()
    return [SuiteFolder(kind, name, spec, root) for kind, default, active in COMMITTED_SUITES
            for name, spec in ((default, DEFAULT_SPEC), (active, ACTIVE_SPEC))]


def absent_text(folders: list[SuiteFolder]) -> str:
    """The folders that are not there, each with the command that writes it (empty: all
    present)."""
    gone = [f for f in folders if not f.present]
    if not gone:
        return ""
    return "Not in this checkout yet:\n" + "\n".join(
        f"- `{f.shown}` ({f.kind}, {f.spec}): `{f.command}`" for f in gone)


def spec_mismatch(folder: SuiteFolder, refs: dict[str, SpecRef]) -> str:
    """A warning when a folder's tasks record another spec than the one it is meant to hold
    (empty when they all record it)."""
    other = {t: r for t, r in refs.items() if r.name != folder.spec}
    if not other:
        return ""
    return (f"`{folder.name}` is meant to hold {folder.spec}, but " + "; ".join(
        f"{t} records {r.label}" for t, r in other.items()) + ".")


# --- goal verdicts of both specs ---------------------------------------------------------------

def judged_verdicts(results: dict[str, StressResult]) -> pd.DataFrame:
    """The suite's goal verdicts per task, rescue judged only where AdamW needed one."""
    raw = suite_verdicts(results)
    if raw.empty:
        return raw
    return pd.concat([applicable_goals(g, report_table(results[t].summary))
                      for t, g in raw.groupby("task", sort=False)], ignore_index=True)


def spec_name(refs: dict[str, SpecRef]) -> str:
    """A column heading for a suite's spec: `lbw-active (hash)`, or the mixed specs."""
    labels = sorted({f"{r.name or 'unnamed spec'} ({r.hash})" if r.hash else "spec not recorded"
                     for r in refs.values()})
    return labels[0] if len(labels) == 1 else "mixed: " + "; ".join(labels)


def goals_side_by_side(overalls: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per goal (rows), per spec (columns, the dict's keys): "tasks met/judged mark"; "n/a"
    where no task could judge it (`missed_lines` names the tasks that missed)."""
    out = pd.DataFrame({"goal": list(GOAL_ORDER)})
    for label, table in overalls.items():
        by = table.set_index("goal")
        cells = []
        for goal in GOAL_ORDER:
            if goal not in by.index or not by.loc[goal, "judged_tasks"]:
                cells.append("n/a")
                continue
            r = by.loc[goal]
            cells.append(f"{int(r['met_tasks'])}/{int(r['judged_tasks'])} "
                         + ("✔" if r["met"] else "✘"))
        out[label] = cells
    return out


def missed_lines(overalls: dict[str, pd.DataFrame]) -> list[str]:
    """Per spec and missed goal, the tasks that missed it."""
    return [f"{label}: *{r.goal}* missed on {r.missed_on}"
            for label, table in overalls.items() for r in table.itertuples() if r.missed_on]


def overall_of(results: dict[str, StressResult]) -> pd.DataFrame:
    """The suite's overall table (per goal: tasks met, judged, met, missed on)."""
    return overall(judged_verdicts(results))


# --- the paper's claim, in miniature -----------------------------------------------------------

@dataclass(frozen=True)
class ClaimTask:
    """One fine-tune task as both specs ran it: the summaries and the specs they record."""

    task: str
    default: pd.DataFrame | None
    active: pd.DataFrame | None
    default_ref: SpecRef = SpecRef(None)
    active_ref: SpecRef = SpecRef(None)
    #: a character language model (its loss is a cross-entropy: perplexity = exp(loss))
    language_model: bool = False


def is_language_model(task_dir: Path) -> bool:
    """Whether a task folder's grid.json records text data (a character LM)."""
    try:
        grid = json.loads((task_dir / "grid.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(grid, dict) and str(grid.get("data", "")).startswith("text")


def load_claim(default_dir: Path | None, active_dir: Path | None) -> dict[str, ClaimTask]:
    """Every task of the two fine-tune suite folders (either may be None or absent), read
    from their summaries only (no traces). A summary that cannot be read raises TraceError
    naming its file."""
    names: list[str] = []
    for d in (default_dir, active_dir):
        if d is not None and d.is_dir():
            listed = suite_tasks(d) if (d / "suite.json").is_file() else sorted(
                p.parent.name for p in d.glob("*/summary.csv"))
            names += [n for n in listed if n not in names and (d / n / "summary.csv").is_file()]

    def one(d: Path | None, task: str) -> tuple[pd.DataFrame | None, SpecRef]:
        f = d / task / "summary.csv" if d is not None else None
        if f is None or not f.is_file():
            return None, SpecRef(None)
        return read_summary(f), spec_of_folder(f.parent)

    out = {}
    for t in names:
        (ds, dr), (as_, ar) = one(default_dir, t), one(active_dir, t)
        lm = any(is_language_model(d / t) for d in (default_dir, active_dir) if d is not None)
        out[t] = ClaimTask(t, ds, as_, dr, ar, lm)
    return out


def guard_labels(ct: ClaimTask) -> tuple[str, str]:
    """Column names of the two guard arms: their specs' names (distinct, never blank)."""
    d = ct.default_ref.name or (f"guard {ct.default_ref.hash}" if ct.default_ref.hash
                                else "guard (default run)")
    a = ct.active_ref.name or (f"guard {ct.active_ref.hash}" if ct.active_ref.hash
                               else "guard (active run)")
    return (d, a) if d != a else (f"{d} (default run)", f"{a} (active run)")


def start_loss(summary: pd.DataFrame | None) -> float:
    """The loss the fine-tune started from (nan where the summary does not record it)."""
    if summary is None or "start_val_loss" not in summary:
        return math.nan
    s = pd.to_numeric(summary["start_val_loss"], errors="coerce").dropna()
    return float(s.max()) if len(s) else math.nan


def grid_factors(ct: ClaimTask) -> tuple[float, ...]:
    """Every grid LR of the task as a multiple of AdamW's best (for the chart)."""
    base = ct.default if ct.default is not None else ct.active
    if base is None:
        return ()
    rep = report_table(base)
    best_lr, _ = adamw_best(rep)
    if not math.isfinite(best_lr):
        return ()
    lrs = rep.loc[rep["arm"] != "prodigy", "lr"].unique()
    return tuple(sorted(float(f"{lr / best_lr:.3g}") for lr in lrs))


def claim_cells(ct: ClaimTask, factors: tuple[float, ...] = CLAIM_FACTORS) -> pd.DataFrame:
    """Long form, one row per (factor, column): the arm's mean final val loss over seeds at
    that multiple of AdamW's best LR, its std, its ratio to AdamW's best (each folder's own),
    and whether it ended above the loss the fine-tune started from (non-finite: above).
    The baselines come from the default's folder (the active's when it is absent);
    lr_matched from the active's (AdamW replaying the active controller's own LR, step by step)."""
    d_label, a_label = guard_labels(ct)
    base = ct.default if ct.default is not None else ct.active
    cols = [("AdamW", base, "adamw"), ("cosine", base, "cosine"),
            (d_label, ct.default, "guard"), (a_label, ct.active, "guard"),
            ("lr_matched", ct.active if ct.active is not None else ct.default, "lr_matched"),
            ("Schedule-Free", base, "schedulefree"), ("Prodigy", base, "prodigy")]
    start = start_loss(base)
    rows = []
    for label, summary, arm in cols:
        if summary is None:
            continue
        rep = report_table(summary)
        best_lr, best = adamw_best(rep)
        arm_rows = rep[rep["arm"] == arm]
        grid = rep[rep["arm"] != "prodigy"]     # Prodigy's own LR is no grid point
        for f in factors:
            lr = lr_at(grid, f)
            if lr is None:
                continue
            # Prodigy is learning-rate free: its one cell, shown on every row of the grid
            cell = arm_rows if arm == "prodigy" else arm_rows[arm_rows["lr"] == lr]
            if cell.empty:
                continue
            r = cell.iloc[0]
            loss = float(r["val_loss"])
            rows.append({"factor": f, "lr": float(r["lr"]), "column": label, "arm": arm,
                         "val_loss": loss, "val_std": float(r["val_std"]),
                         "ratio": loss / best if math.isfinite(best) else math.nan,
                         "above_start": not loss <= start if math.isfinite(start) else None,
                         "seeds": int(r["seeds"])})
    return pd.DataFrame(rows, columns=["factor", "lr", "column", "arm", "val_loss", "val_std",
                                       "ratio", "above_start", "seeds"])


def claim_grid(cells: pd.DataFrame) -> pd.DataFrame:
    """The claim table as shown: one row per LR factor, one column per arm, each cell its
    ratio to AdamW's best, "▲" where it ended above the loss it started from."""
    if cells.empty:
        return pd.DataFrame(columns=["× AdamW's best LR"])
    text = [("—" if not np.isfinite(r) else f"{r:.3f}×") + (" ▲" if above else "")
            for r, above in zip(cells["ratio"], cells["above_start"])]
    grid = cells.assign(text=text).pivot(index="factor", columns="column", values="text")
    grid = grid.reindex(columns=list(dict.fromkeys(cells["column"]))).fillna("")
    grid.index = [f"{f:g}×" for f in grid.index]
    return grid.rename_axis("× AdamW's best LR").reset_index()


def lr_matched_control(ct: ClaimTask, factors: tuple[float, ...] = CLAIM_FACTORS
                       ) -> pd.DataFrame:
    """Per factor: the active controller's and lr_matched's mean final loss (from the active
    folder), lr_matched minus the controller (> 0: the controller did better), whether it
    beats its own schedule, and whether the gap is within one seed std of either."""
    rows = []
    if ct.active is None:
        return pd.DataFrame(rows, columns=["factor", "lr", "controller", "lr_matched",
                                           "margin", "beats", "within_noise"])
    rep = report_table(ct.active)
    by = rep.set_index(["arm", "lr"])
    for f in factors:
        lr = lr_at(rep, f)
        if lr is None or ("guard", lr) not in by.index or ("lr_matched", lr) not in by.index:
            continue
        g, m = by.loc[("guard", lr)], by.loc[("lr_matched", lr)]
        gl, ml = float(g["val_loss"]), float(m["val_loss"])
        margin = ml - gl if np.isfinite(gl) or np.isfinite(ml) else math.nan
        noise = max(float(np.nan_to_num(g["val_std"])), float(np.nan_to_num(m["val_std"])))
        several = min(int(g["seeds"]), int(m["seeds"])) > 1    # one seed: no std to judge by
        rows.append({"factor": f, "lr": float(lr), "controller": gl, "lr_matched": ml,
                     "margin": margin, "beats": bool(gl < ml),
                     "within_noise": bool(several and np.isfinite(margin) and margin != 0
                                          and abs(margin) <= noise)})
    return pd.DataFrame(rows, columns=["factor", "lr", "controller", "lr_matched", "margin",
                                       "beats", "within_noise"])


def control_sentence(task: str, control: pd.DataFrame, active: str) -> str:
    """Does the active controller beat AdamW replaying its own realised LR? Yes/no, with
    the numbers at each LR factor measured."""
    if control.empty:
        return (f"{task}: no lr_matched cell beside {active}'s, so the LR-matched control "
                "cannot be read.")
    won = int(control["beats"].sum())
    answer = ("yes" if won == len(control) else "no" if won == 0
              else f"at {won} of {len(control)} LRs")
    parts = [f"{r.factor:g}×: {_num(r.controller)} vs {_num(r.lr_matched)}"
             + (" (equal)" if r.margin == 0 else " (within one seed std)" if r.within_noise
                else "") for r in control.itertuples()]
    return (f"{task}: does {active} beat AdamW replaying its own LR schedule? **{answer}** "
            f"({active} vs lr_matched, final val loss: {'; '.join(parts)}).")


def control_lines(tasks: dict[str, ClaimTask]) -> list[str]:
    """The LR-matched control, one sentence per task."""
    return [control_sentence(t, lr_matched_control(ct), guard_labels(ct)[1])
            if ct.active is not None else
            f"{t}: the active controller's run of this task is not here, so the LR-matched "
            "control cannot be read." for t, ct in tasks.items()]


def _num(v: float) -> str:
    return f"{v:.4f}" if np.isfinite(v) else "non-finite"


def task_sentence(ct: ClaimTask, cells: pd.DataFrame) -> str:
    """Where the fine-tune started, AdamW's best, and the highest LR measured: where AdamW
    ended there, and where each guard and the LR-free rivals ended."""
    base = ct.default if ct.default is not None else ct.active
    if base is None or cells.empty:
        return f"{ct.task}: no cell to read."
    best_lr, best = adamw_best(report_table(base))
    start = start_loss(base)
    head = (f"{ct.task}: the fine-tune started from {_num(start)}; AdamW's best LR "
            f"({best_lr:g}) ended at {_num(best)}.")
    top = cells.loc[cells["arm"] != "prodigy", "factor"].max()
    at = cells[cells["factor"] == top].set_index("column")
    if "AdamW" not in at.index:
        return head
    a = at.loc["AdamW"]
    where = " — above where it started" if a["above_start"] else ""
    others = [f"{c} {_ratio(r)}" + (" (above the start)" if up else "")
              for c, r, up in zip(at.index, at["ratio"], at["above_start"]) if c != "AdamW"]
    return (f"{head} At {top:g}× that LR AdamW ended at {_ratio(a['ratio'])} its best"
            f"{where}" + (f"; {', '.join(others)}." if others else "."))


def _ratio(v: float) -> str:
    return f"{v:.2f}×" if np.isfinite(v) else "non-finite"


def claim_summary(tasks: dict[str, ClaimTask]) -> list[str]:
    """The claim's two halves as measured over every fine-tune task: the active controller
    at AdamW's best LR, and the rescue (and never above the start) at 10x-100x."""
    at_best, rescue, above, needed, better = [], {}, {}, 0, 0
    for ct in tasks.values():
        cells = claim_cells(ct)
        d_label, a_label = guard_labels(ct)
        c = cells.set_index(["factor", "column"])
        if (1.0, a_label) in c.index and (1.0, "AdamW") in c.index:
            gap = float(c.loc[(1.0, a_label), "val_loss"] - c.loc[(1.0, "AdamW"), "val_loss"])
            ppl = f" (perplexity {math.expm1(gap):+.1%})" if ct.language_model else ""
            at_best.append(f"{ct.task} {float(c.loc[(1.0, a_label), 'ratio']):.3f}×{ppl}")
            better += gap < 0
        for label in (d_label, a_label):
            g = cells[cells["column"] == label]
            if len(g):
                n = above.setdefault(label, [0, 0])
                n[0] += int(g["above_start"].fillna(False).astype(bool).sum())
                n[1] += len(g)
        for f in RESCUE_FACTORS:
            if (f, "AdamW") not in c.index or not c.loc[(f, "AdamW"), "ratio"] > RESCUE:
                continue
            needed += 1
            for label in (d_label, a_label):
                if (f, label) in c.index:
                    rescue[label] = rescue.get(label, 0) + int(c.loc[(f, label), "ratio"]
                                                               <= RESCUE)
    out = []
    if at_best:
        out.append(f"At AdamW's best LR the active controller ends below AdamW on {better} of "
                   f"{len(at_best)} tasks (the paper reports −18.7 % perplexity there); its "
                   f"final loss as a multiple of AdamW's: {', '.join(at_best)}.")
    if needed:
        got = "; ".join(f"{s} {n} of {needed}" for s, n in rescue.items())
        out.append(f"Where AdamW needed a rescue (it ended above {RESCUE:.2f}× its best at "
                   f"10×, 31.6× or 100×: {needed} cells over the tasks), ending within "
                   f"{RESCUE:.2f}× counts as rescued: {got}.")
    else:
        out.append("AdamW needed no rescue at 10×, 31.6× or 100× on any task measured.")
    if above:
        out.append("Task × LR cells above (means over seeds) that ended above the loss the "
                   "fine-tune started from: " + "; ".join(
            f"{s} {n} of {m}" for s, (n, m) in above.items()) + ".")
    return out
