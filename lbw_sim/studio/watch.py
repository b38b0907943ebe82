"""Watching the state machine: at a step of an annotated trace, the regime the guard is in,
the transition that brought it there and why (the `cause` column), for the diagram to
highlight as a replay is scrubbed or a live run goes on."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Moment:
    """Where the guard is at `step`: its `regime`, and the last transition at or before the
    step (`came_from` -> `regime` by `transition` at `since`, because `cause`); the
    transition fields are empty while it has not left its starting regime."""

    step: int
    regime: str
    transition: str = ""
    came_from: str = ""
    since: int | None = None
    cause: str = ""

    @property
    def taken(self) -> tuple[str, str] | None:
        """(from regime, transition name) for `to_dot(taken=...)`, or None."""
        return (self.came_from, self.transition) if self.transition else None

    def sentence(self) -> str:
        """The moment in words, for beside the diagram."""
        if not self.transition:
            return f"Step {self.step:,}: in **{self.regime}**, no transition yet."
        ago = self.step - (self.since or self.step)
        when = "at this step" if ago == 0 else f"{ago:,} step(s) ago, at step {self.since:,}"
        return (f"Step {self.step:,}: in **{self.regime}**, entered {when} from "
                f"**{self.came_from}** by the transition `{self.transition}` because "
                f"{self.cause or 'its condition held'}.")


def moment(out: pd.DataFrame, step: int) -> Moment:
    """The Moment of an annotated trace (`engine.replay` output or a live run's rows) at
    `step`: the last logged row at or before it, and the last transition up to there."""
    if not len(out):
        return Moment(int(step), "")
    steps = out["step"].to_numpy()
    i = max(int(np.searchsorted(steps, step, side="right")) - 1, 0)
    regime = str(out["regime"].iloc[i])
    fired = np.flatnonzero(out["transition"].astype(str).to_numpy()[: i + 1] != "")
    if not len(fired):
        return Moment(int(step), regime)
    j = int(fired[-1])
    before = str(out["regime"].iloc[j - 1]) if j > 0 else ""
    cause = str(out["cause"].iloc[j]) if "cause" in out else ""
    return Moment(int(step), regime, str(out["transition"].iloc[j]), before,
                  int(steps[j]), "" if cause == "nan" else cause)


def transition_steps(out: pd.DataFrame) -> list[int]:
    """Steps where a transition fired (for the scrubber's ◀ ▶ jumps)."""
    fired = out["transition"].astype(str) != ""
    return [int(s) for s in out.loc[fired, "step"]]
