"""Scenarios: a whole comparison declared as data (`scenarios/*.yaml`).

    name: lr_stress
    model: {kind: gpt, n_layer: 4, n_head: 4, n_embd: 64, block_size: 64}
                                   # init: a checkpoint to start from (a fine-tune)
    data: {kind: synthetic, vocab_size: 65, order: 2, seed: 0}
    optimizer: {kind: adamw, lr: 1.0e-3, betas: [0.9, 0.95], weight_decay: 0.1}
    schedule: {warmup: 100, decay: constant}
    steps: 1000
    batch_size: 32
    seeds: 1                       # a count (0..n-1) or a list of seeds
    lrs: [1.0e-3, 3.16e-3, …]      # the LR grid (default: [optimizer.lr])
    faults: [{kind: lr_spike, factor: 10, at: 300, duration: 20}]
    guard: default                 # or lbw-v1, a spec path, or {spec: default, set: {path: value}}
    arms: [adamw, clip, zclip, skipstep, guard, adamw:cosine, adamw:lr_matched=3e-3]

An arm may carry its own schedule: `arm:cosine`, `arm:constant`, or `arm:lr_matched=LR`
(constant at LR whatever the grid LR is). Loading is `yaml.safe_load` plus validation in the
manner of guard specs: unknown keys are rejected and every SpecError names its field.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lbw_sim.checks import integer, load_yaml, number, read_config
from lbw_sim.errors import SpecError
from lbw_sim.guard.spec import GuardSpec

SCENARIO_DIR = Path(__file__).resolve().parents[2] / "scenarios"
MODEL_KINDS = ("gpt", "mlp", "landscape", "noisy_quadratic", "cnn", "rnn", "resmlp")
DATA_KINDS = ("synthetic", "text", "digits", "teacher", "none")
SCHEDULES = ("constant", "cosine")
ARM_NAMES = ("adamw", "plain", "clip", "zclip", "skipstep", "guard", "schedulefree",
             "stableadamw", "prodigy", "guard:schedulefree", "plateau")


@dataclass(frozen=True)
class DataSpec:
    kind: str = "synthetic"
    vocab_size: int = 65
    order: int = 1
    seed: int = 0
    n_train: int = 200_000
    n_val: int = 20_000
    path: str = ""
    val_fraction: float = 0.1
    shift: float = 0.0          # teacher: how far the teacher moves (a fine-tune's new task)


@dataclass(frozen=True)
class OptimizerSpec:
    kind: str = "adamw"
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.1
    eps: float = 1e-8
    momentum: float = 0.0


@dataclass(frozen=True)
class ScheduleSpec:
    """Linear warm-up over `warmup` steps, then constant or cosine down to `min_lr_ratio`."""

    warmup: int = 0
    decay: str = "constant"
    min_lr_ratio: float = 0.1

    def factor(self, step: int, total: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.decay == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup) / max(1, total - self.warmup))
        cos = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cos


@dataclass(frozen=True)
class ArmSpec:
    """One arm: `name` plus an optional schedule override (`lr` set for lr_matched).

    `lr_scales` (lr_matched only, set by the stress grid): a per-step multiplier replayed on
    top of the scenario's schedule, step k taking `lr_scales[min(k, len - 1)]`, instead of
    a constant `lr` after warm-up."""

    name: str
    schedule: str | None = None  # None: the scenario's; 'constant' | 'cosine' | 'lr_matched'
    lr: float | None = None
    lr_scales: tuple[float, ...] | None = None

    @property
    def label(self) -> str:
        if self.schedule == "lr_matched":
            return f"{self.name}:lr_matched={self.lr:g}"
        return f"{self.name}:{self.schedule}" if self.schedule else self.name

    @classmethod
    def parse(cls, item: Any, path: str) -> ArmSpec:
        if isinstance(item, dict):
            _known(path, item, {"arm", "schedule", "lr"})
            name, schedule, lr = item.get("arm"), item.get("schedule"), item.get("lr")
        elif isinstance(item, str) and item in ARM_NAMES:  # guard:schedulefree is one name
            name, schedule, lr = item, None, None
        elif isinstance(item, str):
            name, _, rest = item.partition(":")
            schedule, _, lr_text = rest.partition("=")
            schedule, lr = schedule or None, None
            if lr_text:
                try:
                    lr = float(lr_text)
                except ValueError:
                    raise SpecError(path, f"bad learning rate {lr_text!r}") from None
        else:
            raise SpecError(path, f"an arm is a name or a mapping, got {item!r}")
        if name not in ARM_NAMES:
            raise SpecError(path, f"unknown arm {name!r}; known: {', '.join(ARM_NAMES)}")
        if schedule not in (None, *SCHEDULES, "lr_matched"):
            raise SpecError(path, f"schedule must be constant, cosine or lr_matched=LR, "
                                  f"got {schedule!r}")
        if (schedule == "lr_matched") != (lr is not None):
            raise SpecError(path, "lr_matched needs an LR (adamw:lr_matched=3e-3) and only it")
        if lr is not None:
            lr = number(f"{path}.lr", lr, lo=1e-12)
        return cls(name, schedule, lr)


@dataclass(frozen=True)
class Scenario:
    """A validated scenario; build with `Scenario.from_dict`, `load_scenario` or `named`."""

    name: str
    model: dict[str, Any]
    data: DataSpec
    optimizer: OptimizerSpec
    schedule: ScheduleSpec
    steps: int
    batch_size: int
    seeds: tuple[int, ...]
    lrs: tuple[float, ...]
    arms: tuple[ArmSpec, ...]
    guard: GuardSpec
    faults: tuple[dict[str, Any], ...] = ()
    arm_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    eval_every: int = 100
    eval_batches: int = 8
    divergence_factor: float = 2.0
    stop_after_nonfinite: int = 50
    description: str = ""
    source: str = ""

    @property
    def model_kind(self) -> str:
        return self.model["kind"]

    def replace(self, **changes: Any) -> Scenario:
        return dataclasses.replace(self, **changes)

    def fault_schedule(self, n_classes: int | None = None):
        from lbw_sim.sim.faults import FaultSchedule

        return FaultSchedule.from_list(list(self.faults), n_classes)

    @classmethod
    def from_dict(cls, data: Any, base_dir: Path | None = None) -> Scenario:
        return _build(data, base_dir or Path.cwd())

    @classmethod
    def from_yaml(cls, text: str, base_dir: Path | None = None) -> Scenario:
        return cls.from_dict(load_yaml(text), base_dir)


def list_scenarios() -> list[str]:
    """Names of the scenarios shipped in `scenarios/`."""
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A shipped scenario by name (`lr_stress`) or a scenario file by path."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = SCENARIO_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise SpecError("scenario", f"no scenario named {str(name_or_path)!r}; "
                                        f"shipped: {', '.join(list_scenarios())}")
    text = read_config(path, "scenario", "a scenario")
    sc = Scenario.from_yaml(text, path.parent)
    return sc.replace(source=str(path))


# --- building and validation -------------------------------------------------------------------

TOP_KEYS = {"name", "description", "model", "data", "optimizer", "schedule", "steps",
            "batch_size", "seeds", "lrs", "arms", "arm_options", "guard", "faults",
            "eval_every", "eval_batches", "divergence"}


def _build(data: Any, base_dir: Path) -> Scenario:
    if not isinstance(data, dict):
        raise SpecError("", f"a scenario is a mapping, got {type(data).__name__}")
    _known("scenario", data, TOP_KEYS)
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise SpecError("name", "must be a non-empty string")
    model = _model(data.get("model"))
    dspec = _dataclass("data", data.get("data") or {"kind": "none"}, DataSpec)
    _check_data(dspec, model["kind"], base_dir)
    if dspec.kind == "text":
        dspec = dataclasses.replace(dspec, path=str((base_dir / dspec.path).resolve()))
    opt = _dataclass("optimizer", data.get("optimizer") or {}, OptimizerSpec)
    _check_optimizer(opt)
    sched = _dataclass("schedule", data.get("schedule") or {}, ScheduleSpec)
    _check_schedule(sched)
    steps = integer("steps", data.get("steps", 100), lo=1)
    batch = integer("batch_size", data.get("batch_size", 32), lo=1)
    seeds = _seeds(data.get("seeds", 1))
    lrs = _lrs(data.get("lrs"), opt.lr)
    arms = _arms(data.get("arms", ["adamw", "guard"]), opt.kind)
    options = _arm_options(data.get("arm_options") or {})
    guard = _guard(data.get("guard", "default"), base_dir)
    faults = _faults(data.get("faults") or [])
    div = data.get("divergence") or {}
    if not isinstance(div, dict):
        raise SpecError("divergence", "must be a mapping (factor, stop_after_nonfinite)")
    _known("divergence", div, {"factor", "stop_after_nonfinite"})
    return Scenario(
        name=name, description=str(data.get("description") or ""), model=model, data=dspec,
        optimizer=opt, schedule=sched, steps=steps, batch_size=batch, seeds=seeds, lrs=lrs,
        arms=arms, guard=guard, faults=faults, arm_options=options,
        eval_every=integer("eval_every", data.get("eval_every", 100), lo=1),
        eval_batches=integer("eval_batches", data.get("eval_batches", 8), lo=1),
        divergence_factor=number("divergence.factor", div.get("factor", 2.0), lo=1.0),
        stop_after_nonfinite=integer("divergence.stop_after_nonfinite",
                                      div.get("stop_after_nonfinite", 50), lo=1),
    )


def _model(data: Any) -> dict[str, Any]:
    """Validate a model block by building its config (cheap) so errors name the field."""
    if not isinstance(data, dict):
        raise SpecError("model", "must be a mapping with a 'kind'")
    kind = data.get("kind")
    if kind not in MODEL_KINDS:
        raise SpecError("model.kind", f"must be one of {', '.join(MODEL_KINDS)}, got {kind!r}")
    cfg = {k: v for k, v in data.items() if k not in ("kind", "init")}
    init = data.get("init")
    if init is not None and (kind in ("landscape", "noisy_quadratic") or not isinstance(init, str)
                             or not Path(init).is_file()):
        raise SpecError("model.init", f"a checkpoint file for a {kind} model, got {init!r}")
    init_block = {} if init is None else {"init": init}
    from lbw_sim.sim import models, problems

    if kind == "landscape":
        from lbw_sim.sim.landscapes import get_landscape

        land = {k: v for k, v in cfg.items() if k != "name"}
        for key in ("start", "window", "minimum"):
            if key in land and isinstance(land[key], list):
                land[key] = tuple(land[key])
        get_landscape(cfg.get("name", "rosenbrock"), **land)
        return {"kind": kind, **cfg}
    cls = {"gpt": models.GPTConfig, "mlp": models.MLPConfig,
           "noisy_quadratic": problems.NoisyQuadratic, "cnn": models.CNNConfig,
           "rnn": models.RNNConfig, "resmlp": models.ResMLPConfig}[kind]
    known = {f.name for f in dataclasses.fields(cls) if f.init} - {"vocab_size", "n_in",
                                                                   "n_classes"}
    _known("model", cfg, known)
    try:
        if kind in ("gpt", "rnn"):
            cls(vocab_size=2, **cfg)
        elif kind in ("mlp", "cnn", "resmlp"):
            cls(**cfg)
        else:
            cls(**{**cfg, "dim": min(int(cfg.get("dim", 2)), 2)})
    except TypeError as exc:
        raise SpecError("model", str(exc)) from None
    return {"kind": kind, **cfg, **init_block}


def _check_data(d: DataSpec, model: str, base_dir: Path) -> None:
    if d.kind not in DATA_KINDS:
        raise SpecError("data.kind", f"must be one of {', '.join(DATA_KINDS)}, got {d.kind!r}")
    needs = {"gpt": ("synthetic", "text"), "mlp": ("digits",), "rnn": ("synthetic", "text"),
             "cnn": ("digits",), "resmlp": ("teacher",),
             "landscape": ("none",), "noisy_quadratic": ("none",)}[model]
    if d.kind not in needs:
        raise SpecError("data.kind", f"model {model} trains on {' or '.join(needs)}, "
                                     f"not {d.kind!r}")
    for key in ("vocab_size", "order", "n_train", "n_val"):
        integer(f"data.{key}", getattr(d, key), lo=1)
    number("data.shift", d.shift, lo=0.0, hi=1.0)
    if d.shift and d.kind != "teacher":
        raise SpecError("data.shift", f"only a teacher moves; data {d.kind!r} has no shift")
    if d.kind == "text" and (not d.path or not (base_dir / d.path).is_file()):
        raise SpecError("data.path", f"no text file {d.path!r} (relative to the scenario)")


def _check_optimizer(o: OptimizerSpec) -> None:
    if o.kind not in ("adamw", "sgd"):
        raise SpecError("optimizer.kind", f"must be adamw or sgd, got {o.kind!r}")
    number("optimizer.lr", o.lr, lo=1e-12)
    if not (isinstance(o.betas, (list, tuple)) and len(o.betas) == 2):
        raise SpecError("optimizer.betas", f"must be two numbers, got {o.betas!r}")
    for b in o.betas:
        number("optimizer.betas", b, lo=0.0, hi=0.999999)
    number("optimizer.weight_decay", o.weight_decay, lo=0.0)
    number("optimizer.eps", o.eps, lo=0.0)
    number("optimizer.momentum", o.momentum, lo=0.0, hi=1.0)


def _check_schedule(s: ScheduleSpec) -> None:
    integer("schedule.warmup", s.warmup)
    if s.decay not in SCHEDULES:
        raise SpecError("schedule.decay", f"must be constant or cosine, got {s.decay!r}")
    number("schedule.min_lr_ratio", s.min_lr_ratio, lo=0.0, hi=1.0)


def _seeds(value: Any) -> tuple[int, ...]:
    if isinstance(value, list):
        if not value:
            raise SpecError("seeds", "needs at least one seed")
        return tuple(integer(f"seeds[{i}]", s) for i, s in enumerate(value))
    return tuple(range(integer("seeds", value, lo=1)))


def _lrs(value: Any, default: float) -> tuple[float, ...]:
    if value is None:
        return (default,)
    if not isinstance(value, list) or not value:
        raise SpecError("lrs", "must be a non-empty list of learning rates")
    return tuple(number(f"lrs[{i}]", v, lo=1e-12) for i, v in enumerate(value))


def _arms(value: Any, optimizer: str) -> tuple[ArmSpec, ...]:
    if not isinstance(value, list) or not value:
        raise SpecError("arms", "must be a non-empty list of arms")
    arms = tuple(ArmSpec.parse(a, f"arms[{i}]") for i, a in enumerate(value))
    labels = [a.label for a in arms]
    for i, a in enumerate(arms):
        if a.label in labels[:i]:
            raise SpecError(f"arms[{i}]", f"arm {a.label!r} is listed twice")
        if a.name == "skipstep" and optimizer != "adamw":
            raise SpecError(f"arms[{i}]", "skipstep is an AdamW variant; optimizer.kind is "
                                          f"{optimizer}")
    return arms


def _arm_options(value: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(value, dict):
        raise SpecError("arm_options", "must be a mapping arm -> options")
    for arm, opts in value.items():
        if arm not in ARM_NAMES:
            raise SpecError(f"arm_options.{arm}", f"unknown arm; known: {', '.join(ARM_NAMES)}")
        if not isinstance(opts, dict):
            raise SpecError(f"arm_options.{arm}", "must be a mapping of options")
    return {k: dict(v) for k, v in value.items()}


def _guard(value: Any, base_dir: Path) -> GuardSpec:
    """`default`, a spec path (relative to the scenario), or {spec: …, set: {path: value}}."""
    overrides: dict[str, Any] = {}
    if isinstance(value, dict):
        _known("guard", value, {"spec", "set"})
        overrides = value.get("set") or {}
        if not isinstance(overrides, dict):
            raise SpecError("guard.set", "must be a mapping of dotted spec paths to values")
        value = value.get("spec", "default")
    if not isinstance(value, str):
        raise SpecError("guard", "must be 'default', a spec path, or {spec:, set:}")
    try:
        spec = GuardSpec.resolve(value, base_dir)
        return spec.with_values(overrides) if overrides else spec
    except SpecError as err:
        raise SpecError(f"guard.{err.field}" if err.field else "guard", err.problem) from None


def _faults(value: Any) -> tuple[dict[str, Any], ...]:
    from lbw_sim.sim.faults import FaultSchedule

    FaultSchedule.from_list(value)  # validates; errors name faults[i].field
    return tuple(dict(f) for f in value)


def _dataclass(path: str, data: Any, cls: type) -> Any:
    if not isinstance(data, dict):
        raise SpecError(path, f"must be a mapping, got {type(data).__name__}")
    _known(path, data, {f.name for f in dataclasses.fields(cls)})
    kw = dict(data)
    if "betas" in kw and isinstance(kw["betas"], list):
        kw["betas"] = tuple(kw["betas"])
    for f in dataclasses.fields(cls):
        if f.name in kw and f.type in ("int", "float"):
            kw[f.name] = (integer if f.type == "int" else number)(f"{path}.{f.name}", kw[f.name])
        elif f.name in kw and f.type == "str" and not isinstance(kw[f.name], str):
            raise SpecError(f"{path}.{f.name}", f"must be a string, got {kw[f.name]!r}")
    return cls(**kw)


def _known(path: str, data: dict, known: set[str]) -> None:
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        where = "" if path == "scenario" else f"{path}."
        raise SpecError(f"{where}{unknown[0]}",
                        f"unknown key (known: {', '.join(sorted(known))})")


