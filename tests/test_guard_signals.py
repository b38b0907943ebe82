"""The guard's own signal values: `trace(signals=True)` / `last_row(signals=True)` on both
backends and on `GuardedOptimizer` are what the live decisions saw, equal to `replay`'s."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from lbw_sim import GuardedOptimizer, GuardSpec, replay
from lbw_sim.errors import SpecError
from lbw_sim.guard.engine import OnlineGuard
from lbw_sim.guard.torch_backend import TensorGuard

DEFAULT = GuardSpec.default()


def with_signal(name: str, source: str) -> GuardSpec:
    d = DEFAULT.to_dict()
    d["signals"][name] = {"kind": "ema", "source": source, "half_life": 10}
    return GuardSpec.from_dict(d)


def run(decide_on: str, spec: GuardSpec = DEFAULT, steps: int = 220,
        edit: tuple[int, GuardSpec] | None = None) -> GuardedOptimizer:
    """A small regression with a gradient spike at 120-121 and NaN losses from 180 on."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    opt = GuardedOptimizer(torch.optim.AdamW(net.parameters(), lr=3e-3, fused=True), spec,
                           decide_on=decide_on)
    for step in range(steps):
        if edit is not None and step == edit[0]:
            opt.set_spec(edit[1])
        g = torch.Generator().manual_seed(step)
        x = torch.randn(64, 8, generator=g)
        y = x[:, :1].sin() * (100.0 if step in (120, 121) else 1.0)
        loss = F.mse_loss(net(x), y) * (math.nan if step >= 180 else 1.0)
        opt.zero_grad()
        loss.backward()
        opt.step(loss=loss)
    return opt


def assert_same(got: pd.Series, want: pd.Series, exact: bool) -> None:
    a, b = got.to_numpy(np.float64), want.to_numpy(np.float64)
    if exact:
        np.testing.assert_array_equal(a, b)            # NaN where NaN, bit for bit elsewhere
    else:
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def assert_row_is_last(row: dict, frame: pd.DataFrame) -> None:
    last = frame.iloc[-1]
    for col in frame.columns:
        assert col in row, col
        same = row[col] == last[col] or (pd.isna(row[col]) and pd.isna(last[col]))
        assert same, (col, row[col], last[col])


@pytest.mark.parametrize("decide_on", ["host", "device"])
def test_trace_signals_are_the_values_the_decisions_saw(decide_on):
    opt = run(decide_on)
    plain = opt.trace()
    assert set(DEFAULT.signals).isdisjoint(plain.columns)          # the schema is unchanged
    assert set(DEFAULT.signals).isdisjoint(opt.last_row())
    live = opt.trace(signals=True)
    assert list(live.columns) == [*plain.columns, *DEFAULT.signals]  # appended, as replay
    pd.testing.assert_frame_equal(live[plain.columns], plain, check_exact=True,
                                  check_dtype=True)
    replayed = replay(plain, DEFAULT, signals=True)
    for name in DEFAULT.signals:
        assert_same(live[name], replayed[name], exact=decide_on == "host")
    # the values are the ones that drove the decisions: the spike and the NaN storm show
    assert live.loc[live.step == 120, "grad_z"].item() > DEFAULT.thresholds["spike_z"]
    assert (live.loc[live.step >= 180, "nonfinite"] == 1.0).all()
    assert (live.loc[live.step < 180, "nonfinite"] == 0.0).all()
    assert_row_is_last(opt.last_row(signals=True), live)
    assert_row_is_last(opt.guard.last_row(signals=True), opt.guard.trace(signals=True))


@pytest.mark.parametrize("decide_on", ["host", "device"])
def test_rows_from_start_equal_the_tail_of_the_trace(decide_on):
    opt = run(decide_on, steps=300, edit=(150, DEFAULT.with_values({"thresholds.spike_z": 8})))
    full = opt.trace(signals=True)
    for start in (0, 1, 149, 150, 257, 299):     # within and across chunks and segments
        tail = opt.trace(signals=True, start=start)
        assert list(tail.index) == list(range(start, 300))
        pd.testing.assert_frame_equal(tail, full.iloc[start:][tail.columns],
                                      check_categorical=False)
    assert len(opt.trace(start=300)) == 0
    assert opt.guard.trace(signals=True, start=299)["step"].tolist() == [299]


@pytest.mark.parametrize("decide_on", ["host", "device"])
def test_set_spec_gives_the_union_of_the_signals(decide_on):
    first, second = with_signal("loss_ema", "loss"), with_signal("grad_ema", "grad_norm")
    opt = run(decide_on, first, steps=120, edit=(60, second))
    live = opt.trace(signals=True)
    assert {"loss_ema", "grad_ema"} <= set(live.columns)
    before, after = live.step < 60, live.step >= 60
    assert live.loc[before, "loss_ema"].notna().all() and live.loc[after, "loss_ema"].isna().all()
    assert live.loc[before, "grad_ema"].isna().all() and live.loc[after, "grad_ema"].notna().all()
    # each segment's signals are its own spec's, over its own rows (a new signal starts fresh)
    plain = opt.trace()
    seg1 = replay(plain[before].reset_index(drop=True), first, signals=True)
    seg2 = replay(plain[after].reset_index(drop=True), second, signals=True)
    exact = decide_on == "host"
    assert_same(live.loc[before, "loss_ema"], seg1["loss_ema"], exact)
    assert_same(live.loc[after, "grad_ema"], seg2["grad_ema"], exact)
    assert_same(live["grad_z"], replay(plain, DEFAULT, signals=True)["grad_z"], exact)
    row = opt.last_row(signals=True)
    assert "grad_ema" in row and "loss_ema" not in row
    assert_row_is_last(row, live.drop(columns="loss_ema"))


def test_backends_before_any_step_and_signal_names_that_would_hide_a_column():
    for backend in (OnlineGuard(DEFAULT), TensorGuard(DEFAULT, "cpu")):
        df = backend.trace(signals=True)
        assert len(df) == 0 and set(DEFAULT.signals) <= set(df.columns)
        assert backend.last_row(signals=True) == {}
    d = DEFAULT.to_dict()
    d["signals"]["regime"] = d["signals"]["grad_z"]
    with pytest.raises(SpecError, match="signals.regime: name clashes"):
        GuardSpec.from_dict(d)
