"""The v1 default spec's LR ratchet (GuardSpec.named("lbw-v1")): `update_ratio` telemetry and the

The ratchet halves the LR for the rest of the run whenever the update/weight ratio of the
applied updates stays above `ratio_high`, one level at a time (throttle_1 … throttle_5).
"""

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from lbw_sim import GuardedOptimizer, GuardSpec, replay

DEFAULT = GuardSpec.named("lbw-v1")   # the ratchet is the v1 spec's design
LADDER = ["nominal"] + [f"throttle_{i}" for i in range(1, 6)]


def telemetry(ratio: np.ndarray, seed: int = 0) -> pd.DataFrame:
    """A healthy run (noisy, slowly falling loss; steady gradient) with a given update ratio."""
    rng = np.random.default_rng(seed)
    n = len(ratio)
    loss = 3.0 * np.exp(-np.arange(n) / 2000) * np.exp(0.01 * rng.standard_normal(n))
    grad = np.exp(0.05 * rng.standard_normal(n))
    return pd.DataFrame({"step": np.arange(n), "loss": loss, "grad_norm": grad,
                         "update_ratio": ratio})


def levels(out: pd.DataFrame) -> np.ndarray:
    return np.array([LADDER.index(r) for r in out["regime"].astype(str)])


def test_ratchet_descends_one_level_at_a_time_and_never_climbs():
    ratio = np.full(1200, 0.01)
    ratio[100:700] = 0.06            # too fast for 600 steps, then calm again
    out = replay(telemetry(ratio), DEFAULT)
    lv = levels(out)
    assert (lv[:120] == 0).all()                      # 20 observations above, not fewer
    assert set(np.diff(lv)) <= {0, 1}                 # one level at a time, never back up
    entered = np.flatnonzero(np.diff(lv)) + 1
    assert len(entered) == 5 and np.all(np.diff(entered) >= 50)   # min_dwell between cuts
    assert out["lr_scale"].iloc[-1] == pytest.approx(1 / 32)
    assert np.all(np.diff(out["lr_scale"].to_numpy()[100:]) <= 0)
    assert "update_ratio_ema=" in str(out["cause"].iloc[entered[0]])


def test_ratchet_stays_nominal_below_the_threshold():
    rng = np.random.default_rng(3)
    ratio = np.clip(0.022 + 0.004 * rng.standard_normal(3000), 0, None)   # p99.99 < 3%
    out = replay(telemetry(ratio), DEFAULT)
    assert (out["regime"] == "nominal").all() and (out["lr_scale"] == 1.0).all()


def test_a_log_without_update_ratio_never_throttles():
    out = replay(telemetry(np.full(500, np.nan)), DEFAULT)
    assert (out["regime"] == "nominal").all()
    assert "update_ratio" in out.attrs["missing"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.floats(0, 1.0), st.just(math.nan), st.just(math.inf)),
                min_size=1, max_size=60),
       st.integers(1, 40))
def test_ladder_only_descends_without_spikes_or_nonfinite(pieces, width):
    """For any update ratio series on healthy loss and gradient, the ladder is one-way."""
    ratio = np.repeat(np.array(pieces), width)
    out = replay(telemetry(ratio, seed=len(pieces)), DEFAULT)
    lv = levels(out)
    assert set(np.diff(lv)) <= {0, 1}
    lr = out["lr_scale"].to_numpy()
    assert np.all(np.diff(lr) <= 0) and lr.min() >= DEFAULT.bounds.lr_scale_min


def mlp(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.Tanh(), torch.nn.Linear(64, 1))


def fit(lr: float, steps: int, nan_steps=(), decide_on="host") -> GuardedOptimizer:
    model = mlp()
    opt = GuardedOptimizer(torch.optim.AdamW(model.parameters(), lr=lr, fused=True), DEFAULT,
                           track_norms=True, decide_on=decide_on)
    for step in range(steps):
        g = torch.Generator().manual_seed(step)
        x = torch.randn(64, 8, generator=g)
        loss = F.mse_loss(model(x), x[:, :1].sin())
        if step in nan_steps:
            loss = loss * math.nan
        opt.zero_grad()
        loss.backward()
        opt.step(loss=loss)
    return opt


def test_update_ratio_is_the_last_applied_update_over_the_weights():
    opt = fit(3e-3, 40, nan_steps=(20,))
    df = opt.trace()
    r = df["update_ratio"].to_numpy()
    applied = ~(df["skipped"] | df["safety_skip"]).to_numpy()
    assert not applied[20] and applied[:20].all()
    # NaN exactly where the step before applied nothing (and at the first step)
    assert np.isnan(r).tolist() == [True] + (~applied[:-1]).tolist()
    # ‖Δθ‖ of step t over ‖θ‖ (cached for up to 10 steps, so within a few per cent)
    expect = df["update_norm"].to_numpy()[:-1] / df["param_norm"].to_numpy()[:-1]
    ok = np.isfinite(r[1:]) & np.isfinite(expect)
    np.testing.assert_allclose(r[1:][ok], expect[ok], rtol=0.05)


def test_closed_loop_throttle_brings_the_ratio_down_and_quiet_lr_is_untouched():
    hot = fit(0.3, 400).trace()
    assert hot["regime"].astype(str).str.startswith("throttle").iloc[-1]
    early = hot["update_ratio"].iloc[5:20].median()
    late = hot["update_ratio"].iloc[-50:].median()
    assert late < DEFAULT.thresholds["ratio_high"] < early
    calm = fit(1e-3, 400).trace()
    assert not calm["regime"].astype(str).str.startswith("throttle").any()
    assert calm["update_ratio"].max() < DEFAULT.thresholds["ratio_high"]


def test_device_path_measures_the_same_ratio_and_throttles_the_same():
    host, dev = fit(0.3, 200).trace(), fit(0.3, 200, decide_on="device").trace()
    assert host["regime"].astype(str).tolist() == dev["regime"].astype(str).tolist()
    np.testing.assert_allclose(host["update_ratio"], dev["update_ratio"], rtol=1e-4)


def test_recorded_example_replays_to_the_regimes_it_was_recorded_with():
    from lbw_sim.traces.synthetic import EXAMPLES, RATCHET_CSV, example

    label = next(k for k in EXAMPLES if "ratchet" in k)
    trace, incidents = example(label)
    assert incidents and RATCHET_CSV.exists()
    out = replay(trace.drop(columns=["regime", "lr_scale", "transition", "cause"]), DEFAULT)
    assert out["regime"].astype(str).tolist() == trace["regime"].tolist()
    assert trace["regime"].iloc[-1].startswith("throttle")
    assert trace["update_ratio"].iloc[-50:].max() < DEFAULT.thresholds["ratio_high"]


def test_regime_bands_shade_the_throttles_not_the_starting_regime():
    from lbw_sim.guard.palette import regime_colors
    from lbw_sim.traces.synthetic import EXAMPLES, example
    from lbw_sim.viz import signal_figure

    trace, _ = example(next(k for k in EXAMPLES if "ratchet" in k))
    out = replay(trace.drop(columns=["regime"]), DEFAULT, signals=True)
    assert (out["regime"] == "throttle_2").mean() > 0.5        # the most common regime
    fills = {s.fillcolor for s in signal_figure(out, DEFAULT).layout.shapes
             if s.type == "rect" and s.yref == "paper"}
    colors = regime_colors(DEFAULT)
    assert colors["throttle_2"] in fills and colors["nominal"] not in fills
