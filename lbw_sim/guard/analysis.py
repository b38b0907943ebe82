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


#: What the trace's `transition` column reads where the update cap bound without a transition.
CAP_ACTION = "update cap"


def capped(df: pd.DataFrame) -> np.ndarray:
    """Steps where the update cap bound (`update_scale` < 1): a control like any other."""
    if "update_scale" not in df:
        return np.zeros(len(df), dtype=bool)
    return (pd.to_numeric(df["update_scale"], errors="coerce") < 1).to_numpy()


def cap_cause(update_cap: float, update_scale: float) -> str:
    """Why the cap bound, in the trace's words: the measured ratio against the cap.

    The cap rescales by f = cap·‖θ‖/‖Δθ‖, so ‖Δθ‖/‖θ‖ = cap / f is read off the trace.
    """
    return f"update capped: ‖Δθ‖/‖θ‖={update_cap / update_scale:.3g} > cap {update_cap:g}"


def with_cap_causes(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with a cause on every step where the cap bound (appended to a transition's)."""
    hit = capped(df)
    if not hit.any() or "update_cap" not in df:
        return df
    cause = df["cause"].astype(str).to_numpy(dtype=object)
    caps, scales = df["update_cap"].to_numpy(float), df["update_scale"].to_numpy(float)
    for i in np.flatnonzero(hit):
        text = cap_cause(caps[i], scales[i])
        cause[i] = f"{cause[i]}; {text}" if cause[i] else text
    df = df.copy()
    df["cause"] = pd.Categorical(cause)
    return df


def transitions_table(df: pd.DataFrame) -> pd.DataFrame:
    """Every control the guard applied: rows where a transition fired (step, transition, the
    regime it led to, and why) and, from a `GuardedOptimizer` trace, each run of steps where
    the update cap bound without one (`CAP_ACTION`, its first step, how many, the largest
    ratio), so a run the cap shaped never reads as "no action"."""
    cols = ["step", "transition", "regime", "cause"]
    fired = df.loc[df["transition"].astype(str) != "", cols].astype(
        {"transition": str, "regime": str, "cause": str})
    hit = capped(df) & (df["transition"].astype(str) == "").to_numpy()
    if hit.any() and "update_cap" in df:
        change = np.flatnonzero(np.diff(np.concatenate([[0], hit.astype(np.int8), [0]])))
        rows = []
        for a, b in zip(change[::2], change[1::2]):
            run = df.iloc[a:b]
            low = int(np.argmin(run["update_scale"].to_numpy(float)))
            worst = cap_cause(float(run["update_cap"].iloc[low]),
                              float(run["update_scale"].iloc[low]))
            rows.append({"step": int(run["step"].iloc[0]), "transition": CAP_ACTION,
                         "regime": str(run["regime"].iloc[0]),
                         "cause": worst if b - a == 1 else f"{b - a} steps to "
                         f"{int(run['step'].iloc[-1])}, largest: {worst}"})
        fired = pd.concat([fired, pd.DataFrame(rows)]).sort_values("step", kind="stable")
    return fired.reset_index(drop=True)


def control_masks(df: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per control, the steps it touched: LR cut, skipped (the spec's skip or the safety
    skip), capped, momentum damped, rolled back, clipped (a baseline's clip). A column the
    trace lacks touched nothing."""
    n = len(df)

    def col(c: str, fill, kind) -> np.ndarray:
        if c not in df:
            return np.full(n, fill, dtype=kind)
        values = df[c]
        if kind is bool:
            return values.fillna(False).astype(bool).to_numpy()
        return pd.to_numeric(values, errors="coerce").to_numpy(float)

    return {"lr cut": col("lr_scale", 1.0, float) < 1,
            "skipped": col("skipped", False, bool) | col("safety_skip", False, bool),
            "capped": capped(df),
            "momentum damped": col("momentum_scale", 1.0, float) < 1,
            "rolled back": col("rollback", False, bool),
            "clipped": col("clipped", False, bool)}


def acted(df: pd.DataFrame) -> np.ndarray:
    """The steps where any control acted (`control_masks`): the one definition of an
    intervention, for the guard and the baselines alike. A transition alone (into a regime
    that changes nothing, like `watch`) is not one."""
    out = np.zeros(len(df), dtype=bool)
    for mask in control_masks(df).values():
        out |= mask
    return out


def action_counts(df: pd.DataFrame) -> dict[str, int]:
    """How many steps each control touched, how many transitions fired, and `acted`: the
    steps where any control did (`acted`)."""
    parts = {"transitions": (df["transition"].astype(str) != "").to_numpy()
             if "transition" in df else np.zeros(len(df), dtype=bool), **control_masks(df)}
    return {"acted": int(acted(df).sum()), **{k: int(v.sum()) for k, v in parts.items()}}


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


def held_not_fired(out: pd.DataFrame, spec) -> pd.DataFrame:
    """Debounce made visible: per transition with `for N` > 1, each run of steps where its
    condition held in one of its source regimes but the transition did not fire (the run
    ended before N steps, or the dwell time had not passed). Reads the signal columns of
    `replay(..., signals=True)`; one row per run: transition, start, end, steps, needed."""
    from lbw_sim.guard.engine import compile_spec, evaluate_conditions
    from lbw_sim.guard.spec import TELEMETRY, sources_of

    compiled = compile_spec(spec)
    n = len(out)
    env = {c: pd.to_numeric(out[c], errors="coerce").to_numpy(np.float64) if c in out
           else np.full(n, np.nan) for c in (*TELEMETRY, *spec.signals)}
    cond = evaluate_conditions(compiled, env, n).astype(bool)
    regime = out["regime"].astype(str).to_numpy()
    before = np.concatenate([[spec.initial], regime[:-1]])
    fired = out["transition"].astype(str).to_numpy()
    step = out["step"].to_numpy()
    by_name = {t.name: t for t in spec.transitions}
    rows = []
    for k, name in enumerate(compiled.trans_names):
        t = by_name[name]
        need = int(t.for_)
        if need <= 1 and not t.min_dwell:
            continue
        held = cond[k] & np.isin(before, list(sources_of(t, spec)))
        edges = np.flatnonzero(np.diff(np.concatenate([[0], held.astype(np.int8), [0]])))
        for a, b in zip(edges[::2], edges[1::2]):
            if (fired[a:b] == name).any() or (b < n and fired[b] == name):
                continue
            why = (f"held {b - a} of the {need} steps `for` needs" if b - a < need
                   else f"min_dwell {t.min_dwell} had not passed")
            rows.append({"transition": name, "start": int(step[a]), "end": int(step[b - 1]),
                         "steps": int(b - a), "needed": need, "why": why})
    return pd.DataFrame(rows, columns=["transition", "start", "end", "steps", "needed", "why"])


def shadow_note(df: pd.DataFrame) -> str:
    """'' unless the trace was recorded in shadow mode (`GuardedOptimizer(act=False)`);
    then what its recorded guard columns mean and what the guard would have done."""
    if "shadow" not in df or not df["shadow"].fillna(False).astype(bool).any():
        return ""
    would = ", ".join(f"{name} on {int(mask.sum())} step(s)"
                      for name, mask in control_masks(df).items() if mask.any())
    hashes = sorted({str(h) for h in df["spec_hash"].dropna()}) if "spec_hash" in df else []
    spec = f" by spec `{'`, `'.join(hashes)}`" if hashes else ""
    return ("Recorded in **shadow mode**: the guard decided every step" + spec + " and "
            "applied nothing, so this is the unguarded run. Its recorded decisions are what "
            "it would have done: " + (would or "nothing (no control on any step)") + ". "
            "Replaying the same spec over this log reproduces them.")
