"""The guard over torch's own optimizer kernels: every option honoured or refused by name.

In the style of torch's `test_foreach_matches_forloop`: one matrix of optimizers × options,
one generic check (capturable only with fused: the CPU has no other capturable kernel;
`differentiable` is refused by torch's fused kernels themselves). The host path must equal
the plain optimizer driven by hand with the guard's recorded decisions (skip: no step;
lr_scale: the group's LR times it for the step; momentum_scale: first moments damped first)
bit for bit; the device path (torch's fused kernel under `found_inf` and a tensor LR) must
equal the host path bit for bit. Then what the device path reads back (the torch profiler's
`aten::_local_scalar_dense`), step hooks, and the refusals.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from lbw_sim import GuardedOptimizer, GuardSpec
from lbw_sim.guard.fused import MOMENTUM_KEYS, device_kernel_problem

DEFAULT = GuardSpec.default()
STEPS = 110
SPIKES = (60, 61, 62, 63, 64, 65)          # a persistent outlier: skip, then cut and damp
NANS = (100,)

MATRIX = [
    (torch.optim.AdamW, {}),
    (torch.optim.AdamW, {"foreach": False}),
    (torch.optim.AdamW, {"weight_decay": 0.1, "amsgrad": True}),
    (torch.optim.AdamW, {"maximize": True}),
    (torch.optim.AdamW, {"fused": True}),
    (torch.optim.AdamW, {"fused": True, "amsgrad": True, "weight_decay": 0.1}),
    (torch.optim.AdamW, {"fused": True, "maximize": True, "betas": (0.8, 0.9)}),
    (torch.optim.AdamW, {"fused": True, "capturable": True, "weight_decay": 0.1}),
    (torch.optim.Adam, {"weight_decay": 0.01}),
    (torch.optim.Adam, {"fused": True, "amsgrad": True, "maximize": True}),
    (torch.optim.Adam, {"fused": True, "weight_decay": 0.01}),
    (torch.optim.Adam, {"fused": True, "capturable": True, "amsgrad": True}),
    (torch.optim.SGD, {"momentum": 0.9}),
    (torch.optim.SGD, {"momentum": 0.9, "nesterov": True, "foreach": False}),
    (torch.optim.SGD, {"fused": True, "momentum": 0.9, "weight_decay": 1e-3}),
    (torch.optim.SGD, {"fused": True, "momentum": 0.9, "nesterov": True, "maximize": True}),
    (torch.optim.SGD, {"fused": True}),
]
IDS = [f"{cls.__name__}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'defaults'}"
       for cls, kw in MATRIX]
FUSED = [(cls, kw) for cls, kw in MATRIX if kw.get("fused")]
FUSED_IDS = [i for i, (_, kw) in zip(IDS, MATRIX) if kw.get("fused")]


def net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))


def loss_at(model: torch.nn.Module, step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(step)
    x = torch.randn(64, 8, generator=g)
    y = x[:, :1].sin() * (100.0 if step in SPIKES else 1.0)
    loss = F.mse_loss(model(x), y)
    return loss * math.nan if step in NANS else loss


def lr_for(cls) -> float:
    return 3e-2 if cls is torch.optim.SGD else 3e-3


@functools.cache
def _guarded_run(cls, options: tuple, decide_on: str):
    return guarded_run(cls, dict(options), decide_on)


def cached_run(cls, kw, decide_on: str):
    """`guarded_run`, once per configuration for the whole module (the tests only read it)."""
    return _guarded_run(cls, tuple(sorted(kw.items())), decide_on)


def guarded_run(cls, kw, decide_on: str, steps: int = STEPS):
    model = net()
    opt = GuardedOptimizer(cls(model.parameters(), lr=lr_for(cls), **kw), DEFAULT,
                           decide_on=decide_on)
    for step in range(steps):
        loss = loss_at(model, step)
        opt.zero_grad()
        loss.backward()
        opt.step(loss=loss)
    return model, opt


def by_hand(cls, kw, trace) -> torch.nn.Module:
    """The plain optimizer, driven by the guard's recorded decisions."""
    model = net()
    opt = cls(model.parameters(), lr=lr_for(cls), **kw)
    for step, row in enumerate(trace.itertuples()):
        loss = loss_at(model, step)
        opt.zero_grad()
        loss.backward()
        if row.skipped or row.safety_skip:
            continue
        if row.momentum_scale != 1.0:
            bufs = [s[k] for s in opt.state.values() for k in MOMENTUM_KEYS
                    if torch.is_tensor(s.get(k))]
            if bufs:
                torch._foreach_mul_(bufs, row.momentum_scale)
        for g in opt.param_groups:
            g["lr"] = lr_for(cls) * row.lr_scale
        opt.step()
    return model


@pytest.mark.parametrize("cls,kw", MATRIX, ids=IDS)
def test_host_path_is_the_plain_optimizer_under_the_decisions(cls, kw):
    model, opt = cached_run(cls, kw, "host")
    trace = opt.trace()
    # the run exercises every control the matrix must honour
    assert trace["skipped"].any() and trace["safety_skip"].sum() == 0
    assert (trace["lr_scale"] < 1).any() and (trace["momentum_scale"] < 1).any()
    plain = by_hand(cls, kw, trace)
    for a, b in zip(model.parameters(), plain.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("cls,kw", FUSED, ids=FUSED_IDS)
def test_device_path_equals_the_host_path(cls, kw):
    (h_model, host), (d_model, dev) = cached_run(cls, kw, "host"), cached_run(cls, kw, "device")
    th, td = host.trace(), dev.trace()
    for col in ("regime", "skipped", "lr_scale", "momentum_scale"):
        assert th[col].tolist() == td[col].tolist(), col
    for a, b in zip(h_model.parameters(), d_model.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(host.optimizer.state.values(), dev.optimizer.state.values()):
        assert all(torch.equal(a[k], b[k]) for k in a if torch.is_tensor(a[k]))


@pytest.mark.parametrize("make,words", [
    (lambda p: torch.optim.AdamW(p, lr=1e-3), ("fused=None", "fused=True")),
    (lambda p: torch.optim.AdamW(p, lr=1e-3, foreach=True), ("fused=None", "decide_on='host'")),
    (lambda p: torch.optim.SGD(p, lr=1e-3, fused=False), ("fused=False",)),
    (lambda p: torch.optim.Adagrad(p, lr=1e-3), ("Adagrad",)),
    (lambda p: torch.optim.RMSprop(p, lr=1e-3), ("RMSprop",)),
])
def test_the_device_path_refuses_what_its_kernel_cannot_do(make, words):
    inner = make(net().parameters())
    with pytest.raises(ValueError, match="decide_on='device'") as err:
        GuardedOptimizer(inner, DEFAULT, decide_on="device")
    assert all(w in str(err.value) for w in words)
    # auto falls back to the host path instead of refusing
    assert GuardedOptimizer(inner, DEFAULT).mode == "host"


def test_a_later_param_group_without_fused_is_named():
    model = net()
    inner = torch.optim.AdamW([{"params": model[0].parameters()}], lr=1e-3, fused=True)
    inner.add_param_group({"params": model[2].parameters(), "fused": False})
    assert "param group 1" in device_kernel_problem(inner)


def test_step_hooks_fire_on_the_guard():
    model = net()
    opt = GuardedOptimizer(torch.optim.AdamW(model.parameters(), lr=1e-3), DEFAULT)
    seen = []
    opt.register_step_pre_hook(lambda o, args, kw: seen.append(("pre", o, kw.get("loss"))))
    opt.register_step_post_hook(lambda o, args, kw: seen.append(("post", o, None)))
    loss = loss_at(model, 0)
    loss.backward()
    opt.step(loss=loss)
    assert [s[0] for s in seen] == ["pre", "post"] and all(s[1] is opt for s in seen)
    assert seen[0][2] is loss


# --- what a step reads back to the host ------------------------------------------------------

def _reads(fn) -> tuple[int, int]:
    """(`aten::_local_scalar_dense` calls, those not inside one of torch's fused kernels)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    reads = [e for e in prof.events() if e.name == "aten::_local_scalar_dense"]

    def in_kernel(e) -> bool:
        while e is not None:
            if e.name.startswith("aten::_fused_"):
                return True
            e = e.cpu_parent
        return False

    return len(reads), sum(not in_kernel(e) for e in reads)


def _step_reads(cls, kw, lr, wrap: str | None) -> tuple[int, int]:
    model = net()
    inner = cls(model.parameters(), lr=lr, **kw)
    opt = GuardedOptimizer(inner, DEFAULT, decide_on=wrap) if wrap else inner
    for step in range(120 + SPIKES[0]):          # past warm-up, a snapshot, then a spike
        loss = loss_at(model, step % 120 if step < 120 else SPIKES[0])
        opt.zero_grad()
        loss.backward()
        if step == 120 + SPIKES[0] - 1:
            return _reads((lambda last=loss: opt.step(loss=last)) if wrap else opt.step)
        opt.step(loss=loss) if wrap else opt.step()
    raise AssertionError("unreachable")


@pytest.mark.parametrize("cls,kw", [(torch.optim.AdamW, {"fused": True}),
                                    (torch.optim.SGD, {"fused": True, "momentum": 0.9})],
                         ids=["AdamW", "SGD"])
def test_the_device_path_adds_no_read_to_the_step(cls, kw):
    """With a tensor LR (torch's way for fused/capturable kernels) the guarded step reads
    exactly what the plain step reads; with a Python LR the only extra read is torch's CPU
    fused kernel reading the tensor LR the guard hands it (on CUDA the kernel reads it on
    the device)."""
    lr = torch.tensor(lr_for(cls), dtype=torch.float64)
    plain, _ = _step_reads(cls, kw, lr, None)
    guarded, _ = _step_reads(cls, kw, lr, "device")
    assert guarded - plain == 0
    plain_f, plain_outside = _step_reads(cls, kw, lr_for(cls), None)
    guarded_f, guarded_outside = _step_reads(cls, kw, lr_for(cls), "device")
    assert guarded_outside - plain_outside == 0       # none outside torch's fused kernel
    assert guarded_f - plain_f <= 1


def test_the_host_path_reads_two_values_in_one_transfer(monkeypatch):
    """No `_local_scalar_dense` beyond the plain step's; the one transfer is a `tolist()` of
    the stacked (loss, gradient norm)."""
    plain, _ = _step_reads(torch.optim.AdamW, {}, 3e-3, None)
    guarded, _ = _step_reads(torch.optim.AdamW, {}, 3e-3, "host")
    assert guarded - plain == 0
    sizes = []
    original = torch.Tensor.tolist

    def spy(self):
        sizes.append(self.numel())
        return original(self)

    model = net()
    opt = GuardedOptimizer(torch.optim.AdamW(model.parameters(), lr=3e-3), DEFAULT)
    monkeypatch.setattr(torch.Tensor, "tolist", spy)
    for step in range(30):
        loss = loss_at(model, step)
        opt.zero_grad()
        loss.backward()
        opt.step(loss=loss)
    assert sizes == [2] * 30
