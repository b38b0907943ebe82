"""Hysteresis bands of a spec: for each signal, where a regime is entered and where it is left.

A regime entered when `grad_z > 8` and left when `grad_z < 2` has the band [2, 8] on
grad_z: inside it the guard keeps whatever regime it is in. These are what the studio
shades behind each signal, so a user sees why the guard did not chatter.
"""

from __future__ import annotations

from dataclasses import dataclass

from lbw_sim.guard import conditions as C
from lbw_sim.guard.spec import GuardSpec, TransitionSpec, sources_of


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
    """Every ordered comparison in every transition, thresholds resolved to numbers."""
    out = []
    for t in spec.transitions:
        for c in _leaves(t, spec):
            out.append(Threshold(c.signal, c.op, c.threshold, t.name, t.to))
    return out


def bands(spec: GuardSpec) -> list[Band]:
    """Unique (signal, low, high) bands, rising entries first (those are the usual story)."""
    found: dict[tuple[str, float, float], Band] = {}
    for regime in spec.regimes:
        into = [t for t in spec.transitions if t.to == regime]
        out = [t for t in spec.transitions if regime in sources_of(t, spec)]
        for t_in in into:
            for c_in in _leaves(t_in, spec):
                up = _fires_high(c_in)
                for t_out in out:
                    for c_out in _leaves(t_out, spec):
                        if c_out.signal != c_in.signal or _fires_high(c_out) == up:
                            continue
                        band = Band(c_in.signal, regime, c_in.threshold, c_out.threshold, up,
                                    t_in.name, t_out.name)
                        key = (band.signal, band.low, band.high)
                        if key not in found or (up and not found[key].rising):
                            found[key] = band
    return sorted(found.values(), key=lambda b: (not b.rising, b.signal, b.low))


def _leaves(t: TransitionSpec, spec: GuardSpec) -> list[C.Comparison]:
    tree = C.bind(C.parse(t.when), spec.thresholds)
    return [c for c in C.comparisons(tree) if c.op not in ("==", "!=") and c.signal in spec.signals]


def _fires_high(c: C.Comparison) -> bool:
    up = c.op in (">", ">=")
    return up if c.positive else not up
