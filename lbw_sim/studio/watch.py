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


#: A scenario fault's kind in words.
FAULT_WORDS = {"corrupt_batch": "a corrupted batch", "nonfinite": "non-finite values",
               "lr_spike": "an LR spike", "grad_noise": "heavy-tailed gradient noise",
               "loss_scale_overflow": "an fp16 overflow", "shift": "a shift to harder data",
               "poison": "one poisoned gradient"}


def fault_notes(guarded: pd.DataFrame, spec, faults, window: int = 5) -> list[str]:
    """For each scheduled fault the run has reached: what the guard did within `window`
    steps of it — the transition and its cause — or, when it did not react, why not: the
    signals at the fault's step against the thresholds that would have moved it, and any
    transition whose condition held but not for long enough (debounce)."""
    from lbw_sim.guard.analysis import held_not_fired
    from lbw_sim.guard.engine import replay
    from lbw_sim.guard.spec import TELEMETRY, ordered_leaves, sources_of

    if not len(guarded):
        return []
    last = int(guarded["step"].iloc[-1])
    cols = ["step", *[c for c in TELEMETRY if c in guarded]]
    out = None
    notes = []
    for f in faults:
        at = int(f.get("at", -1)) if isinstance(f, dict) else int(getattr(f, "at", -1))
        kind = f.get("kind", "") if isinstance(f, dict) else getattr(f, "kind", "")
        if at < 0 or at > last:
            continue
        what = f"Step {at:,}, {FAULT_WORDS.get(kind, kind)}"
        near = guarded[(guarded["step"] >= at) & (guarded["step"] <= at + window)]
        fired = near[near["transition"].astype(str) != ""]
        if len(fired):
            r = fired.iloc[0]
            notes.append(f"{what}: the guard went to **{r['regime']}** at step "
                         f"{int(r['step']):,} by `{r['transition']}` because {r['cause']}.")
            continue
        if out is None:                  # the signals, recomputed from the logged telemetry
            out = replay(guarded[cols], spec, signals=True)
        row = out[out["step"] == at]
        if row.empty:
            continue
        regime = str(row["regime"].iloc[0])
        closest: dict[str, tuple[float, str]] = {}     # signal -> (value/threshold, text)
        for t in spec.transitions:
            if regime not in sources_of(t, spec):
                continue
            for leaf in ordered_leaves(t, spec):
                if not (leaf.rising and leaf.threshold > 0 and leaf.signal in row.columns):
                    continue
                v = float(row[leaf.signal].iloc[0])
                near_ = v / leaf.threshold if np.isfinite(v) else -np.inf
                if near_ > closest.get(leaf.signal, (-np.inf, ""))[0]:
                    closest[leaf.signal] = (near_, f"{leaf.signal} {v:.3g} (reacts above "
                                                   f"{leaf.threshold:g})")
        seen = dict(sorted(closest.items(), key=lambda kv: -kv[1][0]))
        seen = {k: text for k, (_, text) in seen.items()}
        held = held_not_fired(out[out["step"] <= at + window], spec)
        held = held[(held["end"] >= at) & (held["start"] <= at + window)]
        debounce = "; ".join(f"`{h.transition}` {h.why}" for h in held.itertuples())
        signals = ", ".join(list(seen.values())[:3])
        notes.append(f"{what}: no reaction — the guard stayed in **{regime}**. "
                     + (f"At that step {signals}." if signals else "")
                     + (f" Held but not long enough: {debounce}." if debounce else
                        " Below every threshold that would move it: to the guard this was "
                        "within the run's own noise."))
    return notes
