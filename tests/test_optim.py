import io
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from patience import patience

from lbw_sim import GuardedOptimizer, GuardSpec, replay

DEFAULT = GuardSpec.default()
DEFAULT_NAME = DEFAULT.name
#: For mechanics a test needs a spec known to exercise (momentum damping on a spike).
V1 = GuardSpec.named("lbw-v1")


def make(seed=0, width=32):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, width), torch.nn.Tanh(),
                                torch.nn.Linear(width, 1))
    return model


def batch(step, n=64):
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(n, 8, generator=g)
    y = (x[:, :1] * 2 - x[:, 1:2]).sin() + 0.05 * torch.randn(n, 1, generator=g)
    return x, y


def train(model, opt, steps, start=0, spikes=(), nan_steps=(), spike_size=30.0):
    for step in range(start, start + steps):
        x, y = batch(step)
        if step in spikes:
            y = y * spike_size
        loss = F.mse_loss(model(x), y)
        if step in nan_steps:
            loss = loss * float("nan")
        opt.zero_grad()
        loss.backward()
        opt.step(loss=loss) if isinstance(opt, GuardedOptimizer) else opt.step()
    return model


def flat_state(opt):
    inner = opt.optimizer if isinstance(opt, GuardedOptimizer) else opt
    return [t.clone() for s in inner.state.values() for t in s.values() if torch.is_tensor(t)]


def test_drop_in_surface():
    model = make()
    opt = GuardedOptimizer(torch.optim.AdamW(model.parameters(), lr=1e-2), DEFAULT)
    assert opt.param_groups[0]["lr"] == 1e-2
    train(model, opt, 5)
    df = opt.trace()
    assert list(df["step"]) == [0, 1, 2, 3, 4]
    assert {"loss", "grad_norm", "lr", "regime", "lr_scale", "skipped", "cause"} <= set(df.columns)
    assert opt.param_groups[0]["lr"] == 1e-2  # the guard never leaves its scale behind


def test_live_equals_replay_with_injected_spikes():
    model = make(1)
    opt = GuardedOptimizer(torch.optim.AdamW(model.parameters(), lr=3e-3), DEFAULT)
    train(model, opt, 400, spikes=(150, 151, 300), nan_steps=(250, 251, 252, 253))
    live = opt.trace()
    assert (live["regime"] != "nominal").any() and live["skipped"].any()
    cols = [c for c in ("step", "loss", "grad_norm", "lr", "update_ratio") if c in live]
    again = replay(live[cols], DEFAULT)
    for col in ("regime", "lr_scale", "skipped", "momentum_scale", "rollback", "transition",
                "cause"):
        assert live[col].astype(str).tolist() == again[col].astype(str).tolist(), col


def test_skip_leaves_params_and_state_bit_identical():
    model = make(2)
    opt = GuardedOptimizer(torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1),
                           DEFAULT)
    train(model, opt, 60)
    params = [p.detach().clone() for p in model.parameters()]
    state = flat_state(opt)
    train(model, opt, 1, start=60, nan_steps=(60,))  # NaN loss, finite gradients
    assert opt.last.skip and opt.last.regime != DEFAULT.initial   # left nominal at once
    assert all(torch.equal(a, b) for a, b in zip(params, model.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(state, flat_state(opt)))


def test_lr_scale_and_momentum_damping_applied():
    """On v1, whose spike regime damps momentum by 0.5 and cuts the LR at its first step."""
    model = make(3)
    inner = torch.optim.AdamW(model.parameters(), lr=1e-2)
    opt = GuardedOptimizer(inner, V1)
    train(model, opt, 120)
    m_before = [s["exp_avg"].clone() for s in inner.state.values()]
    seen = {}
    original = inner.step

    def spy(*a, **k):
        seen["lr"] = inner.param_groups[0]["lr"]
        seen["m"] = [s["exp_avg"].clone() for s in inner.state.values()]
        return original(*a, **k)

    inner.step = spy
    train(model, opt, 1, start=120, spikes=(120,), spike_size=100.0)
    assert opt.last.regime == "intervene"
    assert seen["lr"] == pytest.approx(1e-2 * opt.last.lr_scale) and opt.last.lr_scale < 1
    damp = V1.regimes["intervene"].momentum_scale
    assert damp == 0.5
    for before, damped in zip(m_before, seen["m"]):
        torch.testing.assert_close(damped, before * damp)


@pytest.mark.parametrize("decide_on,inner", [("host", torch.optim.SGD),
                                             ("device", torch.optim.AdamW)])
def test_update_cap_bounds_the_step_and_is_recorded(decide_on, inner):
    spec = DEFAULT.with_values({"regimes.nominal.update_cap": 1e-4})
    model = make(4)
    opt = GuardedOptimizer(inner(model.parameters(), lr=1.0, fused=decide_on == "device"), spec,
                           decide_on=decide_on)
    for step in range(3):
        before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        train(model, opt, 1, start=step)
        after = torch.cat([p.detach().flatten() for p in model.parameters()])
        assert (after - before).norm() <= 1e-4 * before.norm() * (1 + 1e-3)  # float32 sums
    if decide_on == "host":
        df = opt.trace()
        assert (df["update_scale"] < 1).all() and (df["update_norm"] > 0).all()


def test_nan_storm_guarded_stays_finite_plain_does_not():
    storm = tuple(range(100, 200))   # long enough for any patience to roll back and stop
    plain_model = make(5)
    plain = torch.optim.AdamW(plain_model.parameters(), lr=1e-2)
    train(plain_model, plain, 200, nan_steps=storm)
    assert not all(torch.isfinite(p).all() for p in plain_model.parameters())

    model = make(5)
    opt = GuardedOptimizer(torch.optim.AdamW(model.parameters(), lr=1e-2), DEFAULT)
    train(model, opt, 200, nan_steps=storm)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    df = opt.trace()
    assert 1 <= df["rollback"].sum() <= DEFAULT.bounds.max_rollbacks
    assert opt.should_stop and "non-finite" in opt.stop_reason


def test_rollback_restores_the_snapshot_and_asks_to_skip_batches():
    model = make(6)
    opt = GuardedOptimizer(torch.optim.AdamW(model.parameters(), lr=1e-2), DEFAULT)
    train(model, opt, 101)           # snapshot taken at step 100 (nominal)
    assert opt.snapshot_step == 100
    snap = [p.clone() for p in opt.snapshot["params"]]
    train(model, opt, 10, start=101)  # moves away from the snapshot
    step = 111
    while not opt.last.rollback:     # NaN losses until the spec's patience runs out
        assert step < 211, "no rollback within 100 non-finite steps"
        train(model, opt, 1, start=step, nan_steps=(step,))
        step += 1
    assert DEFAULT.regimes[opt.last.regime].rollback and not opt.should_stop
    assert all(torch.equal(a, b) for a, b in zip(snap, model.parameters()))
    assert opt.take_skip_batches() == DEFAULT.regimes[opt.last.regime].skip_batches > 0
    assert opt.take_skip_batches() == 0


def test_resume_equals_uninterrupted_bit_for_bit():
    spikes, nans = (60, 200), (120, 121)

    def fresh():
        model = make(7)
        return model, GuardedOptimizer(torch.optim.AdamW(model.parameters(), lr=3e-3), DEFAULT)

    model_a, opt_a = fresh()
    train(model_a, opt_a, 300, spikes=spikes, nan_steps=nans)

    model_b, opt_b = fresh()
    train(model_b, opt_b, 150, spikes=spikes, nan_steps=nans)
    buf = io.BytesIO()
    torch.save({"model": model_b.state_dict(), "opt": opt_b.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    model_c, opt_c = fresh()
    model_c.load_state_dict(saved["model"])
    opt_c.load_state_dict(saved["opt"])
    train(model_c, opt_c, 150, start=150, spikes=spikes, nan_steps=nans)

    assert all(torch.equal(a, c) for a, c in zip(model_a.parameters(), model_c.parameters()))
    ta, tc = opt_a.trace(), opt_c.trace()
    pd.testing.assert_frame_equal(ta.drop(columns="wall_time"), tc.drop(columns="wall_time"))


def test_set_spec_mid_run_is_recorded():
    model = make(8)
    opt = GuardedOptimizer(torch.optim.AdamW(model.parameters(), lr=1e-3), DEFAULT)
    train(model, opt, 20)
    lax = DEFAULT.with_values({"thresholds.spike_z": 50.0})
    opt.set_spec(lax)
    train(model, opt, 20, start=20)
    hashes = opt.trace()["spec_hash"].tolist()
    assert hashes[:20] == [DEFAULT.hash] * 20 and hashes[20:] == [lax.hash] * 20


def test_trainer_style_calls_observe_loss_then_plain_step():
    """The Hugging Face / Lightning recipe: micro-batch losses handed over, then step()."""
    model = make(10)
    opt = GuardedOptimizer(torch.optim.AdamW(model.parameters(), lr=1e-3), DEFAULT)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    losses = []
    for step in range(4):
        for micro in range(2):                        # gradient accumulation
            x, y = batch(10 * step + micro)
            loss = F.mse_loss(model(x), y) / 2
            loss.backward()
            opt.observe_loss(loss * 2)
            losses.append(float(loss * 2))
        opt.step()
        sched.step()
        opt.zero_grad()
    df = opt.trace()
    expected = [np.float32(np.mean(np.float32(losses[i:i + 2]))) for i in range(0, 8, 2)]
    np.testing.assert_allclose(df["loss"], expected, rtol=1e-6)
    assert df["lr"].tolist() == pytest.approx([1e-3 / (1 + s) for s in range(4)])


# --- the device path (decide_on="device"), exercised on CPU tensors ---------------------------

def device_opt(model, spec=DEFAULT, lr=3e-3):
    return GuardedOptimizer(torch.optim.AdamW(model.parameters(), lr=lr, fused=True), spec,
                            decide_on="device")


def test_device_path_skip_is_bit_identical_and_storm_stays_finite():
    model = make(12)
    opt = device_opt(model, lr=1e-2)
    train(model, opt, 60)
    params = [p.detach().clone() for p in model.parameters()]
    state = flat_state(opt)
    train(model, opt, 1, start=60, nan_steps=(60,))
    assert all(torch.equal(a, b) for a, b in zip(params, model.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(state, flat_state(opt)))
    storm = tuple(range(70, 70 + patience(DEFAULT, "stop") + 5))   # long enough to stop
    train(model, opt, storm[-1] + 1 - 61, start=61, nan_steps=storm)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert opt.trace()["rollback"].sum() >= 1 and opt.should_stop


def test_device_path_resume_is_exact():
    def fresh():
        model = make(15)
        return model, device_opt(model)

    model_a, opt_a = fresh()
    train(model_a, opt_a, 200, spikes=(50,), nan_steps=(120, 121, 122))
    model_b, opt_b = fresh()
    train(model_b, opt_b, 100, spikes=(50,), nan_steps=(120, 121, 122))
    buf = io.BytesIO()
    torch.save({"model": model_b.state_dict(), "opt": opt_b.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    model_c, opt_c = fresh()
    model_c.load_state_dict(saved["model"])
    opt_c.load_state_dict(saved["opt"])
    train(model_c, opt_c, 100, start=100, spikes=(50,), nan_steps=(120, 121, 122))
    assert all(torch.equal(a, c) for a, c in zip(model_a.parameters(), model_c.parameters()))
    pd.testing.assert_frame_equal(opt_a.trace().drop(columns="wall_time"),
                                  opt_c.trace().drop(columns="wall_time"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("spec", [DEFAULT, GuardSpec.named("lbw-v1")], ids=["default", "v1"])
def test_cuda_guarded_loop_adds_no_host_sync(spec):
    """v1 also runs the update cap and the update-ratio measurement on the device."""
    DEFAULT = spec  # noqa: N806 - the body below reads the spec under test by this name
    model = make(16).cuda()
    opt = GuardedOptimizer(torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True),
                           DEFAULT)
    assert opt.mode == "device"
    batches = [tuple(t.cuda() for t in batch(s)) for s in range(40)]
    train_step = lambda x, y: F.mse_loss(model(x), y)  # noqa: E731
    for x, y in batches[:5]:                            # warm-up outside the check
        loss = train_step(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step(loss=loss)
    lax = DEFAULT.with_values({"thresholds.spike_z": 50.0})

    def checked(part):
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for x, y in part:
                loss = train_step(x, y)
                opt.zero_grad()
                loss.backward()
                opt.step(loss=loss)
                assert not opt.should_stop     # the loop's own read: no wait either
        finally:
            torch.cuda.set_sync_debug_mode(0)

    checked(batches[5:20])
    opt.set_spec(lax)                      # a live edit between steps: no sync in step()
    checked(batches[20:])
    df = opt.trace()
    assert np.isfinite(df["grad_norm"]).all() and len(df) == 40
    assert df["spec_hash"].tolist() == [DEFAULT.hash] * 20 + [lax.hash] * 20
    measured = {"update_norm", "update_scale"} if spec.name != DEFAULT_NAME or \
        spec.hash == "e4f928a1441c" else set()
    assert {"safety_skip", "wall_time", *measured} <= set(df.columns)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_amp_recipe_with_an_overflow_adds_no_host_sync():
    """GradScaler + fused AdamW on the device path: an overflow step is skipped on the device
    (found_inf) and nothing in the loop waits for the host."""
    model = make(17).cuda()
    opt = GuardedOptimizer(torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True),
                           DEFAULT)
    scaler = torch.amp.GradScaler("cuda")
    batches = [tuple(t.cuda() for t in batch(s)) for s in range(60)]
    for i, (x, y) in enumerate(batches):
        check = i >= 5
        if check:
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
        try:
            with torch.autocast("cuda", dtype=torch.float16):
                loss = F.mse_loss(model(x).float(), y)
            opt.zero_grad()
            scaler.scale(loss * (float("inf") if i == 40 else 1.0)).backward()
            scaler.step(opt, loss=loss)
            scaler.update()
            assert not opt.should_stop
        finally:
            torch.cuda.set_sync_debug_mode(0)
    df = opt.trace()
    assert len(df) == 60 and bool(df["skipped"][40] or df["safety_skip"][40])
    assert int((df["skipped"] | df["safety_skip"]).sum()) == 1


# --- checkpoint format --------------------------------------------------------------------------

def small_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


def previous_release_state(sd: dict) -> dict:
    """A host state in the layout commit f6ff944 saved (format 1: no `format` key, one
    snapshot with its `valid` flag and step, four actuator columns), built from this
    release's state of the same run; tests build it rather than ship a pickled fixture."""
    snap = sd["slots"][0]
    return {"optimizer": sd["optimizer"], "decide_on": "host", "guard": sd["guard"],
            "step_count": sd["step_count"], "pending_skip_batches": sd["pending_skip_batches"],
            "stop": sd["stop"], "stop_reason": sd["stop_reason"],
            "snapshot": None if snap is None else {**snap, "valid": True,
                                                   "step": int(sd["slot_steps"][0])},
            "update_ratio": torch.tensor(math.nan), "capper": {"calls": 0, "p_norm": None},
            "actuator": [row[:4] for row in sd["actuator"]], "wall_time": sd["wall_time"]}


def test_state_dict_carries_its_format_version():
    model = make(20)
    opt = GuardedOptimizer(torch.optim.AdamW(model.parameters(), lr=1e-3), DEFAULT)
    train(model, opt, 3)
    from lbw_sim.guard.optim import STATE_FORMAT
    assert opt.state_dict()["format"] == STATE_FORMAT >= 2


def test_a_format_1_state_from_the_previous_release_loads_and_continues():
    model = small_model()
    opt = GuardedOptimizer(torch.optim.AdamW(model.parameters(), lr=3e-3), DEFAULT)
    train(model, opt, 120)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(),
                "opt": previous_release_state(opt.state_dict())}, buf)
    buf.seek(0)
    old = torch.load(buf, weights_only=True)
    assert "format" not in old["opt"] and old["opt"]["snapshot"]["step"] == 100
    twin = small_model()
    twin.load_state_dict(old["model"])
    resumed = GuardedOptimizer(torch.optim.AdamW(twin.parameters(), lr=3e-3), DEFAULT)
    resumed.load_state_dict(old["opt"])
    assert resumed.step_count == 120 and resumed.snapshot_step == 100
    train(model, opt, 30, start=120, spikes=(130,), nan_steps=(140,))
    train(twin, resumed, 30, start=120, spikes=(130,), nan_steps=(140,))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters()))
    pd.testing.assert_frame_equal(resumed.trace().drop(columns="wall_time"),
                                  opt.trace().drop(columns="wall_time"))


def test_an_older_state_is_refused_with_its_version_named():
    """Format 0 (commit 4b2f597): no `format` and no `decide_on` key."""
    model = small_model()
    opt = GuardedOptimizer(torch.optim.AdamW(model.parameters(), lr=3e-3), DEFAULT)
    train(model, opt, 3)
    sd = opt.state_dict()
    format0 = {k: sd[k] for k in ("optimizer", "guard", "step_count", "pending_skip_batches",
                                  "stop_reason", "update_ratio", "capper")}
    format0.update(should_stop=False, device_guard=None, snapshot=None, snapshot_step=None,
                   extra={})
    with pytest.raises(ValueError, match="format 0"):
        opt.load_state_dict(format0)
    device1 = {**previous_release_state(sd), "decide_on": "device"}
    with pytest.raises(ValueError, match="format 1"):
        opt.load_state_dict(device1)
    with pytest.raises(ValueError, match="format 99"):
        opt.load_state_dict({**sd, "format": 99})
