"""Goals judged: the one form every benchmark report gives its verdict in.

    rows = GoalRows()
    rows.add("no harm at AdamW's best LR", 1.004, "<= 1.01", True)
    verdict = rows.frame()                       # goal, measured, target, met, detail
    goals_markdown(verdict)                      # | goal | measured | target | met |

`met` is True, False or None (the data cannot tell), drawn ✔, ✘ and ?. Also the one
reading of a cell's loss over seeds (`mean_or_inf`) and of a measured number (`number`)
that every report shares. What counts as an intervention is `guard.analysis.acted`; what
counts as a guard arm, `sim.arms.is_guard_arm`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd

VERDICT_COLUMNS = ["goal", "measured", "target", "met", "detail"]
MARKS = {True: "✔", False: "✘"}

__all__ = ["MARKS", "VERDICT_COLUMNS", "GoalRows", "goals_markdown", "mark", "mean_or_inf",
           "number"]


def mark(met: bool | None) -> str:
    """✔ met, ✘ missed, ? the data cannot tell."""
    return MARKS.get(met, "?") if met is not None else "?"


class GoalRows:
    """Goal rows collected one by one, then a verdict frame (`met` kept as True/False/None)."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def add(self, goal: str, measured: float, target: str, met: bool | None,
            detail: str = "") -> None:
        self.rows.append((goal, measured, target, None if met is None else bool(met), detail))

    def frame(self) -> pd.DataFrame:
        out = pd.DataFrame(self.rows, columns=VERDICT_COLUMNS)
        out["met"] = pd.Series([r[3] for r in self.rows], dtype=object)  # None, not NaN
        return out


def goals_markdown(verdict: pd.DataFrame,
                   measured: Callable[[str, float], str] | None = None) -> str:
    """The goals as a markdown table; `measured(goal, value)` formats the measured column
    (default: 4 significant digits)."""
    text = measured or (lambda _, v: number(v, ".4g"))
    lines = ["| goal | measured | target | met |", "|---|---|---|---|"]
    for r in verdict.itertuples():
        detail = f" ({r.detail})" if r.detail else ""
        lines.append(f"| {r.goal} | {text(r.goal, r.measured)} | {r.target} | "
                     f"{mark(r.met)}{detail} |")
    return "\n".join(lines) + "\n"


def number(x: float | None, fmt: str) -> str:
    """A measured value as the reports print it: n/a for a missing one, ∞ for an infinite."""
    if x is None or x != x:
        return "n/a"
    return "∞" if math.isinf(x) else format(x, fmt)


def mean_or_inf(s: pd.Series) -> float:
    """Mean over seeds; inf when any seed's value is not finite (a run whose weights blew up
    ends NaN or inf); NaN when there is no value at all."""
    v = pd.to_numeric(s, errors="coerce").to_numpy(float)
    if len(v) == 0:
        return math.nan
    return math.inf if (~np.isfinite(v)).any() else float(v.mean())
