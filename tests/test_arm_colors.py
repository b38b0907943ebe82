"""One arm-colour table (`lbw_sim.guard.palette.ARM_COLORS`) read by every figure."""

from __future__ import annotations

import itertools

from lbw_sim.guard.palette import ARM_COLORS, UNGUARDED_COLOR, arm_color
from lbw_sim.sim.arms import ALL_ARMS
from lbw_sim.viz import live, stress


def distance(a: str, b: str) -> float:
    ca, cb = ([int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in (a, b))
    return sum((x - y) ** 2 for x, y in zip(ca, cb)) ** 0.5


def test_every_arm_has_its_own_colour_far_from_the_others():
    arms = [*ALL_ARMS, "cosine", "lr_matched"]
    assert set(arms) <= set(ARM_COLORS)
    for a, b in itertools.combinations(arms, 2):
        assert distance(arm_color(a), arm_color(b)) > 60, (a, b)
    assert arm_color("schedulefree") != arm_color("prodigy")
    assert distance(arm_color("stableadamw"), UNGUARDED_COLOR) > 150


def test_figures_read_the_one_table():
    assert stress.arm_color is arm_color and stress.ARM_COLORS is ARM_COLORS
    assert arm_color("adamw") == live.PLAIN_COLOR  # the live chart's plain arm is grey too
