"""What an annotated trace says about the guard: regime runs, time in each regime, the
transitions that fired, the regime at a step, and a per-spec summary of several replays.

Plain pandas over the columns `replay` (and `GuardedOptimizer.trace`) write; no plotting,
no torch. The figures, the pages and the CLI all read a trace through these.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def starting_regime(df: pd.DataFrame) -> str:
    """The regime drawn unshaded: where the run started (the spec's initial regime, as a
    rule), not the most common one, which a run that spends most steps throttled would hide."""
    return str(df["regime"].iloc[0])


def regime_segments(df: pd.DataFrame) -> pd.DataFrame:
    """Runs of one regime: start step, end step (exclusive of the next run), regime."""
    regime = df["regime"].astype(str).to_numpy()
    step = df["step"].to_numpy()
    change = np.flatnonzero(regime[1:] != regime[:-1]) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [len(regime)]])
    end_step = np.append(step[1:], step[-1] + 1)[ends - 1]
    return pd.DataFrame({"start": step[starts], "end": end_step, "regime": regime[starts]})


def time_in_regime(df: pd.DataFrame) -> pd.DataFrame:
    """Rows and share of the trace spent in each regime."""
    counts = df["regime"].astype(str).value_counts()
    return pd.DataFrame({"regime": counts.index, "steps": counts.to_numpy(),
                         "share": counts.to_numpy() / max(len(df), 1)})


def transitions_table(df: pd.DataFrame) -> pd.DataFrame:
    """Rows where a transition fired: step, transition, the regime it led to, and why."""
    fired = df.loc[df["transition"].astype(str) != "", ["step", "transition", "regime", "cause"]]
    return fired.astype({"transition": str, "regime": str, "cause": str}).reset_index(drop=True)


def regime_at(df: pd.DataFrame, step: int) -> str:
    """The regime of the last logged row at or before `step` (the first row's if none)."""
    i = int(np.searchsorted(df["step"].to_numpy(), step, side="right")) - 1
    return str(df["regime"].iloc[max(i, 0)])


def compare_summary(outs: list[pd.DataFrame], names: list[str]) -> pd.DataFrame:
    """One row per replayed spec: steps per regime, transitions, skips, lowest LR scale."""
    rows = []
    for name, out in zip(names, outs):
        counts = out["regime"].astype(str).value_counts()
        rows.append({"spec": f"{name}: {out.attrs.get('spec', '')}",
                     "transitions": int((out["transition"].astype(str) != "").sum()),
                     "skipped": int(out["skipped"].sum()),
                     "min LR scale": float(out["lr_scale"].min()),
                     **{f"steps {r}": int(counts.get(r, 0)) for r in out["regime"].cat.categories}})
    return pd.DataFrame(rows).fillna(0)
