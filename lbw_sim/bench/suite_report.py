"""What the task suite reports: its goals judged per task and overall.

    verdicts = suite_verdicts(out, tasks)    # one row per (task, goal)
    overall(verdicts)                        # per goal: tasks met / judged
    write_suite_table(out, tasks)            # out/table.md and out/suite.json
    load_suite(out)                          # {task: StressResult} for the studio

Per task the goals of `stress_report.goals` (no harm at AdamW's best, rescue at 10x and 30x,
dominance at every LR >= 3x over adamw, clip, zclip, skipstep, schedulefree and
stableadamw, quiet at LR <= best) plus the learning-rate-free comparison: the guard at
every grid LR in [best, 30x best] ends within 1.03x of Prodigy's result at its default
lr. `lr_matched` and `guard:schedulefree` are reported beside the guard, not judged.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from lbw_sim.bench.stress_grid import LR_FREE, StressResult, read_summary
from lbw_sim.bench.stress_report import (
    DOMINANCE_FROM,
    LR_MATCH,
    NO_HARM,
    QUIET,
    QUIET_GOAL,
    RESCUE,
    RIVALS,
    _warmup_of,
    adamw_best,
    goals,
    goals_markdown,
    load_results,
    measured_text,
    nominal_fractions,
    recorded_spec,
    report_table,
)
from lbw_sim.bench.verdict import GoalRows, mark, number

#: The guard at every LR in [best, LR_FREE_UP_TO x best] must end <= VS_LR_FREE times
#: Prodigy's loss.
VS_LR_FREE, LR_FREE_UP_TO = 1.03, 30
#: stress_report's goals the suite judges (the rest stay in each task's table.md).
JUDGED = ("no harm", "quiet", "rescue at 10x", "rescue at 30x", "dominance")
GOAL_ORDER = ("no harm", "quiet", "rescue at 10x", "rescue at 30x", "dominance",
              "vs learning-rate-free")


def _key(goal: str) -> str:
    return next((k for k in GOAL_ORDER if goal.startswith(k)), goal)


def guard_in_band(rep: pd.DataFrame) -> pd.DataFrame:
    """The guard's rows at grid LRs in [best, LR_FREE_UP_TO x best] (AdamW's best; the top
    matched within LR_MATCH): where it is held to the learning-rate-free rivals."""
    best_lr, _ = adamw_best(rep)
    if not math.isfinite(best_lr):
        return rep[:0]
    top = best_lr * LR_FREE_UP_TO * LR_MATCH
    return rep[(rep["arm"] == "guard") & (rep["lr"] >= best_lr / 1.0001) & (rep["lr"] <= top)]


def task_goals(rep: pd.DataFrame, nominal: dict[float, float] | None = None) -> pd.DataFrame:
    """The suite's goals on one task's report table (goal, measured, target, met, detail)."""
    g = goals(rep, nominal)
    g = g[g["goal"].map(lambda s: s.startswith(JUDGED))].copy()
    free = rep[rep["arm"] == "prodigy"]
    guard = guard_in_band(rep)
    extra = GoalRows()
    if not g["goal"].str.startswith("quiet").any():   # no guard trace at LR <= best
        extra.add(QUIET_GOAL, math.nan, f">= {QUIET}", None, "no guard trace to read")
    goal = f"vs learning-rate-free: guard in [best, {LR_FREE_UP_TO}x] / Prodigy"
    if len(free) and len(guard):
        ref = float(free["val_loss"].iloc[0])
        ratios = {float(r.lr): float(r.val_loss) / ref for r in guard.itertuples()}
        worst = max(ratios, key=ratios.get)
        bad = [f"{lr:g}: {x:.3f}" for lr, x in ratios.items() if not x <= VS_LR_FREE]
        extra.add(goal, ratios[worst], f"<= {VS_LR_FREE}", not bad,
                  f"guard / Prodigy ({ref:.4f}); worst at lr {worst:g}"
                  + (f"; over at {', '.join(bad)}" if bad else ""))
    else:
        extra.add(goal, math.nan, f"<= {VS_LR_FREE}", None,
                  "no prodigy cell" if not len(free) else "no guard cell in range")
    g = pd.concat([g, extra.frame()], ignore_index=True)
    g["met"] = pd.Series(list(g["met"]), dtype=object).where(g["met"].notna(), None)
    return g.reset_index(drop=True)


def beside_guard(rep: pd.DataFrame) -> pd.DataFrame:
    """Per grid LR: guard, lr_matched, guard:schedulefree, schedulefree (ratios to AdamW's
    best) and lr_matched's lead over the guard (> 0: the constant cut did better)."""
    cols = ["guard", "lr_matched", "guard:schedulefree", "schedulefree"]
    piv = rep[rep["arm"].isin(cols)].pivot_table(index="lr", columns="arm", values="ratio")
    piv = piv.reindex(columns=[c for c in cols if c in piv.columns])
    if {"guard", "lr_matched"} <= set(piv.columns):
        piv["lr_matched_lead"] = piv["guard"] - piv["lr_matched"]
    return piv.reset_index()


def suite_verdicts(results: dict[str, StressResult]) -> pd.DataFrame:
    """One row per (task, goal): measured, target, met (True/False/None), detail."""
    parts = []
    for task, res in results.items():
        g = task_goals(report_table(res.summary), res.nominal)
        parts.append(g.assign(task=task, key=g["goal"].map(_key)))
    if not parts:
        return pd.DataFrame(columns=["task", "key", "goal", "measured", "target", "met",
                                     "detail"])
    out = pd.concat(parts, ignore_index=True)
    out["met"] = pd.Series(list(out["met"]), dtype=object).where(out["met"].notna(), None)
    return out[["task", "key", "goal", "measured", "target", "met", "detail"]]


def overall(verdicts: pd.DataFrame) -> pd.DataFrame:
    """Per goal: tasks met, tasks judged, and met overall (every judged task met it)."""
    rows = []
    for key in GOAL_ORDER:
        v = verdicts[verdicts["key"] == key]
        judged = v[v["met"].map(lambda m: m is not None).astype(bool)]
        met = int(judged["met"].map(bool).sum())
        missed = ", ".join(judged.loc[~judged["met"].map(bool), "task"])
        rows.append({"goal": key, "met_tasks": met, "judged_tasks": len(judged),
                     "met": (met == len(judged)) if len(judged) else None,
                     "missed_on": missed})
    return pd.DataFrame(rows)


def suite_markdown(results: dict[str, StressResult], tasks: list[Any],
                   title: str = "LR stress suite", spec: str = "not recorded") -> str:
    """table.md of a suite folder: tasks, the verdict matrix, overall, guard vs controls;
    `spec` names the guard spec the tasks ran (`suite_spec`)."""
    verdicts = suite_verdicts(results)
    lines = [f"# {title}", "", "| task | family | what | AdamW-best LR (seed-0 sweep) | grid LRs "
             "| AdamW's best measured | seeds |", "|---|---|---|---|---|---|---|"]
    meta = {t.name: t for t in tasks}
    for name, res in results.items():
        rep = report_table(res.summary)
        best_lr, best = adamw_best(rep)
        lrs = sorted(float(x) for x in res.summary.loc[~res.summary["arm"].isin(list(LR_FREE)),
                                                       "lr"].unique())
        seeds = sorted(int(s) for s in res.summary["seed"].unique())
        t = meta.get(name)
        lines.append(f"| {name} | {t.family if t else ''} | {t.description if t else ''} | "
                     f"{t.best_lr:g} | {', '.join(f'{x:g}' for x in lrs)} | "
                     f"{number(best, '.4f')} at {best_lr:g} | {', '.join(map(str, seeds))} |"
                     if t else f"| {name} | | | | {lrs} | {best:.4f} | {seeds} |")
    lines += ["", f"## Goals per task (guard spec: {spec}; no per-task settings)", "",
              "| task | " + " | ".join(GOAL_ORDER) + " |", "|---" * (len(GOAL_ORDER) + 1) + "|"]
    for task in results:
        v = verdicts[verdicts["task"] == task].set_index("key")
        cells = []
        for key in GOAL_ORDER:
            if key not in v.index:
                cells.append("?")
                continue
            r = v.loc[key]
            cells.append(f"{measured_text(key, r['measured'])} {mark(r['met'])}")
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    ov = overall(verdicts)
    lines += ["", f"Targets: no harm ≤ {NO_HARM:g}× AdamW's best; quiet ≥ {QUIET:g} of steps "
              "nominal after warm-up at LR ≤ best (the smallest fraction); rescue ≤ "
              f"{RESCUE:.2f}× AdamW's best; dominance: 0 losses to {', '.join(RIVALS)} at LRs "
              f"≥ {DOMINANCE_FROM}×; vs learning-rate-free: the guard's worst ratio to Prodigy "
              f"over [best, {LR_FREE_UP_TO}×] ≤ {VS_LR_FREE:g}.", "", "## Overall", "",
              "| goal | tasks met | met | missed on |", "|---|---|---|---|"]
    for r in ov.itertuples():
        lines.append(f"| {r.goal} | {r.met_tasks}/{r.judged_tasks} | "
                     f"{mark(r.met)} | {r.missed_on} |")
    lines += ["", "## Beside the guard (ratio to AdamW's best; lead > 0: lr_matched better)", ""]
    for task, res in results.items():
        b = beside_guard(report_table(res.summary))
        lines += [f"**{task}**", "", "| " + " | ".join(b.columns) + " |",
                  "|---" * len(b.columns) + "|"]
        for r in b.itertuples(index=False):
            lines.append("| " + " | ".join(f"{x:g}" if i == 0 else number(_no_minus_zero(x), ".3f")
                                            for i, x in enumerate(r)) + " |")
        lines.append("")
    lines += finetune_lines(results)
    lines += ["## Details of missed goals", ""]
    for r in verdicts.itertuples():
        if r.met is False:
            lines.append(f"- {r.task}: {r.goal}: {measured_text(r.goal, r.measured)} "
                         f"(target {r.target}){': ' + r.detail if r.detail else ''}")
    lines += ["", "Each task's own table (every arm, mean ± std) is `<task>/table.md`."]
    return "\n".join(lines) + "\n"


def _no_minus_zero(x: float) -> float:
    """x as printed to 3 decimals, without a "-0.000" for a lead that rounds to nothing."""
    x = float(x)
    return round(x, 3) + 0.0 if math.isfinite(x) else x


def finetune_starts(summary: pd.DataFrame) -> pd.DataFrame:
    """A fine-tune grid per arm: the loss it started from (the pretrained weights on the
    fine-tune data) and the cells that ended above it (non-finite counts as above)."""
    if "start_val_loss" not in summary or not summary["start_val_loss"].notna().any():
        return pd.DataFrame(columns=["arm", "start", "cells", "above_start", "worst_lr"])
    rows = []
    for arm, g in summary.groupby("arm", sort=False):
        start = float(g["start_val_loss"].max())
        end = g["final_val_loss"].astype(float)
        above = g[~(end <= g["start_val_loss"].astype(float))]
        rows.append({"arm": arm, "start": start, "cells": len(g), "above_start": len(above),
                     "worst_lr": float(above["lr"].min()) if len(above) else math.nan})
    return pd.DataFrame(rows)


def finetune_lines(results: dict[str, StressResult]) -> list[str]:
    """table.md's section on the fine-tune tasks (none: no lines)."""
    lines = []
    for task, res in results.items():
        f = finetune_starts(res.summary)
        if f.empty:
            continue
        if not lines:
            lines += ["## Fine-tunes: cells that ended above the loss they started from", "",
                      "| task | started from | arm | cells above the start | lowest LR above |",
                      "|---|---|---|---|---|"]
        for r in f.itertuples():
            lines.append(f"| {task} | {r.start:.4f} | {r.arm} | {r.above_start}/{r.cells} | "
                         f"{number(r.worst_lr, 'g')} |")
    return lines + [""] if lines else []


def write_suite_table(out: str | Path, tasks: list[Any]) -> Path:
    """Read every task folder of `out` back and write `out/table.md` and `out/suite.json`."""
    out = Path(out)
    results = {t.name: load_results(out / t.name) for t in tasks
               if (out / t.name / "summary.csv").is_file()}
    (out / "table.md").write_text(suite_markdown(results, tasks, spec=suite_spec(out)),
                                  encoding="utf-8")
    (out / "suite.json").write_text(json.dumps(
        {"tasks": [{"name": t.name, "family": t.family, "description": t.description,
                    "best_lr": t.best_lr, "finetune": bool(getattr(t, "finetune", False))}
                   for t in tasks]}, indent=1), encoding="utf-8")
    return out / "table.md"


def suite_spec(out: str | Path) -> str:
    """The guard spec(s) the task folders of a suite folder recorded, named where shipped."""
    specs = sorted({recorded_spec(p.parent) for p in Path(out).glob("*/grid.json")})
    return ", ".join(f"{n or 'a spec not shipped'} ({h})" for n, h in specs if h) or \
        "not recorded"


def suite_tasks(out: str | Path) -> list[str]:
    """The task names a suite folder's suite.json lists (in suite order)."""
    meta = json.loads((Path(out) / "suite.json").read_text(encoding="utf-8"))
    return [str(t["name"]) for t in meta["tasks"]]


def load_suite(out: str | Path, names: list[str] | None = None) -> dict[str, StressResult]:
    """The task results of a suite folder (its suite.json's tasks, or just `names`)."""
    out = Path(out)
    return {n: load_results(out / n) for n in suite_tasks(out)
            if (names is None or n in names) and (out / n / "summary.csv").is_file()}


def load_suite_summaries(folder: str | Path) -> dict[str, StressResult]:
    """A suite folder's tasks as the goals need them: each summary and the guard's nominal
    fractions (read from the guard traces only; no loss curves), in suite.json's order."""
    folder, out = Path(folder), {}
    for name in suite_tasks(folder):
        task = folder / name
        if (task / "summary.csv").is_file():
            summary = read_summary(task / "summary.csv")
            out[name] = StressResult(None, summary, pd.DataFrame(), {},
                                     nominal_fractions(task, summary, _warmup_of(task)))
    return out


def results_dir() -> Path:
    """The committed suite results (`benchmarks/results`; `LBW_RESULTS_DIR` may point the
    studio at another copy, e.g. a re-run not yet committed; never a user's input)."""
    import os

    from lbw_sim.bench.stress_report import ROOT

    return Path(os.environ.get("LBW_RESULTS_DIR") or ROOT / "benchmarks" / "results")


#: Where the studio looks for suites: the runs folder, then the committed results.
def suite_roots() -> list[tuple[str, Path]]:
    from lbw_sim.bench.stress_report import runs_dir

    return [("runs", runs_dir()), ("benchmarks/results", results_dir())]


def list_suite_dirs() -> list[str]:
    """Suite folders (holding suite.json, up to two levels deep) under each root, as
    `root/folder` labels for `suite_root`."""
    found = []
    for label, root in suite_roots():
        if root.is_dir():
            hits = [*root.glob("*/suite.json"), *root.glob("*/*/suite.json")]
            found += sorted(f"{label}/{p.parent.relative_to(root)}" for p in hits)
    return found


def suite_root(choice: str) -> Path:
    """The folder of a `list_suite_dirs` label (only those: never a path a user typed)."""
    for label, root in suite_roots():
        if choice.startswith(label + "/") and choice in list_suite_dirs():
            return root / choice[len(label) + 1:]
    raise ValueError(f"{choice!r} is not a suite folder under runs/ or benchmarks/results/")


__all__ = ["beside_guard", "goals_markdown", "list_suite_dirs", "load_suite",
           "load_suite_summaries", "overall", "results_dir", "suite_markdown", "suite_root",
           "suite_tasks", "suite_verdicts", "task_goals", "write_suite_table"]
