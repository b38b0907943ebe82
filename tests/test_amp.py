"""The guard under torch's standard AMP recipe, unchanged but for `loss=` in `scaler.step`.

    with torch.autocast("cpu", dtype=torch.bfloat16): loss = …
    scaler.scale(loss).backward(); scaler.step(opt, loss=loss); scaler.update()

`GradScaler` calls the guard on every step, overflow steps included, so the guard sees what
the scaler skips; an isolated overflow costs one skipped step, a storm reaches the spec's
rollback and stop. Also: shadow mode (`act=False`) and the schedule policy
(`step_was_skipped`).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from patience import patience

from lbw_sim import GuardedOptimizer, GuardSpec

DEFAULT = GuardSpec.default()


def net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))


def amp_run(steps: int, overflow=(), *, guard: str | None = "host", act: bool = True,
            fused: bool = False, stop: bool = True):
    """`overflow` steps get a NaN in the scaled loss: inf/NaN gradients at any scale."""
    model = net()
    inner = torch.optim.AdamW(model.parameters(), lr=3e-3, fused=fused)
    opt = (GuardedOptimizer(inner, DEFAULT, decide_on=guard, act=act) if guard else inner)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12, growth_interval=25)
    scales = []
    for step in range(steps):
        g = torch.Generator().manual_seed(step)
        x = torch.randn(64, 8, generator=g)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.mse_loss(model(x).float(), x[:, :1].sin())
        opt.zero_grad()
        scaler.scale(loss * (math.nan if step in overflow else 1.0)).backward()
        scaler.step(opt, loss=loss) if guard else scaler.step(opt)
        scaler.update()
        scales.append(scaler.get_scale())
        if guard and stop and opt.should_stop:
            break
    return model, opt, scales


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    """Bit for bit (a NaN equals the same NaN)."""
    bits = lambda p: p.detach().view(torch.int32)  # noqa: E731
    return all(torch.equal(bits(p), bits(q)) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("mode,fused", [("host", False), ("host", True), ("device", True)])
def test_isolated_overflows_cost_one_skip_each(mode, fused):
    overflow = (80, 150)
    plain, _, plain_scales = amp_run(200, overflow, guard=None, fused=fused)
    model, opt, scales = amp_run(200, overflow, guard=mode, fused=fused)
    trace = opt.trace()
    assert len(trace) == 200                       # the guard saw the skipped steps too
    assert trace.index[trace["skipped"] | trace["safety_skip"]].tolist() == list(overflow)
    assert (trace["lr_scale"] == 1).all() and (trace["momentum_scale"] == 1).all()
    assert not math.isfinite(trace["grad_norm"][80])
    assert scales == plain_scales                  # the scaler backs off and grows as alone
    assert same_weights(model, plain)              # and the run is the plain AMP run


@pytest.mark.parametrize("mode,fused", [("host", False), ("device", True)])
def test_an_overflow_storm_rolls_back_and_stops_as_the_spec_says(mode, fused):
    start = 100
    storm = range(start, start + patience(DEFAULT, "stop") + 20)
    model, opt, scales = amp_run(storm[-1] + 1, set(storm), guard=mode, fused=fused)
    trace = opt.trace()
    assert opt.should_stop and "non-finite" in opt.stop_reason
    assert trace["rollback"].sum() >= 1
    assert len(trace) <= start + patience(DEFAULT, "stop") + 2     # stopped, not run out
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert scales[-1] < scales[start - 1] / 2 ** 20                # the scale collapsed


def test_without_the_guard_the_scaler_alone_only_shrinks_the_scale():
    """What the guard adds: torch skips each overflow step silently and never stops."""
    storm = set(range(100, 260))
    _, _, scales = amp_run(260, storm, guard=None)
    assert scales[-1] < 1e-30


@pytest.mark.parametrize("mode,fused", [("host", False), ("host", True), ("device", True)])
def test_shadow_mode_leaves_the_weights_bit_identical(mode, fused):
    spikes = (60, 61, 62)

    def run(guard):
        model = net()
        inner = torch.optim.AdamW(model.parameters(), lr=3e-3, fused=fused)
        opt = GuardedOptimizer(inner, DEFAULT, decide_on=guard, act=False) if guard else inner
        for step in range(120):
            g = torch.Generator().manual_seed(step)
            x = torch.randn(64, 8, generator=g)
            y = x[:, :1].sin() * (100.0 if step in spikes else 1.0)
            loss = F.mse_loss(model(x), y) * (math.nan if step == 90 else 1.0)
            opt.zero_grad()
            loss.backward()
            opt.step(loss=loss) if guard else opt.step()
        return model, opt

    plain, _ = run(None)
    model, opt = run(mode)
    assert same_weights(model, plain)              # NaN step included: applied as plain does
    assert not all(torch.isfinite(p).all() for p in model.parameters())
    trace = opt.trace()
    assert trace["shadow"].all() and trace["skipped"].any()   # what it would have done
    assert not opt.should_stop and opt.take_skip_batches() == 0


def test_shadow_mode_under_amp_equals_the_plain_amp_run():
    plain, _, _ = amp_run(150, (80,), guard=None)
    model, opt, _ = amp_run(150, (80,), guard="host", act=False)
    assert same_weights(model, plain)
    assert opt.trace()["skipped"][80]


def test_step_was_skipped_follows_every_withheld_update():
    """The schedule policy: a step whose update was withheld does not advance the LR
    schedule (as torch's AMP recipe and the Hugging Face Trainer treat an overflow)."""
    model = net()
    opt = GuardedOptimizer(torch.optim.AdamW(model.parameters(), lr=3e-3), DEFAULT)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + 0.01 * s))
    flags = []
    for step in range(100):
        g = torch.Generator().manual_seed(step)
        x = torch.randn(64, 8, generator=g)
        loss = F.mse_loss(model(x), x[:, :1].sin()) * (math.nan if step in (50, 70) else 1.0)
        opt.zero_grad()
        loss.backward()
        opt.step(loss=loss)
        flags.append(opt.step_was_skipped)
        if not opt.step_was_skipped:
            sched.step()
    trace = opt.trace()
    assert flags == (trace["skipped"] | trace["safety_skip"]).tolist()
    assert sum(flags) == 2 and sched.last_epoch == 98
