"""Import training logs into the canonical trace schema: `load_trace`, `list_runs`, `detect_format`.

Each format's parser (tables, textlogs, docs) yields canonical columns in file order;
`finish` then turns that into one row per step: rows of a resumed run replace what they
repeat (recorded in `df.attrs["events"]`), eval/lr rows merge onto their step.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from lbw_sim.errors import TraceError
from lbw_sim.traces import docs, tables, textlogs
from lbw_sim.traces.columns import check_mapping
from lbw_sim.traces.schema import TELEMETRY_COLUMNS, canonicalize
from lbw_sim.traces.sniff import check_file, detect_dir, detect_file
from lbw_sim.traces.tables import LOGGED, PRESENT

FORMATS = ("hf_trainer_state", "hf_console", "tensorboard", "lightning_csv", "wandb_csv",
           "wandb_jsonl", "llamafactory_jsonl", "csv", "jsonl", "parquet", "nanogpt",
           "build_nanogpt", "regex")
ALIASES = {"trainer_state": "hf_trainer_state", "hf": "hf_trainer_state",
           "lightning": "lightning_csv", "wandb": "wandb_csv", "llamafactory": "llamafactory_jsonl",
           "tb": "tensorboard", "text": "nanogpt", "ndjson": "jsonl", "pq": "parquet"}
#: Loggers that write one row per logging call, so an empty loss cell means "not logged"
#: (elsewhere an empty cell is how pandas writes NaN, a value a guard must see).
SIDE_ROW_FORMATS = ("lightning_csv",)
MULTI_RUN = ("hf_console", "tensorboard", "wandb_csv")
READ_ERRORS = (ValueError, KeyError, TypeError, IndexError, OSError, UnicodeError,
               RecursionError, MemoryError, OverflowError, pa.ArrowException)


def detect_format(path: str | Path) -> str:
    """The format name `load_trace` would use for `path` (content first, name second)."""
    path = check_file(Path(path))
    return detect_dir(path)[0] if path.is_dir() else detect_file(path)


def list_runs(path: str | Path, format: str = "auto") -> list[str]:
    """Names accepted by `load_trace(run=…)`; single-run formats give `["run0"]`."""
    path = check_file(Path(path))
    fmt, target = _resolve(path, format, None)
    if fmt not in MULTI_RUN:
        return ["run0"]
    return _guard(target, fmt, lambda: _parse(fmt, target, {}, None, None)[1])


def load_trace(path: str | Path, format: str = "auto", *, run: str | None = None,
               pattern: str | None = None, **mapping: str) -> pd.DataFrame:
    """Read a training log into a canonical trace (see schema.py).

    `mapping` maps canonical name -> source column or tag (`loss="train/loss"`); common
    synonyms are mapped without it. `pattern` is a regex with named groups for text logs.
    Any unreadable input raises TraceError with a one-line message naming the file.
    """
    path = check_file(Path(path))
    mapping = check_mapping(mapping)
    fmt, target = _resolve(path, format, pattern)
    parsed = [_guard(target, fmt, lambda: _parse(fmt, target, mapping, run, pattern))]
    frame, runs, chosen = parsed.pop()
    if fmt not in SIDE_ROW_FORMATS and LOGGED in frame:
        frame = frame.drop(columns=LOGGED)
    held = [frame]
    del frame  # finish() holds the only reference, so it can free the raw frame early
    df, events = _guard(target, fmt, lambda: finish(held.pop()))
    df.attrs.update(format=fmt, source=target.name, events=events,
                    missing=[c for c in TELEMETRY_COLUMNS if c not in df.columns])
    if fmt in MULTI_RUN:
        df.attrs.update(run=chosen, runs=runs)
    return df


def _resolve(path: Path, format: str, pattern: str | None) -> tuple[str, Path]:
    fmt = ALIASES.get(format, format)
    if pattern is not None:
        fmt = "regex" if fmt == "auto" else fmt
        if fmt != "regex":
            raise TraceError(f"pattern= is for text logs, not format={format!r}")
    if fmt != "auto" and fmt not in FORMATS:
        raise TraceError(f"unknown format {format!r} (one of auto, {', '.join(FORMATS)})")
    if path.is_dir():
        found, target = detect_dir(path)
        return (found if fmt == "auto" else fmt), (path if fmt == "tensorboard" else target)
    return (detect_file(path) if fmt == "auto" else fmt), path


def _guard(path: Path, fmt: str, fn):
    """Run a parser; any failure becomes a one-line TraceError naming the file."""
    try:
        return fn()
    except TraceError as exc:
        msg = " ".join(str(exc).split())
        raise TraceError(msg if path.name in msg else f"{path.name}: {msg}") from None
    except READ_ERRORS as exc:
        text = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise TraceError(f"{path.name}: cannot read as {fmt}: {text}") from None


def _parse(fmt: str, path: Path, mapping: dict[str, str], run: str | None,
           pattern: str | None) -> tuple[pd.DataFrame, list[str], str]:
    if fmt == "hf_console":
        return textlogs.read_hf_console(path, mapping, run)
    if fmt == "tensorboard":
        return docs.read_tensorboard(path, mapping, run)
    if fmt == "wandb_csv":
        return tables.read_wandb_csv(path, mapping, run)
    if run not in (None, "run0"):
        raise TraceError(f"{fmt} files hold one run; no run {run!r}")
    readers = {
        "hf_trainer_state": docs.read_trainer_state,
        "lightning_csv": tables.read_csv, "csv": tables.read_csv,
        "wandb_jsonl": tables.read_jsonl, "llamafactory_jsonl": tables.read_jsonl,
        "jsonl": tables.read_jsonl, "parquet": tables.read_parquet,
        "nanogpt": textlogs.read_nanogpt, "build_nanogpt": textlogs.read_build_nanogpt,
    }
    if fmt == "regex":
        if pattern is None:
            raise TraceError("format='regex' needs pattern= with named groups")
        return textlogs.read_regex(path, pattern, mapping), ["run0"], "run0"
    return readers[fmt](path, mapping), ["run0"], "run0"


def finish(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[dict]]:
    """One row per step: drop empty rows and columns, resolve resumes, merge, canonicalize."""
    present = frame.pop(PRESENT).to_numpy() if PRESENT in frame else None
    logged = frame.pop(LOGGED).to_numpy() if LOGGED in frame else None
    signals = [c for c in frame.columns if c != "step"]
    empty = [c for c in signals if frame[c].isna().all()]
    if empty:
        frame = frame.drop(columns=empty)
    signals = [c for c in frame.columns if c != "step"]
    if present is None:  # text formats: a matched line is a row
        present = (frame[signals].notna().any(axis=1).to_numpy() if signals
                   else np.zeros(len(frame), bool))
    keep = np.array(present, dtype=bool)
    if "step" in frame:
        keep &= np.abs(frame["step"].to_numpy(np.float64)) < 2.0**62  # drops NaN/inf too
    if not keep.all():
        frame = frame[keep].reset_index(drop=True)
        logged = logged[keep] if logged is not None else None
    if logged is not None and "step" in frame:
        frame = fold_side_rows(frame, logged)
    if len(frame) == 0 or not signals:
        raise TraceError("no rows with values")
    if "step" not in frame:
        return canonicalize(frame), []
    steps = frame["step"].to_numpy(np.float64).astype(np.int64)
    frame["step"] = steps
    if len(steps) < 2 or (np.diff(steps) > 0).all():
        return canonicalize(frame), []
    frame, events = drop_superseded(frame)
    merged = frame.groupby("step", sort=True).last().reset_index()
    return canonicalize(merged), events


def fold_side_rows(frame: pd.DataFrame, logged: np.ndarray) -> pd.DataFrame:
    """Rows that logged no loss (eval, LR-monitor rows) join the last train row before them
    (rows before the first train row join the first).

    Loggers such as Lightning's CSVLogger write one row per logging call; an eval row at a
    step with no training row would otherwise become a step whose loss reads as NaN, which a
    guard must take for a non-finite loss. An explicit "nan" loss is a logged value and stays.
    """
    steps = frame["step"].to_numpy(np.float64)
    train_steps = np.unique(steps[logged])
    side = ~logged & ~np.isin(steps, train_steps)
    if len(train_steps) == 0 or not side.any():
        return frame
    idx = np.clip(np.searchsorted(train_steps, steps[side], side="right") - 1, 0, None)
    steps = steps.copy()
    steps[side] = train_steps[idx]
    frame["step"] = steps
    return frame


def drop_superseded(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[dict]]:
    """A step regression among train rows is a resume: earlier rows at or after it go.

    Rows without a loss (eval, lr-only rows) do not start resumes: they often trail
    their step slightly in Lightning and Trainer logs.
    """
    steps = frame["step"].to_numpy()
    is_train = (frame["loss"].notna().to_numpy() if "loss" in frame
                else np.ones(len(steps), bool))
    pos = np.flatnonzero(is_train)
    train_steps = steps[pos]
    starts_at = pos[1:][train_steps[1:] < train_steps[:-1]]
    if len(starts_at) == 0:
        return frame, []
    prev_max = np.maximum.accumulate(train_steps)
    events = [{"step": int(steps[i]), "kind": "resume",
               "previous_step": int(prev_max[np.searchsorted(pos, i) - 1])} for i in starts_at]
    seg = np.zeros(len(steps), np.int64)
    seg[starts_at] = 1
    seg = np.cumsum(seg)
    starts = steps[starts_at].astype(np.float64)
    future = np.append(np.minimum.accumulate(starts[::-1])[::-1], np.inf)
    return frame[steps < future[seg]], events
