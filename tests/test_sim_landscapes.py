"""Landscapes: minima, gradients against finite differences, the edge-of-stability threshold."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lbw_sim.errors import SpecError
from lbw_sim.sim.landscapes import LANDSCAPES, EdgeOfStabilityQuadratic, Quadratic, get_landscape

NAMES = sorted(LANDSCAPES)


def test_registry_has_the_four_landscapes():
    assert {"rosenbrock", "ill_conditioned", "rastrigin", "edge_of_stability"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_minimum_is_a_stationary_point_with_f_min(name):
    land = LANDSCAPES[name]
    p = torch.tensor(land.minimum, dtype=torch.float64, requires_grad=True)
    f = land.f(p)
    (g,) = torch.autograd.grad(f, p)
    assert f.item() == pytest.approx(land.f_min, abs=1e-12)
    assert torch.allclose(g, torch.zeros(2, dtype=torch.float64), atol=1e-9)
    # and it is the lowest point of the plotting window's grid
    X, Y, Z = land.mesh(101)
    assert Z.min() >= land.f_min - 1e-9


@pytest.mark.parametrize("name", NAMES)
def test_autograd_matches_finite_differences_of_grid(name):
    land = LANDSCAPES[name]
    rng = np.random.default_rng(0)
    x0, x1, y0, y1 = land.window
    pts = np.column_stack([rng.uniform(x0, x1, 20), rng.uniform(y0, y1, 20)])
    p = torch.tensor(pts, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(land.f(p).sum(), p)
    h = 1e-6
    fd_x = (land.grid(pts[:, 0] + h, pts[:, 1]) - land.grid(pts[:, 0] - h, pts[:, 1])) / (2 * h)
    fd_y = (land.grid(pts[:, 0], pts[:, 1] + h) - land.grid(pts[:, 0], pts[:, 1] - h)) / (2 * h)
    np.testing.assert_allclose(g.numpy(), np.column_stack([fd_x, fd_y]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_grid_and_f_agree(name):
    land = LANDSCAPES[name]
    X, Y, Z = land.mesh(17)
    xy = torch.tensor(np.stack([X, Y], axis=-1), dtype=torch.float64)
    np.testing.assert_allclose(land.f(xy).numpy(), Z, rtol=1e-12)


def test_param_and_loss():
    land = LANDSCAPES["rosenbrock"]
    p = land.param()
    assert isinstance(p, torch.nn.Parameter) and p.shape == (2,) and p.requires_grad
    assert tuple(p.tolist()) == land.start
    assert land.param() is not p  # fresh every call
    land.loss(p).backward()
    assert p.grad is not None and torch.isfinite(p.grad).all()


def _gd(land: Quadratic, lr: float, steps: int = 200) -> float:
    p = land.param(dtype=torch.float64)
    opt = torch.optim.SGD([p], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        land.loss(p).backward()
        opt.step()
    return land.loss(p).item()


def test_edge_of_stability_threshold():
    land = EdgeOfStabilityQuadratic()
    assert land.lambda_max == 10.0 and land.lr_threshold == pytest.approx(0.2)
    start = land.loss(land.param()).item()
    assert _gd(land, 0.98 * land.lr_threshold) < 1e-3 * start  # just below: converges
    assert _gd(land, 1.02 * land.lr_threshold) > 1e3 * start  # just above: diverges


def test_eigenvalues_of_rotated_quadratic():
    land = get_landscape("ill_conditioned")
    assert np.linalg.eigvalsh(land.hessian()) == pytest.approx([land.lambda_min, land.lambda_max])
    assert land.condition_number == pytest.approx(100.0)


def test_overrides_and_errors():
    land = get_landscape("edge_of_stability", lambda_max=4.0)
    assert land.lr_threshold == pytest.approx(0.5)
    with pytest.raises(SpecError, match="landscape"):
        get_landscape("nope")
    with pytest.raises(SpecError, match="landscape.bogus"):
        get_landscape("rosenbrock", bogus=1)
    with pytest.raises(SpecError, match="lambda_min"):
        get_landscape("edge_of_stability", lambda_min=-1.0)


@pytest.mark.parametrize("name", NAMES)
def test_adamw_makes_progress_in_200_steps(name):
    # (speed is a benchmark's business; this loop takes ~30 ms on one CPU core)
    land = LANDSCAPES[name]
    p = land.param()
    opt = torch.optim.AdamW([p], lr=5e-2, weight_decay=0.0)
    for _ in range(200):
        opt.zero_grad()
        land.loss(p).backward()
        opt.step()
    assert land.loss(p).item() < land.loss(land.param()).item()
