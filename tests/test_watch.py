"""A state machine you can watch: the regime and the edge just taken at a scrubbed step, on
the diagram of the Replay page (`lbw_sim.studio.watch`, `to_dot(taken=...)`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

from lbw_sim.guard.diagram import to_dot
from lbw_sim.guard.engine import replay
from lbw_sim.guard.spec import GuardSpec
from lbw_sim.studio.watch import moment, transition_steps
from lbw_sim.traces.synthetic import EXAMPLES, example

ROOT = Path(__file__).resolve().parents[1]
SPIKE = next(iter(EXAMPLES))          # a grad spike at 1200, NaNs at 2100


def replayed():
    spec = GuardSpec.default()
    return spec, replay(example(SPIKE)[0], spec)


def test_moment_names_the_regime_the_edge_and_its_cause():
    spec, out = replayed()
    fired = transition_steps(out)
    assert moment(out, fired[0] - 1).transition == ""          # before: nothing taken yet
    first = moment(out, fired[0])
    row = out[out["step"] == fired[0]].iloc[0]
    assert (first.regime, first.transition, first.cause) == (
        row["regime"], row["transition"], row["cause"])
    assert first.came_from == spec.initial and first.since == fired[0]
    later = moment(out, fired[1] + 1)                         # between two events
    assert later.since == fired[1] and later.came_from == first.regime
    assert "because" in later.sentence() and later.transition in later.sentence()


def test_the_diagram_draws_the_edge_just_taken():
    spec, out = replayed()
    for step in transition_steps(out)[:4]:    # `outlier` leaves nominal and watch: one edge
        now = moment(out, step)
        dot = to_dot(spec, active=now.regime, taken=now.taken)
        hot = [line for line in dot.splitlines() if "penwidth=3.5" in line]
        assert len(hot) == 1 and f'"{now.came_from}" -> "{now.regime}"' in hot[0]
    assert "penwidth=3.5" not in to_dot(spec, active=now.regime)


def test_replay_scrubber_highlights_the_regime_at_the_scrubbed_step():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at = at.switch_page("pages/replay.py").run()
    assert not at.exception
    spec, out = replayed()
    for step in transition_steps(out)[:3]:
        at.slider(key="replay_step").set_value(step)
        at = at.run()
        assert not at.exception
        now = moment(out, step)
        dot = at.get("graphviz_chart")[0].proto.spec
        active = next(line for line in dot.splitlines() if line.startswith(f'  "{now.regime}" ['))
        assert "penwidth=3" in active                              # the regime it is in
        assert any(f'"{now.came_from}" -> "{now.regime}"' in line and "penwidth=3.5" in line
                   for line in dot.splitlines())                   # the edge just taken
        assert any(now.cause in m.value for m in at.markdown)      # and why, beside it
    at = at.button(key="replay_next").click().run()                # ▶ jumps to the next event
    assert at.slider(key="replay_step").value == transition_steps(out)[3]


def test_live_default_pace_leaves_time_to_edit_a_threshold_mid_run():
    import ast

    from lbw_sim.sim.scenarios import load_scenario

    tree = ast.parse((ROOT / "pages" / "live.py").read_text(encoding="utf-8"))
    paces = next(ast.literal_eval(n.value) for n in ast.walk(tree) if isinstance(n, ast.Assign)
                 and getattr(n.targets[0], "id", "") == "PACES")
    rate = next(iter(paces.values()))                          # the first is the default
    steps = max(load_scenario("quickstart").steps, 600)        # the page's default steps
    assert rate and 40 <= steps / rate <= 90                   # seconds: time to edit


def test_a_short_nan_storm_is_marked_on_the_loss_panel():
    """4 NaN steps in 3,000 are invisible as a band: each is an × on the panel's top edge."""
    from lbw_sim.viz import trace_figure

    spec, out = replayed()
    bad = out.loc[~np.isfinite(out["loss"].to_numpy(float)), "step"]
    assert 0 < len(bad) < 10
    fig = trace_figure(out, spec)
    marks = [t for t in fig.data if t.name == "non-finite (NaN/inf)"]
    assert marks and set(bad) <= set(np.concatenate([np.asarray(t.x) for t in marks]))
    lines = {t.name: t.line.color for t in fig.data if t.mode == "lines"}
    assert len(set(lines.values())) == len(lines) == 3               # three series, three colours


def test_live_faults_say_what_the_guard_did_or_why_it_did_not():
    from lbw_sim.sim.live import LiveSession
    from lbw_sim.studio.watch import fault_notes

    live = LiveSession("quickstart", 3e-3, steps=90).start()
    live.thread.join(60)
    notes = fault_notes(live.snapshot().guarded, live.spec, live.scenario.faults)
    corrupt, nan = notes                 # a corrupted batch at 70, NaN gradients at 80
    assert corrupt.startswith("Step 70") and "no reaction" in corrupt and "loss_z" in corrupt
    assert nan.startswith("Step 80") and "`nonfinite`" in nan and "because" in nan
