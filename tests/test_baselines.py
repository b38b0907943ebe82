import copy

import pytest
import torch
import torch.nn.functional as F

from lbw_sim import GuardedOptimizer, SpecError
from lbw_sim.sim.arms import make_arm
from lbw_sim.sim.baselines import ARMS, SkipStepAdamW

torch.set_num_threads(1)


def make(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))


def batch(step, n=64):
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(n, 8, generator=g)
    return x, 0.5 * x[:, :1] - x[:, 1:2]


def train(model, arm, steps, start=0, spike=(), nan=(), size=100.0):
    losses = []
    for step in range(start, start + steps):
        x, y = batch(step)
        loss = F.mse_loss(model(x), y * size if step in spike else y)
        if step in nan:
            loss = loss * float("nan")
        arm.zero_grad()
        loss.backward()
        arm.step() if isinstance(arm, torch.optim.AdamW) else arm.step(loss=loss.detach())
        losses.append(float(loss.detach()))
    return losses


def snapshot(model, arm):
    inner = arm.optimizer
    state = [t.clone() for s in inner.state.values() for t in s.values() if torch.is_tensor(t)]
    return [p.detach().clone() for p in model.parameters()], state


def same(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("name", ARMS)
def test_every_arm_trains_and_traces(name):
    model = make()
    arm = make_arm(name, model, lr=1e-2)
    losses = train(model, arm, 40)
    assert sum(losses[-5:]) < 0.5 * sum(losses[:5])
    df = arm.trace()
    assert {"step", "loss", "grad_norm", "lr", "lr_scale", "skipped"} <= set(df.columns)
    assert df["step"].tolist() == list(range(40)) and (df["lr"] == 1e-2).all()
    assert arm.last_row()["step"] == 39
    assert isinstance(arm, GuardedOptimizer) == (name == "guard")


def test_skipstep_equals_adamw_while_nothing_is_skipped():
    a_model, b_model = make(1), make(1)
    ref = torch.optim.AdamW(a_model.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    arm = make_arm("skipstep", b_model, lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    train(a_model, ref, 30)
    train(b_model, arm, 30)
    assert not arm.trace()["skipped"].any()
    for p, q in zip(a_model.parameters(), b_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_skipstep_skips_a_spike_bit_identically():
    model = make(2)
    arm = make_arm("skipstep", model, lr=1e-2, window=32, min_history=20)
    train(model, arm, 40)
    params, state = snapshot(model, arm)
    train(model, arm, 1, start=40, spike=(40,), size=1000.0)
    assert float(arm.optimizer.step_factor) == 0.0 and arm.last_row()["skipped"]
    assert same(params, [p.detach() for p in model.parameters()])
    assert same(state, snapshot(model, arm)[1])          # moments and step count untouched
    train(model, arm, 1, start=41, nan=(41,))            # NaN loss and grads: masked too
    assert same(params, [p.detach() for p in model.parameters()])
    train(model, arm, 1, start=42)
    assert not arm.last_row()["skipped"]
    assert not same(params, [p.detach() for p in model.parameters()])


def test_skipstep_decision_stays_on_the_device():
    opt = SkipStepAdamW([torch.nn.Parameter(torch.zeros(3))], min_history=2, window=4)
    for v in (1.0, 1.1, 0.9, 50.0):
        opt.latest_loss, opt.latest_grad_norm = torch.tensor(v), torch.tensor(1.0 + v / 100)
        factor = opt.get_step_factor()
        assert torch.is_tensor(factor) and factor.dim() == 0
    assert float(factor) == 0.0


def test_clip_arm_clips_to_one():
    model = make(3)
    arm = make_arm("clip", model, lr=1e-3)
    train(model, arm, 1, spike=(0,))
    row = arm.last_row()
    assert row["clipped"] and row["grad_norm"] > 1.0   # grad_norm is measured before clipping
    assert torch.linalg.vector_norm(
        torch.stack([p.grad.norm() for p in model.parameters()])) <= 1.0 + 1e-5


def test_zclip_clips_an_outlier_after_its_warmup():
    model = make(4)
    arm = make_arm("zclip", model, lr=1e-3, max_grad_norm=None, warmup_steps=10)
    train(model, arm, 30)
    assert not arm.trace()["clipped"].any()
    x, y = batch(30)
    loss = F.mse_loss(model(x), y * 100)
    arm.zero_grad()
    loss.backward()
    before = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    arm.step(loss=loss.detach())
    after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert arm.last_row()["clipped"] and after < 0.5 * before
    assert arm.zclip.initialized


def test_make_arm_rejects_unknown_names_and_options():
    with pytest.raises(SpecError, match="arms: unknown arm 'sgdx'"):
        make_arm("sgdx", make(), lr=1e-3)
    with pytest.raises(SpecError, match="arm_options.clip"):
        make_arm("clip", make(), lr=1e-3, max_nrom=1.0)
    with pytest.raises(SpecError, match="skipstep is an AdamW variant"):
        make_arm("skipstep", make(), lr=1e-3, optimizer="sgd")


def test_arms_share_param_groups_and_guard_sees_the_lr():
    model = make(5)
    for name in ARMS:
        arm = make_arm(name, copy.deepcopy(model), lr=1e-3)
        for g in arm.param_groups:
            g["lr"] = 5e-4
        inner = arm.optimizer
        assert inner.param_groups[0]["lr"] == 5e-4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_skipstep_takes_no_host_sync_on_cuda():
    model = make(6).cuda()
    arm = make_arm("skipstep", model, lr=1e-3, min_history=2, telemetry=False)
    x, y = (t.cuda() for t in batch(0))
    for _ in range(4):
        loss = F.mse_loss(model(x), y)
        arm.zero_grad()
        loss.backward()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            arm.step(loss=loss.detach())
        finally:
            torch.cuda.set_sync_debug_mode("default")
