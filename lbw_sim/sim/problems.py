"""Noisy quadratics: the classic model of SGD on a loss with a known spectrum and noisy gradients.

    L_t(p) = 1/2 sum_i lambda_i (p_i - p*_i)^2  +  xi_t . (p - p*)

The linear term carries the gradient noise: autograd returns grad = H (p - p*) + xi_t, an
unbiased, heavy-tailed estimate of the true gradient, and the loss value is noisy as well
(but exact at the optimum). xi_t is Student-t with `dof` degrees of freedom, drawn from
(seed, step) alone, so step t sees the same noise in every arm of a comparison and in a
resumed run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from lbw_sim.errors import SpecError


@dataclass
class NoisyQuadratic:
    """A d-dimensional quadratic with eigenvalues log-spaced in [lambda_min, lambda_max].

    `noise_scale` is the per-coordinate standard deviation of xi (for dof > 2; for dof <= 2
    the variance is infinite and it is the t-distribution's scale). dof = inf gives Gaussian
    noise. Plain SGD is stable in expectation only for lr < 2 / lambda_max (`lr_threshold`).
    """

    dim: int = 100
    lambda_max: float = 1.0
    lambda_min: float = 0.01
    noise_scale: float = 0.1
    dof: float = 3.0
    seed: int = 0
    init_scale: float = 1.0
    eigenvalues: torch.Tensor = field(init=False, repr=False)
    optimum: torch.Tensor = field(init=False, repr=False)
    start: torch.Tensor = field(init=False, repr=False)
    _cache: dict = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._validate()
        rng = np.random.default_rng([self.seed, 0])
        eig = np.geomspace(self.lambda_max, self.lambda_min, self.dim)
        self.eigenvalues = torch.tensor(eig, dtype=torch.float32)
        self.optimum = torch.tensor(rng.standard_normal(self.dim), dtype=torch.float32)
        delta = rng.standard_normal(self.dim) * self.init_scale
        self.start = self.optimum + torch.tensor(delta, dtype=torch.float32)

    def _validate(self) -> None:
        if not (isinstance(self.dim, int) and 1 <= self.dim <= 10_000_000):
            raise SpecError("problem.dim", f"must be an integer in [1, 1e7], got {self.dim!r}")
        if not (self.lambda_max >= self.lambda_min > 0):
            raise SpecError("problem.lambda_min", "need lambda_max >= lambda_min > 0")
        if not (self.noise_scale >= 0 and math.isfinite(self.noise_scale)):
            raise SpecError("problem.noise_scale", "must be finite and >= 0")
        if not self.dof > 0:
            raise SpecError("problem.dof", f"degrees of freedom must be > 0, got {self.dof!r}")

    @property
    def lr_threshold(self) -> float:
        return 2.0 / self.lambda_max

    def param(
        self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> torch.nn.Parameter:
        """A fresh parameter at the (seeded) start point."""
        return torch.nn.Parameter(self.start.to(device=device, dtype=dtype).clone())

    def noise(self, step: int) -> np.ndarray:
        """xi_step as float64 numpy, a pure function of (seed, step)."""
        if self.noise_scale == 0:
            return np.zeros(self.dim)
        rng = np.random.default_rng([self.seed, 1, step])
        if math.isinf(self.dof):
            return self.noise_scale * rng.standard_normal(self.dim)
        t = rng.standard_t(self.dof, self.dim)
        unit = math.sqrt((self.dof - 2) / self.dof) if self.dof > 2 else 1.0
        return self.noise_scale * unit * t

    def _constants(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(eigenvalues, optimum) on `like`'s device and dtype, copied there once."""
        dev, dt = key = (like.device, like.dtype)
        if key not in self._cache:
            self._cache[key] = (self.eigenvalues.to(dev, dt), self.optimum.to(dev, dt))
        return self._cache[key]

    def true_loss(self, param: torch.Tensor) -> torch.Tensor:
        """The noise-free loss (0 at the optimum)."""
        eig, opt = self._constants(param)
        d = param - opt
        return 0.5 * (eig * d * d).sum()

    def loss(self, param: torch.Tensor, step: int) -> torch.Tensor:
        """The noisy loss of step `step`; its gradient is H (p - p*) + xi_step."""
        xi = torch.from_numpy(self.noise(step)).to(param.device, param.dtype, non_blocking=True)
        eig, opt = self._constants(param)
        d = param - opt
        return 0.5 * (eig * d * d).sum() + (xi * d).sum()
