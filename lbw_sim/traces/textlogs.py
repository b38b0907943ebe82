"""Plain-text training logs: HF Trainer console dicts, nanoGPT/llm.c lines, build-nanogpt, regex.

Lines that match nothing (progress bars, tracebacks, warnings) are skipped. Values are
accumulated column-wise in float arrays, so a long log never becomes a list of dicts.
"""

from __future__ import annotations

import ast
import re
from array import array
from pathlib import Path

import numpy as np
import pandas as pd

from lbw_sim.errors import TraceError
from lbw_sim.traces.columns import is_candidate, resolve_columns
from lbw_sim.traces.schema import TELEMETRY_COLUMNS
from lbw_sim.traces.sniff import BUILD_NANOGPT_LINE, KV_LOG_LINE, iter_lines
from lbw_sim.traces.tables import PRESENT, need_signal, pick_run, to_float

MAX_TEXT_LINE = 64 * 1024
SUMMARY_KEYS = ("train_runtime", "train_samples_per_second", "train_steps_per_second",
                "total_flos")


class Columns:
    """Column-wise accumulator of float rows; absent values are NaN."""

    def __init__(self) -> None:
        self.cols: dict[str, array] = {}
        self.n = 0

    def add(self, row: dict[str, float]) -> None:
        for key, value in row.items():
            col = self.cols.get(key)
            if col is None:
                col = self.cols[key] = array("d", [np.nan]) * self.n
            col.append(value)
        self.n += 1
        for col in self.cols.values():
            if len(col) < self.n:
                col.append(np.nan)

    def last(self, key: str) -> float:
        col = self.cols.get(key)
        return col[-1] if col is not None and len(col) else np.nan

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({k: np.frombuffer(v, dtype=np.float64) for k, v in self.cols.items()})


def to_canonical(path: Path, cols: Columns, mapping: dict[str, str]) -> pd.DataFrame:
    colmap = resolve_columns(cols.cols, mapping)
    need_signal(path, colmap, list(cols.cols))
    raw = cols.frame()
    out = pd.DataFrame({canon: raw[src] for canon, src in colmap.items()})
    out[PRESENT] = raw[PRESENT].to_numpy() > 0 if PRESENT in raw else True  # a matched line
    return out


def candidate_row(rec: dict, mapping: dict[str, str]) -> dict[str, float]:
    """The candidate columns of a log dict as floats; PRESENT marks any non-null value."""
    row = {str(k): to_float(v) for k, v in rec.items() if is_candidate(str(k), mapping)}
    row[PRESENT] = float(any(v is not None and str(k) != "step" and is_candidate(str(k), mapping)
                             for k, v in rec.items()))
    return row


# ---------------------------------------------------------------- HF Trainer console

_PY_TOKEN = re.compile(r"""('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""
                       r"""|(?<![\w.])(-?)(nan|inf|infinity)(?![\w.])""", re.IGNORECASE)
_DICT = re.compile(r"(?:^\s*|\]\s*)(\{\s*'.*\})\s*$")  # own line, or after a tqdm bar


def py_dict(line: str) -> dict | None:
    """A python-literal dict from a console line; bare nan/inf are rewritten, never eval'd."""
    match = _DICT.search(line.rsplit("\r", 1)[-1])
    if match is None or len(match.group(1)) > MAX_TEXT_LINE:
        return None

    def fix(m: re.Match) -> str:
        if m.group(1):
            return m.group(1)
        return "None" if m.group(3).lower() == "nan" else m.group(2) + "1e999"

    try:
        obj = ast.literal_eval(_PY_TOKEN.sub(fix, match.group(1)))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def read_hf_console(path: Path, mapping: dict[str, str], run: str | None
                    ) -> tuple[pd.DataFrame, list[str], str]:
    """Runs split where epoch goes back down or after a final summary dict."""
    runs: list[Columns] = [Columns()]
    ended, last_epoch, counter = False, np.nan, 0
    for line in iter_lines(path):
        rec = py_dict(line)
        if rec is None:
            continue
        if any(k in rec for k in SUMMARY_KEYS):
            ended = True
            continue
        epoch = to_float(rec.get("epoch"))
        is_eval = any(str(k).startswith("eval_") for k in rec)
        if runs[-1].n and (ended or epoch < last_epoch - 1e-9):
            runs.append(Columns())
            counter = 0
        ended, last_epoch = False, epoch if not np.isnan(epoch) else last_epoch
        row = candidate_row(rec, mapping)
        if "step" not in row:
            row["step"] = max(counter - 1, 0) if is_eval else counter
        counter += 0 if is_eval else 1
        runs[-1].add(row)
    names = [f"run{i}" for i, r in enumerate(runs) if r.n]
    if not names:
        raise TraceError(f"{path.name}: no Trainer log dicts like {{'loss': …}} found")
    run = pick_run(path, names, run)
    return to_canonical(path, runs[int(run[3:])], mapping), names, run


# ---------------------------------------------------------------- nanoGPT / llm.c / build-nanogpt

_KV = re.compile(r"\s*([A-Za-z][A-Za-z _/-]*?)\s*[:=]?\s*"
                 r"([-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|nan|inf))",
                 re.IGNORECASE)
KV_NAMES = {"loss": "loss", "train loss": "loss", "train_loss": "loss",
            "val loss": "val_loss", "val_loss": "val_loss", "eval loss": "val_loss",
            "valid loss": "val_loss", "lr": "lr", "learning rate": "lr",
            "norm": "grad_norm", "grad norm": "grad_norm", "grad_norm": "grad_norm",
            "gnorm": "grad_norm"}


def kv_row(line: str) -> dict[str, float] | None:
    """`iter 100: loss 2.3, time 12ms` / `step 5/100 | train loss 2.3 | norm 1.1 | lr 1e-4`."""
    m = KV_LOG_LINE.match(line)
    if m is None:
        return None
    pairs = {}
    for part in re.split(r"[,|]", m.group(2)):
        kv = _KV.match(part)
        if kv and kv.group(1).strip().lower() in KV_NAMES:
            pairs[KV_NAMES[kv.group(1).strip().lower()]] = to_float(kv.group(2))
    if "val_loss" in pairs:  # an eval line: its "train loss" is an eval estimate
        pairs.pop("loss", None)
    return {"step": float(m.group(1)), **pairs} if pairs else None


def build_nanogpt_row(line: str) -> dict[str, float] | None:
    """build-nanogpt's log.txt: `123 train 4.5678`, `123 val 4.9`, `123 hella 0.25`."""
    m = BUILD_NANOGPT_LINE.match(line)
    if m is None or m.group(2) == "hella":
        return None
    key = "loss" if m.group(2) == "train" else "val_loss"
    return {"step": float(m.group(1)), key: to_float(m.group(3))}


def read_lines(path: Path, parse_line, mapping: dict[str, str], what: str) -> pd.DataFrame:
    cols = Columns()
    for line in iter_lines(path):
        if len(line) <= MAX_TEXT_LINE and (row := parse_line(line)) is not None:
            cols.add(row)
    if not cols.n:
        raise TraceError(f"{path.name}: no {what} lines found")
    return to_canonical(path, cols, mapping)


def read_nanogpt(path: Path, mapping: dict[str, str]) -> pd.DataFrame:
    return read_lines(path, kv_row, mapping, "'iter N: loss X' / 'step N: … val loss X'")


def read_build_nanogpt(path: Path, mapping: dict[str, str]) -> pd.DataFrame:
    return read_lines(path, build_nanogpt_row, mapping, "'<step> train <loss>'")


def read_regex(path: Path, pattern: str, mapping: dict[str, str]) -> pd.DataFrame:
    """Any text log, with a user regex whose named groups are canonical column names."""
    try:
        rx = re.compile(pattern)
    except (re.error, TypeError, RecursionError) as exc:
        raise TraceError(f"pattern: not a valid regex: {exc}") from None
    groups = [g for g in rx.groupindex if g in TELEMETRY_COLUMNS]
    if not set(groups) - {"step"}:
        raise TraceError("pattern: needs a named group such as (?P<loss>…) "
                         f"(canonical names: {', '.join(TELEMETRY_COLUMNS)})")

    def parse_line(line: str) -> dict[str, float] | None:
        m = rx.search(line)
        if m is None:
            return None
        return {g: to_float(m.group(g)) for g in groups if m.group(g) is not None} or None

    return read_lines(path, parse_line, mapping, f"lines matching {pattern!r}")
