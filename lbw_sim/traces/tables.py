"""Streaming readers for tabular traces: CSV (plain, Lightning, W&B chart export), JSONL, Parquet.

Only the columns that map onto the canonical schema are read, batch by batch, as float64,
so a 10M-row file costs its numbers and little else. Each reader returns a frame with
canonical column names in file order; readers.finish() resolves steps and resumes.
"""

from __future__ import annotations

import csv
import io
import json
import mmap
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq

from lbw_sim.errors import TraceError
from lbw_sim.traces.columns import SYNONYMS, resolve_columns
from lbw_sim.traces.sniff import MAX_LINE_BYTES, iter_lines

BLOCK_BYTES = 16 * 1024**2
NULLS = ["", "null", "NULL", "None", "NA", "N/A", "n/a"]  # an explicit "nan" is a value
PRESENT = "_present"  # row had at least one non-null signal value (NaN counts)
LOGGED = "_loss_logged"  # the row's loss cell was filled (an explicit "nan" counts)


def to_float(v: object) -> float:
    """One JSON/CSV value as float; anything that is not a number is NaN (never raises)."""
    if v is None or isinstance(v, (dict, list)):
        return np.nan
    try:
        return float(v.strip() if isinstance(v, str) else v)
    except (TypeError, ValueError, OverflowError):
        return np.nan


def need_signal(path: Path, colmap: dict[str, str], available: list[str]) -> None:
    if not set(colmap) - {"step"}:
        shown = ", ".join(available[:20]) + (" …" if len(available) > 20 else "")
        raise TraceError(f"{path.name}: no loss/grad_norm/lr/val_loss column found (have: "
                         f"{shown}); pass a mapping such as loss='my_loss'")


def frame_from_chunks(colmap: dict[str, str], chunks: dict[str, list[np.ndarray]]
                      ) -> pd.DataFrame:
    """Concatenate per-batch arrays; `chunks[PRESENT]` holds the row-presence masks."""
    def cat(parts: list[np.ndarray], dtype) -> np.ndarray:
        out = np.concatenate(parts) if parts else np.empty(0, dtype)
        parts.clear()
        return out

    data = {canon: cat(chunks[src], np.float64) for canon, src in colmap.items()}
    data[PRESENT] = cat(chunks[PRESENT], bool)
    if chunks.get(LOGGED):
        data[LOGGED] = cat(chunks[LOGGED], bool)
    return pd.DataFrame(data, copy=False)


def signal_sources(colmap: dict[str, str]) -> list[str]:
    return sorted({src for canon, src in colmap.items() if canon != "step"})


def any_valid(columns: list[pa.Array]) -> np.ndarray:
    valid = np.zeros(len(columns[0]), bool)
    for col in columns:
        valid |= col.is_valid().to_numpy(zero_copy_only=False)
    return valid


# ---------------------------------------------------------------- CSV


def pick_run(path: Path, runs: list[str], run: str | None) -> str:
    """The requested run of a multi-run log (the first when none is asked for)."""
    if run is None:
        return runs[0]
    if run not in runs:
        raise TraceError(f"{path.name}: no run {run!r} (runs: {', '.join(runs)})")
    return run


def csv_header(path: Path) -> tuple[list[str], str]:
    """The header row and delimiter of a CSV file (read from its first line only)."""
    first = next(iter_lines(path), None)
    if first is None:
        raise TraceError(f"{path.name}: no header line")
    first = first.lstrip("\ufeff")
    delim = max(",;\t", key=first.count)
    try:
        header = next(csv.reader([first], delimiter=delim))
    except (csv.Error, StopIteration):
        raise TraceError(f"{path.name}: unreadable CSV header") from None
    if len(set(header)) != len(header):
        raise TraceError(f"{path.name}: duplicated column names in the CSV header")
    return [h.strip() for h in header], delim


def stream_csv(path: Path, colmap: dict[str, str], header: list[str], delim: str
               ) -> pd.DataFrame:
    """Read the mapped columns of a CSV as float64, batch by batch."""
    sources = sorted(set(colmap.values()))
    stripped = {h.strip(): h for h in header}
    try:
        return _stream_csv(path, colmap, sources, delim, stripped, typed=True)
    except pa.ArrowInvalid:
        return _stream_csv(path, colmap, sources, delim, stripped, typed=False)


def _stream_csv(path, colmap, sources, delim, stripped, typed: bool) -> pd.DataFrame:
    ftype = pa.float64() if typed else pa.string()
    raw = [stripped.get(s, s) for s in sources]
    reader = pcsv.open_csv(
        path,
        read_options=pcsv.ReadOptions(block_size=BLOCK_BYTES, encoding="utf8"),
        parse_options=pcsv.ParseOptions(delimiter=delim, invalid_row_handler=lambda _: "skip"),
        convert_options=pcsv.ConvertOptions(
            include_columns=raw, column_types={c: ftype for c in raw},
            null_values=NULLS, strings_can_be_null=True))
    chunks: dict[str, list[np.ndarray]] = {s: [] for s in [*sources, PRESENT, LOGGED]}
    signals = {stripped.get(s, s) for s in signal_sources(colmap)}
    loss = stripped.get(colmap["loss"], colmap["loss"]) if "loss" in colmap else None
    with reader:
        for batch in reader:
            _take_batch(batch, sources, raw, chunks, typed)
            chunks[PRESENT].append(any_valid([batch.column(n) for n in raw if n in signals]))
            if loss is not None:
                chunks[LOGGED].append(any_valid([batch.column(loss)]))
    return frame_from_chunks(colmap, chunks)


def _take_batch(batch, sources, raw, chunks, typed: bool) -> None:
    for src, name in zip(sources, raw, strict=True):
        col = batch.column(name)
        if typed:
            arr = col.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
        else:
            arr = pd.to_numeric(pd.Series(col.to_pylist(), dtype=object).str.strip(),
                                errors="coerce").to_numpy(np.float64)
        chunks[src].append(arr)


def read_csv(path: Path, mapping: dict[str, str]) -> pd.DataFrame:
    header, delim = csv_header(path)
    colmap = resolve_columns(header, mapping)
    need_signal(path, colmap, header)
    return stream_csv(path, colmap, header, delim)


# ---------------------------------------------------------------- W&B chart export


def wandb_runs(header: list[str]) -> list[str]:
    """Run names of a W&B chart export: columns `<run> - <metric>` minus __MIN/__MAX."""
    runs: list[str] = []
    for col in header:
        if " - " in col and not col.endswith(("__MIN", "__MAX")):
            run = col.rsplit(" - ", 1)[0]
            if run not in runs:
                runs.append(run)
    return runs


def read_wandb_csv(path: Path, mapping: dict[str, str], run: str | None
                   ) -> tuple[pd.DataFrame, list[str], str]:
    header, delim = csv_header(path)
    runs = wandb_runs(header)
    if not runs:
        raise TraceError(f"{path.name}: no '<run> - <metric>' columns in this W&B export")
    run = pick_run(path, runs, run)
    prefix = run + " - "
    metrics = {c[len(prefix):]: c for c in header
               if c.startswith(prefix) and not c.endswith(("__MIN", "__MAX"))}
    others = {c: c for c in header if " - " not in c}
    local = {k: (v[len(prefix):] if v.startswith(prefix) else v) for k, v in mapping.items()}
    names = {**others, **metrics}
    colmap = {canon: names[src] for canon, src in resolve_columns(names, local).items()}
    need_signal(path, colmap, list(metrics))
    return stream_csv(path, colmap, header, delim), runs, run


# ---------------------------------------------------------------- JSONL


def jsonl_keys(path: Path, mapping: dict[str, str], sample_lines: int = 2000) -> list[str]:
    """Keys of the first records, plus candidate keys that only appear further down."""
    keys: dict[str, None] = {}
    for i, line in enumerate(iter_lines(path)):
        if i >= sample_lines:
            break
        rec = _loads(line)
        if rec is not None:
            keys.update(dict.fromkeys(map(str, rec)))
    resolved = resolve_columns(keys, mapping)
    missing = [c for c in ("loss", "val_loss", "grad_norm", "lr") if c not in resolved]
    if missing and path.stat().st_size > 0:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            for canon in missing:
                for cand in SYNONYMS[canon]:
                    if m.find(json.dumps(cand).encode()) >= 0:
                        keys[cand] = None
                        break
    return list(keys)


def _loads(line: str) -> dict | None:
    try:
        rec = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return rec if isinstance(rec, dict) else None


def iter_blocks(path: Path, size: int = BLOCK_BYTES):
    """Yield byte blocks that end on a line boundary (the last may be a torn line)."""
    with open(path, "rb") as f:
        tail = b""
        while chunk := f.read(size):
            buf = tail + chunk
            cut = buf.rfind(b"\n") + 1
            if cut == 0 and len(buf) > MAX_LINE_BYTES:
                tail = b""  # one enormous line: drop it
                continue
            tail = buf[cut:]
            if cut:
                yield buf[:cut]
        if tail:
            yield tail


def read_jsonl(path: Path, mapping: dict[str, str]) -> pd.DataFrame:
    keys = jsonl_keys(path, mapping)
    colmap = resolve_columns(keys, mapping)
    need_signal(path, colmap, keys)
    sources = sorted(set(colmap.values()))
    schema = pa.schema([(s, pa.float64()) for s in sources])
    opts = pjson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    signals = signal_sources(colmap)
    chunks: dict[str, list[np.ndarray]] = {s: [] for s in [*sources, PRESENT]}
    for block in iter_blocks(path):
        cols = _fast_block(block, sources, signals, opts) or _slow_block(block, sources, signals)
        for s in [*sources, PRESENT]:
            chunks[s].append(cols[s])
    return frame_from_chunks(colmap, chunks)


def _fast_block(block: bytes, sources: list[str], signals: list[str], opts
                ) -> dict[str, np.ndarray] | None:
    """pyarrow's parser for clean blocks; None sends the block to the tolerant path."""
    if b"NaN" in block or b"Infinity" in block:  # valid for Python's json, not for arrow
        return None
    try:
        table = pjson.read_json(io.BytesIO(block), parse_options=opts)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    out = {s: table.column(s).to_numpy().astype(np.float64, copy=False) for s in sources}
    out[PRESENT] = any_valid([table.column(s).combine_chunks() for s in signals])
    return out


def _slow_block(block: bytes, sources: list[str], signals: list[str]
                ) -> dict[str, np.ndarray]:
    """json.loads line by line: NaN/Infinity, numbers as strings, torn and garbage lines."""
    rows, present = [], []
    for line in block.split(b"\n"):
        if line.strip():
            rec = _loads(line.decode("utf-8", errors="replace"))
            if rec is not None:
                rows.append([to_float(rec.get(s)) for s in sources])
                present.append(any(rec.get(s) is not None for s in signals))
    arr = np.array(rows, dtype=np.float64).reshape(len(rows), len(sources))
    out = {s: arr[:, i].copy() for i, s in enumerate(sources)}
    out[PRESENT] = np.array(present, dtype=bool)
    return out


# ---------------------------------------------------------------- Parquet


def read_parquet(path: Path, mapping: dict[str, str]) -> pd.DataFrame:
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise TraceError(f"{path.name}: not a readable Parquet file: {_first(exc)}") from None
    names = pf.schema_arrow.names
    colmap = resolve_columns(names, mapping)
    need_signal(path, colmap, names)
    sources = sorted(set(colmap.values()))
    signals = signal_sources(colmap)
    chunks: dict[str, list[np.ndarray]] = {s: [] for s in [*sources, PRESENT]}
    for batch in pf.iter_batches(batch_size=1 << 20, columns=sources):
        chunks[PRESENT].append(any_valid([batch.column(s) for s in signals]))
        for s in sources:
            values = batch.column(s).to_pandas()
            chunks[s].append(pd.to_numeric(values, errors="coerce").to_numpy(np.float64))
    return frame_from_chunks(colmap, chunks)


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
