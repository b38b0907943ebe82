import numpy as np
import pandas as pd
import pytest

from lbw_sim.guard.signals import compute_signal, new_state
from lbw_sim.guard.spec import SignalSpec


def run(sig, x, steps=None):
    x = np.asarray(x, dtype=float)
    steps = np.arange(len(x)) if steps is None else np.asarray(steps)
    return compute_signal(sig, {sig.source: x} if isinstance(sig.source, str) else
                          {s: x for s in sig.source}, steps)


def test_ema_matches_pandas_ewm_with_halflife():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(500)
    ours = run(SignalSpec("ema", "loss", half_life=7.0), x)
    ref = pd.Series(x).ewm(halflife=7.0, adjust=False).mean().to_numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)


def test_half_life_is_in_steps_not_rows():
    """A log every 10 steps of a piecewise-constant series gives the dense EMA at those steps."""
    dense_steps = np.arange(1000)
    x = np.where(dense_steps <= 390, 1.0, 5.0)  # changes right after a logged step
    sig = SignalSpec("ema", "loss", half_life=30.0)
    dense = run(sig, x, dense_steps)
    sparse = run(sig, x[::10], dense_steps[::10])
    np.testing.assert_allclose(sparse, dense[::10], rtol=1e-9)


def test_nan_does_not_poison_the_statistics():
    x = np.concatenate([np.full(100, 2.0), [np.nan, np.inf, -np.inf], np.full(100, 2.0)])
    for kind in ("ema", "ema_z", "ratio", "slope"):
        out = run(SignalSpec(kind, "loss", half_life=10, warmup=5), x)
        assert np.isnan(out[100:103]).all()
        assert np.isfinite(out[103:]).all(), kind
    ema = run(SignalSpec("ema", "loss", half_life=10), x)
    assert ema[-1] == pytest.approx(2.0)


def test_z_score_flags_a_spike_and_is_zero_in_warmup():
    rng = np.random.default_rng(1)
    x = 1.0 + 0.05 * rng.standard_normal(400)
    x[300] = 3.0
    z = run(SignalSpec("ema_z", "grad_norm", half_life=50, warmup=100, clip=4, floor=0.0), x)
    assert (z[:100] == 0).all()
    assert z[300] > 10
    assert np.abs(z[120:300]).max() < 5


def test_clip_keeps_one_outlier_from_inflating_variance():
    rng = np.random.default_rng(2)
    x = 1.0 + 0.05 * rng.standard_normal(400)
    x[200] = 1e30
    x[240] = 2.0                                   # a real 20-sigma spike after the outlier
    clipped = run(SignalSpec("ema_z", "loss", half_life=50, warmup=50, clip=4, floor=0.0), x)
    raw = run(SignalSpec("ema_z", "loss", half_life=50, warmup=50, floor=0.0), x)
    assert np.abs(clipped[210:240]).max() < 6      # statistics unharmed ...
    assert clipped[240] > 10                       # ... and the next spike is seen
    assert abs(raw[240]) < 1                       # without clip the z-score went blind


def test_ratio_and_slope():
    x = np.linspace(1.0, 2.0, 200)
    ratio = run(SignalSpec("ratio", "loss", half_life=5, warmup=10), x)
    assert (ratio[:10] == 1.0).all() and (ratio[20:] > 1.0).all()
    slope = run(SignalSpec("slope", "loss", half_life=5, warmup=10), x)
    np.testing.assert_allclose(slope[20:], 1.0 / 199, rtol=1e-6)


def test_nonfinite_flag_ignores_absent_columns():
    sig = SignalSpec("nonfinite", ("loss", "grad_norm"))
    steps = np.arange(3)
    cols = {"loss": np.array([1.0, np.nan, 1.0])}
    assert compute_signal(sig, cols, steps).tolist() == [0.0, 1.0, 0.0]


def test_chunked_equals_whole():
    rng = np.random.default_rng(3)
    x = rng.lognormal(size=1000)
    x[rng.integers(0, 1000, 30)] = np.nan
    steps = np.cumsum(rng.integers(1, 5, 1000))
    for kind in ("ema", "ema_z", "ratio", "slope"):
        sig = SignalSpec(kind, "loss", half_life=13, warmup=40, clip=3.0)
        whole = compute_signal(sig, {"loss": x}, steps)
        state = new_state(1)[0]
        parts = [compute_signal(sig, {"loss": x[i:i + 37]}, steps[i:i + 37], state)
                 for i in range(0, 1000, 37)]
        np.testing.assert_array_equal(np.concatenate(parts), whole)
