"""The core behind the studio pages: spec tables, hysteresis bands, uploads, paths, figures."""

from __future__ import annotations

import os

import pytest

from lbw_sim.errors import SpecError, TraceError
from lbw_sim.guard.analysis import regime_at
from lbw_sim.guard.engine import replay
from lbw_sim.guard.spec import GuardSpec
from lbw_sim.studio.bands import bands
from lbw_sim.studio.editor import section_of, spec_from_tables, spec_tables
from lbw_sim.studio.uploads import read_upload
from lbw_sim.traces.synthetic import EXAMPLES, example
from lbw_sim.viz import signal_figure, trajectory_figure


def test_tables_round_trip_the_spec_exactly():
    spec = GuardSpec.default()
    assert spec_from_tables(spec, spec_tables(spec)).hash == spec.hash


def test_table_edit_and_errors_name_the_field():
    spec = GuardSpec.default()
    t = spec_tables(spec)
    t["thresholds"].loc[t["thresholds"]["name"] == "spike_z", "value"] = "6.0"  # cells are text
    assert spec_from_tables(spec, t).thresholds["spike_z"] == 6.0
    t["regimes"].loc[0, "name"] = "watch"
    with pytest.raises(SpecError) as err:
        spec_from_tables(spec, t)
    assert err.value.field == "regimes.watch" and section_of(err.value.field) == "regimes"
    assert section_of("transitions.spike.when") == "transitions"
    assert section_of("initial") == "regimes"


def test_bands_pair_entry_and_exit_thresholds():
    spec = GuardSpec.named("lbw-v1")
    th = spec.thresholds
    found = {(b.signal, b.regime): (b.entry, b.exit) for b in bands(spec)}
    assert found[("grad_z", "intervene")] == (th["spike_z"], th["calm_z"])
    assert found[("loss_ratio", "intervene")] == (th["spike_ratio"], th["calm_ratio"])
    assert found[("grad_z", "watch")] == (th["watch_z"], th["calm_z"])


def test_uploads_read_map_and_refuse_cleanly():
    ok = read_upload("run.csv", b"step,loss\n1,2.0\n2,1.9\n")
    assert list(ok.trace["loss"]) == [2.0, 1.9] and not ok.needs_mapping
    odd = read_upload("odd.csv", b"it,obj\n1,2.0\n2,1.9\n")
    assert odd.needs_mapping and odd.columns == ["it", "obj"] and odd.trace is None
    mapped = read_upload("odd.csv", b"it,obj\n1,2.0\n2,1.9\n", {"step": "it", "loss": "obj"})
    assert list(mapped.trace["step"]) == [1, 2]
    for name, data in (("x.bin", os.urandom(2048)), ("e.csv", b""), ("n.txt", b"hello\n")):
        with pytest.raises(TraceError) as err:
            read_upload(name, data)
        assert "\n" not in str(err.value) and name in str(err.value)
    with pytest.raises(TraceError, match="upload limit"):
        read_upload("big.csv", b"x" * 2000, max_bytes=1000)
    assert read_upload("../../etc/passwd", b"step,loss\n1,2\n").name == "passwd"


def test_examples_and_signal_figure_draw_bands():
    for label in EXAMPLES:
        trace, incidents = example(label)
        assert len(trace) and incidents
    out = replay(example(next(iter(EXAMPLES)))[0], GuardSpec.named("lbw-v1"), signals=True)
    fig = signal_figure(out, GuardSpec.named("lbw-v1"))
    fills = [s for s in fig.layout.shapes if s.type == "rect" and s.yref != "paper"]
    assert len(fills) == 4  # one hysteresis band per (signal, band)
    assert regime_at(out, int(out["step"].iloc[0])) == "nominal"


def test_edge_of_stability_paths_plain_leaves_guard_holds():
    """The v1 spec's update cap holds the edge-of-stability path (the adaptive default has
    no cap, and does not: README, "An adaptive default")."""
    from lbw_sim.sim.landscapes import get_landscape
    from lbw_sim.sim.trajectories import PRESETS, guard_actions, run_paths, summarize, verdict

    cfg = PRESETS["edge_of_stability"]
    v1 = GuardSpec.named("lbw-v1")
    paths = run_paths(cfg, v1)
    table = summarize(paths, cfg)
    land = get_landscape(cfg.landscape)
    held = verdict(table, land.lr_threshold)     # 0.3 only: above 2/lambda
    assert held.guard_holds and (held.runs, held.plain_lost, held.guarded_lost) == (1, 1, 0)
    assert 0 < held.plain_steps < cfg.steps
    assert not verdict(table).guard_holds        # plain holds at 0.1: not every run is lost
    summary = table.set_index(["arm", "lr"])
    assert summary.loc[("plain", 0.3), "left the window"]
    assert not summary.loc[("guarded", 0.3), "left the window"]
    assert not summary.loc[("plain", 0.1), "left the window"]
    guarded = paths[(paths["arm"] == "guarded") & (paths["lr"] == 0.3)]
    # the guard held the run, and says how (the default spec's update cap binds here)
    assert (guarded["update_scale"] < 1).any() or "intervene" in set(guarded["regime"])
    assert guard_actions(guarded) != "took no action"
    fig = trajectory_figure(paths, get_landscape(cfg.landscape), v1, frames=10)
    assert len(fig.frames) == 10 and fig.layout.sliders
