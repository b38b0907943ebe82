from lbw_sim.guard.diagram import FAN_IN, to_dot
from lbw_sim.guard.spec import GuardSpec, sources_of


def test_diagram_is_drawn_from_the_declaration():
    spec = GuardSpec.named("lbw-v1")
    dot = to_dot(spec, active="intervene")
    for name in spec.regimes:
        assert f'"{name}" [label="{name}\\n' in dot
    fan = [len(sources_of(t, spec)) for t in spec.transitions]
    assert dot.count(" -> ") == sum(1 if n >= FAN_IN else n for n in fan)
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


def test_a_rule_from_many_regimes_is_one_edge_from_a_note():
    """The default's non-finite rule leaves 13 regimes: one edge from a note that names the
    regimes it does not leave, with every source in its tooltip."""
    spec = GuardSpec.default()
    rule = next(t for t in spec.transitions if len(sources_of(t, spec)) >= FAN_IN)
    dot = to_dot(spec)
    edges = [line for line in dot.splitlines() if f" -> \"{rule.to}\"" in line
             and f"label=\"{rule.name} [" in line]
    assert len(edges) == 1 and edges[0].startswith(f'  "{rule.name} (from)" ->')
    note = next(line for line in dot.splitlines() if line.startswith(f'  "{rule.name} (from)" ['))
    for src in sources_of(rule, spec):
        assert src in note.split("tooltip=")[1]
    rest = [r for r in spec.regimes if r not in sources_of(rule, spec) and r != rule.to]
    assert ("but " + ", ".join(rest)) in note if len(rest) <= 4 else "regimes" in note
