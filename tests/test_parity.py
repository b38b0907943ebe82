"""One guard, every backend: replay == online (host) == batched == torch backend.

In the style of torch's `test_foreach_matches_forloop`: hypothesis builds structurally
different specs (number of regimes, priorities, `from` lists and '*', every signal kind,
debounce `for`, `min_dwell`, rollback and stop regimes, bounds) and hostile telemetry (NaN,
±inf, 1e30, zeros, sparse steps), and every backend must take the same decision at every
step. Then the actuator: `GuardedOptimizer` deciding on the host and on the device (torch
backend on CPU tensors) must write the same trace, stop for the same reason and leave the
same weights, with a live `set_spec` in the middle.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from patience import patience

from lbw_sim import GuardedOptimizer
from lbw_sim.errors import SpecError
from lbw_sim.guard.engine import OnlineGuard, replay, replay_many
from lbw_sim.guard.signals import KIND_CODE, compute_signal, new_state
from lbw_sim.guard.spec import SIGNAL_KINDS, GuardSpec
from lbw_sim.guard.torch_backend import TensorGuard, _SignalState, signal_step
from lbw_sim.traces.schema import DECISION_COLUMNS

DEFAULT = GuardSpec.default()
#: Telemetry values, NaN/inf and extremes included. Magnitudes below 1e-12 other than 0 are
#: left out: there the two backends' float64 arithmetic may round a value that should be 0 to
#: -0 in one and to -8e-80 in the other, a "difference" against a threshold of 0 that no
#: real loss or norm can produce.
VALUES = st.one_of(st.floats(1e-3, 10.0), st.just(math.nan), st.just(math.inf),
                   st.just(-math.inf), st.just(1e30), st.just(0.0),
                   st.floats(-1e3, 1e3).filter(lambda v: v == 0.0 or abs(v) >= 1e-12))
OPS = (">", ">=", "<", "<=")


@st.composite
def signal_specs(draw, kind):
    sig = {"kind": kind, "half_life": draw(st.floats(1.0, 60.0)),
           "warmup": draw(st.integers(0, 20))}
    if kind == "nonfinite":
        return {"kind": kind, "source": draw(st.sampled_from(
            ["loss", "grad_norm", ["loss", "grad_norm"], ["grad_norm", "update_ratio"]]))}
    sig["source"] = draw(st.sampled_from(["loss", "grad_norm", "update_ratio"]))
    if kind in ("ema_z", "robust_z"):
        sig["clip"] = draw(st.one_of(st.none(), st.floats(0.5, 6.0)))
        sig["floor"] = draw(st.floats(0.0, 0.2))
    elif kind == "above_best":
        sig["floor"] = draw(st.sampled_from([0.0, 1e-3, 0.05]))
    elif kind == "ref_ratio":
        sig["floor"] = draw(st.sampled_from([0.0, 1e-3, 0.5]))
        if draw(st.booleans()):
            sig["per"] = "lr"
    elif kind == "ratio":
        sig["clip"] = draw(st.one_of(st.none(), st.floats(1.01, 3.0)))
        sig["floor"] = draw(st.floats(0.0, 0.5))
    return sig


@st.composite
def conditions(draw, signals, thresholds):
    def atom():
        name = draw(st.sampled_from(signals))
        return f"{name} {draw(st.sampled_from(OPS))} {draw(st.sampled_from(thresholds))}"

    shape = draw(st.sampled_from(["atom", "and", "or", "not"]))
    if shape == "atom":
        return atom()
    if shape == "not":
        return f"not {atom()}"
    return f"{atom()} {shape} {atom()}"


@st.composite
def specs(draw):
    """A random but valid spec: every regime reachable from the initial one."""
    kinds = draw(st.lists(st.sampled_from(SIGNAL_KINDS), min_size=1, max_size=4))
    signals = {f"s{i}": draw(signal_specs(k)) for i, k in enumerate(kinds)}
    thresholds = {f"t{i}": draw(st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0, 1e3]))
                  for i in range(draw(st.integers(1, 3)))}
    n = draw(st.integers(1, 5))
    names = [f"r{i}" for i in range(n)]
    regimes = {}
    for name in names:
        rollback = draw(st.booleans()) if name != "r0" else False
        regimes[name] = {
            "lr_scale": draw(st.floats(0.01, 1.0)),
            "skip": rollback or draw(st.booleans()),
            "momentum_scale": draw(st.sampled_from([1.0, 0.5, 0.0])),
            "update_cap": draw(st.one_of(st.none(), st.floats(1e-3, 0.1))),
            "rollback": rollback,
            "skip_batches": draw(st.integers(0, 5)) if rollback else 0,
            "stop": name != "r0" and draw(st.integers(0, 4)) == 0,
            "reason": f"stopped in {name}",
        }
    transitions = []
    for i in range(1, n):      # one way into every regime from an earlier one ...
        sources = draw(st.lists(st.sampled_from(names[:i]), min_size=1, max_size=i,
                                unique=True))
        transitions.append((sources, names[i]))
    for _ in range(draw(st.integers(0, 4))):   # ... and arbitrary others, '*' among them
        to = draw(st.sampled_from(names))
        sources = draw(st.one_of(st.just("*"), st.lists(st.sampled_from(names), min_size=1,
                                                        max_size=n, unique=True)))
        if sources == "*" or any(s != to for s in sources):
            transitions.append((sources, to))
    sig_names, thr_names = list(signals), list(thresholds)
    data = {
        "name": "fuzzed", "signals": signals, "thresholds": thresholds, "regimes": regimes,
        "initial": "r0",
        "transitions": [{"name": f"k{i}", "from": src, "to": to,
                         "when": draw(conditions(sig_names, thr_names)),
                         "for": draw(st.integers(1, 4)), "min_dwell": draw(st.integers(0, 10)),
                         "priority": draw(st.integers(-5, 100))}
                        for i, (src, to) in enumerate(transitions)],
        "bounds": {"lr_scale_min": draw(st.floats(0.01, 0.5)), "lr_scale_max": 1.0,
                   "lr_slew_down": draw(st.floats(0.1, 1.0)),
                   "lr_slew_up": draw(st.floats(1.0, 3.0)),
                   "max_consecutive_skips": draw(st.integers(0, 6)),
                   "max_skip_fraction": draw(st.floats(0.0, 1.0)),
                   "skip_window": draw(st.integers(1, 50)),
                   "max_rollbacks": draw(st.integers(0, 3))},
    }
    try:
        return GuardSpec.from_dict(data)
    except SpecError:        # e.g. a hysteresis band the draw left open
        assume(False)


@st.composite
def telemetry(draw, max_rows=120):
    n = draw(st.integers(1, max_rows))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    cols = {"loss": 2.0 * np.exp(0.1 * rng.standard_normal(n)),
            "grad_norm": np.exp(0.5 * rng.standard_normal(n)),
            "update_ratio": 0.02 * np.exp(0.3 * rng.standard_normal(n)),
            "lr": 1e-3 * np.minimum(1.0, np.arange(1, n + 1) / draw(st.integers(1, 30)))}
    for _ in range(draw(st.integers(0, 8))):   # spikes and storms of hostile values
        col = draw(st.sampled_from(list(cols)))
        i = draw(st.integers(0, n - 1))
        cols[col][i:i + draw(st.integers(1, 20))] = draw(VALUES)
    steps = np.cumsum(rng.integers(1, draw(st.sampled_from([2, 3, 40])), n))
    df = pd.DataFrame({"step": steps, **cols})
    if draw(st.booleans()):
        df = df.drop(columns="update_ratio")
    return df


def host_values(d, compiled) -> tuple:
    """A Decision as comparable host values, whichever backend made it."""
    if torch.is_tensor(d.regime):
        k = int(d.transition)
        return (compiled.regimes[int(d.regime)], float(d.lr_scale), bool(d.skip),
                float(d.momentum_scale), float(d.update_cap), bool(d.rollback),
                int(d.skip_batches), bool(d.stop), bool(d.initial),
                compiled.trans_names[k] if k >= 0 else "")
    return (d.regime, d.lr_scale, d.skip, d.momentum_scale, d.update_cap, d.rollback,
            d.skip_batches, d.stop, d.initial, d.transition)


def expected(out: pd.DataFrame, spec: GuardSpec) -> list[tuple]:
    rows = []
    for r in out.itertuples():
        regime = str(r.regime)
        reg = spec.regimes[regime]
        rows.append((regime, r.lr_scale, bool(r.skipped), r.momentum_scale, r.update_cap,
                     bool(r.rollback), reg.skip_batches if r.rollback else 0, bool(r.stop),
                     regime == spec.initial, str(r.transition)))
    return rows


NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def assert_decisions_equal(got: pd.DataFrame, want: pd.DataFrame, rtol: float = 0.0) -> None:
    """Every decision column equal; `rtol`: the values quoted in a cause may differ by that
    much (two optimizers' telemetry agrees to float32 rounding, not bit for bit)."""
    for col in DECISION_COLUMNS:
        a, b = got[col], want[col]
        if col in ("regime", "transition", "cause"):
            a, b = a.astype(str), b.astype(str)
        if col == "cause" and rtol:
            assert [NUMBER.sub("#", x) for x in a] == [NUMBER.sub("#", x) for x in b], col
            for x, y in zip(a, b):
                np.testing.assert_allclose([float(v) for v in NUMBER.findall(x)],
                                           [float(v) for v in NUMBER.findall(y)], rtol=rtol)
            continue
        assert a.tolist() == b.tolist(), col


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(spec=specs(), trace=telemetry())
def test_every_backend_takes_the_same_decisions(spec, trace):
    out = replay(trace, spec)
    assert list(out.columns[-len(DECISION_COLUMNS):]) == list(DECISION_COLUMNS)
    want = expected(out, spec)
    cols = [c for c in ("loss", "grad_norm", "update_ratio", "lr") if c in trace]
    host, dev = OnlineGuard(spec), TensorGuard(spec, "cpu")
    for i, r in enumerate(trace.itertuples()):
        tel = {c: getattr(r, c) for c in cols}
        assert host_values(host.observe(r.step, **tel), host.compiled) == want[i], i
        tel_t = {c: torch.tensor(v, dtype=torch.float64) for c, v in tel.items()}
        assert host_values(dev.observe(r.step, **tel_t), dev.compiled) == want[i], i
    for backend in (host, dev):           # the one trace builder, causes included
        assert_decisions_equal(backend.trace(), out)
        assert backend.last_row()["regime"] == want[-1][0]
        assert backend.stop_reason() == (spec.regimes[want[-1][0]].reason
                                         if out["stop"].iloc[-1] else "")
    for batched in replay_many(trace, [DEFAULT, spec, spec])[1:]:
        assert_decisions_equal(batched, out)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from([k for k in SIGNAL_KINDS if k != "nonfinite"]), data=st.data(),
       trace=telemetry(), cut=st.integers(0, 120))
def test_every_signal_value_is_equal_across_backends(kind, data, trace, cut):
    """Signal by signal, value by value (NaN where NaN): a whole-trace replay, the replay
    cut in two with the state carried (bit-exact), and the torch estimator one
    observation at a time."""
    sig = GuardSpec.from_dict({"name": "one", "signals": {"s": data.draw(signal_specs(kind))},
                               "regimes": {"a": {}}, "initial": "a", "transitions": []}
                              ).signals["s"]
    cols = {c: trace[c].to_numpy() for c in ("loss", "grad_norm", "update_ratio", "lr")
            if c in trace}
    steps = trace["step"].to_numpy()
    whole = compute_signal(sig, cols, steps)
    state = new_state(1)[0]
    parts = np.concatenate([compute_signal(sig, {k: v[:cut] for k, v in cols.items()},
                                           steps[:cut], state),
                            compute_signal(sig, {k: v[cut:] for k, v in cols.items()},
                                           steps[cut:], state)])
    s, online = _SignalState(torch.device("cpu")), []
    clip = -1.0 if sig.clip is None else float(sig.clip)
    for i, step in enumerate(steps):
        x = cols.get(sig.source)
        per = torch.tensor(cols[sig.per][i], dtype=torch.float64) if sig.per else None
        online.append(float(signal_step(
            KIND_CODE[kind], torch.tensor(np.nan if x is None else x[i], dtype=torch.float64),
            torch.tensor(float(step), dtype=torch.float64), float(sig.half_life),
            float(sig.warmup), clip, float(sig.floor), s, per)))
    np.testing.assert_array_equal(parts, whole)
    # the same operations in another library: equal to the last bits but for exp/sqrt
    np.testing.assert_allclose(np.array(online), whole, rtol=1e-12, atol=0)


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(spec=specs(), edit=specs(), trace=telemetry(max_rows=80), at=st.integers(0, 80))
def test_set_spec_and_resume_agree_across_backends(spec, edit, trace, at):
    """A live edit mid-stream (regime kept by name) and a state_dict round trip."""
    host, dev = OnlineGuard(spec), TensorGuard(spec, "cpu")
    for i, r in enumerate(trace.itertuples()):
        if i == at:
            host.set_spec(edit)
            dev.set_spec(edit)
        if i == at // 2:
            fresh = TensorGuard(spec, "cpu")
            fresh.load_state_dict(dev.state_dict())
            dev = fresh
        tel = dict(loss=r.loss, grad_norm=r.grad_norm, lr=r.lr)
        a = host_values(host.observe(r.step, **tel), host.compiled)
        b = host_values(dev.observe(r.step, **{k: torch.tensor(v) for k, v in tel.items()}),
                        dev.compiled)
        assert a == b, i
    ta, tb = host.trace(), dev.trace()
    assert_decisions_equal(tb, ta)
    assert ta["spec_hash"].tolist() == tb["spec_hash"].tolist()


# --- the actuator: host and device GuardedOptimizer ------------------------------------------

def model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))


STORM_AT = 180


def run(decide_on: str, edit_at: int | None = None, spec=DEFAULT):
    """A spike at 120-121, then NaN from STORM_AT until the spec's patience stops the run."""
    net = model()
    opt = GuardedOptimizer(torch.optim.AdamW(net.parameters(), lr=3e-3, fused=True), spec,
                           track_norms=True, decide_on=decide_on)
    th = spec.thresholds
    edited = spec.with_values({"thresholds.spike_z": (th["watch_z"] + th["spike_z"]) / 2})
    for step in range(STORM_AT + patience(spec, "stop") + 10):
        if step == edit_at:
            opt.set_spec(edited)
        g = torch.Generator().manual_seed(step)
        x = torch.randn(64, 8, generator=g)
        y = x[:, :1].sin() * (100.0 if step in (120, 121) else 1.0)   # a gradient spike
        loss = F.mse_loss(net(x), y)
        if step >= STORM_AT:
            loss = loss * math.nan                                      # a NaN storm
        opt.zero_grad()
        loss.backward()
        opt.step(loss=loss)
        if opt.should_stop:
            break
    return net, opt


@pytest.mark.parametrize("edit_at", [None, 150])
@pytest.mark.parametrize("spec", [DEFAULT, GuardSpec.named("lbw-v1")], ids=["default", "v1"])
def test_host_and_device_optimizer_write_the_same_trace(edit_at, spec):
    """v1 adds the update cap and the update-ratio measurement to what is held equal."""
    (h_net, host), (d_net, dev) = (run("host", edit_at=edit_at, spec=spec),
                                   run("device", edit_at=edit_at, spec=spec))
    th, td = host.trace(), dev.trace()
    assert list(th.columns) == list(td.columns)
    measured = {"update_norm", "update_scale", "update_ratio"} if spec is not DEFAULT else set()
    assert {"safety_skip", "spec_hash", "wall_time", "param_norm", *measured} <= set(td.columns)
    assert_decisions_equal(td, th, rtol=1e-3)
    assert th["safety_skip"].tolist() == td["safety_skip"].tolist()
    assert th["spec_hash"].tolist() == td["spec_hash"].tolist()
    if edit_at is not None:
        assert th["spec_hash"].nunique() == 2
    assert (th.loc[th["step"].between(120, 122), "regime"] != spec.initial).any()
    assert th["rollback"].any() and host.should_stop and dev.should_stop
    reason = next(r.reason for r in spec.regimes.values() if r.stop)
    assert host.stop_reason == dev.stop_reason == reason
    assert host.snapshot_step == dev.snapshot_step is not None
    # the device path carries a rollback out one step after deciding it (guard.late)
    rolled = th.index[th["rollback"]]
    assert th["restored"].tolist() == th["rollback"].tolist()
    assert td.index[td["restored"]].tolist() == (rolled + 1).tolist()
    numeric = ["loss", "grad_norm", "param_norm", *sorted(measured)]
    same = ~th["rollback"].to_numpy()
    np.testing.assert_allclose(td.loc[same, numeric].to_numpy(),
                               th.loc[same, numeric].to_numpy(), rtol=1e-4, atol=1e-7)
    for a, b in zip(h_net.parameters(), d_net.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    row_h, row_d = host.last_row(), dev.last_row()
    assert row_h.keys() == row_d.keys()
    assert {k: row_h[k] for k in DECISION_COLUMNS} == {k: row_d[k] for k in DECISION_COLUMNS}


def test_a_trace_before_any_step_has_the_columns_and_no_rows():
    for backend in (OnlineGuard(DEFAULT), TensorGuard(DEFAULT, "cpu")):
        df = backend.trace()
        assert len(df) == 0 and set(DECISION_COLUMNS) <= set(df.columns)
        assert backend.last_row() == {} and backend.stop_reason() == ""
