from lbw_sim.guard.diagram import to_dot
from lbw_sim.guard.spec import GuardSpec, sources_of


def test_diagram_is_drawn_from_the_declaration():
    spec = GuardSpec.named("lbw-v1")
    dot = to_dot(spec, active="intervene")
    for name in spec.regimes:
        assert f'"{name}" [label="{name}\\n' in dot
    edges = sum(len(sources_of(t, spec)) for t in spec.transitions)
    assert dot.count(" -> ") == edges
    assert 'tooltip="grad_z > spike_z or loss_ratio > spike_ratio"' in dot
    active = next(line for line in dot.splitlines() if line.startswith('  "intervene" ['))
    assert "penwidth=3" in active
    assert "peripheries=2" in next(line for line in dot.splitlines()
                                   if line.startswith('  "nominal" ['))


def test_conditions_can_be_shown_and_quotes_are_escaped():
    spec = GuardSpec.named("lbw-v1").with_values({"regimes.stop.reason": 'say "why"'})
    dot = to_dot(spec, conditions=True)
    assert "\\nnonfinite > 0" in dot
    assert dot.count("{") == dot.count("}")
