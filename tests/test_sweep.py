import numpy as np
import pandas as pd
import pytest

from lbw_sim.errors import SpecError
from lbw_sim.guard.engine import iter_walks, replay
from lbw_sim.guard.scoring import score
from lbw_sim.guard.spec import GuardSpec
from lbw_sim.guard.sweep import (
    OBJECTIVES_LABELLED,
    grid_points,
    load_ranges,
    pareto_front,
    parse_grid_arg,
    random_points,
    sweep,
)
from lbw_sim.traces.synthetic import Incident, healthy, inject, labels

DEFAULT = GuardSpec.named("lbw-v1")   # the sweeps below vary v1's thresholds


@pytest.fixture(scope="module")
def labelled():
    """Grad spikes of varied size every 500 steps: some easy, some near the threshold."""
    rng = np.random.default_rng(0)
    incidents = [Incident("grad_spike", s, 1, float(rng.uniform(0.6, 2.0)))
                 for s in range(500, 10_000, 500)]
    return inject(healthy(10_000, seed=1), incidents), labels(incidents)


def test_parse_ranges_and_lists():
    path, values = parse_grid_arg("thresholds.spike_z=4:10:0.5")
    assert path == "thresholds.spike_z" and len(values) == 13
    assert values[0] == 4.0 and values[-1] == 10.0 and values[1] == 4.5
    assert parse_grid_arg("transitions.spike.for=1,2,3") == ("transitions.spike.for", [1, 2, 3])
    assert parse_grid_arg("transitions.spike.for=1:5:2")[1] == [1, 3, 5]
    assert parse_grid_arg("regimes.watch.skip=true,false")[1] == [True, False]


@pytest.mark.parametrize("text, field", [
    ("thresholds.spike_z=10:4:1", "thresholds.spike_z"),
    ("thresholds.spike_z=1:5:0", "thresholds.spike_z"),
    ("thresholds.spike_z=1:5", "thresholds.spike_z"),
    ("thresholds.spike_z=0:1e9:0.001", "thresholds.spike_z"),
    ("thresholds.spike_z=a:5:1", "thresholds.spike_z"),
    ("thresholds.spike_z=", "thresholds.spike_z"),
    ("thresholds.spike_z=1,,2", "thresholds.spike_z"),
    ("=1,2", "=1,2"),
])
def test_grid_parse_errors_name_the_field(text, field):
    with pytest.raises(SpecError) as err:
        parse_grid_arg(text)
    assert err.value.field == field


@pytest.mark.parametrize("path", ["thresholds.spike_zz", "transitions.nope.for",
                                  "regimes.nope.lr_scale", "bounds.bogus"])
def test_unknown_setting_is_a_spec_error(labelled, path):
    with pytest.raises(SpecError) as err:
        sweep(labelled[0], DEFAULT, {path: [1, 2]})
    assert err.value.field == path


def test_load_ranges(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("thresholds.spike_z: [6, 8, 1]\ntransitions.spike.for: '1,2'\n"
                 "thresholds.calm_z: {lo: 1.0, hi: 1.5, step: 0.5}\n"
                 "bounds.max_rollbacks: {values: [0, 3]}\n")
    assert load_ranges(p) == {"thresholds.spike_z": [6, 7, 8], "transitions.spike.for": [1, 2],
                              "thresholds.calm_z": [1.0, 1.5], "bounds.max_rollbacks": [0, 3]}
    p.write_text("thresholds.spike_z: [6, 8]\n")
    with pytest.raises(SpecError) as err:
        load_ranges(p)
    assert err.value.field == "thresholds.spike_z"


def test_random_points_are_distinct_reproducible_and_on_the_grid():
    grid = {"a": list(range(20)), "b": [0.5, 1.5, 2.5]}
    pts = random_points(grid, 10, seed=3)
    assert len(pts) == 10 and len({tuple(p.values()) for p in pts}) == 10
    assert pts == random_points(grid, 10, seed=3)
    assert all(p["a"] in grid["a"] and p["b"] in grid["b"] for p in pts)
    assert len(random_points(grid, 1000)) == 60  # smaller grid: all of it


def test_invalid_combinations_are_skipped_and_reported(labelled):
    # calm_z is the exit threshold of `unusual` (watch_z = 4): 5 breaks the hysteresis band
    table = sweep(labelled[0], DEFAULT, {"thresholds.calm_z": [1.0, 2.0, 5.0]})
    assert table["thresholds.calm_z"].tolist() == [1.0, 2.0]
    [bad] = table.attrs["skipped"]
    assert bad["thresholds.calm_z"] == 5.0 and "hysteresis" in bad["error"]


def test_lower_spike_threshold_trades_false_alarms_for_recall(labelled):
    trace, lab = labelled
    z = [3.0, 4.0, 4.5, 8.0, 14.0, 30.0]
    table = sweep(trace, DEFAULT, {"thresholds.spike_z": z}, lab)
    assert table["thresholds.spike_z"].tolist() == z
    recall, fa = table["recall"].to_numpy(), table["false_alarms_per_1k"].to_numpy()
    # from 4 up: a higher threshold never adds recall nor false alarms, and loses both
    assert (np.diff(recall[1:]) <= 1e-12).all() and (np.diff(fa[1:]) <= 1e-12).all()
    assert recall[1] > recall[-1] and fa[1] > fa[-1] and fa[-1] == 0
    # at 3 the guard is so often out of nominal that incidents find it already there:
    # no fresh alarm, so recall drops while false alarms keep rising
    assert recall[0] < recall[1] and fa[0] > fa[1]
    assert (np.diff(table["out_share"].to_numpy()) <= 0).all()
    assert table["pareto"].tolist() == [False, False, False, True, True, True]
    assert table["spec_hash"].is_unique


def test_sweep_row_matches_a_single_replay(labelled):
    trace, lab = labelled
    table = sweep(trace, DEFAULT, {"thresholds.spike_z": [5.0, 9.0],
                                   "transitions.spike.for": [1, 2]}, lab, horizon=3)
    for row in table.itertuples(index=False):
        spec = DEFAULT.with_values({"thresholds.spike_z": row[0], "transitions.spike.for": row[1]})
        assert spec.hash == row.spec_hash
        m = score(trace, spec, lab, horizon=3)
        got = row._asdict()
        for key, value in m.items():
            assert got[key] == pytest.approx(value, nan_ok=True), key


def test_pareto_on_a_hand_example():
    t = pd.DataFrame({"recall": [1.0, 1.0, 0.5, 0.5, 1.0],
                      "precision": [0.5, 0.5, 1.0, 0.4, np.nan],
                      "false_alarms_per_1k": [2.0, 3.0, 0.0, 0.0, 0.0],
                      "out_share": [0.1, 0.1, 0.05, 0.05, 0.2]})
    # row 1 is beaten by row 0 (more false alarms); row 3 by row 2 (lower precision);
    # row 4 (no alarms, precision NaN counts as 0) is the only one with recall 1 and 0 FA
    assert pareto_front(t, OBJECTIVES_LABELLED).tolist() == [True, False, True, False, True]
    same = pd.DataFrame({"recall": [1.0, 1.0], "precision": [1.0, 1.0],
                         "false_alarms_per_1k": [0.0, 0.0], "out_share": [0.1, 0.1]})
    assert pareto_front(same, OBJECTIVES_LABELLED).all()  # ties do not dominate


def test_without_labels_front_is_over_cost(labelled):
    table = sweep(labelled[0], DEFAULT, {"thresholds.spike_z": [3.0, 30.0]})
    assert "recall" not in table and table.attrs["objectives"] == ["out_share", "skipped",
                                                                   "mean_lr_scale"]
    assert table["pareto"].tolist() == [False, True]


def test_grid_points_order():
    assert grid_points({"a": [1, 2], "b": [3]}) == [{"a": 1, "b": 3}, {"a": 2, "b": 3}]


def test_batched_walks_in_chunks_equal_a_replay_each():
    """Specs of other shapes interleaved, three to a chunk: equal conditions share debounce
    counts across chunks, yet every walk must be that spec's own replay."""
    incidents = [Incident("loss_spike", s, 2, 6.0) for s in range(500, 6_000, 700)]
    trace = inject(healthy(6_000, seed=2), [*incidents, Incident("nan_storm", 3_000, 60)])
    adaptive = GuardSpec.named("lbw-adaptive")
    specs = [adaptive.with_values({"thresholds.spike_z": z, "thresholds.calm_z": c})
             for z in (8.0, 12.0) for c in (1.0, 2.0)]
    specs += [DEFAULT, GuardSpec.named("lbw-active"),
              DEFAULT.with_values({"thresholds.spike_z": 5.0})]
    specs = specs[::2] + specs[1::2]
    seen = set()
    for i, compiled, walk, _ in iter_walks(trace, specs, chunk=3):
        want = replay(trace, specs[i])
        names = np.array(["", *compiled.trans_names])
        assert np.array(compiled.regimes)[walk.regime].tolist() == want["regime"].tolist(), i
        assert names[walk.transition + 1].tolist() == want["transition"].tolist(), i
        assert np.array_equal(walk.lr_scale, want["lr_scale"].to_numpy()), i
        assert np.array_equal(walk.skipped.astype(bool), want["skipped"].to_numpy()), i
        assert np.array_equal(walk.rollback.astype(bool), want["rollback"].to_numpy()), i
        seen.add(i)
    assert seen == set(range(len(specs)))
