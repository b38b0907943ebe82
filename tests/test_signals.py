import numpy as np
import pandas as pd
import pytest

from lbw_sim.guard.signals import compute_signal, new_state
from lbw_sim.guard.spec import GuardSpec, SignalSpec


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



def test_ratio_clip_bounds_what_enters_the_mean_by_hand():
    """Half-life 1 step (a = 1/2), clip 1.5: an outlier enters the mean as m·1.5 (a low
    one as m/1.5), while the ratio itself still shows it in full."""
    sig = SignalSpec("ratio", "loss", half_life=1.0, warmup=0, clip=1.5, floor=0.0)
    out = run(sig, [1.0, 1.0, 10.0, 1.0, 0.1, 1.0])
    m3 = 0.5 * 1.0 + 0.5 * 1.5                     # 10 clipped to 1.5
    m4 = 0.5 * m3 + 0.5 * 1.0
    m5 = 0.5 * m4 + 0.5 * (m4 / 1.5)               # 0.1 clipped to m / 1.5
    np.testing.assert_allclose(out, [1.0, 1.0, 10.0, 1.0 / m3, 0.1 / m4, 1.0 / m5],
                               rtol=1e-15)


def test_slope_starts_at_the_first_difference_then_averages_by_hand():
    """Half-life 1 step: the first difference is the slope, later ones enter an EMA."""
    out = run(SignalSpec("slope", "loss", half_life=1.0, warmup=0), [0.0, 1.0, 3.0, 3.0])
    np.testing.assert_allclose(out, [0.0, 1.0, 0.5 * 1.0 + 0.5 * 2.0, 0.5 * 1.5 + 0.5 * 0.0],
                               rtol=1e-15)


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


# --- robust_z and ref_ratio (the adaptive default's kinds) --------------------------------

def test_robust_z_is_in_units_of_the_series_own_noise():
    """The same z for a noisy and a quiet series of the same shape: the threshold carries."""
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(3000)
    sig = SignalSpec(kind="robust_z", source="loss", half_life=200, warmup=50, floor=0.0)
    z_loud = run(sig, 2.0 + 0.1 * noise)
    z_quiet = run(sig, 2.0 + 0.001 * noise)
    np.testing.assert_allclose(z_loud[50:], z_quiet[50:], rtol=1e-6, atol=1e-6)
    assert np.all(z_loud[:50] == 0.0)                       # warm-up
    assert 0.7 < np.std(z_loud[500:]) < 1.3                  # MAD x 1.2533 ~ sd for a normal


def test_robust_z_nan_leaves_state_and_clip_bounds_an_outlier():
    sig = SignalSpec(kind="robust_z", source="loss", half_life=20, warmup=5, clip=3.0)
    x = 1.0 + 0.01 * np.sin(np.arange(100.0))
    with_nan = x.copy()
    with_nan[50] = np.nan
    a, b = run(sig, x), run(sig, with_nan)
    assert np.isnan(b[50]) and b[51] == pytest.approx(a[51], rel=0.05)
    spiked = x.copy()
    spiked[60] = 100.0
    z = run(sig, spiked)
    assert z[60] > 100                                     # the spike is seen ...
    assert abs(z[61]) < 10                                 # ... but does not blow up the scale


def test_ref_ratio_freezes_after_warmup_and_never_moves():
    sig = SignalSpec(kind="ref_ratio", source="grad_norm", half_life=1e-6, warmup=3)
    x = np.array([1.0, 2.0, 3.0, 4.0, 8.0, np.nan, 2.0])
    out = compute_signal(sig, {"grad_norm": x}, np.arange(7))
    assert out[:3].tolist() == [1.0, 1.0, 1.0]             # before the freeze
    assert out[3] == 1.0                                   # the freeze: ref = 4
    assert out[4] == pytest.approx(2.0) and np.isnan(out[5]) and out[6] == pytest.approx(0.5)


def test_ref_ratio_per_lr_divides_by_the_lr_and_refuses_a_bad_lr():
    sig = SignalSpec(kind="ref_ratio", source="update_ratio", half_life=1e-6, warmup=0,
                     per="lr", floor=0.0)
    lr = np.array([1e-4, 2e-4, 0.0, np.nan, 1e-3])
    ratio = np.array([1e-3, 2e-3, 5e-3, 5e-3, 2e-2])       # 10 per unit of LR, then 20
    out = compute_signal(sig, {"update_ratio": ratio, "lr": lr}, np.arange(5))
    assert out[0] == 1.0 and out[1] == pytest.approx(1.0)
    assert np.isnan(out[2]) and np.isnan(out[3])           # lr 0 and NaN: no value
    assert out[4] == pytest.approx(2.0)
    missing = compute_signal(sig, {"update_ratio": ratio}, np.arange(5))
    assert np.isnan(missing).all()                         # no lr column: nothing to divide by


def _above_best_reference(x, half_life, warmup, floor):
    """`above_best` written out plainly, row by row, for finite x on consecutive steps."""
    a = 0.5 ** (1.0 / half_life)
    m, v, best, out = x[0], 0.0, None, [0.0]
    for t in range(1, len(x)):
        v = a * v + (1 - a) * abs(x[t] - x[t - 1])
        m = a * m + (1 - a) * x[t]
        if t < warmup:
            out.append(0.0)
            continue
        best = m if best is None else min(best, m)
        out.append((m - best) / max(1.2533141373155003 / 2 ** 0.5 * v, floor * abs(m), 1e-12))
    return np.array(out)


def test_above_best_is_zero_while_falling_and_counts_noise_units_when_it_climbs_back():
    rng = np.random.default_rng(0)
    falling = np.linspace(3.0, 1.0, 200) + 0.01 * rng.standard_normal(200)
    x = np.concatenate([falling, np.full(100, 1.5) + 0.01 * rng.standard_normal(100)])
    sig = SignalSpec("above_best", "loss", half_life=5, warmup=10, floor=0.0)
    out = run(sig, x)
    np.testing.assert_allclose(out, _above_best_reference(x, 5, 10, 0.0), rtol=1e-9,
                               atol=1e-12)
    assert (out[:10] == 0).all()                           # warm-up
    assert np.median(out[20:190]) == 0.0                   # still falling: at its lowest
    assert out[260:].min() > 20                            # 0.5 above, noise ~0.01: far above


def test_above_best_measures_noise_on_successive_differences_so_a_trend_cannot_hide_a_climb():
    rng = np.random.default_rng(1)
    x = np.concatenate([np.linspace(2.0, 1.0, 100), np.linspace(1.0, 2.0, 100)])
    x = x + 0.01 * rng.standard_normal(200)
    out = run(SignalSpec("above_best", "loss", half_life=10, warmup=10, floor=0.0), x)
    assert out[130] > 5                                    # 0.3 up the climb, noise ~0.01


def test_above_best_ignores_nan_and_a_floor_bounds_the_noise_unit():
    x = np.array([2.0, 1.0, 1.0, np.nan, 1.0, 1.1])
    sig = SignalSpec("above_best", "loss", half_life=1e-6, warmup=0, floor=0.5)
    out = run(sig, x)
    assert np.isnan(out[3]) and out[4] == 0.0
    assert out[5] == pytest.approx(0.1 / (0.5 * 1.1))       # the floor, not the noise (~0.09)


@pytest.mark.parametrize("kind", ["robust_z", "ref_ratio", "above_best"])
def test_new_kinds_resume_bit_exact_across_blocks(kind):
    sig = SignalSpec(kind=kind, source="loss", half_life=17, warmup=40)
    rng = np.random.default_rng(3)
    x = np.exp(0.2 * rng.standard_normal(300))
    x[[20, 150]] = np.nan
    steps = np.arange(300) * 3
    whole = compute_signal(sig, {"loss": x}, steps)
    state = new_state(1)[0]
    parts = [compute_signal(sig, {"loss": x[i:i + 37]}, steps[i:i + 37], state)
             for i in range(0, 300, 37)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_new_kinds_survive_a_guard_resume_and_set_spec():
    """A host guard's state_dict round trip keeps a ref_ratio's frozen reference."""
    from lbw_sim.guard.engine import OnlineGuard
    from lbw_sim.guard.spec import GuardSpec

    spec = GuardSpec.from_dict({
        "name": "ref", "signals": {"r": {"kind": "ref_ratio", "source": "grad_norm",
                                         "warmup": 5, "half_life": 1.0}},
        "regimes": {"a": {}, "b": {}}, "initial": "a",
        "transitions": [{"from": "a", "to": "b", "when": "r > 3"}]})
    g = OnlineGuard(spec)
    for s in range(10):
        g.observe(s, grad_norm=1.0)
    resumed = OnlineGuard(spec)
    resumed.load_state_dict(g.state_dict())
    resumed.set_spec(spec.with_values({"transitions.a_to_b.for": 2}))  # signals unchanged
    for s in range(10, 30):
        d = resumed.observe(s, grad_norm=5.0)
    assert d.regime == "b"                                 # 5 / frozen 1, not 5 / 5


def test_ref_ratio_per_lr_treats_an_infinite_lr_as_nan_in_every_backend():
    """Found by the parity test: an inf lr made x / lr = 0 start the numba estimator while
    the torch one skipped the row; both now read a non-finite lr as a NaN input."""
    import torch

    from lbw_sim.guard.signals import KIND_CODE
    from lbw_sim.guard.torch_backend import _SignalState, signal_step

    sig = GuardSpec.from_dict({"name": "one", "signals": {"s": {
        "kind": "ref_ratio", "source": "loss", "half_life": 1.0, "warmup": 0, "per": "lr"}},
        "regimes": {"a": {}}, "initial": "a", "transitions": []}).signals["s"]
    loss, lr, steps = np.array([1.0, 1.97]), np.array([np.inf, 1e-3]), np.array([1, 2])
    host = compute_signal(sig, {"loss": loss, "lr": lr}, steps)
    s = _SignalState(torch.device("cpu"))
    dev = [float(signal_step(KIND_CODE["ref_ratio"], torch.tensor(x, dtype=torch.float64),
                             torch.tensor(float(t), dtype=torch.float64), 1.0, 0.0, -1.0, 0.0,
                             s, torch.tensor(r, dtype=torch.float64)))
           for x, r, t in zip(loss, lr, steps)]
    assert np.isnan(host[0]) and host[1] == 1.0
    np.testing.assert_array_equal(np.array(dev), host)
