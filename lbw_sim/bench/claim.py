"""The paper's claim, judged on the task suite: the goals an *active* controller is held to.

    verdict = claim_goals(load_results("benchmarks/results/finetune_active/gpt_finetune"))
    write_claim("benchmarks/results")      # benchmarks/results/claim.md, every spec side by side

The paper (Learn-by-Wire Guard) reports that a control layer over AdamW makes a healthy
fine-tune better and rescues one at 50-150x the normal LR, without comparing against an LR
schedule, an LR-free optimizer or an LR-matched run. These goals put exactly those rivals
on the same grid (all ratios are mean final validation losses over seeds):
- at AdamW's best constant LR, at or below the better of AdamW-constant and AdamW-cosine
  at that LR;
- rescue: <= RESCUE x AdamW's best at 10x, 30x and (fine-tunes) 100x its best LR;
- a fine-tune never ends above the loss it started from (every seed, every LR);
- within VS_FREE x of Schedule-Free (same LR) and of Prodigy (its own LR) at every LR in
  [best, FREE_UP_TO x best];
- against `lr_matched` (AdamW replaying the guard's own per-step LR): reported, not judged —
  at how many of the LRs where the guard acted it ends lower than its own schedule does.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from lbw_sim.bench.stress_grid import StressResult
from lbw_sim.bench.stress_report import (
    RESCUE,
    adamw_best,
    load_results,
    lr_at,
    recorded_spec,
    report_table,
)
from lbw_sim.bench.suite_report import LR_FREE_UP_TO as FREE_UP_TO
from lbw_sim.bench.suite_report import VS_LR_FREE as VS_FREE
from lbw_sim.bench.suite_report import guard_in_band, suite_tasks
from lbw_sim.bench.verdict import GoalRows, mark, number

RESCUE_AT = {True: (10, 30, 100), False: (10, 30)}   # fine-tune: 100x too
#: The suite folders the claim is judged on, and what each holds.
FOLDERS = {"finetune": "fine-tune tasks", "finetune_active": "fine-tune tasks",
           "suite": "from-scratch tasks", "suite_active": "from-scratch tasks"}
GOALS = ("at best LR", "rescue at 10x", "rescue at 30x", "rescue at 100x", "never above start",
         "vs Schedule-Free", "vs Prodigy", "beats lr_matched")


def claim_goals(result: StressResult) -> pd.DataFrame:
    """The claim's goals on one task's grid (goal, measured, target, met, detail)."""
    s = result.summary
    rep = report_table(s)
    best_lr, best = adamw_best(rep)
    loss = rep.set_index(["arm", "lr"])["val_loss"]
    finetune = "start_val_loss" in s and bool(s["start_val_loss"].notna().any())
    rows = GoalRows()

    def at(arm: str, lr: float | None) -> float:
        return float(loss.get((arm, lr), math.nan)) if lr is not None else math.nan

    rivals = [at("adamw", best_lr), at("cosine", best_lr)]
    better = min((x for x in rivals if x == x), default=math.nan)
    r = at("guard", best_lr) / better
    rows.add("at best LR", r, "<= 1 (the better of constant and cosine)",
             None if r != r else r <= 1.0,
             f"guard {number(at('guard', best_lr), '.4f')}, AdamW {number(rivals[0], '.4f')}, "
             f"cosine {number(rivals[1], '.4f')} at lr {number(best_lr, 'g')}")
    for k in RESCUE_AT[finetune]:
        lr = lr_at(rep, k)
        r = at("guard", lr) / best
        rows.add(f"rescue at {k}x", r, f"<= {RESCUE:.2f}", None if r != r else r <= RESCUE,
                 f"lr {number(lr or math.nan, 'g')}; AdamW {number(at('adamw', lr) / best, '.3f')}")
    if finetune:
        g = s[s["arm"] == "guard"]
        above = g[~(g["final_val_loss"].astype(float) <= g["start_val_loss"].astype(float))]
        rows.add("never above start", float(len(above)), "0 cells", len(above) == 0 if len(g)
                 else None, ", ".join(f"lr {r.lr:g} seed {r.seed}" for r in above.itertuples()))
    band = sorted(guard_in_band(rep)["lr"])
    for arm, goal in (("schedulefree", "vs Schedule-Free"), ("prodigy", "vs Prodigy")):
        free = rep.loc[rep["arm"] == arm, "val_loss"]
        ratios = {lr: at("guard", lr) / (at(arm, lr) if arm == "schedulefree"
                                         else float(free.iloc[0]) if len(free) else math.nan)
                  for lr in band}
        ratios = {lr: x for lr, x in ratios.items() if x == x}
        worst = max(ratios, key=ratios.get) if ratios else None
        rows.add(goal, ratios[worst] if ratios else math.nan,
                 f"<= {VS_FREE:g} over [best, {FREE_UP_TO}x]",
                 all(x <= VS_FREE for x in ratios.values()) if ratios else None,
                 f"worst at lr {worst:g}" if worst else f"no {arm} cell")
    rows.add(*_vs_lr_matched(rep, s, best_lr))
    return rows.frame()


def _vs_lr_matched(rep: pd.DataFrame, s: pd.DataFrame, best_lr: float) -> tuple:
    """At the LRs >= best where the guard acted (its LR scale fell below 1 or it rolled
    back in some seed): at how many it ends below AdamW replaying its own LR."""
    g = s[s["arm"] == "guard"]
    acted = g[(g["mean_lr_scale"].astype(float) < 0.999) | (g["rollbacks"].fillna(0) > 0)]
    lrs = sorted(x for x in acted["lr"].unique() if x >= best_lr / 1.0001)
    loss = rep.set_index(["arm", "lr"])["val_loss"]
    pairs = {lr: (float(loss.get(("guard", lr), math.nan)),
                  float(loss.get(("lr_matched", lr), math.nan))) for lr in lrs}
    pairs = {lr: p for lr, p in pairs.items() if p[1] == p[1]}
    wins = [lr for lr, (gv, mv) in pairs.items() if gv < mv]
    detail = "; ".join(f"lr {lr:g}: {gv:.4f} vs {mv:.4f}" for lr, (gv, mv) in pairs.items())
    return ("beats lr_matched", float(len(wins)), f"of {len(pairs)} LRs where it acted "
            "(reported)", None, detail or "the guard never acted at LR >= best")


def claim_frame(root: str | Path) -> pd.DataFrame:
    """Every task of every suite folder in FOLDERS under `root`: one row per (folder, task,
    goal) with the spec that produced it."""
    parts = []
    for folder in FOLDERS:
        base = Path(root) / folder
        if not (base / "suite.json").is_file():
            continue
        for task in suite_tasks(base):
            if not (base / task / "summary.csv").is_file():
                continue
            name, spec_hash = recorded_spec(base / task)
            v = claim_goals(load_results(base / task))
            parts.append(v.assign(folder=folder, task=task, spec=name, spec_hash=spec_hash))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def claim_table(frame: pd.DataFrame, kind: str) -> pd.DataFrame:
    """One setting's goals (`kind`: a FOLDERS value) as task × goal rows, one column per
    spec (`name (hash)`), each cell the measured value and ✔/✘."""
    part = frame[frame["folder"].map(FOLDERS) == kind] if not frame.empty else frame
    if part.empty:
        return pd.DataFrame(columns=["task", "goal"])
    specs = list(dict.fromkeys(zip(part["spec"], part["spec_hash"])))
    rows = []
    for task in dict.fromkeys(part["task"]):
        for goal in GOALS:
            row = {"task": task, "goal": goal}
            for n, h in specs:
                r = part[(part["task"] == task) & (part["goal"] == goal)
                         & (part["spec"] == n) & (part["spec_hash"] == h)]
                row[f"{n or 'unnamed'} ({h})"] = "" if r.empty else cell_text(r.iloc[0])
            if any(row[k] for k in row if k not in ("task", "goal")):
                rows.append(row)
    return pd.DataFrame(rows)


def claim_markdown(frame: pd.DataFrame) -> str:
    """claim.md: per setting, each task's goals for every spec side by side."""
    if frame.empty:
        return "# The paper's claim on the task suite\n\nNo results yet.\n"
    lines = ["# The paper's claim on the task suite", "",
             "Generated by `python -m lbw_sim claim` from the suite folders under "
             "`benchmarks/results/`; the goals are in `lbw_sim/bench/claim.py`. Measured: "
             "ratio of mean final validation losses over seeds (rescue: to AdamW's best; "
             "never above start: cells; beats lr_matched: LRs).", ""]
    for kind in dict.fromkeys(FOLDERS.values()):
        table = claim_table(frame, kind)
        if table.empty:
            continue
        lines += [f"## {kind[0].upper() + kind[1:]}", "", "| " + " | ".join(table.columns)
                  + " |", "|---" * len(table.columns) + "|"]
        lines += ["| " + " | ".join(str(v) for v in r) + " |"
                  for r in table.itertuples(index=False)]
        lines.append("")
    return "\n".join(lines)


def cell_text(r: pd.Series) -> str:
    """A goal's measured value and mark as the claim table prints it."""
    if r["goal"] == "beats lr_matched":
        return f"{r['measured']:.0f} {r['target'].split(' (')[0]}"
    if r["goal"] == "never above start":
        return f"{r['measured']:.0f} {mark(r['met'])}"
    return f"{number(float(r['measured']), '.3f')} {mark(r['met'])}"


def write_claim(root: str | Path) -> Path:
    """`root`/claim.md from the suite folders under `root`."""
    path = Path(root) / "claim.md"
    path.write_text(claim_markdown(claim_frame(root)), encoding="utf-8")
    return path
