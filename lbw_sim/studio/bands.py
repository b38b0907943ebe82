"""Hysteresis bands of a spec: for each signal, where a regime is entered and where it is left.

A regime entered when `grad_z > 8` and left when `grad_z < 2` has the band [2, 8] on
grad_z: inside it the guard keeps whatever regime it is in. These are what the studio
shades behind each signal, so a user sees why the guard did not chatter. The pairs come
from `spec.hysteresis_pairs`, the loop the spec's own hysteresis check runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from lbw_sim.guard.spec import GuardSpec, hysteresis_pairs, ordered_leaves


@dataclass(frozen=True)
class Band:
    """Entered at `entry` (by `enter`), left at `exit` (by `leave`); `rising`: entry is high."""

    signal: str
    regime: str
    entry: float
    exit: float
    rising: bool
    enter: str
    leave: str

    @property
    def low(self) -> float:
        return min(self.entry, self.exit)

    @property
    def high(self) -> float:
        return max(self.entry, self.exit)


@dataclass(frozen=True)
class Threshold:
    """One `signal OP value` leaf of a transition's condition."""

    signal: str
    op: str
    value: float
    transition: str
    to: str


def thresholds(spec: GuardSpec) -> list[Threshold]:
    """Every ordered comparison on a signal in every transition, thresholds resolved."""
    return [Threshold(c.signal, c.op, c.threshold, t.name, t.to)
            for t in spec.transitions for c in ordered_leaves(t, spec)
            if c.signal in spec.signals]


def bands(spec: GuardSpec) -> list[Band]:
    """Unique (signal, low, high) bands, rising entries first (those are the usual story)."""
    found: dict[tuple[str, float, float], Band] = {}
    for regime, t_in, c_in, t_out, c_out in hysteresis_pairs(spec):
        if c_in.signal not in spec.signals:
            continue
        band = Band(c_in.signal, regime, c_in.threshold, c_out.threshold, c_in.rising,
                    t_in.name, t_out.name)
        key = (band.signal, band.low, band.high)
        if key not in found or (band.rising and not found[key].rising):
            found[key] = band
    return sorted(found.values(), key=lambda b: (not b.rising, b.signal, b.low))
