"""LiveSession: the worker thread behind the Live training page (no Streamlit involved)."""

from __future__ import annotations

import io
import re
import threading
import time

import pandas as pd
import pytest

from lbw_sim.guard.spec import GuardSpec
from lbw_sim.sim.live import THREAD_PREFIX, LiveSession
from lbw_sim.sim.scenarios import load_scenario


def live_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]


def wait_rows(live: LiveSession, n: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while len(live.snapshot().guarded) < n:
        assert live.status.state in ("running", "finished"), live.status
        assert time.monotonic() < deadline, f"fewer than {n} rows after {timeout} s"
        time.sleep(0.05)


@pytest.fixture
def sessions():
    """Sessions made by a test; each is stopped at teardown whatever happened."""
    made: list[LiveSession] = []
    yield made
    for live in made:
        live.stop()


def test_both_arms_step_in_lockstep_on_the_same_batches(sessions):
    live = LiveSession("quickstart", 3e-3, steps=40)
    sessions.append(live.start())
    live.thread.join(60)
    snap = live.snapshot()
    assert snap.status.state == "finished", snap.status
    assert len(snap.guarded) == len(snap.plain) == 40
    assert snap.guarded["step"].tolist() == snap.plain["step"].tolist() == list(range(40))
    assert snap.guarded["batch"].tolist() == snap.plain["batch"].tolist()
    # Same weights, same batches, guard nominal (LR scale 1): the losses agree exactly.
    assert (snap.guarded["regime"] == "nominal").all()
    pd.testing.assert_series_equal(snap.guarded["loss"], snap.plain["loss"])
    assert not live_threads()


def test_stop_ends_the_worker_promptly_and_leaves_no_thread(sessions):
    live = LiveSession("quickstart", 3e-3, steps=20_000)
    sessions.append(live.start())
    wait_rows(live, 5)
    t0 = time.monotonic()
    assert live.stop()
    assert time.monotonic() - t0 < 2.0
    assert live.status.state == "stopped" and not live.running
    assert not live.thread.is_alive() and not live_threads()
    assert len(live.snapshot().guarded) < 20_000


#: The quickstart's corrupted batch is a one-step loss spike: v1 intervenes on it, the
#: adaptive default rides it (a spike must hold two steps); these tests need the event.
V1 = GuardSpec.named("lbw-v1")


def test_set_spec_mid_run_is_recorded_in_spec_hash(sessions):
    live = LiveSession("quickstart", 3e-3, steps=60, max_rate=200, spec=V1)
    sessions.append(live.start())
    old = live.spec
    wait_rows(live, 10)
    new = old.with_values({"thresholds.spike_z": 6.0})
    asked_at = len(live.snapshot().guarded)
    live.set_spec(new)
    live.thread.join(60)
    g = live.snapshot().guarded
    assert g["spec_hash"].iloc[0] == old.hash and g["spec_hash"].iloc[-1] == new.hash
    first_new = int(g.index[g["spec_hash"] == new.hash][0])
    assert first_new >= asked_at and (g["spec_hash"].iloc[first_new:] == new.hash).all()
    change, = live.snapshot().spec_changes
    assert (change.step, change.old_hash, change.new_hash) == (first_new, old.hash, new.hash)
    assert change.changes == ("thresholds.spike_z: 12.0 → 6.0",)
    assert "spec_hash" not in live.snapshot().plain


def test_an_exception_in_the_worker_is_reported_as_status(sessions):
    sc = load_scenario("quickstart")
    broken = sc.replace(model={**sc.model, "no_such_setting": 1})
    live = LiveSession(broken, steps=10)
    sessions.append(live.start())
    live.thread.join(30)
    status = live.status
    assert status.state == "error" and "no_such_setting" in status.message
    assert not live_threads()


def test_two_sessions_are_independent(sessions):
    a = LiveSession("quickstart", 3e-3, steps=20_000)
    b = LiveSession("quickstart", 3e-3, steps=20_000)
    sessions += [a.start(), b.start()]
    wait_rows(a, 3)
    wait_rows(b, 3)
    a.set_spec(a.spec.with_values({"thresholds.spike_z": 8.0}))
    assert a.stop()
    assert a.status.state == "stopped" and b.running and not b.stop_event.is_set()
    n = len(b.snapshot().guarded)
    wait_rows(b, n + 3)
    assert set(b.snapshot().guarded["spec_hash"]) == {b.spec.hash} != {a.spec.hash}
    assert b.stop() and not live_threads()


def test_an_unwatched_run_stops_itself(sessions):
    live = LiveSession("quickstart", 3e-3, steps=20_000, idle_timeout=0.5)
    sessions.append(live.start())
    live.thread.join(30)
    assert live.status.state == "stopped" and "no page polled" in live.status.message


def test_trace_csv_holds_both_arms_and_the_spec_hash(sessions):
    live = LiveSession("quickstart", 3e-3, steps=12)
    sessions.append(live.start())
    live.thread.join(60)
    df = pd.read_csv(io.StringIO(live.trace_csv()))
    assert df["arm"].value_counts().to_dict() == {"guarded": 12, "plain": 12}
    assert (df.loc[df["arm"] == "guarded", "spec_hash"] == live.spec.hash).all()
    assert {"loss", "grad_norm", "lr_scale", "regime", "cause"} <= set(df.columns)
    with pytest.raises(RuntimeError):
        live.start()


def test_live_charts_keep_their_spec_while_data_grows(sessions):
    """Streamlit updates a Vega-Lite chart in place only while its spec (less the named
    datasets) is unchanged; non-finite runs, regime bands and spec edits are data."""
    import json

    from lbw_sim.viz import live_charts

    live = LiveSession("quickstart", 3e-3, steps=140, spec=V1)
    sessions.append(live.start())
    wait_rows(live, 100)
    live.set_spec(live.spec.with_values({"thresholds.spike_z": 6.0}))
    live.thread.join(60)
    snap = live.snapshot()
    full = live_charts(snap.guarded, snap.plain)
    early = live_charts(snap.guarded.iloc[:3], snap.plain.iloc[:3])
    def frame(chart: dict) -> str:
        """The spec less its datasets and the legend's list of occurred regimes."""
        text = json.dumps({k: v for k, v in chart.items() if k != "datasets"})
        return re.sub(r'"values": \[[^\]]*\]', "", text)

    listed = full[0]["layer"][0]["encoding"]["color"]["legend"]["values"]
    assert listed[0] == "nominal" and {"intervene", "skip"} <= set(listed)
    assert set(listed) == set(snap.guarded["regime"])  # only the regimes that occurred
    assert early[0]["layer"][0]["encoding"]["color"]["legend"]["values"] == ["nominal"]
    assert [frame(c) for c in full] == [frame(c) for c in early]
    loss = full[0]["datasets"]
    # NaN gradients at step 80 make the plain weights, hence its loss, NaN from step 81.
    assert set(loss["bad"]["arm"]) == {"plain"} and loss["bad"]["start"].iloc[0] == 80.5
    assert {"intervene", "skip"} <= set(loss["bands"]["regime"])
    assert len(loss["edits"]) == 1 and loss["edits"]["step"].iloc[0] >= 100  # after 100 rows
    assert loss["rows"]["loss"].notna().any() and loss["rows"]["arm"].nunique() == 2
    assert snap.ended == {"plain": "model loss non-finite for 50 steps"}


def test_live_on_the_device_path_gives_the_host_rows(sessions):
    """Live with the torch backend (what `auto` picks on a GPU), on CPU tensors."""
    runs = {}
    for decide_on in ("host", "device"):
        live = LiveSession("quickstart", 3e-3, steps=90, decide_on=decide_on, spec=V1)
        sessions.append(live.start())
        live.thread.join(120)
        assert live.status.state == "finished", live.status
        assert live.runs["guarded"].arm.mode == decide_on
        runs[decide_on] = live.snapshot().guarded
    host, dev = runs["host"], runs["device"]
    cols = ["step", "batch", "regime", "lr_scale", "skipped", "safety_skip", "rollback",
            "transition", "cause", "spec_hash"]
    pd.testing.assert_frame_equal(dev[cols], host[cols])
    for col in ("loss", "grad_norm", "update_ratio"):
        if col in host:                          # update_ratio: measured when a spec reads it
            pd.testing.assert_series_equal(dev[col], host[col], rtol=1e-4)
    assert dev[["loss", "regime", "lr_scale"]].notna().all().all()
    assert dev["grad_norm"].isna().tolist() == [s in (80, 81) for s in dev["step"]]  # NaN grads
    assert {"intervene", "skip"} <= set(dev["regime"])


def _dying_pair():
    """A guarded trace and a plain copy whose loss and grad norm are NaN from step 50."""
    from lbw_sim.guard.engine import replay
    from lbw_sim.guard.spec import GuardSpec
    from lbw_sim.traces.synthetic import demo_trace

    guarded = replay(demo_trace()[0], GuardSpec.default()).iloc[:120].copy()
    plain = guarded.copy()
    plain.loc[plain["step"] >= 50, ["loss", "grad_norm"]] = float("nan")
    return guarded, plain


def test_live_chart_says_where_the_plain_run_died():
    from lbw_sim.viz import live_charts

    guarded, plain = _dying_pair()
    loss, grad, _ = live_charts(guarded, plain)
    for chart in (loss, grad):
        ends = chart["datasets"]["ends"]
        assert ends["label"].tolist() == ["plain: non-finite from step 50"]
        assert ends["step"].tolist() == [50.0] and ends["side"].tolist() == ["right"]
        texts = [lay for lay in chart["layer"] if lay["mark"]["type"] == "text"]
        assert texts and all(lay["data"] == {"name": "ends"} for lay in texts)
    # The marker sits on the plain run's last finite loss (step 49).
    assert loss["datasets"]["ends"]["y"].iloc[0] == plain.loc[plain["step"] == 49,
                                                                "loss"].iloc[0]
    # Its run then stops: both facts are said; a guard that stopped is said too.
    ended = {"plain": "model loss non-finite for 50 steps", "guarded": "guard stopped"}
    ends = live_charts(guarded, plain, ended=ended)[0]["datasets"]["ends"]
    assert ends.set_index("arm")["label"].to_dict() == {
        "guarded": "guarded: stopped at step 119",
        "plain": "plain: non-finite from step 50, stopped at step 119"}
    # Healthy runs: no marker, and the chart spec is the same (updated in place).
    healthy = live_charts(guarded, guarded)
    assert healthy[0]["datasets"]["ends"].empty
    strip = lambda c: {k: v for k, v in c.items() if k != "datasets"}  # noqa: E731
    assert [strip(c) for c in healthy] == [strip(c) for c in live_charts(guarded, plain)]


def test_live_legends_sit_outside_the_data_and_list_the_regimes_that_occurred():
    from lbw_sim.guard.palette import regime_colors
    from lbw_sim.guard.spec import GuardSpec
    from lbw_sim.viz import live_charts

    spec = GuardSpec.default()
    guarded, plain = _dying_pair()
    early = guarded.iloc[:3]  # nominal only so far: no band drawn yet
    for g, p in ((early, plain.iloc[:3]), (guarded, plain)):
        loss = live_charts(g, p, spec)[0]
        colors = [lay["encoding"]["color"] for lay in loss["layer"]
                  if "legend" in lay["encoding"].get("color", {})
                  and lay["encoding"]["color"]["legend"]]
        assert [c["title"] for c in colors] == ["regime", "run"]
        assert [c["legend"]["orient"] for c in colors] == ["bottom", "top"]  # not inside
        regime = colors[0]["scale"]
        assert regime["domain"] == list(spec.regimes)  # colours fixed for every regime
        assert regime["range"] == list(regime_colors(spec).values())
        listed = colors[0]["legend"]["values"]
        assert listed == [r for r in spec.regimes if r in set(g["regime"])]
