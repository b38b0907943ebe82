"""2-D proxy problems: loss landscapes small enough to watch an optimizer (and a guard) move.

Each landscape holds its formula once, written against a tiny array namespace, so the same
code gives a torch-differentiable `f(xy)` for training loops and a numpy-vectorised
`grid(X, Y)` for contour plots. A landscape also says where to start, which window to plot
and where its minimum is.

    land = LANDSCAPES["rosenbrock"]
    p = land.param()                       # fresh nn.Parameter at the start point
    opt = torch.optim.AdamW([p], lr=1e-2)
    for _ in range(200):
        opt.zero_grad(); land.loss(p).backward(); opt.step()
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import torch

from lbw_sim.errors import SpecError

Point = tuple[float, float]
Window = tuple[float, float, float, float]  # xmin, xmax, ymin, ymax


@dataclass(frozen=True)
class Landscape:
    """Base class: subclasses set the fields' defaults and implement `_formula`."""

    name: str = "landscape"
    start: Point = (0.0, 0.0)
    window: Window = (-1.0, 1.0, -1.0, 1.0)
    minimum: Point = (0.0, 0.0)
    f_min: float = 0.0

    def _formula(self, x: Any, y: Any, xp: ModuleType) -> Any:
        raise NotImplementedError

    def f(self, xy: torch.Tensor) -> torch.Tensor:
        """Loss at points `xy` of shape (..., 2); differentiable."""
        return self._formula(xy[..., 0], xy[..., 1], torch)

    def grid(self, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """Loss on a mesh (e.g. from `np.meshgrid`), for contour plots."""
        return self._formula(np.asarray(X, dtype=np.float64), np.asarray(Y, dtype=np.float64), np)

    def mesh(self, n: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(X, Y, Z) over the plotting window at n x n resolution."""
        x0, x1, y0, y1 = self.window
        X, Y = np.meshgrid(np.linspace(x0, x1, n), np.linspace(y0, y1, n))
        return X, Y, self.grid(X, Y)

    def param(
        self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> torch.nn.Parameter:
        """A fresh parameter (shape (2,)) at the start point."""
        return torch.nn.Parameter(torch.tensor(self.start, device=device, dtype=dtype))

    def loss(self, param: torch.Tensor) -> torch.Tensor:
        """Scalar loss of a (2,) parameter."""
        return self.f(param)

    def replace(self, **changes: Any) -> Landscape:
        """A copy with some fields changed; unknown names are a SpecError."""
        known = {f.name for f in dataclasses.fields(self)}
        for key in changes:
            if key not in known:
                raise SpecError(f"landscape.{key}", f"unknown field for {self.name}")
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Rosenbrock(Landscape):
    """The banana valley: easy to enter, slow to follow; minimum f=0 at (a, a^2)."""

    name: str = "rosenbrock"
    start: Point = (-1.5, 2.0)
    window: Window = (-2.0, 2.0, -1.0, 3.0)
    minimum: Point = (1.0, 1.0)
    a: float = 1.0
    b: float = 100.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "minimum", (self.a, self.a**2))

    def _formula(self, x: Any, y: Any, xp: ModuleType) -> Any:
        return (self.a - x) ** 2 + self.b * (y - x**2) ** 2


@dataclass(frozen=True)
class Quadratic(Landscape):
    """f = 1/2 (p - m)^T H (p - m), H with eigenvalues (lambda_max, lambda_min) rotated by `angle`.

    Plain gradient descent contracts along an eigenvector by |1 - lr*lambda| per step, so it
    converges iff lr < 2 / lambda_max: `lr_threshold`.
    """

    name: str = "quadratic"
    start: Point = (-2.0, 1.5)
    window: Window = (-2.5, 2.5, -2.5, 2.5)
    lambda_max: float = 10.0
    lambda_min: float = 1.0
    angle: float = 0.0  # radians; rotation of the eigenbasis

    def __post_init__(self) -> None:
        if not (self.lambda_max >= self.lambda_min > 0):
            raise SpecError("landscape.lambda_min", "need lambda_max >= lambda_min > 0")

    @property
    def lr_threshold(self) -> float:
        """Plain GD diverges for lr > 2/lambda_max and converges below it."""
        return 2.0 / self.lambda_max

    @property
    def condition_number(self) -> float:
        return self.lambda_max / self.lambda_min

    def hessian(self) -> np.ndarray:
        c, s = math.cos(self.angle), math.sin(self.angle)
        R = np.array([[c, -s], [s, c]])
        return R @ np.diag([self.lambda_max, self.lambda_min]) @ R.T

    def _formula(self, x: Any, y: Any, xp: ModuleType) -> Any:
        (hxx, hxy), (_, hyy) = self.hessian()
        dx, dy = x - self.minimum[0], y - self.minimum[1]
        return 0.5 * (hxx * dx * dx + 2.0 * hxy * dx * dy + hyy * dy * dy) + self.f_min


@dataclass(frozen=True)
class IllConditionedQuadratic(Quadratic):
    """A long valley tilted by 30 degrees, condition number 100.

    GD zig-zags across it; Adam's per-coordinate scaling cannot undo the tilt.
    """

    name: str = "ill_conditioned"
    start: Point = (-2.0, 1.0)
    lambda_max: float = 10.0
    lambda_min: float = 0.1
    angle: float = math.pi / 6


@dataclass(frozen=True)
class EdgeOfStabilityQuadratic(Quadratic):
    """An axis-aligned quadratic with known curvature lambda_max = 10.

    Gradient descent with lr > lr_threshold = 2/lambda_max = 0.2 oscillates with growing
    amplitude along x (factor |1 - lr*lambda_max| > 1 per step); just below it converges.
    The place to show a guard catching a learning rate that is a little too large.

    The minimum sits at (10, 10), away from the origin: the default spec's update cap is
    relative to ‖θ‖, and a minimum at θ = 0 would shrink every allowed step with θ, so a
    guarded run there would crawl behind a healthy plain one.
    """

    name: str = "edge_of_stability"
    start: Point = (11.5, 11.5)
    window: Window = (7.0, 13.0, 7.0, 13.0)
    minimum: Point = (10.0, 10.0)
    lambda_max: float = 10.0
    lambda_min: float = 1.0
    angle: float = 0.0


@dataclass(frozen=True)
class RastriginLike(Landscape):
    """A bowl covered in ripples: f = |p|^2 + A sum(1 - cos(2 pi p)); local minima near every
    integer point, the global one (f = 0) at the origin."""

    name: str = "rastrigin"
    start: Point = (2.3, -1.7)
    window: Window = (-3.0, 3.0, -3.0, 3.0)
    amplitude: float = 2.0

    def _formula(self, x: Any, y: Any, xp: ModuleType) -> Any:
        two_pi = 2.0 * math.pi
        ripple = (1.0 - xp.cos(two_pi * x)) + (1.0 - xp.cos(two_pi * y))
        return x**2 + y**2 + self.amplitude * ripple


LANDSCAPES: dict[str, Landscape] = {
    land.name: land
    for land in (
        Rosenbrock(),
        IllConditionedQuadratic(),
        RastriginLike(),
        EdgeOfStabilityQuadratic(),
    )
}


def get_landscape(name: str, **overrides: Any) -> Landscape:
    """Look a landscape up by name, optionally changing fields (e.g. lambda_max=4.0)."""
    if name not in LANDSCAPES:
        raise SpecError("landscape", f"unknown landscape {name!r}; known: {sorted(LANDSCAPES)}")
    return LANDSCAPES[name].replace(**overrides) if overrides else LANDSCAPES[name]
