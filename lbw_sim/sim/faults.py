"""Declarative faults injected into a training run at given steps.

A scenario lists faults as plain dicts,

    - {kind: lr_spike, factor: 10, at: 300, duration: 20}
    - {kind: grad_noise, scale: 5.0, steps: [500, 501, 502]}
    - {kind: corrupt_batch, mode: random_tokens, at: 700}
    - {kind: nonfinite, target: grads, value: nan, at: 900}
    - {kind: loss_scale_overflow, at: 1100, duration: 3}
    - {kind: grad_noise, scale: 10.0, tail_dof: 3, at: 1300, duration: 10}   # heavy-tailed
    - {kind: poison, factor: 1.0e4, at: 1500}          # one gradient x1e4
    - {kind: shift, fraction: 0.25, at: 1700, duration: 100000}   # lasting noisier data

and a `FaultSchedule` built from them answers, in O(1) per step, what the runner should
do at each point of its loop:

    x, y = sched.corrupt_batch(x, y, step, gen)        # after fetching the batch
    loss = sched.perturb_loss(model(x, y)[1], step)    # before backward
    loss.backward()
    sched.perturb_grads(model.parameters(), step, gen)  # before the optimizer step
    lr = base_lr * sched.lr_factor(step)

All tensor work stays on the tensors' device; nothing reads a value back to the host.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from lbw_sim.errors import SpecError

MAX_FAULT_STEPS = 10_000_000


@dataclass(frozen=True)
class Fault:
    """Base class: the steps (optimizer step indices) at which the fault is active."""

    steps: tuple[int, ...]
    kind: ClassVar[str] = "fault"

    def to_dict(self) -> dict[str, Any]:
        d = {"kind": self.kind, **dataclasses.asdict(self)}
        d["steps"] = list(self.steps)
        return d

    @staticmethod
    def from_dict(d: Mapping[str, Any], field: str = "fault") -> Fault:
        """Build the right Fault subclass from a dict; every problem names its field."""
        if not isinstance(d, Mapping):
            raise SpecError(field, f"expected a mapping, got {type(d).__name__}")
        kind = d.get("kind")
        if kind not in FAULT_KINDS:
            known = sorted(FAULT_KINDS)
            raise SpecError(f"{field}.kind", f"unknown fault {kind!r}; known: {known}")
        cls = FAULT_KINDS[kind]
        names = {f.name for f in dataclasses.fields(cls)} - {"steps"}
        unknown = set(d) - names - {"kind", "steps", "at", "duration"}
        if unknown:
            raise SpecError(f"{field}.{sorted(unknown)[0]}", f"not a field of {kind}")
        kwargs = {k: d[k] for k in names if k in d}
        steps = _parse_steps(d, field)
        try:
            return cls(steps=steps, **kwargs)
        except SpecError as err:  # re-anchor "fault.x" at this fault's place in the spec
            raise SpecError(field + err.field.removeprefix("fault"), err.problem) from None

    def __post_init__(self) -> None:
        steps = self.steps
        if isinstance(steps, (int, str)) or not all(_is_int(s) and s >= 0 for s in steps):
            raise SpecError("fault.steps", f"must be integers >= 0, got {steps!r}")
        object.__setattr__(self, "steps", tuple(sorted(set(steps))))
        self._checked("fault")

    def _checked(self, field: str) -> None:
        """Subclasses validate their own fields here, naming them as `field.name`."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _parse_steps(d: Mapping[str, Any], field: str) -> tuple[int, ...]:
    """`steps: [..]` or `at: N` with an optional `duration: K` (steps N .. N+K-1)."""
    if "steps" in d and "at" in d:
        raise SpecError(f"{field}.steps", "give either 'steps' or 'at' (+ 'duration'), not both")
    if "steps" in d:
        steps = d["steps"]
        if not isinstance(steps, Sequence) or isinstance(steps, str) or not steps:
            raise SpecError(f"{field}.steps", "must be a non-empty list of step numbers")
        if len(steps) > MAX_FAULT_STEPS:
            raise SpecError(f"{field}.steps", f"more than {MAX_FAULT_STEPS} steps")
        for s in steps:
            if not _is_int(s) or s < 0:
                raise SpecError(f"{field}.steps", f"step numbers must be integers >= 0, got {s!r}")
        return tuple(sorted(set(steps)))
    if "at" not in d:
        raise SpecError(f"{field}.at", "say when: 'at' (with optional 'duration') or 'steps'")
    at, duration = d["at"], d.get("duration", 1)
    if not _is_int(at) or at < 0:
        raise SpecError(f"{field}.at", f"must be an integer >= 0, got {at!r}")
    if not _is_int(duration) or not 1 <= duration <= MAX_FAULT_STEPS:
        raise SpecError(f"{field}.duration", f"must be an integer in [1, 1e7], got {duration!r}")
    return tuple(range(at, at + duration))


def _positive(value: Any, field: str, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise SpecError(field, f"must be a finite number {bound}, got {value!r}")


def _choice(value: Any, options: tuple[str, ...], field: str) -> None:
    if value not in options:
        raise SpecError(field, f"must be one of {options}, got {value!r}")


def _fraction(value: Any, field: str) -> None:
    _positive(value, field)
    if value > 1:
        raise SpecError(field, f"must be in (0, 1], got {value!r}")


@dataclass(frozen=True)
class LRSpike(Fault):
    """Multiply the learning rate by `factor` (a bad schedule, a typo, a warm restart)."""

    factor: float = 10.0
    kind: ClassVar[str] = "lr_spike"

    def _checked(self, field: str) -> None:
        _positive(self.factor, f"{field}.factor")


@dataclass(frozen=True)
class GradNoise(Fault):
    """Add noise to every gradient: std = scale * rms(grad) per tensor if `relative` (a burst
    of unusually noisy batches, so the noise's norm is about `scale` x the gradient's), else
    std = scale. Gaussian, or with `tail_dof` = k >= 3 Student-t with k degrees of freedom
    (heavy-tailed: rare huge elements), rescaled to the same std."""

    scale: float = 5.0
    relative: bool = True
    tail_dof: int = 0
    kind: ClassVar[str] = "grad_noise"

    def _checked(self, field: str) -> None:
        _positive(self.scale, f"{field}.scale", allow_zero=True)
        if not isinstance(self.relative, bool):
            raise SpecError(f"{field}.relative", f"must be true or false, got {self.relative!r}")
        if not _is_int(self.tail_dof) or self.tail_dof in (1, 2) or not 0 <= self.tail_dof <= 100:
            raise SpecError(f"{field}.tail_dof", "must be 0 (Gaussian) or an integer in "
                                                 f"[3, 100], got {self.tail_dof!r}")


@dataclass(frozen=True)
class CorruptBatch(Fault):
    """Corrupt a `fraction` of the batch's rows: `random_tokens` replaces inputs and targets
    with uniform noise (tokens, or Gaussian features for float inputs); `flip_labels` keeps
    the inputs and moves every target to a different, random class."""

    mode: str = "random_tokens"
    fraction: float = 1.0
    kind: ClassVar[str] = "corrupt_batch"
    MODES: ClassVar[tuple[str, ...]] = ("random_tokens", "flip_labels")

    def _checked(self, field: str) -> None:
        _choice(self.mode, self.MODES, f"{field}.mode")
        _fraction(self.fraction, f"{field}.fraction")


@dataclass(frozen=True)
class Shift(CorruptBatch):
    """A lasting shift to harder data: from `at` on, a `fraction` of every batch's rows is
    noise (as `corrupt_batch`). Not a fault to ride out: the loss level moves for good, and a
    guard should adapt to it without a lasting LR cut. Give a `duration` past the run's end."""

    fraction: float = 0.25
    kind: ClassVar[str] = "shift"


@dataclass(frozen=True)
class Poison(Fault):
    """Multiply every gradient by `factor` (one poisoned step that would send the weights far
    away: a bad sample with a huge loss, a bit flip in a reduction)."""

    factor: float = 1.0e4
    kind: ClassVar[str] = "poison"

    def _checked(self, field: str) -> None:
        _positive(self.factor, f"{field}.factor")


@dataclass(frozen=True)
class NonFinite(Fault):
    """Inject NaN/inf. target=loss: the loss is multiplied by `value` (as after a forward
    overflow), so the gradients turn non-finite too. target=grads: a `fraction` of the
    gradient elements is set to `value`."""

    target: str = "grads"
    value: str = "nan"
    fraction: float = 1.0
    kind: ClassVar[str] = "nonfinite"
    VALUES: ClassVar[dict[str, float]] = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}

    def _checked(self, field: str) -> None:
        _choice(self.target, ("loss", "grads"), f"{field}.target")
        _choice(self.value, tuple(self.VALUES), f"{field}.value")
        _fraction(self.fraction, f"{field}.fraction")

    @property
    def number(self) -> float:
        return self.VALUES[self.value]


@dataclass(frozen=True)
class LossScaleOverflow(Fault):
    """An fp16 loss-scale overflow: the loss stays finite but every gradient is +inf
    (what a GradScaler would find on unscaling; it would then skip the step)."""

    kind: ClassVar[str] = "loss_scale_overflow"


FAULT_KINDS: dict[str, type[Fault]] = {
    cls.kind: cls for cls in (LRSpike, GradNoise, CorruptBatch, NonFinite, LossScaleOverflow,
                              Shift, Poison)
}


class FaultSchedule:
    """Faults indexed by step, with the hooks a training loop calls (O(1) lookups per step).

    `n_classes` (vocabulary size or number of labels) is what corrupted batches draw from;
    give it, or it is read off the batch (a device sync, only at corruption steps).
    """

    def __init__(self, faults: Iterable[Fault] = (), n_classes: int | None = None):
        self.faults = tuple(faults)
        self.n_classes = n_classes
        self.by_step: dict[int, tuple[Fault, ...]] = {}
        for fault in self.faults:
            for step in fault.steps:
                self.by_step[step] = (*self.by_step.get(step, ()), fault)
        self._lr = {s: float(math.prod(f.factor for f in fs))
                    for s, fs in self._select(lambda f: isinstance(f, LRSpike)).items()}
        self._batch = self._select(lambda f: isinstance(f, CorruptBatch))
        self._loss = self._select(lambda f: isinstance(f, NonFinite) and f.target == "loss")
        self._grads = self._select(_acts_on_grads)

    def _select(self, keep: Callable[[Fault], bool]) -> dict[int, tuple[Any, ...]]:
        """step -> the faults of that step for which `keep` holds (steps with none left out)."""
        out: dict[int, tuple[Any, ...]] = {}
        for step, faults in self.by_step.items():
            if chosen := tuple(f for f in faults if keep(f)):
                out[step] = chosen
        return out

    @classmethod
    def from_list(
        cls, items: Sequence[Mapping[str, Any]] | None, n_classes: int | None = None,
        field: str = "faults",
    ) -> FaultSchedule:
        """From a scenario's list of fault dicts; errors name e.g. `faults[2].factor`."""
        if items is None:
            return cls((), n_classes)
        if not isinstance(items, Sequence) or isinstance(items, (str, bytes)):
            raise SpecError(field, f"expected a list of faults, got {type(items).__name__}")
        return cls([Fault.from_dict(d, f"{field}[{i}]") for i, d in enumerate(items)], n_classes)

    def to_list(self) -> list[dict[str, Any]]:
        return [f.to_dict() for f in self.faults]

    def __len__(self) -> int:
        return len(self.faults)

    def active(self, step: int) -> tuple[Fault, ...]:
        return self.by_step.get(step, ())

    def label(self, step: int) -> str:
        """Comma-separated kinds active at `step` ('' if none): ground truth for detection."""
        return ",".join(f.kind for f in self.active(step))

    @property
    def fault_steps(self) -> list[int]:
        return sorted(self.by_step)

    def lr_factor(self, step: int) -> float:
        """Multiplier on the scheduled LR at `step` (1.0 when no spike is active)."""
        return self._lr.get(step, 1.0)

    def corrupt_batch(
        self, x: torch.Tensor, y: torch.Tensor, step: int, rng: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch to train on at `step`: new tensors if corrupted, else x and y untouched."""
        for fault in self._batch.get(step, ()):
            x, y = _corrupt(fault, x, y, self.n_classes or int(y.max()) + 1, rng)
        return x, y

    def perturb_loss(self, loss: torch.Tensor, step: int) -> torch.Tensor:
        """The loss to backpropagate at `step` (non-finite if a loss fault is active)."""
        for fault in self._loss.get(step, ()):
            loss = loss * fault.number
        return loss

    def perturb_grads(
        self, params: Iterable[torch.Tensor], step: int, gen: torch.Generator | None = None
    ) -> None:
        """Apply the gradient faults of `step` in place on `p.grad` (no-op at other steps)."""
        faults = self._grads.get(step)
        if not faults:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        for fault in faults:
            if isinstance(fault, GradNoise):
                _add_noise(grads, fault, gen)
            elif isinstance(fault, LossScaleOverflow):
                torch._foreach_add_(grads, math.inf)
            elif isinstance(fault, Poison):
                torch._foreach_mul_(grads, fault.factor)
            else:
                _fill_nonfinite(grads, fault, gen)


def _acts_on_grads(f: Fault) -> bool:
    return isinstance(f, (GradNoise, LossScaleOverflow, Poison)) or (
        isinstance(f, NonFinite) and f.target == "grads"
    )


def _rand(shape: Sequence[int], like: torch.Tensor, gen: torch.Generator | None,
          normal: bool = False) -> torch.Tensor:
    """Uniform [0, 1) (or standard normal) numbers from `gen`, delivered on `like`'s device."""
    device = gen.device if gen is not None else like.device
    draw = torch.randn if normal else torch.rand
    out = draw(tuple(shape), generator=gen, device=device, dtype=torch.float32)
    return out.to(like.device, non_blocking=True)


def _add_noise(grads: list[torch.Tensor], fault: GradNoise, gen: torch.Generator | None) -> None:
    noise = [_noise(g, fault.tail_dof, gen) for g in grads]
    if fault.relative:  # std = scale * ||g|| / sqrt(numel) = scale * rms(g), per tensor
        std = torch._foreach_norm(grads)
        torch._foreach_mul_(std, [fault.scale / math.sqrt(max(g.numel(), 1)) for g in grads])
        torch._foreach_addcmul_(grads, noise, std)
    else:
        torch._foreach_add_(grads, noise, alpha=fault.scale)


def _noise(like: torch.Tensor, dof: int, gen: torch.Generator | None) -> torch.Tensor:
    """Unit-variance noise shaped like `like`: Gaussian (dof 0) or Student-t with `dof`
    degrees of freedom, z / sqrt(chi2_k / k), divided by its std sqrt(k / (k - 2))."""
    z = _rand(like.shape, like, gen, normal=True)
    if dof:
        chi2 = sum(_rand(like.shape, like, gen, normal=True).square() for _ in range(dof))
        z = z * torch.rsqrt(chi2 / dof) * math.sqrt((dof - 2) / dof)
    return z.to(like.dtype)


def _fill_nonfinite(grads: list[torch.Tensor], fault: NonFinite, gen: torch.Generator | None):
    if fault.fraction >= 1.0:  # finite + nan = nan, finite + inf = inf: every element hit
        torch._foreach_add_(grads, fault.number)
        return
    for g in grads:
        g.masked_fill_(_rand(g.shape, g, gen) < fault.fraction, fault.number)


def _corrupt(
    fault: CorruptBatch, x: torch.Tensor, y: torch.Tensor, n_classes: int,
    gen: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Corrupt the first ceil(fraction * B) rows of a random permutation of the batch."""
    n_rows = math.ceil(fault.fraction * len(y))
    rows = torch.argsort(_rand((len(y),), y, gen))[:n_rows]
    x, y = x.clone(), y.clone()
    if fault.mode == "random_tokens":
        if x.is_floating_point():
            x[rows] = _rand(x[rows].shape, x, gen, normal=True).to(x.dtype) * x.std()
        else:
            x[rows] = (_rand(x[rows].shape, x, gen) * n_classes).long().clamp_(max=n_classes - 1)
        y[rows] = (_rand(y[rows].shape, y, gen) * n_classes).long().clamp_(max=n_classes - 1)
    else:  # flip_labels: shift each target by 1 .. n_classes-1, so it always changes
        shift = 1 + (_rand(y[rows].shape, y, gen) * (n_classes - 1)).long()
        y[rows] = (y[rows] + shift.clamp_(max=n_classes - 1)) % n_classes
    return x, y
