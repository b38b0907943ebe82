"""GuardSpec: the guard as data — signals, thresholds, regimes, transitions and bounds.

A spec round-trips through YAML and JSON exactly, is validated with messages that name the
field (`transitions.spike.when: unknown name 'grad_zz'`), carries a name and a content
hash, and can be diffed against another. Nothing here runs a model or imports torch.

The validator is the contract: what it accepts runs in every backend without an exception
(names are identifiers, whole numbers within `MAX_COUNT` & co., no transition that could
never fire, no exit stuck at rest; docs/guard.md, "The spec contract", lists the rules and
tests/test_spec_contract.py holds them as a property).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from lbw_sim.checks import integer, load_yaml, number, read_config
from lbw_sim.errors import SpecError
from lbw_sim.guard import conditions
from lbw_sim.traces.schema import GUARD_COLUMNS, SIGNAL_SOURCES

SIGNAL_KINDS = ("ema", "ema_z", "ratio", "slope", "robust_z", "ref_ratio", "above_best",
                "nonfinite")
#: The settings each kind reads (beside kind, source, description); any other is refused.
KIND_PARAMS: dict[str, tuple[str, ...]] = {
    "ema": ("half_life", "warmup"),
    "ema_z": ("half_life", "warmup", "clip", "floor"),
    "ratio": ("half_life", "warmup", "clip", "floor"),
    "slope": ("half_life", "warmup"),
    "robust_z": ("half_life", "warmup", "clip", "floor"),
    "ref_ratio": ("half_life", "warmup", "floor", "per"),
    "above_best": ("half_life", "warmup", "floor"),
    "nonfinite": (),
}
_SIGNAL_DEFAULTS = {"half_life": 50.0, "warmup": 0, "clip": None, "floor": 0.01, "per": ""}
#: Columns a ref_ratio may be taken per unit of.
PER_COLUMNS = ("lr",)
#: Telemetry columns a signal may read (declared with the trace schema).
TELEMETRY = SIGNAL_SOURCES
#: Trace columns a signal may not be named as (its own column would overwrite them)
TRACE_NAMES = ("step", *TELEMETRY, "wall_time", *GUARD_COLUMNS)
ANY = "*"
MAX_SPEC_BYTES = 1_000_000
#: The largest step count a spec may give (`for`, `min_dwell`, `warmup`, `half_life`,
#: `skip_batches`, `max_consecutive_skips`, `max_rollbacks`, `snapshot_every`): 1e9 steps is
#: beyond any run, and keeps every count exact in the engine's int64 and float64 tables.
MAX_COUNT = 10**9
#: `bounds.skip_window` is a ring buffer of that many steps in every backend.
MAX_WINDOW = 10**6
#: Priorities order transitions; |priority| <= this.
MAX_PRIORITY = 10**6
#: At most this many regimes and transitions (the walk's outputs index them as int16).
MAX_ITEMS = 1000
_HEX_COLOR = re.compile(r"#[0-9a-fA-F]{6}")


@dataclass(frozen=True)
class SignalSpec:
    """A causal estimator over one telemetry column; half-life and warm-up are in steps."""

    kind: str
    source: str | tuple[str, ...] = "loss"
    half_life: float = 50.0
    warmup: int = 0
    clip: float | None = None
    floor: float = 0.01
    #: ref_ratio only: a telemetry column the source is divided by (`lr`: per unit of LR)
    per: str = ""
    description: str = ""


@dataclass(frozen=True)
class RegimeSpec:
    """A named state and the bounded control it applies while the guard is in it."""

    lr_scale: float = 1.0
    skip: bool = False
    momentum_scale: float = 1.0
    update_cap: float | None = None
    rollback: bool = False
    skip_batches: int = 0
    stop: bool = False
    reason: str = ""
    description: str = ""
    #: how the studio draws it (a CSS hex colour, `#rrggbb`); empty: read off the controls
    color: str = ""


@dataclass(frozen=True)
class TransitionSpec:
    """from -> to when `when` has held for `for_` observations and `min_dwell` steps passed."""

    name: str
    source: tuple[str, ...]
    to: str
    when: str
    for_: int = 1
    min_dwell: int = 0
    priority: int = 0
    description: str = ""


@dataclass(frozen=True)
class Bounds:
    """Hard limits no regime can exceed: the guard's autonomy is bounded."""

    lr_scale_min: float = 0.05
    lr_scale_max: float = 1.0
    lr_slew_down: float = 0.5
    lr_slew_up: float = 1.25
    max_consecutive_skips: int = 5
    max_skip_fraction: float = 0.1
    skip_window: int = 200
    max_rollbacks: int = 3
    snapshot_every: int = 100


@dataclass(frozen=True)
class GuardSpec:
    """A complete, validated guard design. Build with `from_dict`/`from_yaml`/`default`."""

    name: str
    signals: dict[str, SignalSpec]
    regimes: dict[str, RegimeSpec]
    initial: str
    transitions: tuple[TransitionSpec, ...]
    thresholds: dict[str, float] = field(default_factory=dict)
    bounds: Bounds = field(default_factory=Bounds)
    description: str = ""

    # --- construction -------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any) -> GuardSpec:
        spec = _build(data)
        validate(spec)
        return spec

    @classmethod
    def from_yaml(cls, text: str) -> GuardSpec:
        return cls.from_dict(load_yaml(text))

    @classmethod
    def from_json(cls, text: str) -> GuardSpec:
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise SpecError("", f"not valid JSON: {exc}") from None
        return cls.from_dict(data)

    @classmethod
    def from_text(cls, data: str | bytes, name: str = "spec.yaml") -> GuardSpec:
        """A spec from a file's contents (an upload, pasted text): JSON when `name` ends in
        .json, else YAML. Over 1 MB or not UTF-8 is a SpecError like any malformed spec."""
        if len(data) > MAX_SPEC_BYTES:
            raise SpecError("", f"larger than {MAX_SPEC_BYTES // 1_000_000} MB, not a guard spec")
        if isinstance(data, bytes):
            try:
                data = data.decode("utf-8")
            except UnicodeDecodeError:
                raise SpecError("", "not UTF-8 text") from None
        return cls.from_json(data) if name.lower().endswith(".json") else cls.from_yaml(data)

    @classmethod
    def load(cls, path: str | Path) -> GuardSpec:
        """Read a spec file (.yaml/.yml/.json); a missing or huge file is a SpecError."""
        path = Path(path)
        return cls.from_text(read_config(path, "", "a guard spec", MAX_SPEC_BYTES), path.name)

    @classmethod
    def default(cls) -> GuardSpec:
        """The shipped default spec (`DEFAULT_SPEC`, the one the stress suite uses)."""
        return cls.named(DEFAULT_SPEC)

    @classmethod
    def named(cls, name: str) -> GuardSpec:
        """A shipped spec by name, one of `lbw_sim/guard/specs/`: `lbw-adaptive` (robust
        z-scores, no per-task constant; the default) and `lbw-v1` (the one-way ratchet that
        was the default before, under the name its figures were measured with, docs/guard.md);
        `lbw-default` names whichever is the default (`DEFAULT_SPEC`)."""
        if name == DEFAULT_ALIAS:
            name = DEFAULT_SPEC
        known = named_specs()
        if name not in known:
            raise SpecError("spec", f"no shipped spec named {name!r} (known: {DEFAULT_ALIAS}, "
                                    f"{', '.join(known)})")
        return cls.from_yaml(known[name].read_text())

    @classmethod
    def resolve(cls, value: str, base_dir: str | Path | None = None) -> GuardSpec:
        """`default`, a shipped name (`lbw-v1`, `lbw-adaptive`, …) or a spec file (relative
        to `base_dir`): the one reading of a `--spec` option or a scenario's `guard:` key."""
        if value == "default":
            return cls.default()
        if cls.is_named(value):
            return cls.named(value)
        return cls.load(Path(base_dir or ".") / value)

    @staticmethod
    def is_named(value: str) -> bool:
        """Whether `value` names a shipped spec (rather than a file)."""
        return value == DEFAULT_ALIAS or value in NAMED_SPECS

    # --- serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "signals": {k: _signal_dict(s) for k, s in self.signals.items()},
            "thresholds": dict(self.thresholds),
            "regimes": {k: _regime_dict(r) for k, r in self.regimes.items()},
            "initial": self.initial,
            "transitions": [_transition_dict(t) for t in self.transitions],
            "bounds": asdict(self.bounds),
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, width=100)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @functools.cached_property
    def hash(self) -> str:
        """Content hash (12 hex digits) of everything that changes behaviour (not the
        description, not the regimes' colours)."""
        data = self.to_dict()
        data.pop("description")
        for regime in data["regimes"].values():
            regime.pop("color", None)
        blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    # --- editing ------------------------------------------------------------------------
    def flat(self) -> dict[str, Any]:
        """Every setting by dotted path: `thresholds.grad_hi`, `transitions.spike.for` …"""
        return _flatten(self.to_dict())

    def with_values(self, values: dict[str, Any]) -> GuardSpec:
        """A new validated spec with settings replaced by dotted path."""
        data = self.to_dict()
        for path, value in values.items():
            _set_path(data, path, value)
        return GuardSpec.from_dict(data)

    def diff(self, other: GuardSpec) -> list[tuple[str, Any, Any]]:
        """(path, self's value, other's value) for every setting that differs."""
        a, b = self.flat(), other.flat()
        return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]

    def warnings(self) -> list[str]:
        """Legal but noteworthy settings, e.g. a regime LR the bounds will clamp."""
        b, out = self.bounds, []
        for name, regime in self.regimes.items():
            if not b.lr_scale_min <= regime.lr_scale <= b.lr_scale_max:
                out.append(f"regimes.{name}.lr_scale: {regime.lr_scale:g} is clamped to bounds "
                           f"[{b.lr_scale_min:g}, {b.lr_scale_max:g}]")
        return out

    def renamed(self, name: str) -> GuardSpec:
        return replace(self, name=name)


# --- building from plain data ---------------------------------------------------------------

def _build(data: Any) -> GuardSpec:
    if not isinstance(data, dict):
        raise SpecError("", f"a guard spec is a mapping, got {type(data).__name__}")
    _known_keys("", data, {"name", "description", "signals", "thresholds", "regimes",
                           "initial", "transitions", "bounds", "version"})
    name = data.get("name", "unnamed")
    if not isinstance(name, str) or not name.strip():
        raise SpecError("name", "must be a non-empty string")
    signals = {k: _signal(f"signals.{k}", v) for k, v in _mapping("signals", data).items()}
    thresholds = {k: number(f"thresholds.{k}", v)
                  for k, v in _mapping("thresholds", data, required=False).items()}
    regimes = {k: _regime(f"regimes.{k}", v) for k, v in _mapping("regimes", data).items()}
    if len(regimes) > MAX_ITEMS:
        raise SpecError("regimes", f"{len(regimes)} regimes (at most {MAX_ITEMS})")
    initial = data.get("initial")
    if initial is None:
        raise SpecError("initial", "no initial regime given")
    initial = _text("initial", initial)
    transitions = data.get("transitions", [])
    if not isinstance(transitions, list):
        raise SpecError("transitions", "must be a list of transitions")
    if len(transitions) > MAX_ITEMS:
        raise SpecError("transitions", f"{len(transitions)} transitions (at most {MAX_ITEMS})")
    trans = _named_transitions([_transition(i, t) for i, t in enumerate(transitions)])
    bounds = _bounds(data.get("bounds") or {})
    return GuardSpec(name=name, description=_text("description", data.get("description")),
                     signals=signals, regimes=regimes, initial=initial, transitions=trans,
                     thresholds=thresholds, bounds=bounds)


def _text(path: str, value: Any) -> str:
    """A string setting (None is ""); anything else is a SpecError, not a crash later."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise SpecError(path, f"must be a string, got {type(value).__name__}")
    return value


def _mapping(key: str, data: dict, required: bool = True) -> dict:
    value = data.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, dict) or (required and not value):
        raise SpecError(key, "must be a non-empty mapping of name -> settings")
    for name in value:
        if not conditions.is_name(name):
            raise SpecError(f"{key}.{name}", NAME_RULE)
    return value


#: Shipped specs: short name -> file in lbw_sim/guard/specs/.
NAMED_SPECS = {"lbw-v1": "lbw-v1-ratchet.yaml", "lbw-adaptive": "lbw-adaptive.yaml",
               "lbw-active": "lbw-active.yaml"}
#: The shipped default (`GuardSpec.default()`), one of NAMED_SPECS.
DEFAULT_SPEC = "lbw-adaptive"
#: The name that always means the default, whichever spec that is.
DEFAULT_ALIAS = "lbw-default"


def named_specs() -> dict[str, Any]:
    """The shipped example specs by short name (their files as importlib resources)."""
    folder = resources.files("lbw_sim.guard").joinpath("specs")
    return {name: folder.joinpath(file) for name, file in NAMED_SPECS.items()}


NAME_RULE = ("names must be identifiers (ASCII letters, digits and _, not starting with a "
             "digit, not and/or/not)")


def _known_keys(path: str, data: dict, known: set[str]) -> None:
    unknown = [k for k in data if k not in known]
    if unknown:
        where = path or "spec"
        raise SpecError(where, f"unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")


def _settings(path: str, data: Any, cls: type, renames: dict[str, str] | None = None) -> dict:
    if not isinstance(data, dict):
        raise SpecError(path, f"must be a mapping, got {type(data).__name__}")
    renames = renames or {}
    known = {renames.get(f.name, f.name) for f in fields(cls)}
    _known_keys(path, data, known)
    inverse = {v: k for k, v in renames.items()}
    return {inverse.get(k, k): v for k, v in data.items()}


def _signal(path: str, data: Any) -> SignalSpec:
    kw = _settings(path, data, SignalSpec)
    if kw.get("kind") not in SIGNAL_KINDS:
        raise SpecError(f"{path}.kind", f"must be one of {', '.join(SIGNAL_KINDS)}, "
                                        f"got {kw.get('kind')!r}")
    source = kw.get("source", "loss")
    sources = (source,) if isinstance(source, str) else source
    if not isinstance(sources, (list, tuple)) or not sources:
        raise SpecError(f"{path}.source", "must be a telemetry column name or a list of them")
    for s in sources:
        if s not in TELEMETRY:
            raise SpecError(f"{path}.source", f"unknown telemetry column {s!r} "
                                              f"(known: {', '.join(TELEMETRY)})")
    if kw["kind"] != "nonfinite" and len(sources) != 1:
        raise SpecError(f"{path}.source", "only a nonfinite signal reads several columns")
    takes = KIND_PARAMS[kw["kind"]]
    for key in ("half_life", "warmup", "clip", "floor", "per"):
        # a setting at its default is accepted (a spec's own dict writes them all)
        if key in kw and key not in takes and kw[key] != _SIGNAL_DEFAULTS[key]:
            raise SpecError(f"{path}.{key}", f"a {kw['kind']} signal does not take {key} "
                                             f"(it takes: {', '.join(takes) or 'nothing'})")
    if kw.get("per", "") not in ("",) + PER_COLUMNS:
        raise SpecError(f"{path}.per", f"must be one of {', '.join(PER_COLUMNS)}, "
                                       f"got {kw['per']!r}")
    kw["source"] = source if isinstance(source, str) else tuple(sources)
    kw["half_life"] = number(f"{path}.half_life", kw.get("half_life", 50.0), lo=1e-9,
                             hi=MAX_COUNT)
    kw["warmup"] = integer(f"{path}.warmup", kw.get("warmup", 0), hi=MAX_COUNT)
    kw["floor"] = number(f"{path}.floor", kw.get("floor", 0.01), lo=0.0)
    kw["description"] = _text(f"{path}.description", kw.get("description"))
    if kw.get("clip") is not None:
        kw["clip"] = number(f"{path}.clip", kw["clip"], lo=1e-9)
    return SignalSpec(**kw)


def _regime(path: str, data: Any) -> RegimeSpec:
    kw = _settings(path, data or {}, RegimeSpec)
    for key in ("lr_scale", "momentum_scale"):
        if key in kw:
            kw[key] = number(f"{path}.{key}", kw[key], lo=0.0, hi=1.0)
    if kw.get("update_cap") is not None:
        kw["update_cap"] = number(f"{path}.update_cap", kw["update_cap"], lo=1e-12)
    for key in ("skip", "rollback", "stop"):
        if key in kw and not isinstance(kw[key], bool):
            raise SpecError(f"{path}.{key}", f"must be true or false, got {kw[key]!r}")
    if "skip_batches" in kw:
        kw["skip_batches"] = integer(f"{path}.skip_batches", kw["skip_batches"], hi=MAX_COUNT)
    color = kw.get("color")
    if color not in (None, "") and not (isinstance(color, str) and _HEX_COLOR.fullmatch(color)):
        raise SpecError(f"{path}.color", f"must be a CSS hex colour like '#1f77b4', "
                                         f"got {color!r}")
    kw["color"] = color or ""
    for key in ("reason", "description"):
        kw[key] = _text(f"{path}.{key}", kw.get(key))
    return RegimeSpec(**kw)


def _transition(i: int, data: Any) -> TransitionSpec:
    path = f"transitions[{i}]"
    kw = _settings(path, data, TransitionSpec, {"source": "from", "for_": "for"})
    if "name" in kw:
        if not conditions.is_name(kw["name"]):
            raise SpecError(f"{path}.name", f"{NAME_RULE}, got {kw['name']!r}")
        path = f"transitions.{kw['name']}"
    for key in ("source", "to", "when"):
        if key not in kw:
            raise SpecError(path, f"missing {'from' if key == 'source' else key!r}")
    kw["to"] = _text(f"{path}.to", kw["to"])
    kw["description"] = _text(f"{path}.description", kw.get("description"))
    source = kw["source"]
    source = (source,) if isinstance(source, str) else source
    if (not isinstance(source, (list, tuple)) or not source
            or not all(isinstance(s, str) for s in source)):
        raise SpecError(f"{path}.from", "must be a regime name, a list of them, or '*'")
    kw["source"] = tuple(source)
    kw.setdefault("name", "")          # named by `_named_transitions`
    kw["for_"] = integer(f"{path}.for", kw.get("for_", 1), lo=1, hi=MAX_COUNT)
    kw["min_dwell"] = integer(f"{path}.min_dwell", kw.get("min_dwell", 0), hi=MAX_COUNT)
    kw["priority"] = integer(f"{path}.priority", kw.get("priority", 0), lo=-MAX_PRIORITY,
                             hi=MAX_PRIORITY)
    if not isinstance(kw["when"], str):
        raise SpecError(f"{path}.when", "must be a condition string")
    return TransitionSpec(**kw)


def _named_transitions(trans: list[TransitionSpec]) -> tuple[TransitionSpec, ...]:
    """A transition given without a name is named `<from>_to_<to>` (`any` for '*'; `_2`,
    `_3` … when that is taken), an identifier like every name the user writes."""
    taken = {t.name for t in trans}
    out = []
    for t in trans:
        if not t.name:
            stem = "_".join("any" if s == ANY else s for s in t.source) + f"_to_{t.to}"
            stem = stem if conditions.is_name(stem) else "transition"
            name, i = stem, 2
            while name in taken:
                name, i = f"{stem}_{i}", i + 1
            taken.add(name)
            t = replace(t, name=name)
        out.append(t)
    return tuple(out)


def _bounds(data: Any) -> Bounds:
    kw = _settings("bounds", data, Bounds)
    out = {}
    for f in fields(Bounds):
        value = kw.get(f.name, f.default)
        path = f"bounds.{f.name}"
        if f.type == "int":
            lo = 1 if f.name in ("skip_window", "snapshot_every") else 0
            out[f.name] = integer(path, value, lo=lo, hi=MAX_WINDOW if f.name == "skip_window"
                                  else MAX_COUNT)
        else:
            out[f.name] = number(path, value)
    return Bounds(**out)


# --- validation of the whole ----------------------------------------------------------------

def validate(spec: GuardSpec) -> None:
    """Cross-field checks; the first problem found raises SpecError naming the field."""
    _validate_bounds(spec.bounds)
    if spec.initial not in spec.regimes:
        raise SpecError("initial", f"regime {spec.initial!r} does not exist "
                                   f"(regimes: {', '.join(spec.regimes)})")
    # a signal's trace column is named as the signal (`replay(signals=True)`, `trace(...)`)
    clash = set(spec.signals) & (set(spec.thresholds) | set(TRACE_NAMES))
    if clash:
        raise SpecError(f"signals.{sorted(clash)[0]}", "name clashes with a threshold or a "
                                                      "trace column")
    shadow = set(spec.thresholds) & set(TELEMETRY)   # would replace the column in conditions
    if shadow:
        raise SpecError(f"thresholds.{sorted(shadow)[0]}", "name clashes with a telemetry "
                                                          "column")
    known = set(spec.signals) | set(spec.thresholds) | set(TELEMETRY)
    seen: set[str] = set()
    for t in spec.transitions:
        path = f"transitions.{t.name}"
        if t.name in seen:
            raise SpecError(path, "duplicate transition name")
        seen.add(t.name)
        for src in t.source:
            if src != ANY and src not in spec.regimes:
                raise SpecError(f"{path}.from", f"unknown regime {src!r}")
        if t.to not in spec.regimes:
            raise SpecError(f"{path}.to", f"unknown regime {t.to!r}")
        _validate_sources(t, spec)
        tree = conditions.parse(t.when, f"{path}.when")
        unknown = sorted(conditions.names(tree) - known)
        if unknown:
            raise SpecError(f"{path}.when", f"unknown name {unknown[0]!r} (signals: "
                                            f"{', '.join(spec.signals)}; thresholds: "
                                            f"{', '.join(spec.thresholds) or 'none'})")
    _validate_ranges(spec)
    _validate_can_hold(spec)
    _validate_reachable(spec)
    _validate_hysteresis(spec)
    _validate_exits_at_rest(spec)


def _validate_sources(t: TransitionSpec, spec: GuardSpec) -> None:
    """A transition needs a regime it can fire from: not only its own target (the guard is
    already there), not only stop regimes (final: the guard never leaves them)."""
    path = f"transitions.{t.name}.from"
    sources = [s for s in sources_of(t, spec) if s != t.to]
    if not sources:
        raise SpecError(path, f"no regime to fire from: it only leads from {t.to!r} to itself")
    live = [s for s in sources if not spec.regimes[s].stop or s == spec.initial]
    if not live:
        raise SpecError(path, f"fires only from stop regimes ({', '.join(sources)}); a stop "
                              "regime is final, the guard never leaves it")

#: Telemetry that is never negative (norms, ratios of norms, learning rates).
NON_NEGATIVE = ("grad_norm", "update_norm", "param_norm", "update_ratio", "lr")


def value_range(name: str, spec: GuardSpec) -> tuple[str, str] | None:
    """What a name in a condition can take: ("flag", why) for 0/1, ("nonneg", why) for
    [0, inf), None when any real value is possible (z-scores, slopes, losses)."""
    sig = spec.signals.get(name)
    if sig is None:
        return ("nonneg", "a non-negative telemetry column") if name in NON_NEGATIVE else None
    if sig.kind == "nonfinite":
        return "flag", "a non-finite flag, 0 or 1"
    if sig.kind == "ratio":
        return "nonneg", f"a ratio of {sig.source} to its EMA, never negative"
    if sig.kind == "ref_ratio" and sig.source in NON_NEGATIVE:
        return "nonneg", f"a ratio of {sig.source} to its frozen reference, never negative"
    if sig.kind == "above_best":
        return "nonneg", f"how far {sig.source} sits above its lowest, never negative"
    if sig.kind == "ema" and sig.source in NON_NEGATIVE:
        return "nonneg", f"an EMA of {sig.source}, never negative"
    return None


def _constant(op: str, threshold: float, kind: str) -> bool | None:
    """Whether `x op threshold` is the same for every x the range allows (None: it varies)."""
    test = conditions.CMP_OPS[op]
    if kind == "flag":
        results = {bool(test(x, threshold)) for x in (0.0, 1.0)}
    else:  # [0, inf): below 0 every ordered test is constant; at 0, >= and < are
        probes = [0.0, abs(threshold) + 1.0] + ([threshold] if threshold >= 0 else [])
        results = {bool(test(x, threshold)) for x in probes}
        if threshold > 0:
            results.add(bool(test(threshold / 2, threshold)))
    return results.pop() if len(results) == 1 else None


def _validate_ranges(spec: GuardSpec) -> None:
    """Refuse a comparison that can never, or always, hold for the signal it tests
    (`update_ratio_ema > -1`, `nonfinite > 0.5`): a typo that silently disables a
    transition or makes it fire on every step."""
    for t in spec.transitions:
        tree = conditions.bind(conditions.parse(t.when), spec.thresholds)
        for c in conditions.comparisons(tree):
            found = value_range(c.signal, spec)
            if found is None:
                continue
            kind, why = found
            path = f"transitions.{t.name}.when"
            if kind == "flag" and c.threshold not in (0.0, 1.0):
                raise SpecError(path, f"{c.signal} {c.op} {c.threshold:g}: {c.signal} is {why}; "
                                      "compare it with 0 or 1")
            always = _constant(c.op, c.threshold, kind)
            if always is not None:
                raise SpecError(path, f"{c.signal} {c.op} {c.threshold:g} "
                                      f"{'always' if always else 'never'} holds: {c.signal} "
                                      f"is {why}")


def _validate_bounds(b: Bounds) -> None:
    if not 0 < b.lr_scale_min <= b.lr_scale_max <= 1:
        raise SpecError("bounds.lr_scale_min", "need 0 < lr_scale_min <= lr_scale_max <= 1, "
                                               f"got {b.lr_scale_min} and {b.lr_scale_max}")
    if not 0 < b.lr_slew_down <= 1:
        raise SpecError("bounds.lr_slew_down", f"must be in (0, 1], got {b.lr_slew_down}")
    if b.lr_slew_up < 1:
        raise SpecError("bounds.lr_slew_up", f"must be >= 1, got {b.lr_slew_up}")
    if not 0 <= b.max_skip_fraction <= 1:
        raise SpecError("bounds.max_skip_fraction", f"must be in [0, 1], got {b.max_skip_fraction}")
    if b.skip_window < 1 or b.snapshot_every < 1:
        raise SpecError("bounds.skip_window" if b.skip_window < 1 else "bounds.snapshot_every",
                        "must be >= 1")


def sources_of(t: TransitionSpec, spec: GuardSpec) -> list[str]:
    """The regimes a transition can fire from ('*' = every regime but its target)."""
    if ANY in t.source:
        return [r for r in spec.regimes if r != t.to]
    return list(t.source)


def _validate_reachable(spec: GuardSpec) -> None:
    reached, frontier = {spec.initial}, [spec.initial]
    while frontier:
        here = frontier.pop()
        for t in spec.transitions:
            if here in sources_of(t, spec) and t.to not in reached:
                reached.add(t.to)
                frontier.append(t.to)
    for name in spec.regimes:
        if name not in reached:
            raise SpecError(f"regimes.{name}", f"cannot be reached from the initial regime "
                                               f"{spec.initial!r}")


def _validate_hysteresis(spec: GuardSpec) -> None:
    """An exit threshold must lie strictly inside the band the entry threshold opened:
    entry `s > a` with exit `s < b` needs b < a; entry `s < a` with exit `s > b` needs b > a.
    The message names both thresholds as the user wrote them (`calm_z = 20`) and reads from
    the alarm side: the rising comparison is the entry, the falling one the exit."""
    for _, t_in, c_in, t_out, c_out in hysteresis_pairs(spec):
        up, a, b = c_in.rising, c_in.threshold, c_out.threshold
        if (up and b >= a) or (not up and b <= a):
            (t_hi, hi), (t_lo, lo) = ((t_in, c_in), (t_out, c_out)) if up else \
                ((t_out, c_out), (t_in, c_in))
            raise SpecError(
                f"transitions.{t_out.name}.when",
                f"exit threshold {_threshold_label(t_lo, lo, spec)} must be below the entry "
                f"threshold {_threshold_label(t_hi, hi, spec)} for `{t_hi.name}`/`{t_lo.name}`"
                f" ({lo.signal}: the guard enters above {hi.threshold:g} and leaves below "
                f"{lo.threshold:g}, so there is no hysteresis band between them)")


def _validate_can_hold(spec: GuardSpec) -> None:
    """Refuse a condition that holds for no value of anything it reads (`1 > 2`, `0`,
    `loss_z > 3 and 0`): its transition could never fire."""
    for t in spec.transitions:
        tree = conditions.bind(conditions.parse(t.when), spec.thresholds)
        if conditions.decided(tree, {}) is False:
            raise SpecError(f"transitions.{t.name}.when", f"`{t.when}` never holds, whatever "
                                                          "the signals read: it never fires")


#: A signal's value once its source is steady ("at rest"), by kind: a ratio to the source's
#: own recent level is 1; a z-score against its own statistics and a slope are 0; the
#: non-finite flag is 0. An EMA, a ratio to a frozen reference and raw telemetry have none.
REST = {"ratio": 1.0, "ema_z": 0.0, "robust_z": 0.0, "slope": 0.0, "above_best": 0.0,
        "nonfinite": 0.0}


def rest_values(spec: GuardSpec) -> dict[str, float]:
    """The rest value of every signal that has one (see `REST`)."""
    return {name: REST[s.kind] for name, s in spec.signals.items() if s.kind in REST}


def _rest_why(sig: SignalSpec, r: float) -> str:
    if sig.kind == "nonfinite":
        return "a non-finite flag, 0 while every value is finite"
    what = {"ratio": "a ratio of {} to its own recent level",
            "slope": "the slope of {}",
            "above_best": "how far {} sits above its lowest"}.get(
                sig.kind, "a z-score of {} against its own noise")
    return f"{what.format(sig.source)}, {r:g} while {sig.source} is steady"


def _leaf_at(leaf: Leaf, value: float) -> bool:
    """Whether an ordered comparison (its polarity under `not`s included) holds at `value`."""
    positive = leaf.rising == (leaf.op in (">", ">="))
    return bool(conditions.CMP_OPS[leaf.op](value, leaf.threshold)) == positive


def _validate_exits_at_rest(spec: GuardSpec) -> None:
    """A regime entered because a signal left its rest value (`lr_jumped: lr_jump > 3`) and
    left by the opposite comparison on that signal (`lr_back: lr_jump < b`) must be able to
    leave once the signals are back at rest (`REST`): if every transition out of it is false
    at rest, a transient holds the guard there for good (`b = 0.03`: lr_jump is 1 once the
    LR is steady, so the LR hold would never release). The initial regime (where the guard
    rests) and stop regimes (final by design) are exempt."""
    rest = rest_values(spec)
    if not rest:
        return
    at_rest = {t.name: conditions.decided(
        conditions.bind(conditions.parse(t.when), spec.thresholds), rest)
        for t in spec.transitions}
    for regime, t_in, c_in, t_out, c_out in hysteresis_pairs(spec):
        r = rest.get(c_in.signal)
        if (r is None or _leaf_at(c_in, r)        # entered without leaving the rest value
                or regime == spec.initial or spec.regimes[regime].stop):   # rest, final
            continue
        exits = [t for t in spec.transitions if regime in sources_of(t, spec) and t.to != regime]
        if any(at_rest[t.name] is not False for t in exits):
            continue
        # the comparison of the exit that fails at rest (in `a and b`, the one that does)
        leaf = next((lf for lf in ordered_leaves(t_out, spec)
                     if lf.signal in rest and not _leaf_at(lf, rest[lf.signal])), c_out)
        r = rest[leaf.signal]
        raise SpecError(
            f"transitions.{t_out.name}.when",
            f"exit threshold {_threshold_label(t_out, leaf, spec)} must be "
            f"{'below' if leaf.rising else 'above'} {leaf.signal}'s rest value {r:g} "
            f"({_rest_why(spec.signals[leaf.signal], r)}): `{t_in.name}` enters {regime} when "
            f"{c_in.signal} leaves its rest value, and no transition leaves {regime} once the "
            "signals are back at rest, so the guard would stay there")


def _threshold_label(t: TransitionSpec, leaf: Leaf, spec: GuardSpec) -> str:
    """`calm_z = 20` when a named threshold of `t`'s condition holds the value, else `20`."""
    words = set(re.findall(r"[A-Za-z_]\w*", t.when))
    for name, value in spec.thresholds.items():
        if name in words and float(value) == leaf.threshold:
            return f"{name} = {leaf.threshold:g}"
    return f"{leaf.threshold:g}"


@dataclass(frozen=True)
class Leaf:
    """One ordered comparison `signal OP threshold` of a condition, threshold resolved;
    `rising`: the comparison holds when the signal is high (negations accounted for)."""

    signal: str
    op: str
    threshold: float
    rising: bool


def ordered_leaves(t: TransitionSpec, spec: GuardSpec) -> list[Leaf]:
    """The ordered comparisons (not == / !=) of a transition's condition."""
    tree = conditions.bind(conditions.parse(t.when), spec.thresholds)
    out = []
    for c in conditions.comparisons(tree):
        if c.op in ("==", "!="):
            continue
        up = c.op in (">", ">=")
        out.append(Leaf(c.signal, c.op, c.threshold, up if c.positive else not up))
    return out


def hysteresis_pairs(spec: GuardSpec
                     ) -> Iterator[tuple[str, TransitionSpec, Leaf, TransitionSpec, Leaf]]:
    """(regime, entry transition, entry leaf, exit transition, exit leaf) for every regime,
    every transition into it and out of it, and every pair of their comparisons on the same
    signal that fire in opposite directions: the entry/exit thresholds of a hysteresis band.
    The one loop behind both the spec's hysteresis check and the studio's bands."""
    leaves = {t.name: ordered_leaves(t, spec) for t in spec.transitions}
    for regime in spec.regimes:
        into = [t for t in spec.transitions if t.to == regime]
        out = [t for t in spec.transitions if regime in sources_of(t, spec)]
        for t_in in into:
            for t_out in out:
                for c_in in leaves[t_in.name]:
                    for c_out in leaves[t_out.name]:
                        if c_in.signal == c_out.signal and c_in.rising != c_out.rising:
                            yield regime, t_in, c_in, t_out, c_out


# --- plain-data views -------------------------------------------------------------------------

def _signal_dict(s: SignalSpec) -> dict[str, Any]:
    d = asdict(s)
    d["source"] = s.source if isinstance(s.source, str) else list(s.source)
    return _drop_empty(d, {"description": "", "clip": None, "per": ""})


def _regime_dict(r: RegimeSpec) -> dict[str, Any]:
    # Regime fields are scalars: a shallow read is asdict() without its deep copy, which
    # dominated building the specs of a sweep.
    return {k: v for k, v in ((f.name, getattr(r, f.name)) for f in _REGIME_FIELDS)
            if v != _REGIME_DEFAULTS[k] or k == "lr_scale"}


_REGIME_FIELDS = fields(RegimeSpec)
_REGIME_DEFAULTS = asdict(RegimeSpec())


def _transition_dict(t: TransitionSpec) -> dict[str, Any]:
    d = {"name": t.name, "from": t.source[0] if len(t.source) == 1 else list(t.source),
         "to": t.to, "when": t.when, "for": t.for_, "min_dwell": t.min_dwell,
         "priority": t.priority, "description": t.description}
    return _drop_empty(d, {"description": ""})


def _drop_empty(d: dict[str, Any], empties: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if not (k in empties and v == empties[k])}


def _flatten(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key == "transitions":
            for t in value:
                for k, v in t.items():
                    if k != "name":
                        out[f"transitions.{t['name']}.{k}"] = v
        elif isinstance(value, dict) and key != "thresholds":
            for k, v in value.items():
                if isinstance(v, dict):
                    out.update({f"{key}.{k}.{kk}": vv for kk, vv in v.items()})
                else:
                    out[f"{key}.{k}"] = v
        elif key == "thresholds":
            out.update({f"thresholds.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def _set_path(data: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    if parts[0] == "transitions" and len(parts) == 3:
        for t in data["transitions"]:
            if t["name"] == parts[1]:
                t[parts[2]] = value
                return
        raise SpecError(path, f"no transition named {parts[1]!r}")
    node = data
    for part in parts[:-1]:
        if not isinstance(node, dict) or part not in node:
            raise SpecError(path, f"no setting {part!r} here")
        node = node[part]
    if not isinstance(node, dict):
        raise SpecError(path, "not a setting")
    node[parts[-1]] = value
