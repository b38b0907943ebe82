"""The competitor arms: built from their packages, stepped like every arm, and Schedule-Free's
train/eval switch around the runner's evaluation."""

from __future__ import annotations

import pytest
import torch

from lbw_sim.guard.optim import GuardedOptimizer
from lbw_sim.sim.arms import ALL_ARMS, is_guard_arm, make_arm
from lbw_sim.sim.competitors import COMPETITORS, eval_mode, in_train_mode
from lbw_sim.sim.models import MLPClassifier, MLPConfig
from lbw_sim.sim.runner import Run, trace_columns
from lbw_sim.sim.scenarios import ArmSpec, Scenario

MLP_SC = {"name": "t", "model": {"kind": "mlp", "hidden": [16]}, "data": {"kind": "digits"},
          "optimizer": {"betas": [0.8, 0.9], "weight_decay": 0.05}, "steps": 12,
          "batch_size": 16, "schedule": {"warmup": 3}, "eval_every": 4, "lrs": [1e-2],
          "arms": ["adamw", *COMPETITORS]}


def _model() -> MLPClassifier:
    torch.manual_seed(0)
    return MLPClassifier(MLPConfig(n_in=8, n_classes=3, hidden=(8,)))


def _steps(arm, model, n=5):
    x, y = torch.randn(32, 8, generator=torch.Generator().manual_seed(1)), torch.arange(32) % 3
    for _ in range(n):
        loss = model(x, y)[1]
        arm.zero_grad()
        loss.backward()
        arm.step(loss=loss.detach())


@pytest.mark.parametrize("name", COMPETITORS)
def test_competitor_arms_construct_step_and_trace(name):
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    arm = make_arm(name, model, 1e-2, betas=(0.8, 0.9), weight_decay=0.05, eps=1e-7)
    inner = arm.optimizer
    assert isinstance(arm, GuardedOptimizer) == (name == "guard:schedulefree")
    # fair: AdamW's groups (decay on matrices only), betas and eps
    assert [g["weight_decay"] for g in inner.param_groups] == [0.05, 0.0]
    assert all(tuple(g["betas"]) == (0.8, 0.9) and g["eps"] == 1e-7
               for g in inner.param_groups)
    _steps(arm, model)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    trace = arm.trace()
    assert len(trace) == 5 and trace["loss"].notna().all() and trace["grad_norm"].gt(0).all()
    assert arm.take_skip_batches() == 0 and not arm.should_stop


def test_schedulefree_evaluates_at_its_average_and_returns_to_training():
    model = _model()
    arm = make_arm("schedulefree", model, 5e-2)
    _steps(arm, model, 8)
    y = [p.detach().clone() for p in model.parameters()]
    with eval_mode(arm):
        x = [p.detach().clone() for p in model.parameters()]
        assert not in_train_mode(arm)
    assert in_train_mode(arm)
    assert any(not torch.allclose(a, b) for a, b in zip(x, y))        # x is not y
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(y, model.parameters()))
    z = [arm.optimizer.state[p]["z"] for p in model.parameters()]      # x = lerp(y, z, 1 - 1/b1)
    b1 = arm.optimizer.param_groups[0]["betas"][0]
    assert all(torch.allclose(xi, yi + (zi - yi) * (1 - 1 / b1), atol=1e-6)
               for xi, yi, zi in zip(x, y, z))
    with eval_mode(arm), pytest.raises(Exception, match="train mode"):
        arm.step(loss=torch.tensor(1.0))   # the package refuses a step in eval mode


def test_eval_mode_is_a_no_op_for_adamw_and_reaches_through_the_guard():
    model = _model()
    adamw = make_arm("adamw", model, 1e-2)
    with eval_mode(adamw):
        assert in_train_mode(adamw)
    guarded = make_arm("guard:schedulefree", _model(), 1e-2)
    with eval_mode(guarded):
        assert not in_train_mode(guarded)
    assert in_train_mode(guarded)


@pytest.mark.parametrize("arm", ["schedulefree", "guard:schedulefree"])
def test_runner_switches_schedulefree_around_every_evaluation(arm):
    sc = Scenario.from_dict(MLP_SC)
    run = Run(sc, ArmSpec.parse(arm, "arm"), 1e-2, seed=0, device="cpu")
    rows = list(run)                  # steps after each evaluation: raises if left in eval mode
    assert len(rows) == 12 and in_train_mode(run.arm)
    guard_columns = {"regime", "cause", "rollback", "momentum_scale"}
    assert (guard_columns <= set(rows[0])) == (arm == "guard:schedulefree")
    evals = [r["val_loss"] for r in rows if r["val_loss"] == r["val_loss"]]
    assert len(evals) == 4             # steps 0, 4, 8 and the last
    with eval_mode(run.arm):           # the last evaluation was at x, not at y
        at_x = run.task.evaluate()
    assert evals[-1] == pytest.approx(at_x)
    assert run.task.evaluate() != pytest.approx(at_x)


def test_arm_names_parse_and_unknown_ones_are_refused():
    assert ArmSpec.parse("guard:schedulefree", "arms").name == "guard:schedulefree"
    assert ArmSpec.parse("prodigy", "arms").label == "prodigy"
    from lbw_sim.errors import SpecError

    with pytest.raises(SpecError, match="unknown arm"):
        make_arm("adafactor", _model(), 1e-2)
    with pytest.raises(SpecError, match="AdamW variants"):
        make_arm("stableadamw", _model(), 1e-2, optimizer="sgd")


@pytest.mark.parametrize("name", ALL_ARMS)
def test_a_guard_arm_is_one_built_around_the_guard_spec(name):
    """`is_guard_arm` (which decides the guard's trace columns) says what the built arm is."""
    arm = make_arm(name, _model(), 1e-2)
    assert is_guard_arm(name) == isinstance(arm, GuardedOptimizer)
    assert ("regime" in trace_columns(name)) == isinstance(arm, GuardedOptimizer)
