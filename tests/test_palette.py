"""Regime colours come from the spec: read off each regime's controls, or its `color` key."""

from __future__ import annotations

import pytest

from lbw_sim.errors import SpecError
from lbw_sim.guard import palette
from lbw_sim.guard.diagram import to_dot
from lbw_sim.guard.palette import fallback_color, regime_color, regime_colors
from lbw_sim.guard.spec import GuardSpec
from lbw_sim.studio.editor import spec_from_tables, spec_tables

#: The palette's tests name regimes: they run v1, whose regime names stay put.
V1 = GuardSpec.named("lbw-v1")


def luminance(hex_color: str) -> float:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def renamed_regimes(spec: GuardSpec, rename) -> GuardSpec:
    """The same machine with every regime renamed by `rename` (controls unchanged)."""
    data = spec.to_dict()
    data["regimes"] = {rename(k): v for k, v in data["regimes"].items()}
    data["initial"] = rename(data["initial"])
    for t in data["transitions"]:
        t["to"] = rename(t["to"])
        src = t["from"]
        t["from"] = src if src == "*" else (
            rename(src) if isinstance(src, str) else [rename(x) for x in src])
    return GuardSpec.from_dict(data)


def test_the_defaults_colours_follow_its_controls():
    spec = GuardSpec.default()
    c = regime_colors(spec)
    assert list(c) == list(spec.regimes) and c[spec.initial] == palette.INITIAL
    for name, r in spec.regimes.items():
        if r.stop:
            assert c[name] == palette.STOP
        elif r.rollback:
            assert c[name] == palette.ROLLBACK
    assert len(set(c.values())) == len(c), "two regimes of the default spec share a colour"


def test_v1_spec_colours_follow_the_controls():
    c = regime_colors(V1)
    assert list(c) == list(V1.regimes)
    assert c[V1.initial] == palette.INITIAL
    assert (c["stop"], c["rollback"], c["skip"]) == (palette.STOP, palette.ROLLBACK, palette.SKIP)
    assert c["intervene"] == palette.DAMP          # momentum damping wins over its LR cut
    assert c["watch"] == palette.WATCH             # no control yet
    assert len(set(c.values())) == len(c), "two regimes of the v1 spec share a colour"


def test_ratchet_darkens_with_a_deeper_cut():
    throttles = sorted((r.lr_scale, n) for n, r in V1.regimes.items()
                       if n.startswith("throttle"))
    shades = [luminance(regime_color(V1, n)) for _, n in throttles]  # deepest cut first
    assert len(shades) == 5 and shades == sorted(shades), shades
    assert luminance(regime_color(V1, "recover")) > max(shades)   # lr 0.7: lightest cut


def test_colours_do_not_depend_on_regime_names():
    names = {"stop": "halt", "rollback": "rewind", "nominal": "cruise"}
    spec = renamed_regimes(V1, lambda n: names.get(n, n.replace("throttle_", "brake_")))
    c, d = regime_colors(spec), regime_colors(V1)
    assert (c["halt"], c["rewind"], c["cruise"]) == (d["stop"], d["rollback"], d["nominal"])
    assert [c[f"brake_{i}"] for i in range(1, 6)] == [d[f"throttle_{i}"] for i in range(1, 6)]
    assert regime_color(spec, "stop") == fallback_color("stop")   # not a regime of this spec


def test_color_key_overrides_validates_and_round_trips():
    data = V1.to_dict()
    data["regimes"]["watch"]["color"] = "#123abc"
    spec = GuardSpec.from_dict(data)
    assert regime_color(spec, "watch") == "#123abc"
    assert GuardSpec.from_yaml(spec.to_yaml()) == spec
    assert GuardSpec.from_json(spec.to_json()) == spec
    assert spec.hash == V1.hash                   # a colour does not change behaviour
    assert "color" not in V1.to_yaml()            # specs without one stay as they were
    assert 'color="#123abc"' in to_dot(spec)
    for bad in ("red", "#12345", "#12345g", 7, ["#123456"]):
        data["regimes"]["watch"]["color"] = bad
        with pytest.raises(SpecError, match=r"regimes\.watch\.color: must be a CSS hex"):
            GuardSpec.from_dict(data)


def test_editor_keeps_a_regimes_colour():
    data = V1.to_dict()
    data["regimes"]["stop"]["color"] = "#000000"
    spec = GuardSpec.from_dict(data)
    assert spec_from_tables(spec, spec_tables(spec)).regimes["stop"].color == "#000000"


def test_diagram_draws_every_regime_in_its_colour():
    dot = to_dot(V1)
    for name, color in regime_colors(V1).items():
        assert f'"{name}" [label=' in dot and f'fillcolor="{color}40", color="{color}"' in dot


def test_figures_take_regime_colours_from_the_spec():
    """A `color` set on a regime shows in the bands of the plotly figures and the live charts."""
    from lbw_sim import viz
    from lbw_sim.guard.engine import replay
    from lbw_sim.traces.synthetic import demo_trace

    data = V1.to_dict()
    data["regimes"]["skip"]["color"] = "#123abc"
    spec = GuardSpec.from_dict(data)
    out = replay(demo_trace()[0], spec)
    assert (out["regime"] == "skip").any()
    for fig in (viz.trace_figure(out, spec), viz.controls_figure(out, spec)):
        assert "#123abc" in {s.fillcolor for s in fig.layout.shapes if s.yref == "paper"}
    bands = viz.live_charts(out, out.iloc[:0], spec)[0]["layer"][0]["encoding"]["color"]["scale"]
    assert dict(zip(bands["domain"], bands["range"]))["skip"] == "#123abc"
    assert "#123abc" not in {s.fillcolor for s in viz.trace_figure(out, V1).layout.shapes}
