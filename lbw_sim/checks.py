"""Field checks shared by every validated config (guard specs, scenarios): one message style."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from lbw_sim.errors import SpecError


def number(path: str, value: Any, lo: float = -math.inf, hi: float = math.inf) -> float:
    """A finite float in [lo, hi], or a SpecError naming `path`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(path, f"must be a number, got {value!r}")
    try:
        value = float(value)
    except OverflowError:            # an int beyond any float (10**400)
        raise SpecError(path, f"must be a finite number in [{lo:g}, {hi:g}], got "
                              f"{_short(value)}") from None
    if not math.isfinite(value) or not lo <= value <= hi:
        raise SpecError(path, f"must be a finite number in [{lo:g}, {hi:g}], got {value!r}")
    return value


def integer(path: str, value: Any, lo: int = 0, hi: int | None = None) -> int:
    """A whole number in [lo, hi] (3.0 is accepted as 3; hi None: no upper limit), or a
    SpecError naming `path`. An int too large for a float is refused, not an OverflowError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and (not math.isfinite(value) or value != int(value))):
        raise SpecError(path, f"must be a whole number, got {_short(value)}")
    if value < lo or (hi is not None and value > hi):
        where = f">= {lo}" if hi is None else f"a whole number >= {lo} and <= {hi}"
        raise SpecError(path, f"must be {where}, got {_short(value)}")
    return int(value)


def _short(value: Any) -> str:
    """repr(value), an int of hundreds of digits shortened to its size."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**30:
        return f"{'-' if value < 0 else ''}an integer of {len(str(abs(value)))} digits"
    return repr(value)


def read_config(path: Path, field: str, what: str, limit: int = 1_000_000) -> str:
    """The UTF-8 text of a small config file, or a SpecError naming `field` and the file."""
    if not path.is_file():
        raise SpecError(field, f"{path}: no such file")
    if path.stat().st_size > limit:
        raise SpecError(field, f"{path.name}: larger than {limit // 1_000_000} MB, not {what}")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SpecError(field, f"{path.name}: not UTF-8 text") from None


class _NoAliasLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses anchors and aliases while composing.

    A config never needs them, and nested aliases ("billion laughs") let a 1 kB file
    expand to gigabytes once anything walks, copies or hashes the document.
    """

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise SpecError("", f"YAML anchors and aliases (&name, *name) are not accepted "
                                f"(line {event.start_mark.line + 1})")
        return super().compose_node(parent, index)


def load_yaml(text: str) -> Any:
    """`yaml.safe_load` without anchors/aliases; a failure is a one-line SpecError with the line."""
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise SpecError("", f"not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    except RecursionError:
        raise SpecError("", "not valid YAML: nested too deeply") from None
