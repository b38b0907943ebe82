"""Whole-document trace formats: HF Trainer `trainer_state.json` and TensorBoard event files.

Both are read whole (a size limit guards the JSON), then reduced to canonical columns.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from lbw_sim.errors import TraceError
from lbw_sim.traces.columns import resolve_columns
from lbw_sim.traces.sniff import MAX_JSON_DOC_BYTES
from lbw_sim.traces.tables import need_signal, pick_run
from lbw_sim.traces.textlogs import SUMMARY_KEYS, Columns, candidate_row, to_canonical


def read_trainer_state(path: Path, mapping: dict[str, str]) -> pd.DataFrame:
    """`log_history` rows; eval rows (`eval_loss`) land on val_loss at their step."""
    size = path.stat().st_size
    if size > MAX_JSON_DOC_BYTES:
        raise TraceError(f"{path.name}: {size / 2**20:.0f} MiB is over the "
                         f"{MAX_JSON_DOC_BYTES // 2**20} MiB limit for whole-file JSON")
    try:
        with open(path, encoding="utf-8-sig") as f:
            doc = json.load(f)
    except UnicodeDecodeError:
        raise TraceError(f"{path.name}: not UTF-8 text") from None
    except RecursionError:
        raise TraceError(f"{path.name}: JSON nested too deeply") from None
    except ValueError as exc:
        raise TraceError(f"{path.name}: invalid or truncated JSON: {exc}") from None
    history = doc.get("log_history") if isinstance(doc, dict) else None
    if not isinstance(history, list):
        raise TraceError(f"{path.name}: no 'log_history' list (not a Trainer state file)")
    cols = Columns()
    for rec in history:
        if not isinstance(rec, dict) or any(k in rec for k in SUMMARY_KEYS):
            continue
        cols.add(candidate_row(rec, mapping))
    if not cols.n:
        raise TraceError(f"{path.name}: 'log_history' holds no training rows")
    return to_canonical(path, cols, mapping)


# ---------------------------------------------------------------- TensorBoard


def tb_runs(path: Path) -> list[str]:
    """Directories holding event files, relative to `path` ('.' for itself), sorted."""
    if path.is_file():
        return ["."]
    dirs = {p.parent for p in path.rglob("*tfevents*") if p.is_file()}
    return sorted(str(d.relative_to(path)) for d in dirs)


def read_tensorboard(path: Path, mapping: dict[str, str], run: str | None
                     ) -> tuple[pd.DataFrame, list[str], str]:
    """Scalars by tag; `wall_time` is seconds since the run's first event."""
    runs = tb_runs(path)
    if not runs:
        raise TraceError(f"{path.name}: no TensorBoard event files")
    run = pick_run(path, runs, run)
    scalars = _tb_scalars(path if path.is_file() else path / run, path.name)
    if not scalars:
        raise TraceError(f"{path.name}: no scalars in the TensorBoard events "
                         "(empty, corrupt or not an event file)")
    colmap = resolve_columns(scalars, mapping)
    colmap.pop("step", None)
    need_signal(path, colmap, list(scalars))
    start = min((ev[0] for evs in scalars.values() for ev in evs), default=0.0)
    series = {canon: _by_step(scalars[tag], 2) for canon, tag in colmap.items()}
    if "wall_time" not in series:
        series["wall_time"] = _by_step(scalars[colmap.get("loss", next(iter(colmap.values())))],
                                       0) - start
    frame = pd.DataFrame(series).rename_axis("step").reset_index()
    return frame, runs, run


def _by_step(events: list[tuple[float, int, float]], field: int) -> pd.Series:
    """One field of (wall, step, value) events by step; a repeated step keeps its last."""
    steps = np.array([e[1] for e in events], dtype=np.int64)
    values = np.array([e[field] for e in events], dtype=np.float64)
    s = pd.Series(values, index=steps)
    return s[~s.index.duplicated(keep="last")].sort_index()


def _tb_scalars(target: Path, name: str) -> dict[str, list[tuple[float, int, float]]]:
    from tensorboard.backend.event_processing import event_accumulator as ea

    logging.getLogger("tensorboard").setLevel(logging.ERROR)
    acc = ea.EventAccumulator(str(target), size_guidance={ea.SCALARS: 0, ea.TENSORS: 0})
    try:
        acc.Reload()
    except Exception as exc:  # the TF stub raises its own errors on corrupt records
        raise TraceError(f"{name}: unreadable TensorBoard events: {type(exc).__name__}") from None
    out: dict[str, list[tuple[float, int, float]]] = {}
    tags = acc.Tags()
    for tag in tags.get(ea.SCALARS, []):
        out[tag] = [(e.wall_time, e.step, e.value) for e in acc.Scalars(tag)]
    for tag in tags.get(ea.TENSORS, []):
        events = []
        for e in acc.Tensors(tag):
            arr = _tensor_value(e.tensor_proto)
            if arr is not None:
                events.append((e.wall_time, e.step, arr))
        if events:
            out.setdefault(tag, events)
    return out


def _tensor_value(proto) -> float | None:
    """A scalar tensor's value (TF2 summaries store scalars as tensors)."""
    try:
        from tensorboard.util import tensor_util

        arr = np.asarray(tensor_util.make_ndarray(proto))
    except Exception:
        return None
    return float(arr.reshape(())) if arr.size == 1 and arr.dtype.kind in "fiub" else None
