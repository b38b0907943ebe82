"""The Tune page's core (lbw_sim.studio.tune, .labels): settings, ranges, sweeps, picks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lbw_sim.errors import SpecError, TraceError
from lbw_sim.guard.scoring import read_labels, score
from lbw_sim.guard.spec import GuardSpec
from lbw_sim.studio import labels as L
from lbw_sim.studio import tune as T
from lbw_sim.traces.synthetic import EXAMPLES, example
from lbw_sim.traces.synthetic import labels as example_labels


@pytest.fixture(scope="module")
def spiky():
    trace, meta = example(next(iter(EXAMPLES)))
    return trace, read_labels(example_labels(meta))


def test_every_listed_setting_is_settable_and_numeric():
    spec = GuardSpec.named("lbw-v1")
    settings = T.numeric_settings(spec)
    assert list(settings)[0].startswith("thresholds.")
    assert {"thresholds.spike_z", "transitions.spike.for", "signals.grad_z.half_life",
            "regimes.intervene.lr_scale", "bounds.lr_slew_up"} <= set(settings)
    assert "transitions.spike.when" not in settings and "name" not in settings
    for path, value in settings.items():
        assert spec.with_values({path: value}).hash == spec.hash, path


def test_ranges_and_grids_respect_the_kind_of_setting():
    spec = GuardSpec.named("lbw-v1")
    assert T.default_range(spec, "thresholds.spike_z") == (6.0, 24.0)
    assert T.default_range(spec, "regimes.intervene.lr_scale") == (0.125, 1.0)
    assert T.is_whole(spec, "transitions.spike.for")
    assert not T.is_whole(spec, "thresholds.spike_z")
    assert T.grid_values(1, 4, 7, whole=True) == [1, 2, 3, 4]
    values = T.grid_values(0.01, 0.05, 5)
    assert values == [0.01, 0.02, 0.03, 0.04, 0.05]
    with pytest.raises(SpecError):
        T.grid_values(2, 1, 5)
    assert T.with_current([1.0, 2.0, 3.0], 2.5) == [1.0, 2.5, 3.0]   # n asked, n swept
    assert T.with_current([1.0, 3.0], 2.5) == [1.0, 2.5, 3.0]        # the ends stay
    assert T.with_current([1.0, 2.0, 3.0, 4.0], 3.2) == [1.0, 2.0, 3.2, 4.0]
    assert T.with_current([1, 2, 3], 9) == [1, 2, 3]


def test_tune_matches_one_replay_per_point(spiky):
    trace, labels = spiky
    base = GuardSpec.named("lbw-v1")
    grid = {"thresholds.spike_z": T.grid_values(6, 24, 4)}
    table = T.tune(trace, base, grid, labels, horizon=20)
    assert len(table) == 4 and table["pareto"].any()
    for i, v in enumerate(grid["thresholds.spike_z"]):
        one = score(trace, base.with_values({"thresholds.spike_z": v}), labels, 20)
        assert table["recall"].iloc[i] == one["recall"]
        assert table["false_alarms_per_1k"].iloc[i] == one["false_alarms_per_1k"]


def test_a_page_sweep_has_a_size_limit(spiky):
    grid = {"thresholds.spike_z": list(range(100)), "thresholds.spike_ratio":
            [1.2 + i / 100 for i in range(100)]}
    with pytest.raises(SpecError, match="more than the page sweeps"):
        T.tune(spiky[0], GuardSpec.named("lbw-v1"), grid)


def test_pick_names_the_edit_and_diff_shows_only_the_swept_setting(spiky):
    base = GuardSpec.named("lbw-v1")
    table = T.tune(spiky[0], base, {"thresholds.spike_z": [6.0, 12.0]})
    point = T.point_of(table, 0, ["thresholds.spike_z"])
    picked = T.pick(base, point)
    assert picked.name == "lbw-default (spike_z 6)" and picked.thresholds["spike_z"] == 6.0
    # named and described against the spec the design started from, not the last pick
    again = T.pick(picked, {"thresholds.spike_z": 7.0}, origin=base)
    assert again.name == "lbw-default (spike_z 7)"
    assert again.description.startswith(f"Changed from lbw-default (hash {base.hash}): "
                                        "thresholds.spike_z 12.0 → 7.0.")
    assert T.file_name(again) == "lbw-default_spike_z-7.yaml"
    assert T.changed_name(base, base.with_values({f"thresholds.{k}": v * 1.1 for k, v in
                                                 base.thresholds.items()})) == \
        "lbw-default (edited)"                               # many changes: not all named
    assert list(T.diff_table(base, picked)["setting"]) == ["thresholds.spike_z"]
    assert T.current_row(table, base, ["thresholds.spike_z"]) == 1
    assert T.current_row(table, base.with_values({"thresholds.spike_z": 9.0}),
                         ["thresholds.spike_z"]) is None


def test_box_selection_snaps_to_logged_steps():
    steps = np.arange(0, 1000, 10)
    assert L.from_box({"box": [{"x": [101.5, 148.0]}]}, steps) == (110, 140)
    assert L.from_box({"box": [{"x": [148.0, 101.5]}]}, steps) == (110, 140)
    assert L.from_box({"box": [{"x": [101, 109]}]}, steps) is None
    assert L.from_box({"box": []}, steps) is None and L.from_box(None, steps) is None


def test_label_table_round_trips_through_the_clis_csv(tmp_path):
    table = L.add(L.add(L.empty(), 500, 520, "spike"), 100, 100, "")
    assert list(table["start"]) == [100, 500]
    assert len(L.add(table, 500, 520, "spike")) == 2
    path = tmp_path / "labels.csv"
    path.write_bytes(L.to_csv(table))
    assert path.read_text().splitlines()[0] == "start,end,kind"
    back = read_labels(path)
    assert list(back.start) == [100, 500] and list(back.end) == [100, 520]


def test_blank_rows_are_ignored_and_bad_rows_named():
    table = pd.DataFrame({"start": [10, None, 30], "end": [12, None, None],
                          "kind": ["a", None, "b"]})
    labels = L.to_labels(table)
    assert list(labels.start) == [10, 30] and list(labels.end) == [12, 30]
    with pytest.raises(TraceError, match="row 1"):
        L.to_labels(pd.DataFrame({"start": [50], "end": [40], "kind": [""]}))
    with pytest.raises(TraceError, match="no start"):
        L.to_labels(pd.DataFrame({"start": [None], "end": [40], "kind": [""]}))


def test_figures_build_for_each_view(spiky):
    from lbw_sim.viz.tune import (
        heatmap_figure,
        label_figure,
        outcome_groups,
        parallel_figure,
        tradeoff_figure,
    )

    trace, labels = spiky
    grid = {"thresholds.spike_z": [6.0, 12.0, 18.0], "thresholds.spike_ratio": [1.3, 1.6],
            "transitions.spike.for": [1, 2]}
    table = T.tune(trace, GuardSpec.named("lbw-v1"), grid, labels)
    params = list(grid)
    fig = tradeoff_figure(table, params, True, current=0)
    names = [t.name.split(" (")[0] for t in fig.data]
    assert names == ["swept spec", "Pareto front", "spec in use"]
    groups = outcome_groups(table, ["false_alarms_per_1k", "recall", "lead_time"])
    assert list(fig.data[0].customdata) == list(groups["row"])    # one mark per outcome
    assert groups["count"].sum() == len(table)
    heat = heatmap_figure(table[table["transitions.spike.for"] == 1], params[0], params[1],
                          "recall")
    assert np.asarray(heat.data[0].z).shape == (2, 3)
    assert len(parallel_figure(table, params, True).data[0].dimensions) == 6
    lab = label_figure(trace, labels.table)
    assert len(lab.layout.shapes) == len(labels.table) and lab.layout.dragmode == "select"


def test_trade_off_axes_fit_the_data_and_equal_outcomes_are_one_mark():
    """Specs scoring 0, 0.0023 and 0.0046 stand apart; equal ones are one point with a count;
    a colour that does not vary gets no colour bar."""
    from lbw_sim.viz.tune import axis_scale, tradeoff_figure

    table = pd.DataFrame({"thresholds.watch_z": np.arange(6.0),
                          "mean_lr_scale": [1, 1, 1, 0.99, 0.99, 0.98],
                          "out_share": [0, 0, 0.0023, 0.0046, 0.0046, 0.0046],
                          "skipped": [3.0] * 6, "pareto": [True, *[False] * 4, True]})
    fig = tradeoff_figure(table, ["thresholds.watch_z"], False, current=0)
    lo, hi = fig.layout.yaxis.range
    assert lo < 0 < 0.0023 < 0.0046 < hi and hi - lo < 0.01   # not 0..1
    pts = fig.data[0]
    assert len(pts.x) == 4 and sorted(pts.marker.size)[-1] > sorted(pts.marker.size)[0]
    assert "2 swept specs" in " ".join(pts.text)
    assert pts.marker.showscale is None and "for all" in pts.name   # skipped never varies
    assert axis_scale(pd.Series([1e-4, 1e-2, 1.0]))["type"] == "log"
    assert axis_scale(pd.Series([0.5, 0.5]), bounded=True)["range"] == [0.45, 0.55]
    assert axis_scale(pd.Series([1.0, 1.0]), bounded=True)["range"] == [0.95, 1.02]
    assert axis_scale(pd.Series([0.0, 0.0]))["range"] == [-0.05, 1.0]   # no false alarms


def test_colour_scales_only_where_values_vary():
    from lbw_sim.viz.tune import heatmap_figure, parallel_figure

    flat = pd.DataFrame({"a": [1.0, 1.0, 2.0, 2.0], "b": [1.0, 2.0, 1.0, 2.0],
                         "recall": [0.5] * 4, "false_alarms_per_1k": [0.0] * 4,
                         "lead_time": [3.0] * 4})
    heat = heatmap_figure(flat, "a", "b", "recall")
    assert heat.data[0].showscale is False and "0.5 at every point" in heat.layout.title.text
    assert parallel_figure(flat, ["a", "b"], True).data[0].line.showscale is None
    varied = flat.assign(recall=[0.1, 0.2, 0.3, 0.4])
    assert heatmap_figure(varied, "a", "b", "recall").data[0].showscale is True
    assert parallel_figure(varied, ["a", "b"], True).data[0].line.showscale is True
