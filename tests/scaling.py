"""Thresholds scaled about their signal's rest value: one factor for a spec's sensitivity.

Scaling `v -> r + (v - r) * factor` (r: the rest value of the signal the threshold is
compared with, `spec.rest_values`; 0 where it has none) keeps every hysteresis band open
(entry and exit move apart or together, never past each other) and every exit on the rest
side of the signal, so the scaled spec validates whenever the original does.
"""

from __future__ import annotations

from collections.abc import Iterator

from lbw_sim.guard import conditions
from lbw_sim.guard.spec import GuardSpec, rest_values


def _nodes(node: conditions.Node) -> Iterator[conditions.Node]:
    yield node
    if isinstance(node, conditions.Cmp):
        yield from (*_nodes(node.left), *_nodes(node.right))
    elif isinstance(node, (conditions.And, conditions.Or)):
        for item in node.items:
            yield from _nodes(item)
    elif isinstance(node, conditions.Not):
        yield from _nodes(node.item)


def threshold_rests(spec: GuardSpec) -> dict[str, float]:
    """threshold name -> rest value of the signal a condition compares it with."""
    rest, out = rest_values(spec), {}
    for t in spec.transitions:
        for node in _nodes(conditions.parse(t.when)):
            if isinstance(node, conditions.Cmp) and isinstance(node.left, conditions.Name) \
                    and isinstance(node.right, conditions.Name):
                for sig, th in ((node.left.id, node.right.id), (node.right.id, node.left.id)):
                    if th in spec.thresholds and sig in rest:
                        out[th] = rest[sig]
    return out


def scaled(spec: GuardSpec, factor: float) -> dict[str, float]:
    """`thresholds.<name>` -> the threshold scaled about its rest value by `factor`."""
    rests = threshold_rests(spec)
    return {f"thresholds.{k}": rests.get(k, 0.0) + (v - rests.get(k, 0.0)) * factor
            for k, v in spec.thresholds.items()}
