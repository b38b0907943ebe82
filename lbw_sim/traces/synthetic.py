"""Synthetic telemetry with labelled incidents, for demos, tests and benchmarks (no torch).

The healthy part imitates a language-model run: the loss decays towards a floor with
multiplicative noise; the gradient norm rises during the first few hundred steps, then
drifts down, with log-normal noise. Incidents are injected at known steps and returned
as labels, so detection quality can be scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

INCIDENT_KINDS = ("loss_spike", "grad_spike", "nan_storm", "divergence")


@dataclass(frozen=True)
class Incident:
    """An injected fault: `kind` starting at `step`, lasting `length` steps."""

    kind: str
    step: int
    length: int = 1
    size: float = 5.0


def healthy(n: int, seed: int = 0, every: int = 1) -> pd.DataFrame:
    """A quiet run of `n` steps logged every `every` steps."""
    rng = np.random.default_rng(seed)
    step = np.arange(0, n, every, dtype=np.int64)
    s = step.astype(np.float64)
    loss = 1.5 + 2.5 * np.exp(-s / max(n / 6, 1.0))
    loss = loss * np.exp(0.02 * rng.standard_normal(len(s)))
    grad = (0.4 + 0.8 * (1 - np.exp(-s / 150))) * np.exp(-s / (4.0 * n))
    grad = grad * np.exp(0.15 * rng.standard_normal(len(s)))
    lr = np.full(len(s), 3e-4) * np.minimum(1.0, (s + 1) / 100)
    return pd.DataFrame({"step": step, "loss": loss, "grad_norm": grad, "lr": lr})


def inject(df: pd.DataFrame, incidents: list[Incident]) -> pd.DataFrame:
    """Apply incidents to a copy of a trace (steps are matched to logged rows)."""
    out = df.copy()
    step = out["step"].to_numpy()
    for inc in incidents:
        rows = (step >= inc.step) & (step < inc.step + inc.length)
        if inc.kind == "loss_spike":
            out.loc[rows, "loss"] *= inc.size
            out.loc[rows, "grad_norm"] *= inc.size ** 2
        elif inc.kind == "grad_spike":
            out.loc[rows, "grad_norm"] *= inc.size * 4
        elif inc.kind == "nan_storm":
            out.loc[rows, ["loss", "grad_norm"]] = np.nan
        elif inc.kind == "divergence":
            after = step >= inc.step
            ramp = np.exp((step[after] - inc.step) / max(inc.length, 1) * np.log(inc.size))
            out.loc[after, "loss"] *= np.minimum(ramp, inc.size)
            out.loc[after, "grad_norm"] *= np.minimum(ramp, inc.size) ** 2
        else:
            raise ValueError(f"unknown incident kind {inc.kind!r} (known: {INCIDENT_KINDS})")
    return out


def labels(incidents: list[Incident]) -> pd.DataFrame:
    """Incidents as a label table: start, end (inclusive), kind."""
    return pd.DataFrame({"start": [i.step for i in incidents],
                         "end": [i.step + i.length - 1 for i in incidents],
                         "kind": [i.kind for i in incidents]})


def demo_trace(n: int = 3000, seed: int = 0) -> tuple[pd.DataFrame, list[Incident]]:
    """The studio's built-in example: a healthy run with a spike and a short NaN storm."""
    incidents = [Incident("loss_spike", int(n * 0.4), 3, 4.0),
                 Incident("nan_storm", int(n * 0.7), 4)]
    return inject(healthy(n, seed), incidents), incidents


def _divergence_trace(seed: int = 1) -> tuple[pd.DataFrame, list[Incident]]:
    incidents = [Incident("grad_spike", 1200, 2, 3.0), Incident("divergence", 3200, 400, 30.0)]
    return inject(healthy(4000, seed), incidents), incidents


def _sparse_trace(seed: int = 2) -> tuple[pd.DataFrame, list[Incident]]:
    incidents = [Incident("loss_spike", 6000, 30, 3.0), Incident("nan_storm", 14000, 60)]
    return inject(healthy(20000, seed, every=10), incidents), incidents


#: A recorded GuardedOptimizer run (examples/make_examples.py) under the v1 ratchet
#: (`GuardSpec.named("lbw-v1")`, it replays to its recorded regimes under that spec), not
#: synthetic telemetry: the update ratio falls after each LR cut only in a closed loop.
RATCHET_CSV = Path(__file__).resolve().parents[2] / "examples" / "lr_too_high.csv"


def _ratchet_trace() -> tuple[pd.DataFrame, list[Incident]]:
    trace = pd.read_csv(RATCHET_CSV)
    labels = pd.read_csv(RATCHET_CSV.with_name("lr_too_high_labels.csv"))
    incidents = [Incident(str(r.kind), int(r.start), int(r.end - r.start + 1))
                 for r in labels.itertuples()]
    return trace, incidents


#: The studio's built-in examples: label -> builder of (trace, incidents).
EXAMPLES = {
    "Spike and NaN storm (3,000 steps)": demo_trace,
    "Grad spike, then divergence (4,000 steps)": _divergence_trace,
    "Sparse log every 10 steps (20,000 steps)": _sparse_trace,
}
if RATCHET_CSV.exists():   # shipped with the repository, not with an installed package
    EXAMPLES["LR 10× too high, recorded under the v1 ratchet (600 steps)"] = \
        _ratchet_trace


def example(label: str) -> tuple[pd.DataFrame, list[Incident]]:
    """A built-in example by its label (KeyError names the labels)."""
    if label not in EXAMPLES:
        raise KeyError(f"no example {label!r}; known: {list(EXAMPLES)}")
    return EXAMPLES[label]()
