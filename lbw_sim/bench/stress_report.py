"""What a stress grid reports: the per-(arm, lr) table, ratios to AdamW's best, files on disk.

    report = report_table(summary)       # mean ± std over seeds, ratio to AdamW's best LR
    worst = worst_ratios(report)         # per arm, the worst ratio over the grid
    verdict = goals(report, nominal_fractions(out_dir, summary, warmup))  # each goal judged
    write_tables(result, out_dir)        # summary.csv, table.md, reference.json
    viz.stress.write_report(result, out_dir)  # the same, and the two HTML figures
    load_results(out_dir)                # read them back (the studio's "earlier results")

The ratio of a cell is its arm's mean final validation loss at that LR over AdamW's best
mean final validation loss over the whole grid; a cell whose loss is not finite in some
seed (its weights blew up) has ratio inf.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from lbw_sim.bench.engine import write_summary
from lbw_sim.bench.stress_grid import (
    LR_FREE,
    STRESS_ARMS,
    Cell,
    StressResult,
    read_curves,
    read_summary,
)
from lbw_sim.bench.verdict import GoalRows, mean_or_inf, number
from lbw_sim.bench.verdict import goals_markdown as verdict_markdown

ROOT = Path(__file__).resolve().parents[2]
REPORT_COLUMNS = ["arm", "lr", "val_loss", "val_std", "ratio", "diverged", "first_diverged_step",
                  "interventions", "skips", "ppl", "train_loss", "wall_s", "seeds"]
OUTPUT_FILES = ("summary.csv", "table.md", "final_loss_vs_lr.html", "loss_curves.html")


#: The full grid committed with the project: what the Stress page shows on arrival.
COMMITTED = ROOT / "benchmarks" / "results" / "lr_stress_tinyshakespeare"


def runs_dir() -> Path:
    """The project's own runs folder (`LBW_RUNS_DIR` may move it; never a user's input)."""
    return Path(os.environ.get("LBW_RUNS_DIR") or ROOT / "runs")


def list_result_dirs(root: Path | None = None) -> list[str]:
    """Folders (up to two levels) under the runs folder that hold a stress summary.csv."""
    root = root or runs_dir()
    if not root.is_dir():
        return []
    found = [p.parent for p in [*root.glob("*/summary.csv"), *root.glob("*/*/summary.csv")]
             if (p.parent / "grid.json").is_file()]
    return sorted(str(p.relative_to(root)) for p in found)


# --- the report -------------------------------------------------------------------------------

def report_table(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per (arm, lr): mean ± std over seeds, diverged seeds, ratio to AdamW's best."""
    g = summary.groupby(["arm", "lr"], sort=False)
    rep = pd.DataFrame({
        "seeds": g.size(),
        "val_loss": g["final_val_loss"].agg(mean_or_inf),
        "val_std": g["final_val_loss"].std(ddof=0),
        "train_loss": g["final_train_loss"].agg(mean_or_inf),
        "diverged": g["diverged_step"].agg(lambda s: int(s.notna().sum())),
        "first_diverged_step": g["diverged_step"].min(),
        "interventions": g["interventions"].mean(),
        "skips": g["skips"].mean(),
        "wall_s": g["wall_s"].mean(),
    }).reset_index()
    rep["ppl"] = np.exp(np.minimum(rep["val_loss"], 700.0))
    rep["ratio"] = rep["val_loss"] / adamw_best(rep)[1]
    rep = rep[REPORT_COLUMNS]
    order = {a: i for i, a in enumerate(STRESS_ARMS)}
    rep = rep.assign(_o=rep["arm"].map(order).fillna(len(order)))
    return rep.sort_values(["_o", "lr"]).drop(columns="_o").reset_index(drop=True)


def adamw_best(rep: pd.DataFrame) -> tuple[float, float]:
    """(lr, mean final val loss) of AdamW's best cell on the grid; NaNs without AdamW."""
    a = rep[(rep["arm"] == "adamw") & np.isfinite(rep["val_loss"])]
    if a.empty:
        return math.nan, math.nan
    best = a.loc[a["val_loss"].idxmin()]
    return float(best["lr"]), float(best["val_loss"])


def worst_ratios(rep: pd.DataFrame) -> pd.DataFrame:
    """Per arm: the worst ratio to AdamW's best over the grid, and at which LR."""
    rows = []
    for arm, g in rep.groupby("arm", sort=False):
        i = g["ratio"].fillna(np.inf).idxmax()
        rows.append({"arm": arm, "worst_ratio": float(g.loc[i, "ratio"]),
                     "at_lr": float(g.loc[i, "lr"]), "best_ratio": float(g["ratio"].min()),
                     "diverged_cells": int((g["diverged"] > 0).sum()), "cells": len(g)})
    return pd.DataFrame(rows)


def table_markdown(rep: pd.DataFrame, reference: dict[str, float], title: str = "",
                   nominal: dict[float, float] | None = None) -> str:
    """table.md: the per-(arm, lr) table, the worst ratio per arm, then the goals."""
    best_lr, best = adamw_best(rep)
    lines = [f"# {title or 'LR stress'}", ""]
    refs = ", ".join(f"{k} {v:.4f} nats" for k, v in reference.items())
    if refs:
        lines += [f"Reference levels: {refs}.", ""]
    lines += [f"AdamW's best: final val loss {best:.4f} at lr {best_lr:g}; the grid reaches "
              f"{rep['lr'].max() / best_lr:.0f}× that LR." if math.isfinite(best)
              else "No finite AdamW cell: ratios are undefined.", "",
              "| arm | lr | final val loss (mean ± std) | ppl | train loss | diverged | "
              "interventions | skips | wall s | ratio to AdamW best |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rep.itertuples():
        lines.append(f"| {r.arm} | {r.lr:g} | {_pm(r.val_loss, r.val_std, r.seeds)} | "
                     f"{number(r.ppl, '.2f')} | {number(r.train_loss, '.4f')} | "
                     f"{r.diverged}/{r.seeds}{_at(r.first_diverged_step)} | "
                     f"{r.interventions:.0f} | {r.skips:.0f} | {r.wall_s:.1f} | "
                     f"{number(r.ratio, '.3f')} |")
    lines += ["", "Worst ratio per arm over the grid:", "",
              "| arm | worst ratio | at lr | best ratio | cells diverged |",
              "|---|---|---|---|---|"]
    for w in worst_ratios(rep).itertuples():
        lines.append(f"| {w.arm} | {number(w.worst_ratio, '.3f')} | {w.at_lr:g} | "
                     f"{number(w.best_ratio, '.3f')} | {w.diverged_cells}/{w.cells} |")
    lines += ["", "Final validation loss by LR (rows) and arm (columns), mean ± std over "
              "seeds, ratio to AdamW's best in brackets:", "", pivot_markdown(rep),
              "Goals:", "", goals_markdown(goals(rep, nominal))]
    return "\n".join(lines)


#: The stress goals: no harm at AdamW's best LR, rescue at 10x and 30x, dominance
#: at every LR >= 3x over these arms, quiet (nominal) guard at LRs up to the best.
NO_HARM, RESCUE, QUIET = 1.01, 1.10, 0.98
RESCUE_AT, DOMINANCE_FROM = (10, 30), 3
#: A grid LR counts as k x AdamW's best within this factor (3.16x is 3x on half-decades).
LR_MATCH = 1.2
RIVALS = ("adamw", "clip", "zclip", "skipstep", "schedulefree", "stableadamw")


def lr_at(rep: pd.DataFrame, factor: float) -> float | None:
    """The grid LR within LR_MATCH of `factor` x AdamW's best (None: no such LR, or no
    AdamW cell to say where its best is)."""
    best_lr, _ = adamw_best(rep)
    if not math.isfinite(best_lr):
        return None
    return next((x for x in sorted(rep["lr"].unique())
                 if abs(math.log(x / (factor * best_lr))) < math.log(LR_MATCH)), None)


def nominal_fractions(out: str | Path, summary: pd.DataFrame, warmup: int,
                      initial: str | None = None) -> dict[float, float]:
    """Per LR, the guard's smallest fraction of steps in its spec's initial regime after
    warm-up over seeds, from the guard traces in `out` (cells whose trace is missing are left
    out). `initial`: the spec's (None: `initial_regime(out)`)."""
    initial = initial or initial_regime(Path(out))
    fractions: dict[float, float] = {}
    for r in summary[summary["arm"] == "guard"].itertuples():
        path = Path(out) / Cell("guard", float(r.lr), int(r.seed)).trace_file
        if not path.is_file():
            continue
        t = pd.read_csv(path, usecols=["step", "regime"])
        after = t[t["step"] >= warmup]
        if len(after):
            frac = float((after["regime"] == initial).mean())
            fractions[float(r.lr)] = min(frac, fractions.get(float(r.lr), 1.0))
    return fractions


def recorded_spec(out: Path) -> tuple[str, str]:
    """(name, hash) of the guard spec a results folder's grid.json records: name "" when
    the hash is no shipped spec's; ("", "") when nothing is recorded."""
    from lbw_sim.guard.spec import GuardSpec, named_specs

    try:
        recorded = str(json.loads((out / "grid.json").read_text(encoding="utf-8"))["guard"])
    except (OSError, ValueError, KeyError, TypeError):
        return "", ""
    names = {GuardSpec.named(n).hash: n for n in named_specs()}
    return names.get(recorded, ""), recorded


def initial_regime(out: Path) -> str:
    """The initial regime of the guard spec a results folder ran: the shipped spec whose
    hash its grid.json records, else the shipped default's."""
    from lbw_sim.guard.spec import GuardSpec

    name, _ = recorded_spec(out)
    return (GuardSpec.named(name) if name else GuardSpec.default()).initial


def goals(rep: pd.DataFrame, nominal: dict[float, float] | None = None) -> pd.DataFrame:
    """The stress goals on a report table: one row each (goal, measured, target, met,
    detail). LRs are matched to k x AdamW's best within a factor LR_MATCH (the grid is in
    half-decades, so 3.16x counts as 3x). `met` is None where the grid cannot tell."""
    best_lr, best = adamw_best(rep)
    by = rep.set_index(["arm", "lr"])["val_loss"]
    lrs = sorted(rep["lr"].unique()) if math.isfinite(best_lr) else []
    rows = GoalRows()

    def guard_ratio(lr: float | None) -> float:
        return float(by.get(("guard", lr), math.nan)) / best if lr is not None else math.nan

    def judged(x: float, ok: bool) -> bool | None:
        return None if x != x else ok

    at_best = guard_ratio(best_lr)
    rows.add("no harm at AdamW's best LR", at_best, f"<= {NO_HARM}",
             judged(at_best, at_best <= NO_HARM))
    for k in RESCUE_AT:
        lr = lr_at(rep, k)
        r = guard_ratio(lr)
        rows.add(f"rescue at {k}x (lr {number(lr or math.nan, 'g')})", r, f"<= {RESCUE}",
                 judged(r, r <= RESCUE))
    high = [lr for lr in lrs if lr >= best_lr * DOMINANCE_FROM / LR_MATCH and ("guard", lr) in by]
    beaten = [(lr, a) for lr in high for a in RIVALS
              if (a, lr) in by and not by[("guard", lr)] < by[(a, lr)]]
    rows.add(f"dominance at every LR >= {DOMINANCE_FROM}x", float(len(beaten)), "0 losses",
             not beaten if high else None,
             "; ".join(f"{a} beats guard at {lr:g}" for lr, a in beaten))
    wr = worst_ratios(rep).set_index("arm")
    worst = wr["worst_ratio"]
    if "guard" in worst and len(worst) > 1:
        others = worst.drop("guard")
        g = float(worst["guard"])
        rows.add("smallest worst ratio of all arms", g,
                 f"< {number(float(others.min()), '.3f')} ({others.idxmin()})",
                 g < others.min(), _worst_detail(wr, g))
    quiet = [f for lr, f in (nominal or {}).items() if lr <= best_lr * 1.0001]
    if quiet:
        rows.add(QUIET_GOAL, min(quiet), f">= {QUIET}", min(quiet) >= QUIET)
    rows.add("stretch: better than AdamW at its best LR", at_best, "< 1",
             judged(at_best, at_best < 1))
    return rows.frame()


#: The quiet goal's label (the suite names it where no guard trace could be read).
QUIET_GOAL = "quiet: nominal after warm-up, LR <= best"


def _worst_detail(wr: pd.DataFrame, guard: float) -> str:
    """Who matches or beats the guard's worst ratio, where, and how the rivals compare."""
    lr_of = wr["at_lr"]
    parts = [f"{a} {'ties' if v == guard else 'beats it'} ({number(v, '.3f')} at lr "
             f"{lr_of[a]:g}; guard's worst at lr {lr_of['guard']:g})"
             for a, v in wr["worst_ratio"].drop("guard").items() if not v > guard]
    rivals = wr["worst_ratio"].reindex(RIVALS).dropna()
    if parts and len(rivals):
        parts.append(f"rivals' smallest worst ratio {number(float(rivals.min()), '.3f')} "
                     f"({rivals.idxmin()})")
    return "; ".join(parts)


def measured_text(goal: str, value: float) -> str:
    """A goal's measured value as reports print it: dominance counts losses, every other goal
    is a ratio or a fraction."""
    return number(float(value), ".0f" if goal.startswith("dominance") else ".3f")


def goals_markdown(verdict: pd.DataFrame) -> str:
    """The goals as a markdown table (✔ met, ✘ missed, ? the grid cannot tell)."""
    return verdict_markdown(verdict, measured_text)


def pivot_markdown(rep: pd.DataFrame) -> str:
    """LR x arm: `mean ± std (ratio)` per cell, AdamW's best LR marked, a worst-ratio row."""
    best_lr, _ = adamw_best(rep)
    free = rep[rep["arm"].isin(list(LR_FREE))]   # one LR of their own: listed below the grid
    rep = rep[~rep["arm"].isin(list(LR_FREE))]
    arms = list(dict.fromkeys(rep["arm"]))
    by = rep.set_index(["arm", "lr"])
    lines = ["| LR | " + " | ".join(arms) + " |", "|---" * (len(arms) + 1) + "|"]
    for lr in sorted(rep["lr"].unique()):
        label = f"{lr:g}" + (" (AdamW's best)" if lr == best_lr else
                             f" ({lr / best_lr:.3g}×)" if math.isfinite(best_lr) else "")
        cells = []
        for a in arms:
            if (a, lr) not in by.index:
                cells.append("")
                continue
            r = by.loc[(a, lr)]
            cells.append(f"{_pm(r.val_loss, r.val_std, r.seeds)} ({number(r.ratio, '.3f')})")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    worst = worst_ratios(rep).set_index("arm")["worst_ratio"]
    lines.append("| worst ratio | " + " | ".join(number(float(worst.get(a, math.nan)), ".3f")
                                               for a in arms) + " |")
    lines += [f"\n{r.arm} (learning-rate-free, at its default lr {r.lr:g}): "
              f"{_pm(r.val_loss, r.val_std, r.seeds)} ({number(r.ratio, '.3f')})"
              for r in free.itertuples()]
    return "\n".join(lines) + "\n"


def _pm(mean: float, std: float, n: int) -> str:
    if not math.isfinite(mean):
        return "diverged" if math.isinf(mean) else "n/a"
    return f"{mean:.4f} ± {std:.4f}" if n > 1 else f"{mean:.4f}"


def _at(step: float) -> str:
    return "" if pd.isna(step) else f" (step {int(step)})"


# --- files ------------------------------------------------------------------------------------

def write_tables(result: StressResult, out: str | Path) -> list[Path]:
    """summary.csv, table.md and reference.json into `out` (the figures: `viz.stress`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_summary(result.summary, out / "summary.csv")
    rep = report_table(result.summary)
    title = f"LR stress: {result.grid.scenario.name}" if result.grid else "LR stress"
    warmup = result.grid.scenario.schedule.warmup if result.grid else 0
    initial = result.grid.scenario.guard.initial if result.grid else None
    nominal = nominal_fractions(out, result.summary, warmup, initial)
    (out / "table.md").write_text(table_markdown(rep, result.reference, title, nominal),
                                  encoding="utf-8")
    (out / "reference.json").write_text(json.dumps(result.reference), encoding="utf-8")
    return [out / "summary.csv", out / "table.md", out / "reference.json"]


def load_results(out: str | Path) -> StressResult:
    """A finished (or partial) grid from its folder: summary, curves, reference levels."""
    out = Path(out)
    summary = read_summary(out / "summary.csv")
    ref_path = out / "reference.json"
    reference = json.loads(ref_path.read_text(encoding="utf-8")) if ref_path.is_file() else {}
    return StressResult(None, summary, read_curves(out, summary),
                        {str(k): float(v) for k, v in reference.items()},
                        nominal_fractions(out, summary, _warmup_of(out)))


def _warmup_of(out: Path) -> int:
    """The warm-up recorded in the folder's grid.json (0 when it cannot be read)."""
    try:
        schedule = str(json.loads((out / "grid.json").read_text(encoding="utf-8"))["schedule"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0
    found = re.search(r"warmup=(\d+)", schedule)
    return int(found.group(1)) if found else 0
