"""A spec's patience with a non-finite storm, read off the spec (never hard-coded in a test)."""

from __future__ import annotations

from lbw_sim.guard.spec import GuardSpec


def patience(spec: GuardSpec, control: str) -> int:
    """The longest `for` of the transitions into the regimes with `control` ("rollback", "stop"):
    a storm this many steps long is enough for the guard to get there."""
    into = {name for name, r in spec.regimes.items() if getattr(r, control)}
    fors = [t.for_ for t in spec.transitions if t.to in into]
    assert fors, f"{spec.name} has no transition into a {control} regime"
    return max(fors)
