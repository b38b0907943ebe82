"""A GuardSpec as editable tables and back: what the studio's designer edits.

`spec_tables` gives one plain DataFrame per section (thresholds, regimes, transitions,
bounds); `spec_from_tables` rebuilds a validated spec from edited copies, with the
cross-row checks a table editor needs (blank or duplicate names, dropped rows). Every
problem is a SpecError whose field path `section_of` maps back to the table to flag.

Number cells are text, written with `format_number` and read back with `parse_number`: a
browser number input mangles scientific notation (`3e-2` became `-32`), while text
round-trips `3e-2`, `1E-3`, `5.` and `0.1` exactly; and an integer column drops what it
cannot hold (`1e308`, `2**63`) without a word, while text reaches the validator, whose
message names the cell.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, fields
from typing import Any

import pandas as pd

from lbw_sim.errors import SpecError
from lbw_sim.guard.spec import Bounds, GuardSpec, RegimeSpec

SECTIONS = ("thresholds", "regimes", "transitions", "bounds")
REGIME_COLUMNS = ("name", "lr_scale", "skip", "momentum_scale", "update_cap", "rollback",
                  "skip_batches", "stop", "reason")
TRANSITION_COLUMNS = ("name", "from", "to", "when", "for", "min_dwell", "priority")
#: Regime columns edited as text (numbers); the rest are flags and the reason.
REGIME_TEXT = ("lr_scale", "momentum_scale", "update_cap", "skip_batches")
#: Transition columns edited as text (whole numbers).
TRANSITION_TEXT = ("for", "min_dwell", "priority")
_NUMBER = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf(?:inity)?|nan)",
                     re.IGNORECASE)


def format_number(value: Any) -> str:
    """Text that `parse_number` reads back to the same value ('' for None)."""
    if value is None:
        return ""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return repr(float(value))


def parse_number(value: Any, path: str) -> float:
    """A number from a table cell: a Python number or text such as `3e-2`, `1E-3`, `5.`,
    `inf`; anything else is a SpecError naming the cell."""
    if isinstance(value, bool):
        raise SpecError(path, f"must be a number, got {value!r}")
    if isinstance(value, (int, float)) or (hasattr(value, "dtype") and value.dtype.kind in "iuf"):
        return float(value)
    text = value.strip() if isinstance(value, str) else None
    if not text or not _NUMBER.fullmatch(text):
        raise SpecError(path, f"must be a number such as 0.03, 3e-2 or 1E-3, got {value!r}")
    return float(text)


def spec_tables(spec: GuardSpec) -> dict[str, pd.DataFrame]:
    """One table per editable section, in the spec's own order."""
    thresholds = pd.DataFrame({"name": list(spec.thresholds),
                               "value": [format_number(float(v))
                                         for v in spec.thresholds.values()]})
    regimes = pd.DataFrame([{"name": n, **{k: getattr(r, k) for k in REGIME_COLUMNS[1:]}}
                            for n, r in spec.regimes.items()], columns=list(REGIME_COLUMNS))
    for key in REGIME_TEXT:
        regimes[key] = [format_number(None if _blank(v) else v) for v in regimes[key].tolist()]
    transitions = pd.DataFrame([{"name": t.name, "from": ", ".join(t.source), "to": t.to,
                                 "when": t.when, "for": t.for_, "min_dwell": t.min_dwell,
                                 "priority": t.priority} for t in spec.transitions],
                               columns=list(TRANSITION_COLUMNS))
    for key in TRANSITION_TEXT:
        transitions[key] = [format_number(v) for v in transitions[key].tolist()]
    bounds = pd.DataFrame({"name": [f.name for f in fields(Bounds)],
                           "value": [format_number(v) for v in asdict(spec.bounds).values()]})
    return {"thresholds": thresholds, "regimes": regimes, "transitions": transitions,
            "bounds": bounds}


def spec_from_tables(base: GuardSpec, tables: dict[str, pd.DataFrame]) -> GuardSpec:
    """A validated spec: `base` (signals, initial, name) with the tables' sections swapped in.

    Raises SpecError naming the field (`regimes.watch.lr_scale`, `transitions.spike.when` …).
    """
    data = base.to_dict()
    if "thresholds" in tables:
        data["thresholds"] = {n: _value(r["value"], f"thresholds.{n}")
                              for n, r in _named_rows(tables["thresholds"], "thresholds")}
    if "regimes" in tables:
        old = data["regimes"]
        data["regimes"] = {n: _keep_unedited(_regime_row(n, r), old.get(n))
                           for n, r in _named_rows(tables["regimes"], "regimes")}
    if "transitions" in tables:
        old = {t["name"]: t for t in data["transitions"]}
        data["transitions"] = [_keep_unedited(_transition_row(n, r), old.get(n))
                               for n, r in _named_rows(tables["transitions"], "transitions")]
    if "bounds" in tables:
        known = {f.name: f.type for f in fields(Bounds)}
        bounds = {}
        for n, r in _named_rows(tables["bounds"], "bounds"):
            value = _value(r["value"], f"bounds.{n}")
            bounds[n] = _int_if_exact(value) if known.get(n) == "int" else value
        data["bounds"] = bounds
    return GuardSpec.from_dict(data)


def section_of(field: str) -> str:
    """Which editor section a SpecError field path belongs to ('spec' when none does)."""
    head = field.split(".", 1)[0].split("[", 1)[0]
    if head == "initial":
        return "regimes"
    return head if head in SECTIONS else "spec"


def edited_sections(before: dict[str, pd.DataFrame],
                    after: dict[str, pd.DataFrame]) -> list[str]:
    """The sections whose table differs between two sets of editor tables, in order."""
    def same(a: pd.DataFrame | None, b: pd.DataFrame | None) -> bool:
        if a is None or b is None:
            return a is b
        return a.shape == b.shape and a.astype(str).reset_index(drop=True).equals(
            b.astype(str).reset_index(drop=True))
    return [s for s in SECTIONS if not same(before.get(s), after.get(s))]


def error_section(field: str, edited: list[str]) -> str:
    """The tab to show a SpecError on: the one whose edit caused it. A threshold edit can
    break a check filed under another section (a hysteresis band is checked on the
    transitions' conditions): the error then goes to the edited tab, not the field's."""
    own = section_of(field)
    return own if own in edited or not edited else edited[0]


def _named_rows(df: pd.DataFrame, section: str) -> list[tuple[str, pd.Series]]:
    """Rows with a clean, unique name; blank rows (a fresh row in the editor) are skipped."""
    out, seen = [], set()
    for i, row in df.reset_index(drop=True).iterrows():
        name = row.get("name")
        if _blank(name):
            if all(_blank(v) or v is False for v in row.drop("name").to_numpy()):
                continue
            raise SpecError(f"{section}[{i}]", "row has no name")
        name = str(name).strip()
        if name in seen:
            raise SpecError(f"{section}.{name}", "duplicate name")
        seen.add(name)
        out.append((name, row))
    return out


def _keep_unedited(row: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
    """Descriptions and colours are not edited in the tables; a row keeps its name's."""
    for key in ("description", "color"):
        if old and old.get(key):
            row[key] = old[key]
    return row


def _regime_row(name: str, row: pd.Series) -> dict[str, Any]:
    defaults = asdict(RegimeSpec())
    out: dict[str, Any] = {}
    for key in REGIME_COLUMNS[1:]:
        value = row.get(key)
        if _blank(value):
            continue
        if isinstance(defaults[key], bool):
            out[key] = bool(value)
        elif key == "reason":
            out[key] = str(value)
        elif key == "skip_batches":
            out[key] = _whole(value, f"regimes.{name}.{key}")
        else:
            out[key] = _value(value, f"regimes.{name}.{key}")
    return out


def _transition_row(name: str, row: pd.Series) -> dict[str, Any]:
    path = f"transitions.{name}"
    source = [s.strip() for s in str(row.get("from") or "").split(",") if s.strip()]
    if not source:
        raise SpecError(f"{path}.from", "give a regime, several separated by commas, or '*'")
    out: dict[str, Any] = {"name": name, "from": source[0] if len(source) == 1 else source,
                           "to": "" if _blank(row.get("to")) else str(row["to"]).strip(),
                           "when": "" if _blank(row.get("when")) else str(row["when"])}
    for key, default in (("for", 1), ("min_dwell", 0), ("priority", 0)):
        value = row.get(key)
        out[key] = default if _blank(value) else _whole(value, f"{path}.{key}")
    return out


def _blank(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def _value(value: Any, path: str) -> float:
    out = parse_number(value, path)
    if not math.isfinite(out):
        raise SpecError(path, f"must be a finite number, got {value!r}")
    return out


def _whole(value: Any, path: str) -> int | float:
    out = _value(value, path)
    if out != int(out):
        raise SpecError(path, f"must be a whole number, got {value!r}")
    return _int_if_exact(out)


def _int_if_exact(value: float) -> int | float:
    """A whole float as an int where floats count exactly (|x| <= 2**53); beyond, the float
    itself, so the validator's range message quotes `1e+308` rather than 309 digits."""
    return int(value) if value == int(value) and abs(value) <= 2**53 else value
