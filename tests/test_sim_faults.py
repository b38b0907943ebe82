"""Faults: each one changes what it should, at its steps only; specs are validated."""

from __future__ import annotations

import math

import pytest
import torch

from lbw_sim.errors import SpecError
from lbw_sim.sim.faults import (
    CorruptBatch,
    Fault,
    FaultSchedule,
    GradNoise,
    LossScaleOverflow,
    LRSpike,
    NonFinite,
)

STEPS = range(12)


def _params() -> list[torch.nn.Parameter]:
    torch.manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(5))]
    for p in ps:
        p.grad = torch.randn_like(p)
    ps.append(torch.nn.Parameter(torch.randn(2)))  # a parameter without a gradient
    return ps


def _grads_after(sched: FaultSchedule, step: int) -> tuple[list, list]:
    ps = _params()
    before = [p.grad.clone() for p in ps[:2]]
    sched.perturb_grads(ps, step, torch.Generator().manual_seed(step))
    assert ps[2].grad is None
    return before, [p.grad for p in ps[:2]]


def _unchanged(before: list, after: list) -> bool:
    return all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_lr_spike_only_at_its_steps_and_spikes_multiply():
    sched = FaultSchedule([LRSpike(steps=(3, 4), factor=10.0), LRSpike(steps=(4,), factor=0.5)])
    assert [sched.lr_factor(s) for s in STEPS] == [1, 1, 1, 10, 5, 1, 1, 1, 1, 1, 1, 1]
    assert sched.label(4) == "lr_spike,lr_spike" and sched.label(5) == ""


def test_grad_noise_burst_relative_and_absolute():
    sched = FaultSchedule([GradNoise(steps=(5, 6), scale=3.0)])
    for step in STEPS:
        before, after = _grads_after(sched, step)
        assert _unchanged(before, after) == (step not in (5, 6)), step
    before, after = _grads_after(sched, 5)
    for b, a in zip(before, after, strict=True):  # noise std ~ 3 x rms(grad)
        ratio = (a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt()
        assert 1.0 < ratio < 6.0 and torch.isfinite(a).all()
    abs_sched = FaultSchedule([GradNoise(steps=(1,), scale=0.0, relative=False)])
    assert _unchanged(*_grads_after(abs_sched, 1))  # zero scale: a no-op


def test_noise_is_reproducible_from_the_generator():
    sched = FaultSchedule([GradNoise(steps=(2,), scale=1.0)])
    assert _unchanged(_grads_after(sched, 2)[1], _grads_after(sched, 2)[1])


def test_nonfinite_grads_all_or_a_fraction():
    sched = FaultSchedule([NonFinite(steps=(7,), target="grads", value="nan"),
                           NonFinite(steps=(8,), target="grads", value="-inf", fraction=0.5)])
    for step in STEPS:
        before, after = _grads_after(sched, step)
        assert _unchanged(before, after) == (step not in (7, 8))
    _, after = _grads_after(sched, 7)
    assert all(torch.isnan(g).all() for g in after)
    _, after = _grads_after(sched, 8)
    hit = torch.cat([torch.isneginf(g).flatten() for g in after])
    assert 0 < hit.sum() < hit.numel()  # some, not all, of the 17 elements


def test_loss_scale_overflow_makes_every_grad_inf_and_leaves_the_loss():
    sched = FaultSchedule([LossScaleOverflow(steps=(9, 10))])
    for step in STEPS:
        before, after = _grads_after(sched, step)
        assert _unchanged(before, after) == (step not in (9, 10))
    _, after = _grads_after(sched, 10)
    assert all(torch.isposinf(g).all() for g in after)
    loss = torch.tensor(2.0)
    assert sched.perturb_loss(loss, 9) is loss


def test_nonfinite_loss_poisons_value_and_gradient():
    sched = FaultSchedule([NonFinite(steps=(4,), target="loss", value="nan")])
    w = torch.nn.Parameter(torch.ones(3))
    for step in STEPS:
        w.grad = None
        loss = sched.perturb_loss((w * 2.0).sum(), step)
        loss.backward()
        assert torch.isnan(loss).item() == (step == 4)
        assert torch.isnan(w.grad).all().item() == (step == 4)
    inf_sched = FaultSchedule([NonFinite(steps=(0,), target="loss", value="inf")])
    assert torch.isposinf(inf_sched.perturb_loss(torch.tensor(1.5), 0))


def test_corrupt_batch_random_tokens_on_a_fraction_of_rows():
    sched = FaultSchedule([CorruptBatch(steps=(3,), mode="random_tokens", fraction=0.5)],
                          n_classes=1000)
    x = torch.arange(8 * 6).view(8, 6)
    y = x + 1
    gen = torch.Generator().manual_seed(0)
    for step in STEPS:
        cx, cy = sched.corrupt_batch(x, y, step, gen)
        if step != 3:
            assert cx is x and cy is y
    cx, cy = sched.corrupt_batch(x, y, 3, gen)
    assert torch.equal(x, torch.arange(48).view(8, 6))  # the caller's batch is untouched
    rows_changed = (cx != x).any(dim=1) | (cy != y).any(dim=1)
    assert rows_changed.sum() == 4  # half of the rows
    assert cx.dtype == x.dtype and cx.min() >= 0 and cx.max() < 1000


def test_corrupt_batch_flip_labels_changes_every_target_and_no_input():
    sched = FaultSchedule([CorruptBatch(steps=(2,), mode="flip_labels")], n_classes=10)
    x = torch.randn(64, 5)
    y = torch.arange(64) % 10
    cx, cy = sched.corrupt_batch(x, y, 2, torch.Generator().manual_seed(1))
    assert torch.equal(cx, x)
    assert (cy != y).all() and cy.min() >= 0 and cy.max() < 10
    # float inputs + random_tokens -> Gaussian features, random labels
    noisy = FaultSchedule([CorruptBatch(steps=(0,))], n_classes=10).corrupt_batch(x, y, 0)
    assert not torch.equal(noisy[0], x) and noisy[0].dtype == x.dtype


def test_from_dict_roundtrip_and_step_forms():
    items = [
        {"kind": "lr_spike", "factor": 10, "at": 300, "duration": 20},
        {"kind": "grad_noise", "scale": 5.0, "steps": [502, 500, 501]},
        {"kind": "corrupt_batch", "mode": "flip_labels", "at": 700},
        {"kind": "nonfinite", "target": "loss", "value": "inf", "at": 900},
        {"kind": "loss_scale_overflow", "at": 1100, "duration": 3},
    ]
    sched = FaultSchedule.from_list(items, n_classes=65)
    assert len(sched) == 5
    assert sched.faults[0].steps == tuple(range(300, 320))
    assert sched.faults[1].steps == (500, 501, 502)
    again = FaultSchedule.from_list(sched.to_list())
    assert again.faults == sched.faults
    assert sched.fault_steps[:2] == [300, 301] and len(sched.fault_steps) == 20 + 3 + 1 + 1 + 3
    assert FaultSchedule.from_list(None).fault_steps == []


@pytest.mark.parametrize(
    ("item", "field"),
    [
        ({"kind": "lr_spike", "factor": -1, "at": 1}, "faults[1].factor"),
        ({"kind": "lr_spike", "factor": math.inf, "at": 1}, "faults[1].factor"),
        ({"kind": "meteor", "at": 1}, "faults[1].kind"),
        ({"kind": "lr_spike", "at": -3}, "faults[1].at"),
        ({"kind": "lr_spike", "at": 1, "duration": 0}, "faults[1].duration"),
        ({"kind": "lr_spike"}, "faults[1].at"),
        ({"kind": "lr_spike", "steps": [1, "x"]}, "faults[1].steps"),
        ({"kind": "lr_spike", "steps": [1], "at": 2}, "faults[1].steps"),
        ({"kind": "lr_spike", "at": 1, "fator": 3}, "faults[1].fator"),
        ({"kind": "grad_noise", "at": 1, "relative": "yes"}, "faults[1].relative"),
        ({"kind": "corrupt_batch", "at": 1, "mode": "evil"}, "faults[1].mode"),
        ({"kind": "corrupt_batch", "at": 1, "fraction": 1.5}, "faults[1].fraction"),
        ({"kind": "nonfinite", "at": 1, "target": "weights"}, "faults[1].target"),
        ({"kind": "nonfinite", "at": 1, "value": 0}, "faults[1].value"),
        ("lr_spike", "faults[1]"),
    ],
)
def test_bad_specs_name_the_field(item, field):
    with pytest.raises(SpecError) as err:
        FaultSchedule.from_list([{"kind": "lr_spike", "at": 0}, item])
    assert err.value.field == field


def test_direct_construction_is_validated_too():
    with pytest.raises(SpecError, match="fault.factor"):
        LRSpike(steps=(1,), factor=0.0)
    assert isinstance(Fault.from_dict({"kind": "lr_spike", "steps": [3, 1, 3]}), LRSpike)
    assert LRSpike(steps=[3, 1, 3]).steps == (1, 3)
