import math

import numpy as np
import pandas as pd
import pytest

from lbw_sim.errors import TraceError
from lbw_sim.guard.engine import replay
from lbw_sim.guard.scoring import (
    alarm_rows,
    incident_report,
    quality,
    read_labels,
    score,
    score_walk,
)
from lbw_sim.guard.spec import GuardSpec
from lbw_sim.traces.synthetic import demo_trace, labels

NOMINAL = 0
# 100 rows, one per step; the guard is out of nominal on rows 18-19, 22-24, 40, 80-81
REGIME = np.zeros(100, dtype=np.int16)
for lo, hi in ((18, 19), (22, 24), (40, 40), (80, 81)):
    REGIME[lo:hi + 1] = 1
LABELS = pd.DataFrame({"start": [20, 50, 80], "end": [25, 55, 80], "kind": ["a", "b", "c"]})


def walk_score(steps, horizon=0, lab=LABELS):
    skipped = np.zeros(100, bool)
    skipped[[22, 23]] = True
    lr = np.where(REGIME == 1, 0.5, 1.0)
    return score_walk(steps, REGIME, skipped, lr, NOMINAL, read_labels(lab), horizon)


def test_alarms_are_first_rows_of_excursions():
    assert alarm_rows(REGIME, NOMINAL).tolist() == [18, 22, 40, 80]
    assert alarm_rows(np.ones(5), 0).tolist() == [0]
    assert alarm_rows(np.zeros(0), 0).tolist() == []


def test_hand_computed_quality_without_horizon():
    m = walk_score(np.arange(100))
    # alarms 18 (false), 22 (in a), 40 (false), 80 (in c); b is missed
    assert m["alarms"] == 4 and m["false_alarms"] == 2
    assert m["precision"] == 0.5
    assert m["recall"] == pytest.approx(2 / 3) and m["detected"] == 2
    assert m["lead_time"] == pytest.approx(((20 - 22) + (80 - 80)) / 2)  # late by 2 on a
    assert m["false_alarms_per_1k"] == pytest.approx(2 / 100 * 1000)
    assert m["out_share"] == pytest.approx(8 / 100)
    assert m["skipped"] == 2
    assert m["mean_lr_scale"] == pytest.approx((92 + 8 * 0.5) / 100)


def test_horizon_counts_early_alarms():
    m = walk_score(np.arange(100), horizon=2)
    # windows [18,25], [48,55], [78,80]: only 40 is false; a's first alarm is 18 (2 early)
    assert m["precision"] == 0.75 and m["false_alarms"] == 1
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["lead_time"] == pytest.approx((2 + 0) / 2)
    assert m["false_alarms_per_1k"] == pytest.approx(10.0)


def test_false_alarm_rate_is_per_optimizer_step_not_per_row():
    steps = np.arange(100) * 10  # logged every 10 steps: 991 steps spanned
    lab = LABELS.assign(start=LABELS.start * 10, end=LABELS.end * 10)
    m = walk_score(steps, lab=lab)
    assert m["false_alarms"] == 2
    assert m["false_alarms_per_1k"] == pytest.approx(2 / 991 * 1000)


def test_overlapping_windows_and_late_starts():
    lab = read_labels(pd.DataFrame({"start": [10, 20], "end": [50, 25]}))
    m = quality(np.array([30, 60]), lab, span=100)
    assert m["precision"] == 0.5 and m["recall"] == 0.5  # 30 sits in the long window only


def test_no_alarms_and_no_incidents():
    lab = read_labels(LABELS)
    m = quality(np.array([], dtype=np.int64), lab, span=100)
    assert math.isnan(m["precision"]) and m["recall"] == 0 and math.isnan(m["lead_time"])
    assert m["false_alarms_per_1k"] == 0
    empty = read_labels(pd.DataFrame({"start": [], "end": []}))
    m = quality(np.array([5]), empty, span=100)
    assert m["precision"] == 0 and math.isnan(m["recall"]) and m["false_alarms"] == 1


def test_no_labels_gives_cost_only():
    m = score_walk(np.arange(100), REGIME, np.zeros(100), np.ones(100), NOMINAL)
    assert set(m) == {"out_share", "skipped", "mean_lr_scale"}


def test_incident_report_names_first_alarm():
    rep = incident_report(np.arange(100), REGIME, NOMINAL, read_labels(LABELS), horizon=2)
    assert rep["alarm"].tolist()[0] == 18 and math.isnan(rep["alarm"].iloc[1])
    assert rep["lead"].tolist()[0] == 2


def test_read_labels_from_csv_and_errors(tmp_path):
    p = tmp_path / "l.csv"
    p.write_text("start,end,kind\n30,31,x\n10,12,y\n")
    lab = read_labels(p)
    assert lab.start.tolist() == [10, 30] and lab.kind.tolist() == ["y", "x"]
    assert read_labels(pd.DataFrame({"start": [4]})).end.tolist() == [4]  # end defaults
    for bad, word in [("start,end\n5,3\n", "before start"), ("a,b\n1,2\n", "start,end"),
                      ("start,end\n1.5,3\n", "whole step"), ("start,end\nx,3\n", "whole step")]:
        p.write_text(bad)
        with pytest.raises(TraceError, match=word):
            read_labels(p)
    with pytest.raises(TraceError, match="no such"):
        read_labels(tmp_path / "missing.csv")


def test_score_replays_the_default_spec_on_labelled_demo():
    trace, incidents = demo_trace()
    m = score(trace, GuardSpec.default(), labels(incidents))
    assert m["recall"] == 1.0 and m["lead_time"] == 0.0
    out = replay(trace)
    assert m["out_share"] == pytest.approx((out["regime"] != "nominal").mean())
    assert m["skipped"] == out["skipped"].sum()


def test_labels_from_uploaded_bytes():
    from lbw_sim.errors import TraceError
    from lbw_sim.guard.scoring import labels_from_bytes

    got = labels_from_bytes("l.csv", b"start,end,kind\n10,12,spike\n40,40,nan\n")
    assert got.start.tolist() == [10, 40] and got.end.tolist() == [12, 40]
    for bad in (b"\x00\xff\xfe garbage", b"", b"begin,stop\n1,2\n", b"start,end\n5,3\n"):
        with pytest.raises(TraceError) as err:
            labels_from_bytes("l.csv", bad)
        assert "\n" not in str(err.value)


def test_scoring_an_annotated_trace_equals_scoring_by_replay():
    from lbw_sim.guard.engine import replay
    from lbw_sim.guard.scoring import read_labels, score, score_replayed
    from lbw_sim.guard.spec import GuardSpec
    from lbw_sim.traces.synthetic import demo_trace, labels

    trace, incidents = demo_trace()
    lab = read_labels(labels(incidents))
    spec = GuardSpec.default()
    assert score_replayed(replay(trace, spec), lab, 20, spec.initial) == \
        score(trace, spec, lab, 20)
