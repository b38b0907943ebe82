import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scaling import scaled

from lbw_sim.errors import TraceError
from lbw_sim.guard.engine import BLOCK, OnlineGuard, replay
from lbw_sim.guard.spec import GuardSpec
from lbw_sim.traces.synthetic import Incident, healthy, inject

DEFAULT = GuardSpec.default()
V1 = GuardSpec.named("lbw-v1")

VALUES = st.one_of(st.floats(1e-3, 10.0), st.just(np.nan), st.just(np.inf), st.just(-np.inf),
                   st.just(1e30), st.just(0.0), st.floats(-1e3, 1e3))


@st.composite
def traces(draw, max_rows=400):
    n = draw(st.integers(1, max_rows))
    base = draw(st.sampled_from(["noise", "spiky", "hostile"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    loss = 2.0 * np.exp(0.05 * rng.standard_normal(n))
    grad = np.exp(0.3 * rng.standard_normal(n))
    if base != "noise":
        k = draw(st.integers(1, max(1, n // 10)))
        idx = rng.integers(0, n, k)
        loss[idx] *= rng.uniform(1, 20, k)
        grad[idx] *= rng.uniform(1, 100, k)
    if base == "hostile":
        for _ in range(draw(st.integers(1, 10))):
            i = draw(st.integers(0, n - 1))
            j = min(n, i + draw(st.integers(1, 30)))
            loss[i:j] = draw(VALUES)
            grad[i:j] = draw(VALUES)
    gaps = rng.integers(1, draw(st.sampled_from([2, 5, 50])), n)
    return pd.DataFrame({"step": np.cumsum(gaps), "loss": loss, "grad_norm": grad})


@st.composite
def specs(draw):
    """Any shipped spec with its thresholds scaled about their signals' rest values (one
    factor keeps every hysteresis band open and every exit reachable at rest), every
    transition's persistence and dwell redrawn and the bounds redrawn: read off the spec,
    so the property holds whatever the default's regimes are."""
    base = draw(st.sampled_from([DEFAULT, V1]))
    values = scaled(base, draw(st.floats(0.5, 2.0)))
    for t in base.transitions:
        values[f"transitions.{t.name}.for"] = draw(st.integers(1, 5))
        values[f"transitions.{t.name}.min_dwell"] = draw(st.integers(0, 30))
    return base.with_values({
        **values,
        "bounds.lr_scale_min": draw(st.floats(0.01, 0.2)),
        "bounds.lr_slew_down": draw(st.floats(0.1, 1.0)),
        "bounds.lr_slew_up": draw(st.floats(1.0, 2.0)),
        "bounds.max_consecutive_skips": draw(st.integers(0, 6)),
        "bounds.max_skip_fraction": draw(st.floats(0.0, 0.5)),
        "bounds.skip_window": draw(st.integers(1, 100)),
        "bounds.max_rollbacks": draw(st.integers(0, 3)),
    })


def check_bounds(out: pd.DataFrame, spec: GuardSpec) -> None:
    b = spec.bounds
    lr = out["lr_scale"].to_numpy()
    assert np.isfinite(lr).all()
    assert (lr >= b.lr_scale_min - 1e-12).all() and (lr <= b.lr_scale_max + 1e-12).all()
    if len(lr) > 1:
        ratio = lr[1:] / lr[:-1]
        assert (ratio >= b.lr_slew_down - 1e-9).all() and (ratio <= b.lr_slew_up + 1e-9).all()
    plain = (out["skipped"] & ~out["rollback"] & ~out["stop"]).to_numpy()
    skipped = out["skipped"].to_numpy()
    run = longest = 0
    for s, p in zip(skipped, plain):
        run = run + 1 if s else 0
        if p:
            longest = max(longest, run)
    assert longest <= b.max_consecutive_skips
    # A regime's skip is taken only while the window's skips, forced ones (rollback, stop)
    # included, stay within the budget: counted over every skip, not over plain ones only.
    window = np.convolve(skipped.astype(int), np.ones(b.skip_window, int))[: len(skipped)]
    assert (window[plain] <= b.max_skip_fraction * b.skip_window + 1e-9).all()
    assert out["rollback"].sum() <= b.max_rollbacks
    stop = out["stop"].to_numpy()
    if stop.any():
        first = int(np.argmax(stop))
        assert stop[first:].all() and skipped[first:].all()


def check_dwell(out: pd.DataFrame, spec: GuardSpec) -> None:
    dwell = {t.name: t.min_dwell for t in spec.transitions}
    steps = out["step"].to_numpy()
    fired = np.flatnonzero((out["transition"] != "").to_numpy())
    entered = steps[0]
    for i in fired:
        assert steps[i] - entered >= dwell[out["transition"].iloc[i]]
        entered = steps[i]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trace=traces(), spec=specs())
def test_bounds_and_dwell_hold_for_any_telemetry(trace, spec):
    out = replay(trace, spec)
    check_bounds(out, spec)
    check_dwell(out, spec)
    assert set(out["regime"].astype(str)) <= set(spec.regimes)



def _tiny(**kw) -> GuardSpec:
    d = {"name": "tiny", "signals": {"e": {"kind": "ema", "source": "loss"}},
         "regimes": {"calm": {}, "hot": {"skip": True}}, "initial": "calm", "transitions": [],
         "bounds": {"max_consecutive_skips": 100, "max_skip_fraction": 0.5, "skip_window": 4}}
    return GuardSpec.from_dict({**d, **kw})


def test_min_dwell_is_met_on_the_step_it_is_reached():
    """Entered at the first row (step 10), `min_dwell: 3` lets the regime go at step 13."""
    spec = _tiny(transitions=[{"from": "calm", "to": "hot", "when": "loss > 5",
                               "min_dwell": 3}])
    out = replay(pd.DataFrame({"step": np.arange(10, 17), "loss": np.full(7, 9.0)}), spec)
    assert out["regime"].astype(str).tolist() == ["calm"] * 3 + ["hot"] * 4


def test_the_skip_window_budget_by_hand():
    """A skip is taken while the skips of the previous `skip_window` (4) rows plus this one
    stay within max_skip_fraction · skip_window (2): two skips, then three rows without
    (the two are still in the window), then two more."""
    spec = _tiny(regimes={"hot": {"skip": True}}, initial="hot")
    out = replay(pd.DataFrame({"step": np.arange(12), "loss": np.ones(12)}), spec)
    assert out["skipped"].astype(int).tolist() == [1, 1, 0, 0, 0] * 2 + [1, 1]


def test_no_chattering_under_noise_at_a_threshold():
    """A signal hovering around the entry threshold does not flip regimes every step."""
    n = 3000
    rng = np.random.default_rng(0)
    df = healthy(n, seed=0)
    df["grad_norm"] = np.where(np.arange(n) > 1000, 1.0 + rng.standard_normal(n) * 0.8, 1.0)
    out = replay(df, DEFAULT)
    changes = (out["transition"] != "").sum()
    assert changes < 60
    check_dwell(out, DEFAULT)


def test_adaptive_spec_detects_loss_spikes_and_nan_and_recovers():
    """The adaptive spec: an outlier step is dropped at the full LR (no LR cut for one bad
    step), a NaN storm is skipped at the full LR (no low-LR tail), a rollback only once it
    persists 50 steps, a stop only if 50 more follow, and the run ends nominal."""
    spec = GuardSpec.named("lbw-adaptive")
    df = inject(healthy(4000, seed=3), [Incident("loss_spike", 1500, 2, 4.0),
                                       Incident("nan_storm", 3300, 60)])
    out = replay(df, spec)
    regime = out["regime"].astype(str).to_numpy()
    # the incident's gradient norm jumps 16x (grad_z far above 100): met at its first step
    assert regime[1499] == "nominal" and regime[1500] != "nominal"
    assert out["skipped"].iloc[1500] and out["lr_scale"].iloc[1500] == 1.0
    assert "grad_z=" in out["cause"].iloc[1500]
    assert (out["lr_scale"].iloc[1500:1600] == 1.0).all()  # two bad steps: no LR cut
    storm = out.iloc[3300:3349]
    assert (storm["regime"] == "skip").all() and (storm["lr_scale"] == 1.0).all()
    assert out.loc[out["rollback"], "step"].tolist() == [3349]
    assert regime[-1] == "nominal"
    longer = replay(inject(healthy(4000, seed=3), [Incident("nan_storm", 3300, 120)]), spec)
    stop = longer.loc[longer["regime"] == "stop", "step"]
    assert longer["rollback"].sum() == 1 and stop.min() == 3399


def test_adaptive_spec_holds_a_jumped_lr_and_ignores_warmups():
    """The LR against its own recent level: a x10 scheduler bug is held at 1/10 from its
    first step until it ends; linear warm-ups (short, long, logged sparsely) never fire."""
    spec = GuardSpec.named("lbw-adaptive")
    for steps, warmup, every in [(600, 30, 1), (20000, 2000, 1), (20000, 2000, 10),
                                 (5000, 1, 1), (3000, 5, 1)]:
        df = healthy(steps, seed=1, every=every)
        df["lr"] = 1e-3 * np.minimum(1.0, (df["step"] + 1) / warmup)
        assert (replay(df, spec)["regime"] == "nominal").all(), (steps, warmup, every)
    df = healthy(600, seed=1)
    df["lr"] = 1e-3 * np.minimum(1.0, (df["step"] + 1) / 30)
    df.loc[300:319, "lr"] *= 10
    out = replay(df, spec)
    held = out.iloc[300:320]
    assert (held["regime"] == "lr_hold").all() and out["regime"].iloc[299] == "nominal"
    assert held["lr_scale"].iloc[2:].max() <= 0.1 + 1e-12
    assert out["regime"].iloc[320] == "nominal" and out["lr_scale"].iloc[-1] == 1.0


def test_default_detects_loss_spikes_and_nan_and_recovers():
    """The default: a loss spike is acted on within two steps, the first non-finite step
    leaves nominal and its update is dropped at the full LR (no low-LR tail), no rollback is
    spent beyond the bound, and the run ends nominal."""
    df = inject(healthy(4000, seed=3), [Incident("loss_spike", 1500, 2, 4.0),
                                       Incident("nan_storm", 3300, 5)])
    out = replay(df, DEFAULT)
    regime = out["regime"].astype(str).to_numpy()
    assert (regime[1400:1500] == DEFAULT.initial).all()
    assert (regime[1500:1502] != DEFAULT.initial).any()
    acted = out.iloc[1500:1503]
    assert ((acted["lr_scale"] < 1.0) | acted["skipped"]).any()
    first = acted["cause"][acted["transition"] != ""].iloc[0]
    assert "grad_z=" in first or "loss_z=" in first        # the cause names what it saw
    assert regime[3299] == DEFAULT.initial and regime[3300] != DEFAULT.initial
    assert out["skipped"].iloc[3300] and out["lr_scale"].iloc[3300] == 1.0
    assert out["rollback"].sum() <= DEFAULT.bounds.max_rollbacks and not out["stop"].any()
    assert regime[-1] == DEFAULT.initial


def test_v1_detects_spikes_and_nan_and_recovers():
    df = inject(healthy(4000, seed=3), [Incident("loss_spike", 1500, 2, 4.0),
                                       Incident("grad_spike", 2500, 1, 10.0),
                                       Incident("nan_storm", 3300, 5)])
    out = replay(df, GuardSpec.named("lbw-v1"))
    regime = out["regime"].astype(str).to_numpy()
    assert regime[1500] == "intervene" and out["lr_scale"].iloc[1500] < 1.0
    assert regime[2500] == "intervene"
    assert regime[3300] == "skip" and out["skipped"].iloc[3300]
    assert out["rollback"].sum() == 1
    assert regime[-1] == "nominal"
    assert "grad_z=" in out["cause"].iloc[1500]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("every", [1, 10])
def test_default_is_quiet_on_healthy_runs(seed, every):
    out = replay(healthy(20000, seed=seed, every=every), DEFAULT)
    after_warmup = out[out["step"] >= 200]
    nominal = (after_warmup["regime"] == "nominal").mean()
    assert nominal >= 0.98, nominal
    assert not after_warmup["skipped"].any()


def test_state_dict_resume_is_exact():
    df = inject(healthy(600, seed=4), [Incident("loss_spike", 300, 2, 5.0)])
    whole = OnlineGuard(DEFAULT)
    def feed(guard, rows):
        return [guard.observe(r.step, loss=r.loss, grad_norm=r.grad_norm) for r in rows]

    a = feed(whole, df.itertuples())
    first = OnlineGuard(DEFAULT)
    b = feed(first, df.iloc[:310].itertuples())
    second = OnlineGuard(DEFAULT)
    second.load_state_dict(first.state_dict())
    b += feed(second, df.iloc[310:].itertuples())
    assert a == b


def test_replay_over_many_blocks_equals_the_online_guard():
    """Replay debounces and walks a block of rows at a time (`engine.BLOCK`); a trace of
    several blocks, with a debounce and a dwell running across their edges, must take
    the decisions the online guard takes one row at a time."""
    n = 3 * BLOCK + 100
    spikes = [Incident("loss_spike", s, 3, 6.0) for s in range(BLOCK - 2, n, BLOCK)]
    df = inject(healthy(n, seed=6), [*spikes, Incident("nan_storm", 2 * BLOCK - 20, 60)])
    out = replay(df, DEFAULT)
    guard = OnlineGuard(DEFAULT)
    got = [guard.observe(r.step, loss=r.loss, grad_norm=r.grad_norm, lr=r.lr)
           for r in df.itertuples()]
    assert [d.regime for d in got] == out["regime"].tolist()
    assert [d.transition for d in got] == out["transition"].tolist()
    assert [d.lr_scale for d in got] == out["lr_scale"].tolist()
    assert [d.skip for d in got] == out["skipped"].tolist()
    assert out["rollback"].any() and (out["transition"] != "").sum() > 10


def test_set_spec_takes_effect_next_step_and_is_recorded():
    df = healthy(400, seed=5)
    guard = OnlineGuard(DEFAULT)
    before = [guard.observe(r.step, loss=r.loss, grad_norm=r.grad_norm).regime
              for r in df.iloc[:200].itertuples()]
    # thresholds far inside the healthy noise: the touchy spec leaves nominal on it
    touchy = DEFAULT.with_values({"thresholds.calm_z": 0.05, "thresholds.watch_z": 0.1,
                                  "thresholds.spike_z": 0.2, "thresholds.grad_spike_z": 0.3})
    guard.set_spec(touchy)
    after = [guard.observe(r.step, loss=r.loss, grad_norm=r.grad_norm).regime
             for r in df.iloc[200:].itertuples()]
    assert set(before) == {DEFAULT.initial} and set(after) - {DEFAULT.initial}
    hashes = guard.trace()["spec_hash"]
    assert set(hashes.iloc[:200]) == {DEFAULT.hash} and set(hashes.iloc[200:]) == {touchy.hash}


def test_missing_grad_norm_runs_on_what_it_has():
    df = inject(healthy(2000, seed=6), [Incident("loss_spike", 1200, 2, 4.0)]).drop(
        columns="grad_norm")
    for spec in (DEFAULT, V1):
        out = replay(df, spec)
        read = {src for sig in spec.signals.values()
                for src in ((sig.source,) if isinstance(sig.source, str) else sig.source)}
        assert "grad_norm" in out.attrs["missing"]
        assert set(out.attrs["missing"]) == read - set(df.columns)   # what it reads, no more
        regime = out["regime"].astype(str)
        assert (regime.iloc[1100:1200] == spec.initial).all()
        assert (regime.iloc[1200:1202] != spec.initial).any()        # the loss alone suffices


@pytest.mark.parametrize("bad", [
    pd.DataFrame({"loss": [1.0]}),
    pd.DataFrame({"step": [], "loss": []}),
    pd.DataFrame({"step": [2, 1], "loss": [1.0, 1.0]}),
    pd.DataFrame({"step": [0.5, 1.5], "loss": [1.0, 1.0]}),
])
def test_bad_traces_get_a_trace_error(bad):
    with pytest.raises(TraceError):
        replay(bad, DEFAULT)
