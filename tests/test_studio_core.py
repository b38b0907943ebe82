"""The core behind the studio pages: spec tables, hysteresis bands, uploads, paths, figures."""

from __future__ import annotations

import os

import pytest

from lbw_sim.errors import SpecError, TraceError
from lbw_sim.guard.analysis import regime_at
from lbw_sim.guard.engine import replay
from lbw_sim.guard.spec import GuardSpec
from lbw_sim.sim.landscapes import get_landscape
from lbw_sim.sim.trajectories import (
    PRESETS,
    describe,
    guard_actions,
    run_paths,
    summarize,
    verdict,
)
from lbw_sim.studio.bands import bands
from lbw_sim.studio.editor import section_of, spec_from_tables, spec_tables
from lbw_sim.studio.uploads import read_upload
from lbw_sim.traces.synthetic import EXAMPLES, example
from lbw_sim.viz import signal_figure, trajectory_figure

V1 = GuardSpec.named("lbw-v1")


def test_tables_round_trip_the_spec_exactly():
    spec = GuardSpec.default()
    assert spec_from_tables(spec, spec_tables(spec)).hash == spec.hash


def test_table_edit_and_errors_name_the_field():
    spec = GuardSpec.default()
    t = spec_tables(spec)
    t["thresholds"].loc[t["thresholds"]["name"] == "spike_z", "value"] = "8.0"  # cells are text
    assert spec_from_tables(spec, t).thresholds["spike_z"] == 8.0
    t["regimes"].loc[0, "name"] = "watch"
    with pytest.raises(SpecError) as err:
        spec_from_tables(spec, t)
    assert err.value.field == "regimes.watch" and section_of(err.value.field) == "regimes"
    assert section_of("transitions.spike.when") == "transitions"
    assert section_of("initial") == "regimes"


def test_bands_pair_entry_and_exit_thresholds():
    spec = V1                                    # names and values that stay put
    th = spec.thresholds
    found = {(b.signal, b.regime): (b.entry, b.exit) for b in bands(spec)}
    assert found[("grad_z", "intervene")] == (th["spike_z"], th["calm_z"])
    assert found[("loss_ratio", "intervene")] == (th["spike_ratio"], th["calm_ratio"])
    assert found[("grad_z", "watch")] == (th["watch_z"], th["calm_z"])


def test_the_defaults_bands_open_between_its_own_thresholds():
    spec = GuardSpec.default()
    th = spec.thresholds
    found = bands(spec)
    pairs = {(b.entry, b.exit) for b in found}
    assert (th["spike_z"], th["calm_z"]) in pairs and (th["watch_z"], th["calm_z"]) in pairs
    for b in found:
        assert b.signal in spec.signals and b.regime in spec.regimes
        assert (b.entry > b.exit) if b.rising else (b.entry < b.exit)


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
    out = replay(example(next(iter(EXAMPLES)))[0], GuardSpec.default(), signals=True)
    fig = signal_figure(out, GuardSpec.default())
    fills = [s for s in fig.layout.shapes if s.type == "rect" and s.yref != "paper"]
    assert len(fills) == len(bands(GuardSpec.default())) > 0  # one per (signal, band)
    assert regime_at(out, int(out["step"].iloc[0])) == "nominal"


def test_edge_of_stability_paths_plain_leaves_guard_holds():
    """Under the v1 ratchet, the spec the Trajectories page and Home's demo run (its update
    cap bounds a step past the edge; the adaptive default carries none)."""
    cfg = PRESETS["edge_of_stability"]
    paths = run_paths(cfg, V1)
    table = summarize(paths, cfg)
    land = get_landscape(cfg.landscape)
    held = verdict(table, land.lr_threshold)     # 0.35 only: above 2/lambda
    assert held.guard_holds and (held.runs, held.plain_lost, held.guarded_lost) == (1, 1, 0)
    assert 0 < held.plain_steps < cfg.steps
    assert not verdict(table).guard_holds        # plain holds at 0.1: not every run is lost
    summary = table.set_index(["arm", "lr"])
    assert summary.loc[("plain", 0.35), "left the window"]
    assert not summary.loc[("guarded", 0.35), "left the window"]
    assert not summary.loc[("plain", 0.1), "left the window"]
    guarded = paths[(paths["arm"] == "guarded") & (paths["lr"] == 0.35)]
    # the guard held the run, and says how (v1's update cap binds here)
    assert (guarded["update_scale"] < 1).any() or "intervene" in set(guarded["regime"])
    assert guard_actions(guarded) != "took no action"
    fig = trajectory_figure(paths, get_landscape(cfg.landscape), V1, frames=10)
    assert len(fig.frames) == 10 and fig.layout.sliders
    # below the edge the guard leaves a healthy run alone: the same path, no action
    low = summary.loc[("guarded", 0.1)]
    assert low["guard acted (steps)"] == 0
    assert low["final loss"] == pytest.approx(summary.loc[("plain", 0.1), "final loss"])


def test_trajectory_play_keeps_the_landscape():
    """plotly.js drops contour/heatmap traces once an animation starts: the landscape is a
    layout image (not a trace), and frames touch only the path traces."""
    cfg = PRESETS["edge_of_stability"]
    paths = run_paths(cfg, V1)                   # the page's spec: its cap marks the updates
    fig = trajectory_figure(paths, get_landscape(cfg.landscape), V1, frames=8)
    assert not any(t.type in ("contour", "heatmap") for t in fig.data)
    (image,) = fig.layout.images
    assert image.source.startswith("data:image/png;base64,") and image.layer == "below"
    n_paths = paths.groupby(["arm", "lr"]).ngroups
    for fr in fig.frames:
        assert list(fr.traces) == list(range(1, n_paths + 1))
        assert all(t.type == "scatter" for t in fr.data)
    # each LR its own colour, shared by its plain and guarded path; regimes on the markers
    lines = {t.name: t.line.color for t in fig.data[1:n_paths + 1]}
    assert lines["plain lr=0.1"] == lines["guarded lr=0.1"] != lines["guarded lr=0.35"]
    guarded = next(t for t in fig.data if t.name == "guarded lr=0.35")
    assert "diamond" in guarded.marker.symbol           # capped updates are marked


def test_cap_bindings_are_actions_with_a_cause():
    """Rosenbrock at LR 0.05: the cap binds without a regime change; it is counted and said."""
    import dataclasses

    from lbw_sim.guard.analysis import action_counts, transitions_table

    cfg = dataclasses.replace(PRESETS["rosenbrock"], lrs=(0.05,))
    paths = run_paths(cfg, V1)                   # the update cap is v1's
    row = summarize(paths, cfg).set_index("arm").loc["guarded"]
    guarded = paths[paths["arm"] == "guarded"]
    capped = int((guarded["update_scale"] < 1).sum())
    assert capped > 0 and row["regime changes"] == 0
    assert row["updates capped"] == capped and row["guard acted (steps)"] >= capped
    assert guard_actions(guarded) != "took no action"
    causes = guarded.loc[guarded["update_scale"] < 1, "cause"]
    assert causes.str.match(r"update capped: ‖Δθ‖/‖θ‖=[0-9.e-]+ > cap 0.02").all()
    table = transitions_table(guarded)
    assert "update cap" in set(table["transition"])
    assert action_counts(guarded.iloc[1:])["capped"] == capped


def test_trajectories_note_follows_the_choices():
    import dataclasses

    land = get_landscape("edge_of_stability")
    for opt, lrs in (("sgd", (0.1, 0.35)), ("adamw", (0.1,))):
        cfg = dataclasses.replace(PRESETS["edge_of_stability"], optimizer=opt, lrs=lrs)
        text = describe(summarize(run_paths(cfg), cfg), cfg, land.lr_threshold)
        assert all(f"LR {lr:g}:" in text for lr in lrs)
        assert ("(here: 0.35)" in text) == (lrs == (0.1, 0.35))
        assert ("none of the chosen LRs" in text) == (lrs == (0.1,))
        assert ("AdamW divides" in text) == (opt == "adamw")


def test_regimes_signal_figure_panels_ranges_flags_and_debounce():
    import numpy as np

    from lbw_sim.guard.analysis import held_not_fired
    from lbw_sim.traces.synthetic import demo_trace

    spec = GuardSpec.default()
    trace, _ = demo_trace()
    out = replay(trace, spec, signals=True)
    held = held_not_fired(out, spec)
    # a transition that needs N > 1 steps: a shorter crossing is listed, never a fired one
    debounced = {t.name for t in spec.transitions if t.for_ > 1}
    some = held[held["transition"].isin(debounced)]
    assert len(some) and (some["steps"] < some["needed"]).all()
    for name, rows in some.groupby("transition"):
        fired = set(out.loc[out["transition"].astype(str) == name, "step"])
        assert not fired & set(rows["start"])
    fig = signal_figure(out, spec, held=held)
    assert fig.layout.yaxis.title.text.startswith("loss")          # raw loss panel first
    nonfinite = next(t for t in fig.data if t.name == "nonfinite")
    assert nonfinite.mode == "markers" and set(np.asarray(nonfinite.y)) == {1.0}
    assert any(t.name and "did not fire" in t.name for t in fig.data)
    # the legend sits at the figure's bottom edge, below the x-axis title (container units:
    # a paper-unit offset put it over the 'step' title on short figures)
    assert fig.layout.legend.yref == "container" and fig.layout.legend.y == 0
    assert fig.layout.legend.yanchor == "bottom" and fig.layout.margin.b >= 120
    # every entry and exit line lies inside its panel's y-range
    for shape in fig.layout.shapes:
        if shape.type == "line" and shape.yref.startswith("y"):
            axis = fig.layout["yaxis" + shape.yref[1:]]
            if axis.range:
                assert axis.range[0] <= shape.y0 <= axis.range[1], (shape.yref, shape.y0)
