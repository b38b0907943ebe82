"""Noisy quadratic: the gradient is H (p - p*) + xi_step, with seeded, heavy-tailed xi."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from lbw_sim.errors import SpecError
from lbw_sim.sim.problems import NoisyQuadratic


def _grad(prob: NoisyQuadratic, p: torch.Tensor, step: int) -> torch.Tensor:
    p = p.detach().clone().requires_grad_(True)
    prob.loss(p, step).backward()
    return p.grad


def test_gradient_is_true_gradient_plus_that_steps_noise():
    prob = NoisyQuadratic(dim=50, noise_scale=0.5, dof=3.0, seed=1)
    p = prob.param(dtype=torch.float64)
    true = prob.eigenvalues.double() * (p.detach() - prob.optimum.double())
    for step in (0, 7):
        g = _grad(prob, p, step)
        np.testing.assert_allclose((g - true).numpy(), prob.noise(step), rtol=1e-6, atol=1e-9)
    assert prob.true_loss(prob.optimum.double()).item() == 0.0
    assert prob.loss(prob.optimum.double(), 3).item() == pytest.approx(0.0, abs=1e-12)


def test_noise_is_seeded_per_step_and_differs_between_steps_and_seeds():
    a, b = NoisyQuadratic(dim=20, seed=3), NoisyQuadratic(dim=20, seed=3)
    np.testing.assert_array_equal(a.noise(5), b.noise(5))
    assert not np.allclose(a.noise(5), a.noise(6))
    assert not np.allclose(a.noise(5), NoisyQuadratic(dim=20, seed=4).noise(5))


def test_noise_is_heavy_tailed_with_the_requested_scale():
    prob = NoisyQuadratic(dim=20_000, noise_scale=2.0, dof=5.0)
    xi = np.concatenate([prob.noise(s) for s in range(10)])
    assert xi.std() == pytest.approx(2.0, rel=0.05)
    assert stats.kurtosis(xi) > 2.0  # t(5): excess kurtosis 6; a Gaussian has 0
    gauss = NoisyQuadratic(dim=20_000, noise_scale=2.0, dof=float("inf")).noise(0)
    assert abs(stats.kurtosis(gauss)) < 0.2


def test_sgd_below_threshold_reaches_noise_floor_and_above_diverges():
    prob = NoisyQuadratic(dim=20, lambda_max=4.0, noise_scale=0.01, seed=0)
    start = prob.true_loss(prob.param()).item()
    for factor, check in ((0.9, lambda v: v < 0.1 * start), (1.1, lambda v: v > 10 * start)):
        p = prob.param()
        opt = torch.optim.SGD([p], lr=factor * prob.lr_threshold)
        for step in range(300):
            opt.zero_grad()
            prob.loss(p, step).backward()
            opt.step()
        assert check(prob.true_loss(p).item()), factor


def test_bad_config_names_the_field():
    with pytest.raises(SpecError, match="problem.dof"):
        NoisyQuadratic(dof=0)
    with pytest.raises(SpecError, match="problem.lambda_min"):
        NoisyQuadratic(lambda_min=2.0, lambda_max=1.0)
    with pytest.raises(SpecError, match="problem.dim"):
        NoisyQuadratic(dim=0)
